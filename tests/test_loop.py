"""The loop itself: user errors raised inside a family are not mistaken for numerical faults."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from collapselab import registry
from collapselab import store as store_module
from collapselab.config import load_config
from collapselab.errors import DataError
from collapselab.loop import measure, run
from collapselab.metrics.base import GenerationContext
from collapselab.models.gaussian import Gaussian
from collapselab.store import RunStore


class RefusesData(Gaussian):
    """Fits generation 0, then refuses its input like a tokenizer-mismatch check would."""

    def fit(self, data: np.ndarray, *, rng: np.random.Generator | None = None) -> RefusesData:
        if data.shape[1] == 7:
            raise DataError("vocabulary of the data (40) exceeds the model's (30)")
        return super().fit(data, rng=rng)


@pytest.fixture
def refuses_data():
    registry.families.register("_refuses_data", RefusesData)
    yield
    registry.families._entries.pop("_refuses_data")


def test_a_data_error_inside_fit_is_raised_not_recorded_as_degenerate(tmp_path, refuses_data):
    cfg = load_config(None, [f"out_dir={tmp_path}", "model.family=_refuses_data",
                             "data.size=10", "synthetic_size=7", "generations=3",
                             "on_degenerate=continue", "metrics=[variance_ratio]"])
    with pytest.raises(DataError, match=r"vocabulary of the data \(40\) exceeds the model's \(30\)"):
        run(cfg)
    rows = [r for r in (tmp_path / "experiment" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and "degenerate" not in rows[0]  # generation 0 only, nothing recorded


def test_generations_to_collapse_is_the_first_alarm_in_every_row_after_it(tmp_path):
    from collapselab.metrics.alarm import generations_to_collapse

    cfg = load_config(None, [f"out_dir={tmp_path}", "chains=200", "data.size=10",
                             "generations=12", "metrics=[collapse_alarm]"])
    rows = run(cfg).metrics()
    first = generations_to_collapse(rows)
    assert first is not None and first >= 1  # replace with M = 10 collapses within a few fits
    assert [r.get("generations_to_collapse") for r in rows] == \
        [None] * first + [first] * (len(rows) - first)


def test_generations_to_collapse_is_read_back_from_the_committed_rows_on_resume(
        tmp_path, monkeypatch):
    """Interrupted after the alarm fired, then resumed: every row as in one uninterrupted run
    (the resumed rows learn the first alarm from the committed ones)."""
    from collapselab.errors import Interrupted
    from collapselab.metrics.alarm import generations_to_collapse

    args = [f"out_dir={tmp_path}", "chains=200", "data.size=10", "generations=12",
            "metrics=[collapse_alarm]"]
    whole = run(load_config(None, [*args, "name=whole"])).metrics()
    first = generations_to_collapse(whole)
    assert first is not None and first < 10
    monkeypatch.setattr(store_module, "COMMIT_EVERY_S", 0.0)  # a commit every generation
    calls, fit = {"n": 0}, Gaussian.fit

    def interrupted_fit(self, data, *, rng=None):
        calls["n"] += 1
        if calls["n"] == first + 2:  # generation first + 1: rows 0..first are committed
            raise KeyboardInterrupt
        return fit(self, data, rng=rng)

    cfg = load_config(None, [*args, "name=resumed"])
    with monkeypatch.context() as mp:
        mp.setattr(Gaussian, "fit", interrupted_fit)
        with pytest.raises(Interrupted):
            run(cfg)
    assert RunStore(cfg.run_dir).completed() == first + 1
    rows = run(cfg, resume=True).metrics()
    assert [{k: v for k, v in r.items() if k != "wall_s"} for r in rows] == \
        [{k: v for k, v in r.items() if k != "wall_s"} for r in whole]
    assert rows[-1]["generations_to_collapse"] == first


def test_commit_writes_numpys_mean_and_standard_error_and_keeps_the_chain_values(tmp_path):
    rng = np.random.default_rng(0)
    values = {"ratio": rng.normal(size=50), "states": rng.integers(0, 300, 50),
              "alive": rng.random(50) < 0.5, "pairs": rng.normal(size=(50, 2)), "scalar": 2.5}

    class Metric:
        def __call__(self, ctx):
            return values

    ctx = GenerationContext(gen=1, model=None, reference=None, train=None,
                            synthetic=np.zeros((50, 4)), real=None, heldout=None, source=None,
                            rng=rng)
    scalars, per_chain = measure([("m", Metric())], ctx)
    assert list(scalars) == ["ratio", "ratio.sem", "states", "states.sem", "alive", "alive.sem",
                             "pairs", "pairs.sem", "scalar"]  # the metric's order, kept
    assert scalars["scalar"] == 2.5 and set(per_chain) == {"ratio", "states", "alive", "pairs"}
    assert ctx.artifacts["chain.states"].dtype == values["states"].dtype  # as the metric gave it
    assert ctx.artifacts["chain.alive"].dtype == bool
    with RunStore(tmp_path / "r").writer() as writer:
        writer.start("{}", seeds={})
        for g in range(3):  # the same values, committed together: one vectorised summary
            writer.stage(g, {"generation": g, **scalars}, per_chain=per_chain, record={},
                         samples={}, models={})
        writer.flush("complete")
    rows = RunStore(tmp_path / "r").metrics()
    assert len(rows) == 3 and list(rows[0]) == ["generation", *scalars]
    for key in ("ratio", "states", "alive", "pairs"):
        np.testing.assert_array_equal(ctx.artifacts[f"chain.{key}"], values[key])
        x = np.asarray(values[key], dtype=float)
        for row in rows:
            assert row[key] == pytest.approx(x.mean(), rel=1e-14)
            assert row[f"{key}.sem"] == pytest.approx(x.std(ddof=1) / np.sqrt(x.size), rel=1e-12)
    assert all("nonfinite" not in row for row in rows)


def test_non_finite_values_are_named_in_the_row(tmp_path):
    class Metric:
        def __call__(self, ctx):
            return {"bad": np.array([1.0, np.nan]), "fine": np.ones(2), "inf": float("inf")}

    ctx = GenerationContext(gen=1, model=None, reference=None, train=None,
                            synthetic=np.zeros((2, 4)), real=None, heldout=None, source=None,
                            rng=np.random.default_rng(0))
    scalars, per_chain = measure([("m", Metric())], ctx)
    with RunStore(tmp_path / "r").writer() as writer:
        writer.start("{}", seeds={})
        writer.stage(0, {"generation": 0, **scalars}, per_chain=per_chain, record={}, samples={},
                     models={})
        writer.flush("complete")
    (row,) = RunStore(tmp_path / "r").metrics()
    assert sorted(row["nonfinite"]) == ["bad", "bad.sem", "inf"]
    assert row["bad"] is None and row["inf"] is None and row["fine"] == 1.0  # JSON has no NaN


class CountsThreads(Gaussian):
    """Records the BLAS/OpenMP threads its fit may use."""

    seen: list[int] = []

    def fit(self, data: np.ndarray, *, rng: np.random.Generator | None = None) -> CountsThreads:
        CountsThreads.seen.append(max(p["num_threads"] for p in threadpool_info()))
        return super().fit(data, rng=rng)


def test_numpy_families_run_on_one_blas_thread_in_every_run_and_the_limits_are_restored(tmp_path):
    registry.families.register("_counts_threads", CountsThreads)
    before = [p["num_threads"] for p in threadpool_info()]
    try:
        for name in ("a", "b"):  # the second run reuses the first one's scan of the libraries
            run(load_config(None, [f"out_dir={tmp_path}", f"name={name}", "generations=2",
                                   "model.family=_counts_threads", "metrics=[variance_ratio]"]))
    finally:
        registry.families._entries.pop("_counts_threads")
    assert CountsThreads.seen == [1, 1, 1, 1]
    assert [p["num_threads"] for p in threadpool_info()] == before


def test_one_chain_has_a_mean_and_no_standard_error(tmp_path):
    run(load_config(None, [f"out_dir={tmp_path}", "chains=1", "generations=2",
                           "metrics=[variance_ratio]"]))
    rows = RunStore(tmp_path / "experiment").metrics()
    assert all(isinstance(r["variance_ratio"], float) and "variance_ratio.sem" not in r
               for r in rows)


@pytest.mark.parametrize("policy,every_generation,at_the_end", [
    ("replace", False, ("complete", 2)),  # one commit: nothing of the pools reaches the disk
    ("replace", True, ("running", 3)),  # generation 2, kept on disk for a resume until the end
    ("accumulate", True, ("running", 4)),  # every generation is in the pools
])
def test_a_run_says_it_is_complete_only_once_nothing_is_left_to_delete(
        tmp_path, monkeypatch, policy, every_generation, at_the_end):
    """Samples kept on disk for a resume are deleted after the last commit, and only then does
    the manifest say "complete"; when nothing is left to delete, the last commit says it."""
    if every_generation:
        monkeypatch.setattr(store_module, "COMMIT_EVERY_S", 0.0)
    seen = []
    real_release = store_module.RunWriter._release

    def release(self, *, final, disk=False):
        if final and disk:
            seen.append((RunStore(tmp_path / "experiment").manifest()["status"],
                         len(list((tmp_path / "experiment").glob("gen_*/samples.npy")))))
        real_release(self, final=final, disk=disk)

    monkeypatch.setattr(store_module.RunWriter, "_release", release)
    run(load_config(None, [f"out_dir={tmp_path}", f"policy.name={policy}", "generations=4",
                           "keep_samples=last", "metrics=[variance_ratio]"]))
    assert seen[0] == at_the_end
    final = RunStore(tmp_path / "experiment")
    assert final.manifest()["status"] == "complete"
    assert sorted(p.parent.name for p in final.root.glob("gen_*/samples.npy")) == \
        ["gen_000", "gen_003"]
