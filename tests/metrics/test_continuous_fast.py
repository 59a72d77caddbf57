"""The continuous metrics' fast paths give the numbers of the slow, general computations they
replace: W2 and KL against ``gaussians`` on broadcast moments, tail_mass against a solve per
point and ``scipy.stats.chi2``, the closed-form held-out log-likelihood of a Gaussian (and the
collapse alarm built on it) and of a linear regression against scoring every held-out point under
every chain."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from collapselab import gaussians
from collapselab.metrics import continuous
from collapselab.metrics.alarm import CollapseAlarm, excess_test
from collapselab.metrics.base import GenerationContext
from collapselab.metrics.continuous import W1, HeldoutNLL, TailMass, gaussian_loglik
from collapselab.metrics.regression import linreg_loglik
from collapselab.models.gaussian import Gaussian
from collapselab.models.gmm import GMM
from collapselab.models.kde import KDE
from collapselab.models.linreg import LinearRegression
from collapselab.sources.distributions import Normal
from collapselab.sources.linear import Linear

RTOL = 1e-10  # rounding of a few float64 operations on O(1) numbers


def random_moments(rng: np.random.Generator, chains: int, dim: int) -> tuple[np.ndarray, ...]:
    """Chains' moments and a truth's, shared ``(1, ...)``: covariances of a few random points."""
    a = rng.standard_normal((chains, dim, dim + 3))
    b = rng.standard_normal((1, dim, dim + 2))
    return (rng.standard_normal((chains, dim)), a @ a.swapaxes(1, 2) / (dim + 3),
            rng.standard_normal((1, dim)), b @ b.swapaxes(1, 2) / (dim + 2))


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("shared", [True, False])
def test_w2_and_kl_match_the_general_formulas(dim, shared):
    rng = np.random.default_rng(dim)
    mean, cov, mean_true, cov_true = random_moments(rng, 200, dim)
    if not shared:  # a truth per chain: a source without closed form (its real pool's moments)
        mean_true, cov_true, _, _ = random_moments(rng, 200, dim)
    full = np.broadcast_to(mean_true, mean.shape), np.broadcast_to(cov_true, cov.shape)
    np.testing.assert_allclose(continuous.w2_squared(mean, cov, mean_true, cov_true),
                               gaussians.w2_squared(mean, cov, *full), rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(continuous.kl_true_model(mean_true, cov_true, mean, cov),
                               gaussians.kl_gaussian(*full, mean, cov), rtol=RTOL, atol=1e-12)


def test_kl_of_a_collapsed_chain_fails_as_the_general_formula_does():
    mean, cov, mean_true, cov_true = random_moments(np.random.default_rng(0), 3, 1)
    cov[1] = 0.0  # every sample equal: no density
    with pytest.raises(np.linalg.LinAlgError):
        gaussians.kl_gaussian(np.broadcast_to(mean_true, mean.shape),
                              np.broadcast_to(cov_true, cov.shape), mean, cov)
    with pytest.raises(np.linalg.LinAlgError):
        continuous.kl_true_model(mean_true, cov_true, mean, cov)


def gaussian_context(dim: int, chains: int = 300, n: int = 40, seed: int = 0) -> GenerationContext:
    source = Normal(dim=dim, std=1.5, mean=0.3, heldout_size=500)
    rng = np.random.default_rng(seed)
    real = source.real(n, chains, rng)
    reference = Gaussian().fit(real)
    model = Gaussian().fit(reference.sample(n, rng))
    return GenerationContext(gen=1, model=model, reference=reference, train=real,
                             synthetic=model.sample(n, rng), real=real,
                             heldout=source.heldout(rng), source=source, rng=rng)


def tail_mass_by_solves(ctx: GenerationContext, sigmas: list[float]) -> dict[str, object]:
    """The metric as it was: a linear solve per sample, ``stats.chi2.sf`` per threshold."""
    mean, cov = continuous.true_moments(ctx)
    diff = ctx.synthetic - mean[:, None, :]
    d2 = (diff * np.linalg.solve(cov[:, None], diff[..., None])[..., 0]).sum(-1)
    out: dict[str, object] = {}
    for k in sigmas:
        out[f"tail_mass_{k:g}sigma"] = (d2 > k**2).mean(axis=1)
        out[f"tail_mass_{k:g}sigma_real"] = float(stats.chi2.sf(k**2, ctx.synthetic.shape[-1]))
    return out


@pytest.mark.parametrize("dim", [1, 3])
def test_tail_mass_matches_a_solve_per_sample(dim):
    ctx = gaussian_context(dim)
    sigmas = [1.0, 2.0, 3.0]
    fast, slow = TailMass(sigmas)(ctx), tail_mass_by_solves(ctx, sigmas)
    assert fast.keys() == slow.keys()
    for key in slow:
        np.testing.assert_allclose(fast[key], slow[key], rtol=1e-12)
    assert 0 < fast["tail_mass_1sigma"].mean() < 1  # the thresholds cut through the samples


@pytest.mark.parametrize("dim", [1, 2])
def test_gaussian_heldout_loglik_is_the_mean_of_the_points_scores(dim):
    ctx = gaussian_context(dim)
    closed = gaussian_loglik(ctx.model, ctx.heldout)
    np.testing.assert_allclose(closed, ctx.model.score(ctx.heldout_chains()), rtol=RTOL)
    np.testing.assert_allclose(HeldoutNLL()(ctx)["heldout_nll"], -closed)


def test_other_families_are_scored_point_by_point():
    x = np.random.default_rng(0).standard_normal((2, 60, 1))
    held = x[:1, :10]
    assert gaussian_loglik(KDE().fit(x), held) is None
    assert gaussian_loglik(GMM(n_components=2).fit(x, rng=np.random.default_rng(0)), held) is None
    singular = Gaussian().fit(np.ones((2, 5, 1)))  # a collapsed chain: no closed form
    assert gaussian_loglik(singular, held) is None

    class Tempered(Gaussian):  # scores otherwise than its mixture: its own scores count
        def score_samples(self, data: np.ndarray) -> np.ndarray:
            return super().score_samples(data) / 2

    assert gaussian_loglik(Tempered().fit(x), held) is None
    assert gaussian_loglik(Gaussian().fit(x), held) is not None


def test_the_paired_alarm_reads_chain_means_in_closed_form():
    ctx = gaussian_context(1, chains=200, n=10)
    heldout = ctx.heldout_chains()
    by_points = ctx.reference.score_samples(heldout) - ctx.model.score_samples(heldout)  # (C, n)
    slow = excess_test(by_points, alpha=0.01, margin=0.01, bootstrap=100, rng=ctx.rng)
    fast = CollapseAlarm()(ctx)
    assert fast.keys() == slow.keys()
    for key in slow:
        assert fast[key] == pytest.approx(slow[key], rel=1e-9, abs=1e-12)
    assert fast["alarm_excess_nll"] > 0  # a refit to 10 samples is worse on real data


@pytest.mark.parametrize("noise", [1.0, 1e-4])  # small noise: residuals far below the labels
@pytest.mark.parametrize("design", ["fixed", "isotropic"])
def test_linreg_heldout_nll_is_the_mean_of_the_points_scores(noise, design):
    source = Linear(features=5, noise=noise, heldout_size=400)
    rng = np.random.default_rng(1)
    real = source.real(30, 100, rng)
    model = LinearRegression(design=design).fit(real)
    ctx = GenerationContext(gen=1, model=model, reference=model, train=real, synthetic=real,
                            real=real, heldout=source.heldout(rng), source=source, rng=rng)
    closed = linreg_loglik(model, ctx.heldout)
    np.testing.assert_allclose(closed, model.score(ctx.heldout_chains()), rtol=1e-9)
    np.testing.assert_allclose(HeldoutNLL()(ctx)["heldout_nll"], -closed)

    class Robust(LinearRegression):  # scores otherwise: its own scores count
        def score_samples(self, data: np.ndarray) -> np.ndarray:
            return np.maximum(super().score_samples(data), -10.0)

    assert linreg_loglik(Robust(design=design).fit(real), ctx.heldout) is None


def test_w1_takes_the_real_quantiles_once_per_heldout_set():
    metric = W1()
    for seed in (0, 1):  # a new held-out set is a new reference
        ctx = gaussian_context(1, chains=20, n=50, seed=seed)
        for _ in range(2):
            levels = (np.arange(50) + 0.5) / 50
            by_hand = np.abs(np.sort(ctx.synthetic[..., 0], axis=1)
                             - np.quantile(ctx.heldout[0, :, 0], levels)).mean(axis=1)
            np.testing.assert_allclose(metric(ctx)["w1"], by_hand, rtol=1e-15)
            ctx.synthetic = ctx.model.sample(50, ctx.rng)  # the next generation's samples
