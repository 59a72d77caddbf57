"""Text metrics on hand-computable data with a fake unigram model."""

from __future__ import annotations

import re

import numpy as np
import pytest

from collapselab import registry
from collapselab.errors import DataError
from collapselab.metrics import text as tm
from collapselab.metrics.base import GenerationContext
from collapselab.sources.text import BuiltinSource


class Unigram:
    """A fake model: every token independent with ``probs``; ``skip_first`` mimics gpt (k = T-1)."""

    def __init__(self, probs, skip_first=False):
        self.logp = np.log(np.asarray(probs, dtype=np.float64))
        self.skip_first = skip_first

    def score_tokens(self, x):
        lp = self.logp[np.asarray(x)]
        return lp[..., 1:] if self.skip_first else lp

    def score_samples(self, x):
        return self.score_tokens(x).mean(axis=-1)


class NoTokens:
    """A fake model with only ``score_samples``."""

    def __init__(self, inner):
        self.inner = inner

    def score_samples(self, x):
        return self.inner.score_samples(x)


class Oracle:
    """The source itself as a model: exact conditional log-probabilities."""

    def __init__(self, source, skip_first=False):
        self.source, self.skip_first = source, skip_first

    def score_tokens(self, x):
        lp = self.source.log_prob_tokens(x)
        return lp[..., 1:] if self.skip_first else lp

    def score_samples(self, x):
        return self.score_tokens(x).mean(axis=-1)


class FakeSource:
    kind = "tokens"

    def __init__(self, counts, valid=None):
        self.train_counts = np.asarray(counts)
        self.vocab_size = len(counts)
        self._valid = valid

    def valid(self, rng):
        if self._valid is None:
            raise DataError("no validation split")
        return self._valid


def context(model, synthetic, heldout, source, reference=None, real=None):
    synthetic = np.asarray(synthetic, dtype=np.int32)
    heldout = np.asarray(heldout, dtype=np.int32)
    return GenerationContext(
        gen=1,
        model=model,
        reference=reference if reference is not None else model,
        train=synthetic,
        synthetic=synthetic,
        real=synthetic if real is None else real,
        heldout=heldout,
        source=source,
        rng=np.random.default_rng(0),
    )


def test_all_registered_for_tokens():
    for name in [
        "perplexity",
        "synthetic_ppl",
        "tails",
        "rare_recall",
        "types",
        "true_kl",
        "diversity",
    ]:
        assert registry.metrics.get(name).kinds == frozenset({"tokens"})


# ---------------------------------------------------------------------------- perplexity


def test_perplexity_of_a_uniform_model_is_the_vocab_size():
    v = 7
    rng = np.random.default_rng(0)
    heldout = rng.integers(v, size=(1, 5, 8))
    valid = rng.integers(v, size=(1, 3, 8))
    ctx = context(
        Unigram(np.full(v, 1 / v)),
        np.zeros((2, 4, 8)),
        heldout,
        FakeSource(np.ones(v), valid=valid),
    )
    out = registry.metrics.build("perplexity")(ctx)
    np.testing.assert_allclose(out["ppl_test"], [7.0, 7.0])
    np.testing.assert_allclose(out["ppl_valid"], [7.0, 7.0])
    np.testing.assert_allclose(ctx.artifacts["ppl_test"], np.full((2, 5), 7.0))


def test_perplexity_by_hand_and_without_valid():
    # p = (1/2, 1/4, 1/4); block 0 1 1 0: (1/2 * 1/4 * 1/4 * 1/2) ** (-1/4) = 64 ** (1/4)
    ctx = context(
        Unigram([0.5, 0.25, 0.25]), np.zeros((1, 1, 4)), [[[0, 1, 2, 0]]], FakeSource(np.ones(3))
    )
    out = tm.Perplexity()(ctx)
    np.testing.assert_allclose(out["ppl_test"], [64**0.25])
    assert "ppl_valid" not in out


def test_synthetic_ppl_under_the_reference_model():
    ref = Unigram([0.5, 0.25, 0.25])
    synthetic = [[[0, 0], [1, 1], [0, 1], [2, 2], [0, 0]]]  # ppl 2, 4, sqrt 8, 4, 2
    ctx = context(
        Unigram(np.full(3, 1 / 3)), synthetic, [[[0, 0]]], FakeSource(np.ones(3)), reference=ref
    )
    out = tm.SyntheticPerplexity()(ctx)
    per_block = np.array([2, 4, 8**0.5, 4, 2])
    np.testing.assert_allclose(ctx.artifacts["synthetic_ppl"], [per_block])
    np.testing.assert_allclose(out["synthetic_ppl_q50"], [8**0.5])
    np.testing.assert_allclose(out["synthetic_ppl_q10"], [np.quantile(per_block, 0.1)])
    np.testing.assert_allclose(out["synthetic_ppl_q90"], [np.quantile(per_block, 0.9)])
    np.testing.assert_allclose(out["synthetic_ppl"], [np.exp(-ref.score_samples(synthetic).mean())])


# ---------------------------------------------------------------------------- tails


def test_frequency_buckets_split_train_mass_rarest_first():
    # total 32; mid-masses 0.5 1.5 3 6 12 24 -> halves: only the type holding 16 is common
    counts = np.array([16, 8, 4, 2, 1, 1])
    np.testing.assert_array_equal(tm.frequency_buckets(counts, 2), [1, 0, 0, 0, 0, 0])
    # quarters: mid * 4 / 32 = 0.06 0.19 0.38 0.75 1.5 3
    np.testing.assert_array_equal(tm.frequency_buckets(counts, 4), [3, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(tm.frequency_buckets([0, 5, 5], 2), [0, 0, 1])


@pytest.mark.parametrize("skip_first", [False, True])
def test_tails_loss_by_frequency_bucket(skip_first):
    probs = np.array([0.6, 0.3, 0.05, 0.05])
    counts = np.array([60, 30, 5, 5])  # halves: {0} common, {1, 2, 3} rare
    heldout = [[[0, 2, 0, 1], [3, 0, 0, 0]]]
    ctx = context(
        Unigram(probs, skip_first=skip_first), np.zeros((2, 1, 4)), heldout, FakeSource(counts)
    )
    out = tm.Tails(buckets=2)(ctx)
    # scored targets: all 8 tokens, or the last 3 of each block (gpt-like)
    rare = [2, 1, 3] if not skip_first else [2, 1]
    common_n = 5 if not skip_first else 4
    np.testing.assert_allclose(out["tail_nll_0"], np.full(2, -np.log(probs[rare]).mean()))
    np.testing.assert_allclose(out["tail_nll_1"], np.full(2, -np.log(0.6)))
    total = len(rare) + common_n
    np.testing.assert_allclose(
        ctx.artifacts["tail_token_share"], [len(rare) / total, common_n / total]
    )


def test_tails_skips_a_model_without_score_tokens():
    ctx = context(
        NoTokens(Unigram([0.5, 0.5])), np.zeros((1, 1, 2)), [[[0, 1]]], FakeSource([1, 1])
    )
    assert tm.Tails()(ctx) == {}


# ---------------------------------------------------------------------------- rare words


def test_rare_recall_falls_as_rare_types_vanish():
    counts = [100, 50, 3, 2, 1, 0]  # threshold 5: rare types are 2, 3, 4 (5 never seen)
    synthetic = [
        [[0, 1, 2, 3, 4, 5]],  # every rare type
        [[0, 1, 2, 3, 0, 0]],  # lost 4
        [[0, 1, 2, 0, 0, 5]],  # lost 3 and 4; 5 is not rare
    ]
    ctx = context(Unigram(np.full(6, 1 / 6)), synthetic, [[[0, 0]]], FakeSource(counts))
    out = tm.RareRecall(threshold=5)(ctx)
    np.testing.assert_allclose(out["rare_recall"], [1.0, 2 / 3, 1 / 3])
    assert out["rare_types"] == 3
    out = tm.Types()(ctx)
    np.testing.assert_array_equal(out["types"], [6, 4, 4])
    assert out["types_real"] == 5


# ---------------------------------------------------------------------------- true KL


@pytest.fixture(scope="module")
def builtin():
    return BuiltinSource(vocab_size=50, states=4, block_len=8, train_blocks=20, test_blocks=30)


@pytest.mark.parametrize("skip_first", [False, True])
def test_true_kl_is_zero_for_the_source_itself(builtin, skip_first):
    ctx = context(Oracle(builtin, skip_first), np.zeros((2, 1, 8)), builtin.heldout(), builtin)
    out = tm.TrueKL()(ctx)
    np.testing.assert_allclose(out["true_kl"], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(out["model_xent"], out["source_entropy"])


def test_true_kl_of_a_uniform_model(builtin):
    # KL = mean(log p_source) - log(1/V), on the same source samples
    ctx = context(Unigram(np.full(50, 1 / 50)), np.zeros((1, 1, 8)), builtin.heldout(), builtin)
    out = tm.TrueKL()(ctx)
    expected = builtin.log_prob(builtin.heldout()[0]).mean() + np.log(50)
    np.testing.assert_allclose(out["true_kl"], [expected])
    np.testing.assert_allclose(out["model_xent"], [np.log(50)])
    assert out["true_kl"][0] > 0
    # without score_tokens: the same through score_samples
    ctx.model = NoTokens(ctx.model)
    np.testing.assert_allclose(tm.TrueKL()(ctx)["true_kl"], [expected])
    # fresh source samples
    assert tm.TrueKL(fresh_blocks=10)(ctx)["true_kl"][0] > 0


def test_true_kl_needs_an_exact_source():
    ctx = context(Unigram([0.5, 0.5]), np.zeros((1, 1, 2)), [[[0, 1]]], FakeSource([1, 1]))
    msg = "metric 'true_kl' needs a source with exact probabilities (log_prob_tokens), such as "
    msg += "'builtin'; FakeSource has none: use 'perplexity'"
    with pytest.raises(DataError, match=re.escape(msg)):
        tm.TrueKL()(ctx)


# ---------------------------------------------------------------------------- diversity


def test_distinct_n_and_repetition_of_a_known_sequence():
    x = np.array([[1, 2, 1, 2, 1]])
    assert tm.distinct_n(x, 1) == 2 / 5
    assert tm.distinct_n(x, 2) == 2 / 4  # 12 21 12 21
    assert tm.distinct_n(x, 3) == 2 / 3  # 121 212 121
    assert tm.repetition_rate(x, 2) == 0.5
    # n-grams never cross blocks; each block's repeats are its own
    y = np.array([[1, 2, 3], [1, 2, 2]])
    assert tm.distinct_n(y, 2) == 3 / 4  # 12 23 | 12 22
    assert tm.repetition_rate(y, 1) == pytest.approx(1 / 6)
    assert np.isnan(tm.distinct_n(y, 4))


def test_unigram_kl_and_zipf_fit():
    counts = np.array([10, 5, 0, 1])
    assert tm.unigram_kl(counts, counts, 0.5) == 0.0
    assert tm.unigram_kl(counts, [0, 0, 16, 0], 0.5) > tm.unigram_kl(counts, [9, 6, 0, 1], 0.5)
    ranks = np.arange(1, 101)
    np.testing.assert_allclose(tm.zipf_exponent(1e6 * ranks**-1.3), 1.3)
    np.testing.assert_allclose(tm.zipf_exponent(np.r_[0, 0, 1e6 * ranks**-0.8]), 0.8)


def test_diversity_metric_on_the_real_pool():
    real = np.array([[[0, 1, 2, 0], [1, 1, 3, 0]]])
    counts = np.bincount(real.ravel(), minlength=5)
    synthetic = np.concatenate([real, [[[0, 0, 0, 0], [0, 0, 0, 0]]]])  # chain 1 collapsed
    ctx = context(Unigram(np.full(5, 0.2)), synthetic, [[[0, 0]]], FakeSource(counts))
    out = registry.metrics.build("diversity", {"rep_n": 2})(ctx)
    assert out["unigram_kl"][0] == 0.0 and out["unigram_kl"][1] > 0
    np.testing.assert_allclose(out["distinct_1"], [4 / 8, 1 / 8])
    np.testing.assert_allclose(out["distinct_2"], [6 / 6, 1 / 6])  # 01 12 20 | 11 13 30
    np.testing.assert_allclose(out["rep_2"], [0.0, 2 / 3])
    assert out["zipf_exponent"][0] == tm.zipf_exponent(counts)
    assert np.isnan(out["zipf_exponent"][1])  # one type: no slope
    assert out["zipf_exponent_real"] == tm.zipf_exponent(counts)
