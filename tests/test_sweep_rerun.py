"""A sweep whose base config has no ``metrics:`` reruns and resumes: its points name the default
metrics bare, their runs store them with their parameters, and the rerun compares the two
resolved (defaults filled in on both sides). A changed sweep is still refused, by the key that
changed. Tiny Gaussian runs (4 generations, 5 chains) and the shipped language sweep cut to 3
points of 2 generations: the file in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from collapselab.cli import app
from collapselab.config import validate
from collapselab.errors import Interrupted, RunError
from collapselab.loop import run
from collapselab.store import RunStore
from collapselab.sweep import load_sweep, resolved, run_sweep

ROOT = Path(__file__).resolve().parents[1]
BARE = {  # no metrics: the defaults of the data kind, tail_mass (sigmas) among them
    "base": {"generations": 4, "chains": 5, "model": {"family": "gaussian"},
             "data": {"source": "normal", "size": 20}},
    "grid": {"seed": [0, 1]}, "workers": 1,
}
NAMES = ["seed-0", "seed-1"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_a_point_without_metrics_resolves_to_the_config_its_run_stores(tmp_path):
    (point,) = load_sweep(raw={**BARE, "grid": {"seed": [0]}, "out_dir": str(tmp_path)}).points
    tail = {m.name: m for m in point.config.metrics}["tail_mass"]
    assert tail.model_dump() == {"name": "tail_mass"}  # bare: the cause of the refusals
    run(validate(point.config.model_dump(mode="json")))  # as a sweep worker runs it
    stored = RunStore(point.config.run_dir).config()
    assert stored != point.config and resolved(stored) == resolved(point.config)
    assert {m.name: m for m in resolved(point.config).metrics}["tail_mass"].model_dump() == {
        "name": "tail_mass", "sigmas": [2.0, 3.0]}


def test_a_complete_sweep_without_metrics_reruns_as_skipped(tmp_path):
    out = tmp_path / "sweep"
    first = run_sweep(load_sweep(raw={**BARE, "out_dir": str(out)}))
    assert sorted(first.ran) == NAMES and first.failed == {}
    runs = {n: snapshot(out / n) for n in NAMES}
    again = run_sweep(load_sweep(raw={**BARE, "out_dir": str(out)}))
    assert sorted(again.skipped) == NAMES and again.ran == [] and again.failed == {}
    assert {n: snapshot(out / n) for n in NAMES} == runs


def test_an_interrupted_sweep_without_metrics_resumes(tmp_path):
    """Point seed-0 interrupted after 2 of 4 generations (Ctrl-C in its worker: the run commits
    what it finished, status interrupted), seed-1 never started: the rerun resumes seed-0 from 2,
    runs seed-1, and both end as an uninterrupted sweep's runs do, metric for metric."""
    reference = tmp_path / "reference"
    run_sweep(load_sweep(raw={**BARE, "out_dir": str(reference)}))
    out = tmp_path / "sweep"
    sweep = load_sweep(raw={**BARE, "out_dir": str(out)})
    point = sweep.points[0]

    def ctrl_c(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        run(validate(point.config.model_dump(mode="json")), progress=ctrl_c)
    manifest = RunStore(out / "seed-0").manifest()
    assert (manifest["status"], manifest["completed_generations"]) == ("interrupted", 2)

    result = run_sweep(load_sweep(raw={**BARE, "out_dir": str(out)}))
    assert sorted(result.ran) == NAMES and result.failed == {}
    entries = {p["name"]: p for p in json.loads((out / "sweep.json").read_text())["points"]}
    assert entries["seed-0"]["resumed_from"] == 2 and entries["seed-1"]["resumed_from"] == 0
    for name in NAMES:
        assert RunStore(out / name).manifest()["status"] == "complete"
        assert metric_rows(out / name) == metric_rows(reference / name)


def test_a_changed_sweep_without_metrics_is_refused_by_the_key_that_changed(tmp_path):
    out = tmp_path / "sweep"
    run_sweep(load_sweep(raw={**BARE, "out_dir": str(out)}))
    before = snapshot(out)
    with pytest.raises(RunError) as info:
        run_sweep(load_sweep(raw={**BARE, "out_dir": str(out)},
                             overrides=["metrics=[{name: tail_mass, sigmas: [1.0]}]"]))
    text = str(info.value)
    assert text.startswith("2 points of this sweep already have run directories started with "
                           "a different config;")
    assert (f"  - point seed-0: {out / 'seed-0'} was started with metrics=[") in text
    assert 'the sweep asks for metrics=[{"name": "tail_mass", "sigmas": [1.0]}]' in text
    (tmp_path / "s.yaml").write_text(json.dumps({**BARE, "out_dir": str(out)}))
    res = CliRunner().invoke(app, ["sweep", str(tmp_path / "s.yaml"), "generations=5"])
    assert res.exit_code == 2, res.output
    assert (f"  - point seed-1: {out / 'seed-1'} was started with generations=4, the sweep asks "
            "for generations=5\n") in res.output
    assert snapshot(out) == before


def test_the_shipped_language_sweep_reruns(tmp_path):
    """configs/sweeps/language_policies.yaml (no metrics:) cut to one seed and 2 generations:
    a rerun skips its 3 finished points (the issue: 'started with a different config')."""
    args = ["sweep", str(ROOT / "configs/sweeps/language_policies.yaml"),
            f"out_dir={tmp_path / 'lp'}", "generations=2", "grid.seed=[0]", "--no-report"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "ran 3, skipped 0 finished, failed 0" in first.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "ran 0, skipped 3 finished, failed 0" in again.output
