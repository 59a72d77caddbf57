"""The Gaussian under accumulate and accumulate_subsample against exact expectations.

Generation t fits M_0 + t m rows (the real data and every earlier synthetic set), or a random B of
them. Tolerances are z = 4 standard errors (two-sided false-alarm rate 6e-5 per assertion), from the
theory's per-chain sd where it is known, from the chains otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from collapselab import theory
from tests.conftest import ROOT

Z = 4.0
ACCUMULATE = ROOT / "configs" / "theory" / "gaussian_accumulate.yaml"
SUBSAMPLE = ROOT / "configs" / "theory" / "gaussian_accumulate_subsample.yaml"


def simulate(chains, m0, m, gens, ddof, rng, budget=None, dim=1):
    """The pooled fits directly: per generation the fitted mean error ``(C, D)`` and covariance
    trace / D ``(C,)``."""
    pool = rng.standard_normal((chains, m0, dim))
    out = []
    for t in range(gens):
        n = pool.shape[1]
        train = pool
        if t and budget is not None and budget < n:
            rows = np.argpartition(rng.random((chains, n)), budget - 1, axis=1)[:, :budget]
            train = pool[np.arange(chains)[:, None], rows]
        mean = train.mean(axis=1)
        centred = train - mean[:, None]
        cov = np.einsum("cni,cnj->cij", centred, centred) / (train.shape[1] - ddof)
        out.append((mean, np.trace(cov, axis1=1, axis2=2) / dim, cov))
        new = mean[:, None] + np.einsum("cij,cnj->cni", np.linalg.cholesky(cov),
                                        rng.standard_normal((chains, m, dim)))
        pool = np.concatenate([pool, new], axis=1)
    return out


def within(values, expected, chains, sd=None):
    se = (values.std() if sd is None else sd) / np.sqrt(chains)
    return abs(values.mean() - expected) < Z * se


@pytest.mark.parametrize("variance, ddof", [("mle", 0), ("unbiased", 1)])
def test_accumulate_matches_a_direct_simulation(variance, ddof):
    """100,000 chains, M_0 = 6, m = 4, 8 generations: variance ratio (mean and sd within 2%),
    marginal variance and W2² (whose E σ_t is a quadrature) within 4 standard errors."""
    rng = np.random.default_rng(2)
    chains, gens = 100_000, 8
    pred = theory.gaussian_accumulate(gens, 6, 4, 1, variance)
    for t, (mean, var, _) in enumerate(simulate(chains, 6, 4, gens, ddof, rng)):
        assert within(var, pred["variance_ratio"].mean[t], chains, pred["variance_ratio"].sd[t]), t
        assert var.std() == pytest.approx(pred["variance_ratio"].sd[t], rel=0.02), t
        assert within(mean[:, 0] ** 2 + var, pred["marginal_variance"].mean[t], chains), t
        w2 = mean[:, 0] ** 2 + (np.sqrt(var) - 1) ** 2
        assert within(w2, pred["w2_sq"].mean[t], chains), t


@pytest.mark.parametrize("variance, ddof", [("mle", 0), ("unbiased", 1)])
def test_accumulate_kl_matches_a_direct_simulation(variance, ddof):
    """E KL from the integrals of the pooled factors' Laplace transforms, against 100,000 chains
    (M_0 = 12: E σ_t⁻⁴ finite, so the chains' standard error is a fair one); generation 0 is the
    replace formula's."""
    rng = np.random.default_rng(7)
    chains, gens = 100_000, 8
    pred = theory.gaussian_accumulate(gens, 12, 5, 1, variance)["kl"]
    assert pred.mean[0] == pytest.approx(theory.gaussian_replace(1, 12, 5, 1, variance)["kl"].mean[0])
    for t, (mean, var, _) in enumerate(simulate(chains, 12, 5, gens, ddof, rng)):
        kl = 0.5 * np.log(var) + (1 + mean[:, 0] ** 2) / (2 * var) - 0.5
        assert within(kl, pred.mean[t], chains), t


def test_accumulate_trace_sd_in_two_dimensions():
    """E(tr Q)² and E tr Q² by their linear recursion, against 50,000 simulated 2-D chains."""
    rng = np.random.default_rng(3)
    chains, gens = 50_000, 6
    pred = theory.gaussian_accumulate(gens, 7, 5, 2, "unbiased")["variance_ratio"]
    for t, (_, var, _) in enumerate(simulate(chains, 7, 5, gens, 1, rng, dim=2)):
        assert within(var, pred.mean[t], chains, pred.sd[t]), t
        assert var.std() == pytest.approx(pred.sd[t], rel=0.03), t


@pytest.mark.parametrize("variance, ddof", [("mle", 0), ("unbiased", 1)])
def test_accumulate_subsample_matches_a_direct_simulation(variance, ddof):
    rng = np.random.default_rng(4)
    chains, gens, budget = 60_000, 8, 7
    pred = theory.gaussian_accumulate_subsample(gens, 6, 4, budget, variance)
    ratio = pred["variance_ratio"]  # its sd from the pool's (E Q², E Σ(x-μ_P)⁴) recursion
    for t, (mean, var, _) in enumerate(simulate(chains, 6, 4, gens, ddof, rng, budget)):
        assert within(var, ratio.mean[t], chains, ratio.sd[t]), t
        assert within(var**2, ratio.sd[t] ** 2 + ratio.mean[t] ** 2, chains), t
        assert within(mean[:, 0] ** 2 + var, pred["marginal_variance"].mean[t], chains), t


def test_closed_forms_by_hand():
    """Generation 0 is the real fit; with the MLE the pool's mean square about μ is a martingale,
    so the marginal variance is σ² at every generation; the mean's drift stays below
    (π²/6)σ²/M_0 (Σ 1/k², as E σ_t² <= σ²), which it approaches as M_0 grows."""
    m0, sigma2 = 10, 2.0
    # 2-D: the same moments per coordinate, without the 1-D quadratures (W2, KL) of 2000 generations
    pred = theory.gaussian_accumulate(2000, m0, m0, 2, "mle", sigma2=sigma2)
    assert pred["variance_ratio"].mean[0] == pytest.approx((m0 - 1) / m0)
    step = 1 + m0 * (2 * m0 - 1) / (2 * m0 * m0)  # E Q_1 / E Q_0
    assert pred["variance_ratio"].mean[1] == pytest.approx((m0 - 1) * step / (2 * m0))
    assert np.allclose(pred["marginal_variance"].mean, sigma2)
    drift = pred["marginal_variance"].mean - sigma2 * pred["variance_ratio"].mean
    bound = np.pi**2 / 6 * sigma2 / m0
    assert np.all(drift <= bound) and drift[-1] > 0.95 * bound
    assert theory.gaussian_accumulate(1, m0, m0, 1, "mle", sigma2)["w2_sq"].mean[0] == pytest.approx(
        theory.gaussian_replace(1, m0, m0, 1, "mle", sigma2)["w2_sq"].mean[0])
    sub = theory.gaussian_accumulate_subsample(50, m0, m0, 10**6, "unbiased")
    full = theory.gaussian_accumulate(50, m0, m0, 1, "unbiased")
    assert np.allclose(sub["variance_ratio"].mean, full["variance_ratio"].mean)  # B ≥ N: no subset
    assert np.allclose(sub["marginal_variance"].mean, full["marginal_variance"].mean)


@pytest.mark.parametrize("path, gens", [(ACCUMULATE, 30), (SUBSAMPLE, 30)])
def test_runs_match_theory(run_config, path, gens):
    store = run_config(path, "chains=500", f"generations={gens}")
    rows = store.metrics()
    found = theory.agreement(rows, list(range(0, gens, 5)) + [-1])
    assert {a.metric for a in found} >= {"variance_ratio", "marginal_variance"}
    for a in found:
        assert a.passed, a


@pytest.mark.slow
def test_accumulate_config_after_100_generations(run_config):
    store = run_config(ACCUMULATE)
    for a in theory.agreement(store.metrics(), [0, 9, 49, 99]):
        assert a.passed, a


@pytest.mark.parametrize("variance, ddof", [("mle", 0), ("unbiased", 1)])
def test_accumulate_w2_sd_matches_a_direct_simulation(variance, ddof):
    """W2²'s per-chain sd (from E W2⁴: the joint recursion of E D⁴, E D²σ^j, E σ^j with the
    half-integer moments by quadrature): E W2² within 4 of the theory's standard errors and
    E W2⁴ within 4 of the chains', 50,000 chains."""
    rng = np.random.default_rng(12)
    chains, gens = 50_000, 6
    pred = theory.gaussian_accumulate(gens, 6, 4, 1, variance)["w2_sq"]
    for t, (mean, var, _) in enumerate(simulate(chains, 6, 4, gens, ddof, rng)):
        w2 = mean[:, 0] ** 2 + (np.sqrt(var) - 1) ** 2
        assert within(w2, pred.mean[t], chains, pred.sd[t]), t
        assert within(w2**2, pred.sd[t] ** 2 + pred.mean[t] ** 2, chains), t
