"""The Python API: collapselab.run / load / sweep and Run, from a script or a notebook."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import collapselab
from collapselab.api import override_items
from collapselab.config import load_config
from collapselab.errors import ConfigError, RunError

ROOT = Path(__file__).resolve().parents[1]
GAUSSIAN = ROOT / "configs" / "gaussian" / "replace.yaml"
TINY = {"generations": 3, "chains": 4, "data.size": 20}


def test_import_collapselab_stays_light():
    code = ("import sys, collapselab; heavy = [m for m in ('pydantic', 'pandas', 'torch', "
            "'collapselab.config', 'collapselab.api') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_run_a_yaml_with_dotted_overrides(tmp_path):
    run = collapselab.run(GAUSSIAN, out_dir=tmp_path, **TINY, **{"policy.name": "accumulate"})
    assert isinstance(run, collapselab.Run)
    assert run.status == "complete" and run.generations == 3
    assert run.config.policy.name == "accumulate" and run.config.data.size == 20
    metrics = run.metrics()
    assert isinstance(metrics, pd.DataFrame)
    assert metrics.index.name == "generation" and list(metrics.index) == [0, 1, 2]
    assert {"variance_ratio", "variance_ratio.sem", "w2"} <= set(metrics.columns)
    assert run.samples(0).shape == (4, 20, 1)
    assert repr(run) == f"Run({str(tmp_path / 'gaussian-replace')!r}, status='complete', " \
                        "generations=3/3)"


def test_the_same_config_from_a_path_a_dict_and_an_experiment_config(tmp_path):
    cfg = load_config(GAUSSIAN, ["generations=2", "chains=3", "data.size=16"])
    raw = cfg.model_dump(mode="json")
    a = collapselab.run(GAUSSIAN, out_dir=tmp_path / "a", generations=2, chains=3,
                        **{"data.size": 16})
    b = collapselab.run(raw, out_dir=tmp_path / "b")
    c = collapselab.run(cfg, out_dir=tmp_path / "c")
    for other in (b, c):
        pd.testing.assert_frame_equal(a.metrics().drop(columns="wall_s"),
                                      other.metrics().drop(columns="wall_s"))


def test_renaming_a_resolved_configs_component_starts_it_from_its_defaults():
    cfg = load_config(GAUSSIAN, ["policy.name=real_fraction", "policy.real_fraction=0.3"])
    assert collapselab.experiment(cfg, **{"policy.name": "accumulate"}).policy.params == {}
    assert collapselab.experiment(cfg, **{"policy.real_fraction": 0.5}).policy.params == {
        "real_fraction": 0.5}
    # a dict or a YAML is what the user wrote: a parameter the new policy lacks is an error
    with pytest.raises(ConfigError, match=r"policy\.real_fraction: unknown field\. Allowed: \(none\) "
                       r"\(real_fraction is a parameter of policy fresh, real_fraction\)$"):
        collapselab.experiment(cfg.model_dump(mode="json"), **{"policy.name": "accumulate"})


def test_overrides_are_validated_like_the_clis():
    with pytest.raises(ConfigError) as err:
        collapselab.experiment(GAUSSIAN, generations=0, **{"policy.real_fraction": 1.5,
                                                           "policy.name": "real_fraction"})
    assert err.value.problems == [
        "generations: Input should be greater than or equal to 1; got 0",
        "policy.real_fraction: Input should be less than or equal to 1; got 1.5",
    ]
    with pytest.raises(ConfigError, match=r"^invalid config \(1 problem\):\n  - config must be a "
                                          r"YAML path, a dict or an ExperimentConfig; got int$"):
        collapselab.experiment(3)


def test_override_values_read_back_exactly():
    assert override_items({"a": 1e-7, "b": "null", "c": Path("x/y"), "d.e": [np.int64(2), 0.5],
                           "f": None, "g": {"h": True}}) == [
        "a=1.0e-07", "b='null'", "c=x/y", "d.e=[2, 0.5]", "f=null", "g={h: true}"]
    with pytest.raises(ConfigError, match=r"^invalid config \(1 problem\):\n  - seed: a config "
                                          r"value must be a number, string, bool, None, list or "
                                          r"dict; got object$"):
        override_items({"seed": object()})


def test_load_samples_and_report(tmp_path):
    collapselab.run(GAUSSIAN, out_dir=tmp_path, **TINY)
    run = collapselab.load(tmp_path / "gaussian-replace")
    assert list(run.metrics().index) == [0, 1, 2]
    np.testing.assert_array_equal(run.samples(2), run.store.samples(2))
    with pytest.raises(RunError, match=r"^generation 3 is not in .*gaussian-replace "
                                       r"\(generations 0-2\)$"):
        run.samples(3)
    np.testing.assert_array_equal(run.samples(-1), run.samples(2))
    with pytest.raises(RunError, match=r"^samples of generation 1 were not kept in "):
        run.samples(1)  # keep_samples: needed keeps generation 0's and the last
    page = run.report(tmp_path / "page.html")
    assert page == tmp_path / "page.html" and "<html" in page.read_text()[:200].lower()
    with pytest.raises(RunError, match=r"is not a collapselab run directory \(no manifest\.json\)$"):
        collapselab.load(tmp_path)


def test_a_rerun_is_refused_and_resume_continues(tmp_path):
    collapselab.run(GAUSSIAN, out_dir=tmp_path, **{**TINY, "generations": 2})
    with pytest.raises(RunError, match=r"already holds a run; pass --resume"):
        collapselab.run(GAUSSIAN, out_dir=tmp_path, **{**TINY, "generations": 2})
    seen = []
    run = collapselab.run(GAUSSIAN, out_dir=tmp_path, resume=True, progress=lambda d, t: seen.append((d, t)),
                          **{**TINY, "generations": 2})
    assert run.generations == 2 and seen == []  # nothing left to do


def test_progress_callable_sees_every_generation(tmp_path):
    seen = []
    collapselab.run(GAUSSIAN, out_dir=tmp_path, progress=lambda d, t: seen.append((d, t)), **TINY)
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_sweep_from_a_dict(tmp_path):
    assert callable(collapselab.sweep)  # the submodule, callable as the API function
    from collapselab.sweep import load_sweep  # noqa: F401  (and still a module)

    spec = {"base": {"name": "g", "generations": 2, "chains": 2, "data": {"size": 16}},
            "grid": {"policy.name": ["replace", "accumulate"]}, "workers": 1,
            "out_dir": str(tmp_path / "sw")}
    result = collapselab.sweep(spec, generations=3)
    assert result.failed == {} and len(result.runs) == 2
    metrics = result.metrics()
    assert metrics.index.names == ["run", "generation"] and len(metrics) == 6
    assert {r.config.policy.name for r in result.runs.values()} == {"replace", "accumulate"}
    assert result.report().is_file()
