"""Gaussian mixture fitted by EM, sampled by collapselab.

Two engines fit the same model: ``sklearn`` (``GaussianMixture``, one chain at a time: the
reference) and ``numpy`` (the default: the same EM — greedy k-means++ seeding, Lloyd's k-means, then
scikit-learn's E-step/M-step loop to the same tolerance on the mean log-likelihood — batched over
all chains in one array program). Each EM step is two batched matrix products with the points'
features ``[1, y, vec(y y^T)]`` (``features``): the M-step's counts, sums and second moments of every
component, and the E-step's Mahalanobis distances; from the same start it takes scikit-learn's
steps to rounding (``tests/models/test_gmm.py``).

scikit-learn's ``sample()`` rebuilds its RNG from ``random_state`` on every call, so two calls repeat
their draws; inside a generational loop that silently correlates generations. We therefore only use
scikit-learn to *fit*, seeding each fit from the generator passed in, and sample from the fitted
parameters with that generator ourselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import Field

from collapselab.errors import NumericalError
from collapselab.gaussians import Mixture, mixture_logpdf, sample_mixture
from collapselab.protocol import Model, check_data, check_n
from collapselab.registry import families

if TYPE_CHECKING:
    from sklearn.mixture import GaussianMixture


@families.register("gmm")
class GMM(Model):
    """Gaussian mixture fitted by EM (batched over chains, or scikit-learn per chain)."""

    kinds = frozenset({"continuous"})

    def __init__(
        self,
        n_components: Annotated[int, Field(ge=1, le=100, description="mixture components")] = 2,
        covariance_type: Annotated[Literal["full", "diag", "spherical", "tied"], Field(
            description="scikit-learn covariance_type")] = "full",
        max_iter: Annotated[int, Field(ge=1, description="EM iterations per fit")] = 100,
        tol: Annotated[float, Field(gt=0, description="EM convergence tolerance")] = 1e-3,
        reg_covar: Annotated[float, Field(ge=0, description="added to covariance diagonals")] = 1e-6,
        engine: Annotated[Literal["numpy", "sklearn"], Field(description=(
            "'numpy': EM batched over chains; 'sklearn': GaussianMixture per chain"))] = "numpy",
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.max_iter = max_iter
        self.tol = tol
        self.reg_covar = reg_covar
        self.engine = engine

    @classmethod
    def check_setup(cls, params: dict[str, Any], setup: Any) -> list[str]:
        """Config time: each component needs at least one sample."""
        k = params["n_components"]
        return setup.too_few(k, f"the gmm family fits {k} components (model.n_components)")

    @classmethod
    def working_bytes(cls, params: dict[str, Any], *, chains: int, rows: int, sample_bytes: int,
                      heldout: int) -> int:
        """Memory besides the data: EM's (C, 1 + D + D^2, N) point features (``features``), its
        (C, K, N) responsibilities a few times over and the (C, K, D, D) covariances."""
        dim, k = sample_bytes // 8, params["n_components"]
        return (chains * rows * (1 + dim + dim * dim) * 8 + 3 * chains * rows * k * 8
                + 4 * chains * k * dim * dim * 8)  # fmt: skip

    def fit(self, data: np.ndarray, *, rng: np.random.Generator) -> GMM:
        x = check_data(data, min_samples=self.n_components)  # (C, N, D)
        if self.engine == "numpy" and self.covariance_type == "full":
            (self.weights_, self.means_, self.covariances_, self.n_iter_,
             self.lower_bound_) = batched_em(
                np.asarray(x, dtype=float), self.n_components, rng, max_iter=self.max_iter,
                tol=self.tol, reg_covar=self.reg_covar)
            return self
        from sklearn.mixture import GaussianMixture  # imported by this engine only

        seeds = rng.integers(2**31 - 1, size=len(x))
        try:
            fits = [
                GaussianMixture(
                    self.n_components, covariance_type=self.covariance_type,
                    max_iter=self.max_iter, tol=self.tol, reg_covar=self.reg_covar,
                    random_state=int(seed),
                ).fit(chain)
                for chain, seed in zip(x, seeds, strict=True)
            ]
        except ValueError as exc:  # "Fitting the mixture model failed because some components
            raise NumericalError(str(exc)) from exc  # have ill-defined empirical covariance"
        dim = x.shape[2]
        self.weights_ = np.stack([f.weights_ for f in fits])  # (C, K)
        self.means_ = np.stack([f.means_ for f in fits])  # (C, K, D)
        self.covariances_ = np.stack([_full_covariances(f, dim) for f in fits])  # (C, K, D, D)
        return self

    def mixture(self) -> Mixture:
        self.check_fitted()
        return self.weights_, self.means_, self.covariances_

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        n = check_n(n)
        return sample_mixture(self.mixture(), n, rng)

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        return mixture_logpdf(np.asarray(data, dtype=float), self.mixture())


def _full_covariances(fit: GaussianMixture, dim: int) -> np.ndarray:
    cov, kind, k = fit.covariances_, fit.covariance_type, fit.n_components
    if kind == "full":
        return cov
    if kind == "tied":
        return np.broadcast_to(cov, (k, dim, dim)).copy()
    if kind == "diag":
        return np.einsum("kd,de->kde", cov, np.eye(dim))
    return cov[:, None, None] * np.eye(dim)  # spherical


def batched_em(
    x: np.ndarray, k: int, rng: np.random.Generator, *, max_iter: int, tol: float, reg_covar: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full-covariance EM for every chain at once: ``x (C, N, D)`` -> weights ``(C, K)``, means
    ``(C, K, D)``, covariances ``(C, K, D, D)``, iterations ``(C,)``, final mean log-likelihood
    ``(C,)`` (scikit-learn's ``lower_bound_``).

    Seeding as scikit-learn's ``init_params="kmeans"``: greedy k-means++ centres, Lloyd's k-means
    (scikit-learn's stopping rule), its hard labels as the first responsibilities; then
    scikit-learn's EM loop (:func:`em`).
    """
    shift = x.mean(axis=1, keepdims=True)  # (C, 1, D)
    feats = features(x - shift)
    centres = kmeans_pp(x, k, rng) - shift
    labels = lloyd(feats, centres, tol=1e-4 * x.var(axis=1).mean(axis=1))  # KMeans' tol=1e-4
    first = m_step(feats, one_hot(labels, k), x.shape[2], reg_covar)
    weights, means, covs, iters, lower = _em(feats, *first, max_iter=max_iter, tol=tol,
                                             reg_covar=reg_covar)  # fmt: skip
    return weights, means + shift, covs, iters, lower


def em(
    x: np.ndarray, weights: np.ndarray, means: np.ndarray, covs: np.ndarray, *, max_iter: int,
    tol: float, reg_covar: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's EM loop for every chain at once, from initial parameters; returns as
    :func:`batched_em`."""
    shift = x.mean(axis=1, keepdims=True)
    weights, means, covs, iters, lower = _em(features(x - shift), weights, means - shift, covs,
                                             max_iter=max_iter, tol=tol, reg_covar=reg_covar)  # fmt: skip
    return weights, means + shift, covs, iters, lower


def _em(
    feats: np.ndarray, weights: np.ndarray, means: np.ndarray, covs: np.ndarray, *, max_iter: int,
    tol: float, reg_covar: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """E-step, M-step, until the mean log-likelihood (of the parameters before the M-step)
    changes by less than ``tol``; a chain that stopped keeps its parameters while others go on."""
    chains, dim = means.shape[0], means.shape[2]
    lower = np.full(chains, -np.inf)
    active = np.ones(chains, dtype=bool)
    iters = np.zeros(chains, dtype=int)
    for _ in range(max_iter):
        resp, new_lower = e_step(feats, weights, means, covs)
        new = m_step(feats, resp, dim, reg_covar)
        weights, means, covs = (np.where(active.reshape(-1, *[1] * (a.ndim - 1)), a, b)
                                for a, b in zip(new, (weights, means, covs), strict=True))  # fmt: skip
        change = np.abs(new_lower - lower)
        lower = np.where(active, new_lower, lower)
        iters += active
        active &= ~(change < tol)
        if not active.any():
            break
    return weights, means, covs, iters, lower


def features(y: np.ndarray) -> np.ndarray:
    """``[1, y, vec(y y^T)]`` of every point ``y (C, N, D)``, points last: ``(C, 1 + D + D^2, N)``.

    Every statistic EM needs is one matrix product with these: ``resp @ F^T`` gives the counts,
    sums and second moments of all components (the M-step), ``A @ F`` the Mahalanobis distances
    (the E-step). Points last keeps reductions over the few components fast. ``y`` is centred
    on the chain mean, which keeps the moment form's cancellation small.
    """
    chains, n, dim = y.shape
    yt = y.transpose(0, 2, 1)  # (C, D, N)
    outer = (yt[:, :, None] * yt[:, None]).reshape(chains, dim * dim, n)
    return np.concatenate([np.ones((chains, 1, n)), yt, outer], axis=1)


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    """``(C, N)`` labels -> ``(C, K, N)`` hard responsibilities."""
    return (labels[:, None, :] == np.arange(k)[:, None]).astype(float)


def m_step(
    feats: np.ndarray, resp: np.ndarray, dim: int, reg_covar: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's ``_m_step`` (full covariances) from responsibilities ``(C, K, N)`` of
    ``dim``-dimensional points: weights, means, covariances (plus ``reg_covar`` on the diagonal)."""
    moments = resp @ feats.transpose(0, 2, 1)  # (C, K, F): counts, sums, second moments
    nk = moments[..., 0] + 10 * np.finfo(float).eps  # (C, K)
    means = moments[..., 1 : 1 + dim] / nk[..., None]
    second = moments[..., 1 + dim :].reshape(*nk.shape, dim, dim) / nk[..., None, None]
    covs = second - means[..., :, None] * means[..., None, :]
    covs += reg_covar * np.eye(dim)
    return nk / nk.sum(axis=-1, keepdims=True), means, covs


def e_step(
    feats: np.ndarray, weights: np.ndarray, means: np.ndarray, covs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities ``(C, K, N)`` and mean log-likelihood ``(C,)`` of the points in
    ``feats``. Raises ``LinAlgError`` for a covariance that is not positive definite."""
    chains, dim = means.shape[0], means.shape[2]
    chol = np.linalg.cholesky(covs)  # (C, K, D, D)
    prec = np.linalg.inv(covs)
    pm = (prec @ means[..., None])[..., 0]  # (C, K, D)
    # (y - m)^T P (y - m) = m^T P m - 2 (P m) . y + vec(P) . vec(y y^T)
    coef = np.concatenate([(pm * means).sum(-1, keepdims=True), -2 * pm,
                           prec.reshape(chains, -1, dim * dim)], axis=-1)  # fmt: skip
    logdet = 2 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)  # (C, K)
    log_prob = -0.5 * (coef @ feats)  # (C, K, N)
    log_prob += (np.log(weights) - 0.5 * (logdet + dim * np.log(2 * np.pi)))[..., None]
    top = log_prob.max(axis=1, keepdims=True)  # log-sum-exp over components
    resp = np.exp(log_prob - top)
    total = resp.sum(axis=1, keepdims=True)
    resp /= total
    return resp, (np.log(total) + top).mean(axis=(1, 2))


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ centres ``(C, K, D)``, as scikit-learn's ``KMeans``: the first uniform;
    each next one the best of ``2 + log K`` candidates drawn proportional to the squared distance
    to the nearest centre so far (the one leaving the least total squared distance)."""
    chains, n, dim = x.shape
    rows = np.arange(chains)[:, None]
    trials = 2 + int(np.log(k))
    centres = np.empty((chains, k, dim))
    centres[:, 0] = x[rows[:, 0], rng.integers(n, size=chains)]
    d2 = ((x - centres[:, :1]) ** 2).sum(-1)  # (C, N)
    for j in range(1, k):
        cdf = np.cumsum(d2, axis=1)
        u = rng.random((chains, trials)) * cdf[:, -1:]
        picks = (cdf[:, None, :] < u[..., None]).sum(axis=-1).clip(max=n - 1)  # (C, T)
        cand = x[rows, picks]  # (C, T, D)
        dist = np.minimum(d2[:, None], ((x[:, None] - cand[:, :, None]) ** 2).sum(-1))  # (C, T, N)
        best = dist.sum(axis=-1).argmin(axis=-1)  # (C,)
        d2 = dist[rows[:, 0], best]
        centres[:, j] = cand[rows[:, 0], best]
    return centres


def lloyd(feats: np.ndarray, centres: np.ndarray, tol: np.ndarray, max_iter: int = 300) -> np.ndarray:
    """Batched Lloyd's k-means of the points in ``feats`` (see :func:`features`) from ``centres
    (C, K, D)``: the labels ``(C, N)`` of the final centres.

    A chain stops, as in scikit-learn's ``KMeans``, once no label changes or its centres move by
    at most ``tol (C,)`` in total squared distance; the chains still going continue as a smaller
    batch (the slowest of a batch takes about twice the mean number of iterations).
    """
    k, dim = centres.shape[1:]
    lin = feats[:, : 1 + dim]  # (C, 1 + D, N): [1, y]

    def nearest(lin: np.ndarray, centres: np.ndarray) -> np.ndarray:
        # argmin_k |y - c_k|^2 = argmin_k |c_k|^2 - 2 c_k . y
        coef = np.concatenate([(centres**2).sum(-1, keepdims=True), -2 * centres], axis=-1)
        return (coef @ lin).argmin(axis=1)  # (C, N)

    labels = nearest(lin, centres)
    out = labels.copy()
    going = np.arange(len(centres))  # the chains still iterating: lin, centres, labels are theirs
    for _ in range(max_iter):
        sums = one_hot(labels, k) @ lin.transpose(0, 2, 1)  # (C, K, 1 + D): counts, sums
        counts = sums[..., :1]
        # an emptied cluster keeps its centre (scikit-learn relocates it; rare for k = 2)
        new = np.where(counts > 0, sums[..., 1:] / np.maximum(counts, 1), centres)
        shift = ((new - centres) ** 2).sum(axis=(1, 2))
        centres = new
        new_labels = nearest(lin, centres)
        done = (shift <= tol) | (new_labels == labels).all(axis=1)
        labels = new_labels
        if done.any():
            out[going[done]] = labels[done]
            keep = ~done
            going, lin, centres, labels, tol = (a[keep] for a in (going, lin, centres, labels, tol))
            if not going.size:
                break
    else:
        out[going] = labels
    return out
