"""Workload 6: ``collapselab demo`` end to end, in a subprocess writing into a temporary folder.

Peak memory is the child's maximum resident set size (``getrusage(RUSAGE_CHILDREN)``), read by a
small wrapper process so that nothing else this benchmark ran is counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from typing import Any

from benchmarks.harness import Row, fmt_seconds

WRAPPER = """
import json, resource, subprocess, sys, time
tic = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - tic
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(json.dumps({"rc": proc.returncode, "wall_s": wall, "maxrss_kib": rss,
                  "stderr": proc.stderr[-2000:]}))
"""


def run(sizes: dict[str, Any], reps: int) -> tuple[list[Row], dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "collapselab", "demo",
               "--out-dir", f"{tmp}/demo", *sizes.get("demo_overrides", [])]  # fmt: skip
        out = json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                        check=True).stdout.strip().splitlines()[-1])  # fmt: skip
    if out["rc"] != 0:
        raise RuntimeError(f"collapselab demo failed (exit {out['rc']}): {out['stderr']}")
    wall, mib = out["wall_s"], out["maxrss_kib"] / 1024
    overrides = sizes.get("demo_overrides", [])
    return [Row("6 `collapselab demo` end to end" + (f" ({' '.join(overrides)})" if overrides else ""),
                f"{fmt_seconds(wall)}, peak RSS {mib:.0f} MiB", "—", None,
                goal_text="< 5 min on 2 cores", seconds=wall, limit_s=300.0,
                data={"wall_s": wall, "peak_rss_mib": mib})], {}  # fmt: skip
