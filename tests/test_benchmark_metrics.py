"""The metrics workload of the benchmark harness, on one shipped config: a row for the config's
metrics against the per-chain loop and one per metric against fit+sample, with their times."""

from __future__ import annotations

import json

from benchmarks import run


def test_metrics_workload_rows(tmp_path):
    sizes = {"metrics": {"configs": ["configs/gaussian/replace.yaml"], "min_s": 0.001, "reps": 1}}
    run.main(["--quick", "--only", "metrics", "--out", str(tmp_path), "--sizes", json.dumps(sizes)])
    rows = json.loads((tmp_path / "latest.json").read_text())["rows"]
    names = ["variance_ratio", "w2", "mean_drift", "tail_mass", "kl"]
    assert [r["workload"].split(" (")[0] for r in rows] == [
        f"metrics gaussian: {', '.join(names)}", *(f"metric {n} on gaussian" for n in sorted(names))]
    whole = rows[0]
    assert whole["data"]["configs"] == ["configs/gaussian/replace.yaml"]
    assert whole["goal"] == 5 and whole["ratio"] > 0
    assert all(t > 0 for t in whole["data"]["metrics_s"] + whole["data"]["per_chain_s"])
    assert all(r["goal"] == 1 and r["ratio"] > 0 for r in rows[1:])
