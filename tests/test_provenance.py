"""Provenance: policies return index plans; every training row's origin is recorded once, compactly,
lists with one command, sums to the composition, and names the very sample it was."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from collapselab import provenance, registry
from collapselab.cli import app
from collapselab.config import load_config
from collapselab.loop import Stream, Streams, mix_stream, run, setup_rngs
from collapselab.models.gaussian import Gaussian
from collapselab.policies import Accumulate, AccumulateSubsample, Fresh, RealFraction, Replace
from collapselab.provenance import FRESH_POOL
from collapselab.store import RunStore


def test_labels_round_trip():
    codes = provenance.encode(7, np.array([0, 5, 2**31]), producer=3)
    origin, producer, index = provenance.decode(codes)
    assert origin.tolist() == [7, 7, 7] and producer.tolist() == [3, 3, 3]
    assert index.tolist() == [0, 5, 2**31]
    assert provenance.decode(provenance.encode(provenance.REAL, np.array([4])))[0].tolist() == [-2]


# --- plans -----------------------------------------------------------------------------------------


def rows_of(part, n, chains=4):
    """The rows a part takes per chain, explicit."""
    return np.broadcast_to(np.arange(n), (chains, n)) if part.rows is None else part.rows


def test_replace_and_accumulate_take_whole_pools_and_draw_nothing():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert Replace().plan([10, 7, 9], 10, 4, rng).parts == (provenance.Part((2,)),)
    assert Accumulate().plan([10, 7, 9], 10, 4, rng).parts == (provenance.Part((0, 1, 2)),)
    assert rng.bit_generator.state == state  # no random draw: nothing to record per row


@pytest.mark.parametrize("fraction, size, k_real", [(0.1, 100, 10), (0.25, 10, 2), (0.35, 10, 4),
                                                    (0.0, 10, 0), (1.0, 10, 10)])
def test_real_fraction_rounds_the_real_share_and_draws_distinct_rows_per_chain(fraction, size,
                                                                                k_real):
    plan = RealFraction(fraction).plan([size, size], size, 4, np.random.default_rng(1))
    taken = {part.pools: rows_of(part, size) for part in plan.parts}
    assert sum(r.shape[1] for r in taken.values()) == size and plan.fresh == 0
    if k_real:
        assert taken[(0,)].shape == (4, k_real)
    if size - k_real:
        assert taken[(1,)].shape == (4, size - k_real)
    for rows in taken.values():
        assert all(len(set(r)) == len(r) and r.max() < size for r in rows)  # without replacement
    if 0 < k_real < size:
        assert len({tuple(sorted(r)) for r in taken[(0,)]}) > 1  # a fresh subset per chain


def test_fresh_asks_the_loop_for_new_real_rows_instead_of_reusing_the_pool():
    plan = Fresh(0.3).plan([50, 50], 50, 3, np.random.default_rng(2))
    assert plan.fresh == 15
    assert plan.parts[0] == provenance.Part((FRESH_POOL,))
    assert plan.parts[1].pools == (1,) and plan.parts[1].rows.shape == (3, 35)


def test_accumulate_subsample_takes_its_budget_from_everything_so_far():
    plan = AccumulateSubsample(budget=30).plan([20, 20, 20], 20, 5, np.random.default_rng(3))
    (part,) = plan.parts
    assert part.pools == (0, 1, 2) and part.rows.shape == (5, 30) and part.rows.max() < 60
    assert AccumulateSubsample().plan([5, 5], 8, 2, np.random.default_rng(3)).parts[0].rows.shape \
        == (2, 8)  # default budget: data.size
    whole = AccumulateSubsample(budget=100).plan([20, 20], 20, 2, np.random.default_rng(3))
    assert whole.parts[0].rows is None  # the budget covers everything: no draw


def test_every_stream_is_its_own():
    """Producers, purposes, generations and the mix each get an independent stream."""
    firsts = [mix_stream(0, g).integers(2**62) for g in range(3)]
    firsts += [s.integers(2**62) for s in setup_rngs(0)]
    for g in range(3):
        for p in range(3):
            s = Streams.for_generation(0, g, p)
            firsts += [getattr(s, n).integers(2**62)
                       for n in ("compose", "fit", "sample", "curate", "metrics")]
    assert len(set(firsts)) == len(firsts) == 3 + 2 + 3 * 3 * 5
    # the same key is the same stream: any generation of any producer replays alone
    assert Streams.for_generation(0, 2, 1).fit.integers(2**62) == \
        Streams.for_generation(0, 2, 1).fit.integers(2**62)


@pytest.mark.parametrize("first_use", [
    lambda r: r.normal(size=3),
    lambda r: np.random.default_rng(r).normal(size=3),  # default_rng hands a Generator back
    lambda r: np.random.Generator(r.bit_generator).normal(size=3),
    lambda r: r.spawn(1)[0].normal(size=3),
])
def test_a_stream_is_seeded_at_its_first_use_as_default_rng_would_be(first_use):
    key = (1, 4, 2, 3)
    expected = np.random.default_rng(np.random.SeedSequence(7, spawn_key=key))
    assert isinstance(Stream(7, key), np.random.Generator)
    np.testing.assert_array_equal(first_use(Stream(7, key)), first_use(expected))


# --- every row is the sample it names, read back from disk -------------------------------------


class Recorder(Gaussian):
    """A Gaussian that remembers every training set it was given."""

    seen: list[np.ndarray] = []

    def fit(self, data, *, rng=None):
        Recorder.seen.append(np.array(data))
        return super().fit(data, rng=rng)


@pytest.fixture
def recorder():
    Recorder.seen = []
    registry.families.register("_recorder", Recorder)
    yield Recorder.seen
    registry.families._entries.pop("_recorder")


@pytest.mark.parametrize("policy, curation", [
    ("real_fraction", "[]"), ("accumulate", "[]"), ("accumulate_subsample", "[]"),
    ("real_fraction", "[{name: density_band, low: 0.1}]"),
    ("accumulate_subsample", "[{name: density_band, low: 0.1}]")])
def test_every_training_row_equals_the_stored_sample_its_provenance_names(tmp_path, recorder,
                                                                          policy, curation):
    cfg = load_config(None, [f"out_dir={tmp_path}", "model.family=_recorder", "chains=3",
                             "data.size=12", "generations=4", f"policy.name={policy}",
                             f"curation={curation}", "keep_samples=all", "metrics=[w2]"])
    store = RunStore(run(cfg).root)
    real = setup_rngs(cfg.seed)[0]
    pool = registry.sources.build(cfg.data.source, cfg.data.params).real(12, 3, real)
    for gen, train in enumerate(recorder):
        origin, _, index = provenance.decode(provenance.training_labels(store, gen))
        assert origin.shape == train.shape[:2]
        for c in range(3):
            for j in range(train.shape[1]):
                o, i = int(origin[c, j]), int(index[c, j])
                if o == provenance.REAL:
                    expected = pool[c, i]
                else:  # a produced row: the stored (curated) samples hold it where it was kept
                    prov = store.provenance(o)
                    kept = prov["kept"][c] if "kept" in prov else np.arange(12)
                    expected = store.samples(o)[c, list(kept).index(i)]
                np.testing.assert_array_equal(train[c, j], expected)


def test_replace_without_curation_records_no_per_row_labels(tmp_path):
    store = run(load_config(None, [f"out_dir={tmp_path}", "chains=50", "data.size=40",
                                   "generations=3", "metrics=[variance_ratio]"]))
    prov = store.provenance(2)
    assert not [k for k in prov if k.endswith(".rows") or k == "kept"]  # the plan says it all
    origin, _, index = provenance.decode(provenance.training_labels(store, 2))
    assert (origin == 1).all() and (index == np.arange(40)).all()


def test_provenance_of_generation_k_lists_with_one_command_and_sums_to_the_composition(tmp_path):
    cfg = load_config(None, [
        f"out_dir={tmp_path}", "name=prov", "generations=4", "chains=2", "data.source=builtin",
        "data.size=100", "model.family=ngram", "model.prompt_tokens=4", "metrics=[perplexity]",
        "policy.name=accumulate_subsample", "curation=[{name: repetition, min_distinct: 0.5}]"])
    store = run(cfg)
    rows = store.metrics()
    assert rows[0]["composition.real"] == 1.0
    k = 3
    listing = provenance.listing(RunStore(store.root), k)
    assert len(listing) == 2 * 100
    counts: dict[str, int] = {}
    for r in listing:
        counts[r["origin"]] = counts.get(r["origin"], 0) + 1
    recorded = {key.removeprefix("composition."): v for key, v in rows[k].items()
                if key.startswith("composition.")}
    assert set(counts) == set(recorded) and len(counts) > 1  # real and earlier generations
    for origin, count in counts.items():
        assert count / len(listing) == pytest.approx(recorded[origin], abs=1e-12)
    synthetic = next(r for r in listing if not r["is_real"])
    assert synthetic["family"] == "ngram" and synthetic["seed"] == 0
    assert "score.repetition" in synthetic  # the filter score it received when produced
    assert synthetic["index"] in store.provenance(synthetic["generation"])["kept"][synthetic["chain"]]
    kept = store.provenance(synthetic["generation"])["kept"][synthetic["chain"]]
    assert kept[synthetic["stored_row"]] == synthetic["index"]  # samples.npy holds it there

    result = CliRunner().invoke(app, ["provenance", str(store.root), "--generation", str(k),
                                      "--csv", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    assert "total" in result.output and (tmp_path / "p.csv").is_file()
    table = pd.read_csv(tmp_path / "p.csv")  # what the user gets: every sample, its stored row
    assert len(table) == len(listing)
    row = table[~table["is_real"]].iloc[0]
    kept = store.provenance(int(row["generation"]))["kept"][int(row["chain"])]
    assert kept[int(row["stored_row"])] == row["index"]


class ComposesData:
    """A policy written against the old protocol: it would transform data, which no plan says."""

    history = "last"

    def compose(self, *, real, history, size, rng, source):
        return history[-1] * 2


def test_a_policy_without_a_plan_is_refused_at_config_time():
    from collapselab.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(None, ["policy.name=tests.test_provenance:ComposesData"])
    assert err.value.problems == [
        "policy.name: policy 'tests.test_provenance:ComposesData' is not a component: a policy is "
        "a class defining plan and history; got a class without plan"]


def test_a_rows_composition_names_the_newest_generations_and_lumps_the_older(tmp_path):
    """An accumulating run's rows stay small: real, the 8 newest generations, and gen_older."""
    store = run(load_config(None, [f"out_dir={tmp_path}", "chains=2", "data.size=10",
                                   "generations=12", "policy.name=accumulate",
                                   "metrics=[variance_ratio]"]))
    row = store.metrics()[11]
    shares = {k.removeprefix("composition."): v for k, v in row.items()
              if k.startswith("composition.")}
    # generation 11 trains on real data and generations 0-10: 3-10 by name, 0-2 as gen_older
    assert sorted(shares) == sorted(["real", "gen_older", *[f"gen_{g:03d}" for g in range(3, 11)]])
    assert shares["real"] == pytest.approx(1 / 12) and shares["gen_older"] == pytest.approx(3 / 12)
    assert sum(shares.values()) == pytest.approx(1.0)
    counts: dict[str, int] = {}
    for r in provenance.listing(store, 11):  # the listing still names every origin
        counts[r["origin"]] = counts.get(r["origin"], 0) + 1
    assert counts["gen_000"] + counts["gen_001"] + counts["gen_002"] == 3 * 2 * 10
