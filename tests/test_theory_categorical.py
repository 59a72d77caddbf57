"""The categorical track against the exact Wright-Fisher theory (issue 15, item 2).

Each state's count is a two-allele Wright-Fisher chain started at Binomial(M_0, p_k), so
P(state k present at generation t), E[support size] and E[lost states] are exact, with exact
per-chain sds. Tolerances are z = 4 standard errors of the chain mean (two-sided false-alarm rate
6e-5 per assertion).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from collapselab import theory
from tests.conftest import ROOT

Z = 4.0
CONFIG = ROOT / "configs" / "theory" / "categorical_wright_fisher.yaml"
P = [0.5, 0.3, 0.15, 0.05]


def test_support_and_presence_match_wright_fisher_by_generation(run_config):
    store = run_config(CONFIG, "chains=4000", "generations=60")
    rows = store.metrics()
    for row in rows[::6]:
        for key in ("support_size", "lost_states", *(f"present_{k}" for k in range(4))):
            assert abs(row[key] - row[f"{key}.theory"]) < Z * row[f"{key}.theory_se"], (key, row)
        # the exact per-chain sd (pairs of states merged into one chain) is the chains' spread
        assert row["support_size.theory_se"] == pytest.approx(row["support_size.sem"], rel=0.1)
    assert rows[-1]["support_size.theory"] + rows[-1]["lost_states.theory"] == pytest.approx(4.0)


@pytest.mark.parametrize("n", [1, 7, 100, 2000])
def test_binomial_pmf_is_scipys(n):
    p = np.r_[0.0, 1.0, 1e-9, 1 - 1e-9, np.random.default_rng(n).random(20)]
    expected = stats.binom.pmf(np.arange(n + 1)[None], n, p[:, None])
    np.testing.assert_allclose(theory.binomial_pmf(n, p), expected, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("sizes", [[20, 20, 20, 20, 20], [30, 12, 12, 12, 25, 25, 7], [15], [15, 40]])
def test_absence_is_the_chain_of_binomial_transitions(sizes):
    """The Wright-Fisher absences equal the distribution pushed through every generation's
    transition matrix T[i, j] = Binomial(j; M_t, i / M_(t-1)), also when the sizes change."""
    dist = stats.binom.pmf(np.arange(sizes[0] + 1)[None], sizes[0], np.array(P)[:, None])
    expected = [dist[:, 0]]
    for a, b in zip(sizes, sizes[1:], strict=False):
        dist = dist @ stats.binom.pmf(np.arange(b + 1)[None], b, (np.arange(a + 1) / a)[:, None])
        expected.append(dist[:, 0])
    got = theory.wright_fisher_absent(np.array(P), np.array(sizes))
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-10, atol=1e-14)


def test_first_generation_loses_a_state_with_probability_one_minus_p_to_the_m():
    m = 20
    pred = theory.categorical_replace(np.array(P), np.full(3, m))
    absent = (1 - np.array(P)) ** m
    assert pred["lost_states"].mean[0] == pytest.approx(absent.sum())
    for k in range(4):
        assert pred[f"present_{k}"].mean[0] == pytest.approx(1 - absent[k])


def test_presence_tends_to_the_absorption_probability():
    """Absorbed in k <=> present forever: P(present_k at t) decreases to p_k."""
    pred = theory.categorical_replace(np.array(P), np.full(2000, 10))
    for k, p in enumerate(P):
        curve = pred[f"present_{k}"].mean
        assert (np.diff(curve) <= 1e-12).all()
        assert curve[-1] == pytest.approx(p, abs=1e-6)


def test_real_and_synthetic_sizes_may_differ_against_a_direct_simulation():
    """M_0 = 30 real draws, then m = 7 synthetic ones: the rectangular first step and the square
    ones, against 200,000 directly simulated chains."""
    rng = np.random.default_rng(2)
    chains, m0, m, gens = 200_000, 30, 7, 8
    p = np.array([0.7, 0.2, 0.06, 0.04])
    pred = theory.categorical_replace(p, np.concatenate([[m0], np.full(gens - 1, m)]))
    counts = rng.multinomial(m0, p, size=chains)
    for t in range(gens):
        if t:
            counts = rng.multinomial(m, counts / counts.sum(axis=1, keepdims=True))
        support = (counts > 0).sum(axis=1)
        se = pred["support_size"].sd[t] / np.sqrt(chains)
        assert abs(support.mean() - pred["support_size"].mean[t]) < Z * se
        assert support.std() == pytest.approx(pred["support_size"].sd[t], rel=0.02)


def test_states_of_zero_probability_are_never_counted_and_large_sizes_are_skipped(run_config):
    store = run_config(None, "model.family=categorical", "data.source=categorical", "chains=50",
                       "data.probs=[0.6, 0.0, 0.4]", "data.size=12", "generations=3",
                       "metrics=[support, state_presence]")
    row = store.metrics()[0]
    assert "present_1" not in row and "present_1.theory" not in row
    expected = 1 - 0.4**12 + 1 - 0.6**12
    assert row["support_size.theory"] == pytest.approx(expected)
    store = run_config(None, "name=big", "model.family=categorical", "data.source=categorical",
                       f"data.size={theory.WF_MAX_SIZE + 1}", "generations=2",
                       "metrics=[support]")
    assert "support_size.theory" not in store.metrics()[0]
