"""Gaussian mixture fitted by EM, sampled by collapselab.

Two engines fit the same model: ``sklearn`` (``GaussianMixture``, one chain at a time: the
reference) and ``numpy`` (the same EM — k-means++-style seeding, then EM to the same tolerance on the
mean log-likelihood — batched over all chains in one array program: the default, several times
faster for one chain and far faster for many).

scikit-learn's ``sample()`` rebuilds its RNG from ``random_state`` on every call, so two calls repeat
their draws; inside a generational loop that silently correlates generations. We therefore only use
scikit-learn to *fit*, seeding each fit from the generator passed in, and sample from the fitted
parameters with that generator ourselves.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture

from collapselab.errors import NumericalError
from collapselab.gaussians import Mixture, mixture_logpdf, sample_mixture
from collapselab.protocol import Model, check_data, check_n
from collapselab.registry import families


@families.register("gmm")
class GMM(Model):
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
        """Memory besides the data: (C, K, D, D) covariances a few times over and the (C, N, K)
        responsibilities of EM."""
        dim, k = sample_bytes // 8, params["n_components"]
        return 4 * chains * k * dim * dim * 8 + 2 * chains * rows * k * 8

    def fit(self, data: np.ndarray, *, rng: np.random.Generator) -> GMM:
        x = check_data(data, min_samples=self.n_components)  # (C, N, D)
        if self.engine == "numpy" and self.covariance_type == "full":
            self.weights_, self.means_, self.covariances_, self.n_iter_ = batched_em(
                np.asarray(x, dtype=float), self.n_components, rng, max_iter=self.max_iter,
                tol=self.tol, reg_covar=self.reg_covar)
            return self
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full-covariance EM for every chain at once. ``x (C, N, D)`` -> weights, means, covs, iters.

    Seeding as scikit-learn's ``init_params="kmeans"``: k-means++ centres (first uniform, the
    next ones proportional to squared distance), Lloyd's k-means to convergence, its hard labels as
    the first responsibilities. Chains stop updating once their mean
    log-likelihood improves by less than ``tol`` (scikit-learn's criterion).
    """
    chains, n, dim = x.shape
    rows = np.arange(chains)
    centres = np.empty((chains, k, dim))
    centres[:, 0] = x[rows, rng.integers(n, size=chains)]
    d2 = ((x - centres[:, :1]) ** 2).sum(-1)  # (C, N) squared distance to the nearest centre
    for j in range(1, k):
        cdf = np.cumsum(d2, axis=1)
        pick = (rng.random((chains, 1)) * cdf[:, -1:] > cdf).sum(axis=1).clip(max=n - 1)
        centres[:, j] = x[rows, pick]
        d2 = np.minimum(d2, ((x - centres[:, j : j + 1]) ** 2).sum(-1))
    nearest = lloyd(x, centres)
    resp = np.eye(k)[nearest]  # (C, N, K) hard responsibilities
    eye = reg_covar * np.eye(dim)
    lower = np.full(chains, -np.inf)
    active = np.ones(chains, dtype=bool)
    iters = np.zeros(chains, dtype=int)
    weights = means = covs = None
    for _ in range(max_iter + 1):
        # M-step from the current responsibilities
        nk = resp.sum(axis=1) + 10 * np.finfo(float).eps  # (C, K)
        new_means = np.einsum("cnk,cnd->ckd", resp, x) / nk[..., None]
        diff = x[:, :, None, :] - new_means[:, None]  # (C, N, K, D)
        new_covs = np.einsum("cnk,cnki,cnkj->ckij", resp, diff, diff) / nk[..., None, None] + eye
        new_weights = nk / n
        if weights is None:
            weights, means, covs = new_weights, new_means, new_covs
        else:  # converged chains keep their parameters
            weights = np.where(active[:, None], new_weights, weights)
            means = np.where(active[:, None, None], new_means, means)
            covs = np.where(active[:, None, None, None], new_covs, covs)
        # E-step: log responsibilities and the mean log-likelihood
        chol = np.linalg.cholesky(covs)
        z = np.einsum("ckij,cnkj->cnki", np.linalg.inv(chol), x[:, :, None, :] - means[:, None])
        logdet = 2 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)
        log_prob = -0.5 * ((z**2).sum(-1) + logdet[:, None] + dim * np.log(2 * np.pi))
        log_prob += np.log(weights)[:, None]
        norm = logsumexp(log_prob, axis=-1)  # (C, N)
        new_lower = norm.mean(axis=1)
        done = active & (np.abs(new_lower - lower) < tol)
        iters += active
        active &= ~done
        lower = np.where(done | active, new_lower, lower)
        if not active.any():
            break
        resp = np.where(active[:, None, None], np.exp(log_prob - norm[..., None]), resp)
    return weights, means, covs, iters


def lloyd(x: np.ndarray, centres: np.ndarray, max_iter: int = 300) -> np.ndarray:
    """Batched Lloyd's k-means from ``centres (C, K, D)``: the final labels ``(C, N)``."""
    k = centres.shape[1]
    labels = None
    for _ in range(max_iter):
        new = ((x[:, :, None, :] - centres[:, None]) ** 2).sum(-1).argmin(-1)  # (C, N)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        onehot = np.eye(k)[labels]  # (C, N, K)
        counts = onehot.sum(axis=1)  # (C, K)
        sums = np.einsum("cnk,cnd->ckd", onehot, x)
        # an emptied cluster keeps its centre (scikit-learn relocates it; rare for k = 2)
        centres = np.where(counts[..., None] > 0, sums / np.maximum(counts, 1)[..., None], centres)
    return labels
