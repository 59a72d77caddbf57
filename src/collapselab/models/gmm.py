"""Gaussian mixture fitted by EM (scikit-learn's ``GaussianMixture``), sampled by collapselab.

scikit-learn's ``sample()`` rebuilds its RNG from ``random_state`` on every call, so two calls repeat
their draws; inside a generational loop that silently correlates generations. We therefore only use
scikit-learn to *fit*, seeding each fit from the generator passed in, and sample from the fitted
parameters with that generator ourselves.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field
from sklearn.mixture import GaussianMixture

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
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.max_iter = max_iter
        self.tol = tol
        self.reg_covar = reg_covar

    def fit(self, data: np.ndarray, *, rng: np.random.Generator) -> GMM:
        x = check_data(data, min_samples=self.n_components)  # (C, N, D)
        seeds = rng.integers(2**31 - 1, size=len(x))
        fits = [
            GaussianMixture(
                self.n_components, covariance_type=self.covariance_type, max_iter=self.max_iter,
                tol=self.tol, reg_covar=self.reg_covar, random_state=int(seed),
            ).fit(chain)
            for chain, seed in zip(x, seeds, strict=True)
        ]
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
