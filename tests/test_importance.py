"""Importance resampling: weights p_target / p_model, resampled per chain with replacement. Where the
truth is known it holds a replace run at the truth (the variance ratio stays flat) while selection
(keeping the top share by a score) drives it down."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import collapselab.components  # noqa: F401
from collapselab import provenance, registry
from collapselab.cli import app
from collapselab.config import load_config
from collapselab.curation import CurationContext, Weights, curate, log_ratio, resample, weight_stats
from collapselab.loop import run


def test_systematic_resampling_draws_each_row_floor_or_ceil_of_size_times_its_weight():
    log_w = np.log([[1.0, 3.0, 1.0, 4.0]]) - [[0, 0, np.inf, 0]]  # normalised: 1/8, 3/8, 0, 4/8
    rows = resample(log_w, 8, np.random.default_rng(0), "systematic")
    assert np.bincount(rows[0], minlength=4).tolist() == [1, 3, 0, 4]


def test_multinomial_resampling_is_unbiased():
    log_w = np.log(np.tile([[1.0, 3.0]], (2000, 1)))
    rows = resample(log_w, 10, np.random.default_rng(1), "multinomial")
    # share of row 1: 0.75, se sqrt(0.75 * 0.25 / 20000) = 0.003
    assert abs((rows == 1).mean() - 0.75) < 4 * 0.0031


def test_weight_stats_by_hand():
    # weights 1, 1, 2 and a dropped row: ESS = (1+1+2)^2 / (1+1+4) = 16/6; cv^2 = 3/ESS - 1 = 1/8
    stats = weight_stats(np.log([[1.0, 1.0, 2.0, 1.0]]) - [[0, 0, 0, np.inf]])
    assert stats["ess"] == pytest.approx(16 / 6)
    assert stats["ess_share"] == pytest.approx(16 / 18)
    assert stats["weight_cv"] == pytest.approx(np.sqrt(1 / 8))
    assert stats["max_weight"] == pytest.approx(0.5)
    assert stats["log_weight_sd"] == pytest.approx(np.std(np.log([1.0, 1.0, 2.0])))


def test_log_ratio_of_token_blocks_aligns_positions_and_skips_the_prompt():
    target = np.ones((1, 1, 6))  # every position 0..5
    model = np.zeros((1, 1, 5))  # positions 1..5 (the first token not scored)
    assert log_ratio(target, model, 6, skip=0)[0, 0] == 5  # the positions both score
    assert log_ratio(target, model, 6, skip=3)[0, 0] == 3  # positions 3, 4, 5
    assert log_ratio(np.full((1, 1), 10.0), model + 1, 6, skip=2)[0, 0] == 6  # a block score


def test_curate_resamples_with_replacement_and_records_ess():
    x = np.arange(8.0).reshape(1, 8, 1)
    f = [("dedup_free", lambda data, ctx: Weights(np.log([[1, 1, 1, 1, 1, 1, 1, 9.0]]), 8))]
    ctx = CurationContext(gen=1, model=None, reference=None, rng=np.random.default_rng(0))
    data, report, detail = curate(f, x, ctx)
    assert np.bincount(detail.index[0], minlength=8)[7] == 5  # 9/16 of 8 rows: 4.5 -> 4 or 5
    assert data[0, :, 0].tolist() == detail.index[0].tolist()
    assert report["kept"] == 1.0 and report["kept.dedup_free"] == pytest.approx(4 / 8)
    assert report["ess.dedup_free"] == pytest.approx(16**2 / (7 + 81))


def test_a_mask_before_the_resampler_removes_rows_from_the_draw():
    x = np.arange(6.0).reshape(1, 6, 1)
    keep_even = ("even", lambda d, ctx: (d[..., 0] % 2 == 0))
    uniform = ("w", lambda d, ctx: Weights(np.zeros(d.shape[:2]), 6))
    ctx = CurationContext(gen=1, model=None, reference=None, rng=np.random.default_rng(0))
    _, report, detail = curate([keep_even, uniform], x, ctx)
    assert set(detail.index[0].tolist()) == {0, 2, 4} and report["ess.w"] == pytest.approx(3)


def _gaussian(tmp_path, name, curation, generations=50, chains=1000):
    cfg = load_config("configs/gaussian/replace.yaml", [
        f"out_dir={tmp_path}", f"name={name}", f"generations={generations}", f"chains={chains}",
        "metrics=[variance_ratio]", "keep_samples=none", f"curation={curation}"])
    return run(cfg)


def test_importance_resampling_holds_the_gaussian_variance_ratio_flat_while_top_k_collapses(tmp_path):
    m = 100
    store = _gaussian(tmp_path, "ir", "[{name: importance_resample}]")
    rows = store.metrics()
    per_chain = np.stack([store.artifacts(g)["chain.variance_ratio"] for g in range(1, 50)])  # (49, C)
    # no trend: the second half's mean minus the first half's, per chain (chains are independent);
    # 4 standard errors of that difference across the 1000 chains
    diff = per_chain[25:].mean(axis=0) - per_chain[:24].mean(axis=0)
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / np.sqrt(diff.size), diff.mean()
    # level: the MLE's (M-1)/M and the self-normalised weighted variance's bias, of order 1/ESS
    # (ESS about 97 of 100 here), explain the gap to 1; replace alone decays like 0.99^t (0.61)
    ess = np.mean([r["ess.importance_resample"] for r in rows[1:]])
    level = per_chain.mean()
    assert 0.9 < ess / m < 1
    assert 1 - 1 / m - 2 / ess < level < 1 - 1 / m + 4 * per_chain.mean(axis=0).std() / np.sqrt(1000)
    top = _gaussian(tmp_path, "top", "[{name: verifier, top: 0.5}]", generations=10).metrics()
    assert top[1]["variance_ratio"] < 0.2 and top[-1]["variance_ratio"] < 1e-3  # selection narrows


def test_provenance_lists_rows_resampled_more_than_once(tmp_path):
    store = _gaussian(tmp_path, "prov", "[{name: importance_resample, scheme: multinomial}]",
                      generations=2, chains=2)
    kept = store.provenance(0)["kept"].astype(int)  # (chains, 100): rows of generation 0's samples
    assert kept.shape == (2, 100) and len(np.unique(kept[0])) < 100  # some rows repeat
    rows = provenance.listing(store, 1)
    assert [r["index"] for r in rows if r["chain"] == 0] == kept[0].tolist()
    weights = store.provenance(0)["score.importance_resample"]
    assert rows[0]["score.importance_resample"] == pytest.approx(float(weights[0, kept[0, 0]]))
    out = CliRunner().invoke(app, ["provenance", str(store.root), "-g", "1"])
    assert out.exit_code == 0, out.output
    assert "gen_000" in out.output


def test_importance_weights_on_the_builtin_language_are_recorded_with_their_ess(tmp_path):
    cfg = load_config("configs/curation/importance_language.yaml", [
        f"out_dir={tmp_path}", "generations=2", "data.size=100", "synthetic_size=200",
        "metrics=[perplexity]"])
    row = run(cfg).metrics()[0]
    assert 0 < row["ess.importance_resample"] <= 200
    assert row["log_weight_sd.importance_resample"] > 0
    assert 0 < row["kept.importance_resample"] <= 1


def test_a_truthless_source_is_refused_by_name():
    f = registry.filters.build("importance_resample", {})
    ctx = CurationContext(gen=1, model=None, reference=None, rng=np.random.default_rng(0),
                          source=object())
    with pytest.raises(ValueError, match=r"source object has no exact log_prob or mixture truth"):
        f.log_target(np.zeros((1, 2, 1)), ctx)
