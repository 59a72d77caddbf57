"""The categorical chain under accumulate, real_fraction and fresh, and its forgetting times, against
direct simulations (50,000 chains) and runs. Tolerances: z = 4 standard errors of the chain mean
(two-sided false-alarm rate 6e-5 per assertion), from the theory's exact per-chain sd where it
gives one, from the chains otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from collapselab import theory
from collapselab.metrics.forgetting import counts_per_chain
from tests.conftest import ROOT

Z = 4.0
P = np.array([0.5, 0.3, 0.15, 0.05])
CONFIGS = ROOT / "configs" / "theory"


def simulate(policy, chains, m0, k, n, gens, rng):
    """Each chain's training-set counts ``(C, K)`` per generation, fitted and resampled directly."""
    x = rng.choice(len(P), size=(chains, m0), p=P)
    counts = counts_per_chain(x, len(P))
    out, size = [counts], m0
    for _ in range(1, gens):
        synthetic = rng.multinomial(n, counts / size)
        if policy == "fresh":
            real = rng.multinomial(k, P, size=chains)
        else:
            rows = np.argpartition(rng.random((chains, m0)), k - 1, axis=1)[:, :k]
            real = counts_per_chain(np.take_along_axis(x, rows, axis=1), len(P))
        counts, size = real + synthetic, k + n
        out.append(counts)
    return out


def within(values, expected, sd=None):
    se = (values.std() if sd is None else sd) / np.sqrt(len(values))
    return abs(values.mean() - expected) < Z * se


@pytest.mark.parametrize("policy", ["fresh", "real_fraction"])
def test_presence_and_support_match_a_direct_simulation(policy):
    chains, m0, gens = 50_000, 20, 12
    pred = theory.categorical_policy(policy, P, m0, gens, 0.1)
    for t, counts in enumerate(simulate(policy, chains, m0, 2, 18, gens, np.random.default_rng(1))):
        present = counts > 0
        support = pred["support_size"]
        assert within(present.sum(axis=1), support.mean[t], support.sd[t]), t
        assert present.sum(axis=1).std() == pytest.approx(support.sd[t], rel=0.03), t
        for s in range(len(P)):
            assert within(present[:, s], pred[f"present_{s}"].mean[t],
                          pred[f"present_{s}"].sd[t]), (t, s)
    # immigration keeps every state: presence settles above its absorption probability p_k
    assert pred["present_3"].mean[-1] > 5 * P[3]


def test_accumulate_never_forgets_and_its_risk_stays_within_pi2_over_6():
    m0, gens = 20, 30
    pred = theory.categorical_policy("accumulate", P, m0, gens)
    np.testing.assert_allclose(pred["present_3"].mean, 1 - (1 - P[3]) ** m0)
    risk = theory.categorical_accumulate_risk(P, m0, m0, gens)
    # direct simulation of the pooled frequencies: 50,000 chains
    rng = np.random.default_rng(2)
    counts = counts_per_chain(rng.choice(len(P), size=(50_000, m0), p=P), len(P))
    for t in range(8):
        err = ((counts / counts.sum(axis=1, keepdims=True) - P) ** 2).sum(axis=1)
        assert within(err, risk[t]), t
        counts = counts + rng.multinomial(m0, counts / counts.sum(axis=1, keepdims=True))


def test_expected_loss_generation_matches_the_chain():
    """E[min(first generation missing from the generated data, G)] for a state of real count c
    under replace (M = m = 20), against 50,000 simulated count chains per c."""
    m0, gens, chains = 20, 25, 50_000
    counts = np.array([1, 3, 8, 15])
    expected = theory.expected_loss_generation(counts, m0, m0, gens)
    rng = np.random.default_rng(3)
    for c, want in zip(counts, expected, strict=True):
        count, first = np.full(chains, c), np.full(chains, gens)
        for t in range(gens):
            count = rng.binomial(m0, count / m0)  # generation t's samples
            first[(first == gens) & (count == 0)] = t
        assert within(first, want), c
    assert np.all(np.diff(expected) > 0)  # commoner states are forgotten later
    # a large training set: the Poisson(1) branching process for c << N
    big = theory.expected_loss_generation(counts, 1000, 1000, gens)
    np.testing.assert_allclose(theory.branching_loss_generation(counts, gens), big, rtol=0.01)


def test_pi2_over_6_on_every_family_with_an_accumulate_theory():
    """Dey & Donoho (2024): with m = M_0 added a generation, the accumulate risk of the mean
    parameters stays within π²/6 of generation 0's, on every family the theory covers."""
    from collapselab.theory.base import _PREDICTORS

    bound = np.pi**2 / 6
    gaussian = theory.gaussian_accumulate(2000, 10, 10, 2, "mle")  # 2-D: no quadratures
    drift = gaussian["marginal_variance"].mean - gaussian["variance_ratio"].mean  # E(μ_t - μ)²
    linreg = theory.linreg_prediction(2000, 10, 50, 50, 1.0, 1.0, "fixed", "accumulate")
    risks = {
        "gaussian": drift,
        "linreg": linreg["excess_risk"].mean,
        "categorical": theory.categorical_accumulate_risk(P, 20, 20, 2000),
    }
    families = {family for family, _, policy in _PREDICTORS if policy == "accumulate"}
    assert families == set(risks), "a family with an accumulate theory has no π²/6 check here"
    for family, risk in risks.items():
        assert np.all(risk <= bound * risk[0] * (1 + 1e-12)), family
        assert risk[-1] > 0.95 * bound * risk[0] or family == "categorical", family


@pytest.mark.parametrize("name", ["categorical_accumulate.yaml", "categorical_real_fraction.yaml"])
def test_runs_match_theory(run_config, name):
    store = run_config(CONFIGS / name, "chains=1500", "generations=20")
    found = theory.agreement(store.metrics(), [0, 5, -1])
    assert {a.metric for a in found} >= {"support_size", "present_3"}
    for a in found:
        assert a.passed, a
