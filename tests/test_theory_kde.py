"""The KDE under replace against its exact recursion: the model variance is the points' scatter plus
the kernel, so with a kernel scaled by the data (the kde family: Scott, Silverman or a fixed factor f)
it changes by (n-1)/n + f² a generation (geometric growth for Scott), and with a fixed kernel
variance h² it settles at (n-1)h². Tolerances are z = 4 standard errors (two-sided false-alarm
rate 6e-5 per assertion), from the theory's per-chain sd where it is known, from the chains otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from collapselab import theory
from tests.conftest import ROOT

Z = 4.0
SCOTT = ROOT / "configs" / "theory" / "kde_scott_replace.yaml"
FIXED_H = ROOT / "configs" / "theory" / "kde_fixed_h_replace.yaml"
FIXED_FACTOR = ROOT / "configs" / "theory" / "kde_fixed_factor_replace.yaml"


def simulate(chains, n, gens, rng, factor=None, kernel_var=0.0):
    """A 1-D KDE refitted to its own n samples, directly: (gens, chains) model variances and
    marginal variances (E (X - μ)² of a draw from the model)."""
    x = rng.standard_normal((chains, n))
    variances, spreads = np.empty((gens, chains)), np.empty((gens, chains))
    for t in range(gens):
        kernel = kernel_var if factor is None else factor**2 * x.var(axis=1, ddof=1)
        variances[t] = x.var(axis=1) + kernel
        spreads[t] = x.mean(axis=1) ** 2 + variances[t]
        picked = x[np.arange(chains)[:, None], rng.integers(n, size=(chains, n))]
        x = picked + np.sqrt(kernel)[..., None] * rng.standard_normal((chains, n)) \
            if factor is not None else picked + np.sqrt(kernel) * rng.standard_normal((chains, n))
    return variances, spreads


@pytest.mark.parametrize("factor, kernel_var", [(8 ** -0.2, 0.0), (None, 0.5)])
def test_recursion_matches_a_direct_simulation(factor, kernel_var):
    """100,000 chains of 8 points, 6 fits: means within 4 standard errors, the sd within 3%."""
    rng = np.random.default_rng(0)
    chains, n, gens = 100_000, 8, 6
    pred = theory.kde_replace(np.full(gens, n), None if factor is None else np.full(gens, factor),
                              kernel_var=kernel_var)
    variances, spreads = simulate(chains, n, gens, rng, factor, kernel_var)
    for t in range(gens):
        sem = variances[t].std() / np.sqrt(chains)
        assert abs(variances[t].mean() - pred["variance_ratio"].mean[t]) < Z * sem, t
        assert variances[t].std() == pytest.approx(pred["variance_ratio"].sd[t], rel=0.03), t
        sem = spreads[t].std() / np.sqrt(chains)
        assert abs(spreads[t].mean() - pred["marginal_variance"].mean[t]) < Z * sem, t


def test_fixed_kernel_settles_at_n_minus_one_h_squared():
    """E S²_{t+1} = ((n-1)/n)(E S²_t + h²): the points' variance tends to (n-1)h², the model's
    to n h², whatever the start."""
    n, h2, gens = 10, 0.05, 400
    pred = theory.kde_replace(np.full(gens, n), None, kernel_var=h2)["variance_ratio"]
    assert pred.mean[-1] == pytest.approx(n * h2, rel=1e-6)  # S² + h² = (n-1)h² + h²
    assert pred.mean[1] == pytest.approx((n - 1) / n * pred.mean[0] + h2)


def test_scott_grows_geometrically_by_n_minus_one_over_n_plus_f_squared():
    n, gens = 100, 20
    f = n ** (-1 / 5)
    mean = theory.kde_replace(np.full(gens, n), np.full(gens, f))["variance_ratio"].mean
    assert np.allclose(mean[1:] / mean[:-1], (n - 1) / n + f**2)
    assert (n - 1) / n + f**2 == pytest.approx(1.1485, abs=1e-4)


@pytest.mark.parametrize("path, gens", [(SCOTT, 10), (FIXED_FACTOR, 20), (FIXED_H, 30)])
def test_kde_run_matches_theory(run_config, path, gens):
    store = run_config(path, "chains=500", f"generations={gens}")
    rows = store.metrics()
    assert rows[-1]["variance_ratio.theory"] > 0
    for a in theory.agreement(rows, list(range(0, gens, 3))):
        assert a.passed, a
    for row in rows[:5]:  # the exact per-chain sd is the chains' own spread
        assert row["variance_ratio.theory_se"] == pytest.approx(row["variance_ratio.sem"], rel=0.2)


def test_kde_theory_in_two_dimensions_gives_the_trace_mean_without_sd(run_config):
    store = run_config(SCOTT, "chains=300", "generations=6", "data.dim=2")
    rows = store.metrics()
    assert "variance_ratio.theory_se" not in rows[-1]  # the 1-D fourth-moment recursion only
    for a in theory.agreement(rows, [0, 3, 5]):
        assert a.passed, a
