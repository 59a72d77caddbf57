"""The Gaussian under real_fraction and fresh against direct simulations and runs.

Each generation after the first fits k real rows (a random k of the fixed M real rows, or k new
ones) and n rows of the previous model's samples. Tolerances are z = 4 standard errors (two-sided
false-alarm rate 6e-5 per assertion), from the theory's per-chain sd where it gives one, from the
chains otherwise.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from collapselab import theory
from collapselab.theory.mixing import real_block_moments
from tests.conftest import ROOT

Z = 4.0
CONFIGS = ROOT / "configs" / "theory"


def simulate(policy, chains, m0, k, n, gens, ddof, rng, dim=1):
    """The fits directly: per generation the mean error ``(C, D)`` and the covariance trace / D."""
    x = rng.standard_normal((chains, m0, dim))
    out = []
    train = x
    for _ in range(gens):
        mean = train.mean(axis=1)
        centred = train - mean[:, None]
        cov = np.einsum("cni,cnj->cij", centred, centred) / (train.shape[1] - ddof)
        out.append((mean, np.trace(cov, axis1=1, axis2=2) / dim))
        if policy == "fresh":
            real = rng.standard_normal((chains, k, dim))
        else:
            rows = np.argpartition(rng.random((chains, m0)), k - 1, axis=1)[:, :k]
            real = x[np.arange(chains)[:, None], rows]
        synthetic = mean[:, None] + np.einsum("cij,cnj->cni", np.linalg.cholesky(cov),
                                              rng.standard_normal((chains, n, dim)))
        train = np.concatenate([real, synthetic], axis=1)
    return out


def within(values, expected, sd=None):
    se = (values.std() if sd is None else sd) / np.sqrt(len(values))
    return abs(values.mean() - expected) < Z * se


def test_the_real_block_moments_are_those_of_every_subset():
    """E u², E S_R, E u⁴, E S_R², E S_R u² of a random k of M values, by enumerating the subsets."""
    m0, k = 7, 3
    d = np.random.default_rng(0).standard_normal(m0) ** 3  # skewed, heavy-tailed values
    d -= d.mean()
    subsets = np.array(list(combinations(range(m0), k)))
    u = d[subsets].mean(axis=1)
    s = ((d[subsets] - u[:, None]) ** 2).sum(axis=1)
    basis = np.array([np.mean(d**2) ** 2, np.mean(d**4)])
    g1, a1, u4, sr2, su = real_block_moments("real_fraction", k, m0)
    m2 = np.mean(d**2)
    np.testing.assert_allclose([g1 * m2, a1 * m2, u4 @ basis, sr2 @ basis, su @ basis],
                               [np.mean(u**2), np.mean(s), np.mean(u**4), np.mean(s**2),
                                np.mean(s * u**2)], rtol=1e-12)


@pytest.mark.parametrize("policy", ["real_fraction", "fresh"])
@pytest.mark.parametrize("variance, ddof", [("mle", 0), ("unbiased", 1)])
def test_moments_match_a_direct_simulation(policy, variance, ddof):
    """50,000 chains, M = 12, k = 3 (finite-population terms large), 6 generations: E σ², E σ⁴,
    E D², E D⁴, E D²σ² within 4 standard errors; the variance ratio with the theory's sd."""
    chains, m0, gens = 50_000, 12, 6
    mom = theory.mixing_moments(policy, gens, m0, 3, 9, ddof)
    pred = theory.gaussian_mixing(policy, gens, m0, 0.25, 9, 1, variance)["variance_ratio"]
    rng = np.random.default_rng(11)
    for t, (mean, var) in enumerate(simulate(policy, chains, m0, 3, 9, gens, ddof, rng)):
        d2 = mean[:, 0] ** 2
        assert within(var, pred.mean[t], pred.sd[t]), t
        for key, values in [("s2", var), ("s4", var**2), ("d2", d2), ("d4", d2**2),
                            ("d2s2", d2 * var)]:
            assert within(values, mom[key][t]), (t, key)


def test_each_coordinate_is_the_one_dimensional_chain():
    """In 2-D the trace's mean is the 1-D recursion (each diagonal entry is a 1-D fit)."""
    chains, gens = 50_000, 5
    pred = theory.gaussian_mixing("real_fraction", gens, 10, 0.3, 10, 2, "mle")
    assert pred["variance_ratio"].sd is None and "w2_sq" not in pred
    rng = np.random.default_rng(5)
    for t, (_, var) in enumerate(simulate("real_fraction", chains, 10, 3, 7, gens, 0, rng, dim=2)):
        assert within(var, pred["variance_ratio"].mean[t]), t


def test_the_fixed_point():
    """The recursion settles at the fixed point; for fresh with the unbiased fit it is
    φ = k((N+n)(N-1) + n) / (k(N-1)(N+n) - n²) (docs/explanation/theory-policies.md)."""
    for policy in ("real_fraction", "fresh"):
        for ddof in (0, 1):
            mom = theory.mixing_moments(policy, 3000, 50, 5, 45, ddof)
            fixed = theory.mixing_fixed_point(policy, 50, 5, 45, ddof)
            assert (mom["s2"][-1], mom["d2"][-1]) == pytest.approx(fixed, rel=1e-9)
    big, k, n = 50, 5, 45
    closed = k * ((big + n) * (big - 1) + n) / (k * (big - 1) * (big + n) - n * n)
    assert theory.mixing_fixed_point("fresh", big, k, n, 1)[0] == pytest.approx(closed)
    # no real rows: replace; only real rows: nothing to predict
    assert theory.gaussian_mixing("fresh", 4, 20, 0.0, 20, 1, "mle")["variance_ratio"].mean[-1] == \
        pytest.approx((19 / 20) ** 4)
    assert theory.gaussian_mixing("fresh", 4, 20, 1.0, 20, 1, "mle") == {}


@pytest.mark.parametrize("name", ["gaussian_real_fraction.yaml", "gaussian_fresh.yaml"])
def test_runs_match_theory_and_w2_stays_below_its_bound(run_config, name):
    store = run_config(CONFIGS / name, "chains=400")
    found = theory.agreement(store.metrics(), [0, 10, 25, -1])
    assert {a.metric for a in found} == {"variance_ratio", "marginal_variance", "w2_sq"}
    for a in found:
        assert a.passed, a
        assert (a.bound == "upper") == (a.metric == "w2_sq")
    assert all(a.se_from == "theory" for a in found if a.metric != "w2_sq")
    w2 = [a for a in found if a.metric == "w2_sq"]
    assert all(a.measured < a.theory for a in w2) and "upper bound" in w2[0].theory_text


def simulate_linreg(chains, d, t0, k, n, gens, sigma, sigma_m, rng):
    """Least squares refitted each generation to k new real rows and n rows it labelled itself,
    all inputs fresh N(0, I): ‖ŵ_t - w*‖² per generation."""
    w = np.full(d, 1 / np.sqrt(d))
    x = rng.standard_normal((chains, t0, d))
    y = x @ w + sigma * rng.standard_normal((chains, t0))
    out = []
    for _ in range(gens):
        fit = np.linalg.solve(np.einsum("cni,cnj->cij", x, x), np.einsum("cni,cn->ci", x, y)[..., None])
        fit = fit[..., 0]
        out.append(((fit - w) ** 2).sum(axis=1))
        real, synthetic = rng.standard_normal((chains, k, d)), rng.standard_normal((chains, n, d))
        x = np.concatenate([real, synthetic], axis=1)
        y = np.concatenate([real @ w + sigma * rng.standard_normal((chains, k)),
                            np.einsum("cni,ci->cn", synthetic, fit)
                            + sigma_m * rng.standard_normal((chains, n))], axis=1)
    return out


def test_linreg_fresh_matches_a_direct_simulation(run_config):
    """E‖ŵ_t - w*‖² = α E‖ŵ_(t-1) - w*‖² + (kσ² + nσ_m²)/N · d/(N-d-1) (isotropic design, fixed
    model noise), 50,000 chains at d = 3, N = 12, k = 3; α is 1 without real rows, 0 with only."""
    pred = theory.linreg_prediction(8, 3, 12, 12, 1.0, 0.7, "isotropic", "fresh", 0.25)["excess_risk"]
    rng = np.random.default_rng(8)
    for t, risk in enumerate(simulate_linreg(50_000, 3, 12, 3, 9, 8, 1.0, 0.7, rng)):
        assert within(risk, pred.mean[t]), t
    replace = theory.linreg_prediction(5, 3, 12, 12, 1.0, 1.0, "isotropic", "replace")["excess_risk"]
    none = theory.linreg_prediction(5, 3, 12, 12, 1.0, 1.0, "isotropic", "fresh", 0.0)["excess_risk"]
    np.testing.assert_allclose(none.mean, replace.mean)
    only = theory.linreg_prediction(5, 3, 12, 12, 1.0, 1.0, "isotropic", "fresh", 1.0)
    np.testing.assert_allclose(only["excess_risk"].mean, 3 / (12 - 3 - 1))  # all real: σ²d/(N-d-1)
    # no closed form for a fixed design or real_fraction
    assert theory.linreg_prediction(5, 3, 12, 12, 1.0, 1.0, "fixed", "fresh", 0.25) == {}
    store = run_config(CONFIGS / "linreg_fresh.yaml", "chains=500")
    for a in theory.agreement(store.metrics(), [0, 10, -1]):
        assert a.passed, a


def test_the_report_shows_the_w2_bound_as_a_bound(run_config, tmp_path):
    from collapselab.report import write_report

    store = run_config(CONFIGS / "gaussian_real_fraction.yaml", "chains=50", "generations=4")
    page = write_report([store.root], tmp_path / "page.html").read_text()
    assert "<td>&lt;= " in page and "(upper bound)</td>" in page
