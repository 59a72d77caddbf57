"""The report embeds every plot it draws; the demo runs end to end and resumes after a kill."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from collapselab.report import build_figures, views, write_report
from collapselab.store import RunStore

PNG = b"\x89PNG\r\n\x1a\n"
IMG = re.compile(r'<img alt="[^"]*" id="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"/>')


def embedded(html: str) -> dict[str, bytes]:
    return {name: base64.b64decode(data) for name, data in IMG.findall(html)}


def test_report_embeds_every_figure_with_theory(run_config, tmp_path):
    a = run_config(None, "name=a", "chains=50", "generations=5", "data.size=20")
    b = run_config(None, "name=b", "chains=50", "generations=5", "data.size=20",
                   "policy.name=accumulate")
    out = write_report([a.root, b.root], tmp_path / "r.html")
    html = out.read_text()
    images = embedded(html)
    figures = build_figures(views([a, b]))
    assert list(images) == [f.name for f in figures]  # every figure, once, in order
    assert all(png.startswith(PNG) for png in images.values())
    assert "metric-variance_ratio" in images and "dist-a" in images
    assert html.count("<img") == len(images)  # nothing else referenced
    assert "replace" in html and "accumulate" in html


def _demo(out: Path, *extra: str) -> subprocess.Popen:
    # 3 generations on 300 blocks / samples: the demo's code paths at a tenth of its cost
    cmd = [sys.executable, "-m", "collapselab", "demo", "--out-dir", str(out), "generations=3",
           "data.size=300", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def metrics_without_timing(root: Path) -> list[dict]:
    rows = RunStore(root).metrics()
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_demo_killed_midway_resumes_to_identical_metrics(tmp_path):
    whole = tmp_path / "whole"
    proc = _demo(whole)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    html = (whole / "report.html").read_text()
    runs = sorted(p.name for p in whole.iterdir() if p.is_dir())
    assert len(runs) == 5
    images = embedded(html)
    assert len(images) >= 10 and all(png.startswith(PNG) for png in images.values())

    killed = tmp_path / "killed"
    proc = _demo(killed)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once some run has committed a generation
        done = [json.loads(m.read_text())["completed_generations"]
                for m in killed.glob("*/manifest.json") if m.stat().st_size]
        if any(d >= 1 for d in done) and proc.poll() is None:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = _demo(killed, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    for name in runs:
        assert metrics_without_timing(killed / name) == metrics_without_timing(whole / name), name
