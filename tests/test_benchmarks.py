"""The benchmark harness imports and runs one workload at a minuscule size (speed is not tested
here: ``python -m benchmarks.run`` measures it)."""

from __future__ import annotations

import json

from benchmarks import run


def test_chains_workload_writes_the_schema(tmp_path):
    sizes = {"reps": 1, "chains": {"chains": 3, "gens": 2, "m": 10, "curve_chains": [2],
                                   "curve_gens": 2, "curve_fixed_chains": 2,
                                   "curve_gen_steps": [3], "reps": 1}}  # fmt: skip
    run.main(["--quick", "--only", "chains", "--out", str(tmp_path), "--sizes", json.dumps(sizes)])
    result = json.loads((tmp_path / "latest.json").read_text())
    assert result["schema"] == "collapselab.benchmarks/1"
    assert result["meta"]["quick"] is True and result["meta"]["reps"] == 1
    rows = result["rows"]
    assert len(rows) == 8  # engine vs floor, loop vs engine, loop vs per-chain, x 2; 2 scaling
    for row in rows:
        assert {"workload", "ours", "peer", "ratio", "goal", "goal_text", "met", "result",
                "data"} <= row.keys()  # fmt: skip
        assert row["ratio"] > 0
    assert [r["goal"] for r in rows[:3]] == [0.7, 1 / 1.5, 5]
    assert all(len(t) == 1 for t in rows[0]["data"]["seconds"].values())  # one rep, side by side
    assert rows[0]["met"] in (True, False)
    assert len(result["extra"]["scaling"]["gaussian"]) == 2
    table = (tmp_path / "latest.md").read_text()
    assert table.count("\n| 1 ") == 8 and "| workload | ours | peer | ratio | goal | result |" in table
