"""Vectorised Gaussian-mixture maths shared by the continuous families and metrics.

A mixture batch is ``(weights (C, K), means (C, K, D), covs (C, K, D, D))`` — one mixture per chain.
A single Gaussian is a mixture with K = 1; a Gaussian KDE is one with a component per training point.
"""

from __future__ import annotations

import numpy as np

Mixture = tuple[np.ndarray, np.ndarray, np.ndarray]

LOG_2PI = np.log(2 * np.pi)


def _chunk(per_chain_cost: int, budget: int = 2**26) -> int:
    """Chains per chunk such that a chunk's temporaries hold about ``budget`` numbers."""
    return max(1, budget // max(per_chain_cost, 1))


def mixture_logpdf(x: np.ndarray, mixture: Mixture) -> np.ndarray:
    """Log-density of points ``x (C, n, D)`` under each chain's mixture: ``(C, n)``."""
    from scipy.special import logsumexp  # here, not at import: listing components stays fast

    weights, means, covs = mixture
    chains, n, dim = x.shape
    k = means.shape[1]
    out = np.empty((chains, n))
    step = _chunk(n * k * dim)
    for lo in range(0, chains, step):  # chunk over chains to bound memory: (c, n, K, D) temporaries
        sl = slice(lo, lo + step)
        chol = np.linalg.cholesky(covs[sl])  # (c, K, D, D)
        whiten = np.linalg.inv(chol)  # small (D, D) inverses: cheaper than a batched solve per point
        logdet = 2 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)  # (c, K)
        diff = x[sl, :, None, :] - means[sl, None, :, :]  # (c, n, K, D)
        z = np.einsum("ckij,cnkj->cnki", whiten, diff)  # whitened residuals
        comp = -0.5 * ((z**2).sum(-1) + logdet[:, None, :] + dim * LOG_2PI)  # (c, n, K)
        if k == 1:
            out[sl] = comp[..., 0]
            continue
        with np.errstate(divide="ignore"):
            out[sl] = logsumexp(comp + np.log(weights[sl, None, :]), axis=-1)
    return out


def sample_mixture(mixture: Mixture, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws per chain: ``(C, n, D)``; component choice and noise from ``rng`` only."""
    weights, means, covs = mixture
    chains, k, dim = means.shape
    chol = np.linalg.cholesky(covs)  # (C, K, D, D)
    if k == 1:  # a single Gaussian: no component draw, one batched matmul
        noise = rng.standard_normal((chains, n, dim))
        return means[:, :1] + noise @ np.swapaxes(chol[:, 0], -1, -2)
    cdf = np.cumsum(weights, axis=1)
    u = rng.random((chains, n)) * cdf[:, -1:]
    comp = (u[:, :, None] >= cdf[:, None, :]).sum(-1).clip(max=k - 1)  # inverse CDF per chain
    noise = rng.standard_normal((chains, n, dim))
    # colour the noise with every component's factor, then keep the drawn one: K small matmuls
    # instead of gathering a (D, D) factor per sample
    coloured = np.einsum("ckij,cnj->cnki", chol, noise)  # (C, n, K, D)
    rows = np.arange(chains)[:, None]
    picked = np.take_along_axis(coloured, comp[:, :, None, None], axis=2)[:, :, 0]
    return means[rows, comp] + picked


def sample_moments(x: np.ndarray, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-chain mean ``(C, D)`` and covariance ``(C, D, D)`` of samples ``x (C, n, D)``."""
    mean = x.mean(axis=1)
    centred = x - mean[:, None, :]
    return mean, np.einsum("cni,cnj->cij", centred, centred) / (x.shape[1] - ddof)


def moments(mixture: Mixture) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(C, D)`` and covariance ``(C, D, D)`` of each chain's mixture."""
    weights, means, covs = mixture
    mean = np.einsum("ck,ckd->cd", weights, means)
    centred = means - mean[:, None, :]
    cov = np.einsum("ck,ckij->cij", weights, covs) + np.einsum(
        "ck,cki,ckj->cij", weights, centred, centred
    )
    return mean, cov


def _cross_term(a: Mixture, b: Mixture) -> np.ndarray:
    """``sum_ij wa_i wb_j N(mu_a_i; mu_b_j, S_a_i + S_b_j)`` = ∫ p_a p_b, per chain."""
    wa, ma, sa = a
    wb, mb, sb = b
    cov = sa[:, :, None] + sb[:, None, :]  # (C, Ka, Kb, D, D)
    diff = ma[:, :, None, :] - mb[:, None, :, :]
    sign, logdet = np.linalg.slogdet(cov)
    quad = (diff * np.linalg.solve(cov, diff[..., None])[..., 0]).sum(-1)
    dens = np.exp(-0.5 * (quad + logdet + ma.shape[-1] * LOG_2PI))
    return np.einsum("ci,cj,cij->c", wa, wb, dens)


def l2_distance(a: Mixture, b: Mixture) -> np.ndarray:
    """Closed-form L2 distance ``sqrt(∫(p_a - p_b)^2)`` between mixtures, per chain."""
    sq = _cross_term(a, a) + _cross_term(b, b) - 2 * _cross_term(a, b)
    return np.sqrt(np.maximum(sq, 0.0))


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(m)
    return (vecs * np.sqrt(np.clip(vals, 0, None))[..., None, :]) @ np.swapaxes(vecs, -1, -2)


def w2_squared(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> np.ndarray:
    """Squared 2-Wasserstein distance between Gaussians, batched over a leading axis."""
    root_b = _sqrtm_psd(cov_b)
    cross = _sqrtm_psd(root_b @ cov_a @ root_b)
    trace = np.trace(cov_a + cov_b - 2 * cross, axis1=-2, axis2=-1)
    return ((mean_a - mean_b) ** 2).sum(-1) + np.maximum(trace, 0.0)


def kl_gaussian(mean_p: np.ndarray, cov_p: np.ndarray, mean_q: np.ndarray, cov_q: np.ndarray) -> np.ndarray:
    """KL(N_p || N_q), batched over a leading axis."""
    dim = mean_p.shape[-1]
    solve = np.linalg.solve(cov_q, cov_p)
    diff = mean_q - mean_p
    quad = (diff * np.linalg.solve(cov_q, diff[..., None])[..., 0]).sum(-1)
    logdet = np.linalg.slogdet(cov_q)[1] - np.linalg.slogdet(cov_p)[1]
    return 0.5 * (np.trace(solve, axis1=-2, axis2=-1) + quad - dim + logdet)
