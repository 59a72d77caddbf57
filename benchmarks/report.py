"""Workload 8: ``collapselab report`` on a long Gaussian run (issue 12: < 20 s and < 500 MB peak
RSS on 2000 generations).

The run is made first, untimed, with ``collapselab run configs/gaussian/replace.yaml
generations=<gens> chains=<chains> --no-report`` in a temporary folder; then ``collapselab report``
runs ``reps`` times, each in its own process under a small wrapper that reads the child's wall time
and maximum resident set size (``getrusage(RUSAGE_CHILDREN)``, as in ``demo.py``). The figures are
the median wall time and the largest peak RSS of the reps.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.demo import WRAPPER
from benchmarks.harness import Row, fmt_seconds

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "gaussian" / "replace.yaml"
LIMIT_S = 20.0
LIMIT_BYTES = 500e6


class ReportRow(Row):
    """A time goal and a memory goal: met when both are."""

    @property
    def met(self) -> bool | None:
        if self.seconds is None or "peak_rss_bytes" not in self.data:
            return None
        return self.seconds <= LIMIT_S and self.data["peak_rss_bytes"] <= LIMIT_BYTES

    def result(self) -> str:
        if self.met is None:
            return "not measured"
        if self.met:
            return "met"
        assert self.seconds is not None
        over = [f"time {self.seconds / LIMIT_S:.2f}x over" if self.seconds > LIMIT_S else "",
                f"memory {self.data['peak_rss_bytes'] / LIMIT_BYTES:.2f}x over"
                if self.data["peak_rss_bytes"] > LIMIT_BYTES else ""]
        return "missed: " + ", ".join(o for o in over if o)


def measured(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd`` under the wrapper: its exit status, wall seconds and peak RSS (KiB)."""
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True,
                         check=True)
    got: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if got["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd[1:])} failed (exit {got['rc']}): {got['stderr']}")
    return got


def run(sizes: dict[str, Any], reps: int) -> tuple[list[Row], dict[str, Any]]:
    gens, chains = int(sizes["gens"]), int(sizes["chains"])
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        subprocess.run([sys.executable, "-m", "collapselab", "run", str(CONFIG),
                        f"out_dir={tmp}", "name=report-bench", f"generations={gens}",
                        f"chains={chains}", "--no-report"],
                       check=True, capture_output=True, text=True)  # fmt: skip
        run_s = time.perf_counter() - tic
        root = Path(tmp) / "report-bench"
        disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        reports = [measured([sys.executable, "-m", "collapselab", "report", str(root),
                             "-o", f"{tmp}/report.html"]) for _ in range(reps)]  # fmt: skip
        html_bytes = (Path(tmp) / "report.html").stat().st_size
    wall = statistics.median(r["wall_s"] for r in reports)
    rss = max(r["maxrss_kib"] for r in reports) * 1024
    data = {"wall_s": [r["wall_s"] for r in reports], "peak_rss_bytes": rss,
            "peak_rss_mib": rss / 2**20, "generations": gens, "chains": chains,
            "run_s": run_s, "run_dir_bytes": disk, "html_bytes": html_bytes}  # fmt: skip
    row = ReportRow(
        f"8 `collapselab report`, Gaussian replace run of {gens} generations x {chains} chains",
        f"{fmt_seconds(wall)}, peak RSS {rss / 1e6:.0f} MB", "—", None,
        goal_text="< 20 s and < 500 MB peak RSS", seconds=wall, limit_s=LIMIT_S,
        note=f"median of {reps}; the run itself took {run_s:.0f} s, {disk / 1e6:.0f} MB",
        data=data)  # fmt: skip
    return [row], {"report": data}
