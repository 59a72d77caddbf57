"""Curation filters: each one's mask and scores, and their effect on a collapse curve."""

from __future__ import annotations

import numpy as np
import pytest

import collapselab.components  # noqa: F401
from collapselab import registry
from collapselab.config import ConfigError, load_config
from collapselab.curation import CurationContext, curate
from collapselab.loop import run


def ctx(**kw):
    return CurationContext(gen=1, model=None, reference=None, rng=np.random.default_rng(0), **kw)


def build(name, **params):
    return registry.filters.build(name, params)


def test_dedup_drops_exact_and_near_duplicates_of_earlier_blocks_only():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 500, (1, 6, 40))
    x[0, 2] = x[0, 0]  # exact
    x[0, 4] = x[0, 1]
    x[0, 4, -1] = 499  # near: 37 of 38 trigrams shared
    mask, sim = build("dedup", threshold=0.8)(x, ctx())
    assert mask.tolist() == [[True, True, False, True, False, True]]
    assert sim[0, 4] > 0.8 and sim[0, 3] < 0.2


def test_length_and_repetition_filters():
    x = np.array([[[1, 2, 3, 4, 5, 6], [7, 7, 7, 7, 7, 7], [1, 2, 0, 4, 5, 6]]])
    keep, share = build("repetition", min_distinct=0.5)(x, ctx())
    assert keep.tolist() == [[True, False, True]] and share[0, 1] == pytest.approx(0.2)
    keep, length = build("length", min_tokens=3, eos_id=0)(x, ctx())
    assert length.tolist() == [[6, 6, 2]] and keep.tolist() == [[True, True, False]]


def test_verifier_keeps_the_top_fraction_by_a_named_callable():
    x = np.arange(10.0).reshape(1, 10, 1)
    f = build("verifier", top=0.3, fn="tests.test_curation:neg_first")
    keep, score = f(x, ctx())
    assert keep[0].nonzero()[0].tolist() == [0, 1, 2]


def neg_first(data, ctx):
    return -data[..., 0]


def test_detector_resampling_prefers_samples_a_detector_calls_real():
    x = np.zeros((1, 1000, 1))
    f = build("detector_resample", a=4.0, keep=0.2, detector="tests.test_curation:half_synthetic")
    keep, p = f(x, ctx())
    assert keep.sum() == 200
    # weights 1 (p=0) vs 1/16 (p=0.75): nearly all kept samples come from the first half
    assert keep[0, :500].sum() > 180


def half_synthetic(data, ctx):
    return np.where(np.arange(data.shape[1]) < data.shape[1] // 2, 0.0, 0.75)[None]


def test_curate_records_each_filter_and_the_rows_kept():
    x = np.arange(20).reshape(2, 10, 1)
    f = [("verifier", build("verifier", top=0.5, fn="tests.test_curation:neg_first"))]
    data, report, detail = curate(f, x, ctx())
    assert report == {"kept.verifier": 0.5, "kept": 0.5}
    assert sorted(detail.index[1].tolist()) == [0, 1, 2, 3, 4]
    assert detail.scores["verifier"].shape == (2, 10)


def test_bad_filter_params_name_the_value():
    with pytest.raises(ConfigError, match=r"curation\[0\]: fn must look like "
                                          r"'package.module:function'; got 'nocolon'"):
        load_config(None, ["data.source=builtin", "model.family=ngram",
                           "curation=[{name: verifier, fn: nocolon}]"])


def _curve(tmp_path, name, curation):
    cfg = load_config(None, [
        f"out_dir={tmp_path}", f"name={name}", "generations=4", "chains=2",
        "data.source=builtin", "data.size=200", "model.family=ngram", "model.prompt_tokens=4",
        "model.top_p=0.9", "metrics=[perplexity]", f"curation={curation}"])
    return np.array([r["ppl_test"] for r in run(cfg).metrics()])


def test_perplexity_band_and_verifier_each_change_the_collapse_curve(tmp_path):
    base = _curve(tmp_path, "none", "[]")
    band = _curve(tmp_path, "band", "[{name: perplexity_band, low: 0.5}]")
    verifier = _curve(tmp_path, "verifier",
                      "[{name: verifier, top: 0.5, fn: 'collapselab.curation:true_loglik'}]")
    assert base[-1] > base[0]  # collapse without curation
    for curve in (band, verifier):
        assert curve[0] == base[0]  # generation 0 is trained on the same real data
        assert abs(curve[-1] / base[-1] - 1) > 0.02, (base, curve)
