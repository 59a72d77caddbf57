"""Multivariate Gaussian fitted by maximum likelihood (or with the unbiased covariance).

The family the theory is written for (Shumailov et al. §4.2): under ``replace`` with the MLE the
expected variance ratio after t fits is ((M-1)/M)^t, so every chain eventually collapses to a point.
Vectorised over chains: fitting 1000 chains is one ``einsum``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from collapselab.gaussians import Mixture, mixture_logpdf, sample_mixture, sample_moments
from collapselab.protocol import Model, check_data, check_n
from collapselab.registry import families


@families.register("gaussian")
class Gaussian(Model):
    """Multivariate Gaussian fitted by maximum likelihood or the unbiased covariance (the paper's
    §4.2 model)."""

    kinds = frozenset({"continuous"})

    def __init__(
        self,
        variance: Annotated[Literal["mle", "unbiased"], Field(description=(
            "covariance estimator: 'mle' divides by M (biased low: collapses), "
            "'unbiased' by M - 1"))] = "mle",
    ) -> None:
        self.variance = variance

    @classmethod
    def check_setup(cls, params: dict[str, Any], setup: Any) -> list[str]:
        """Config time: one sample has no spread (the MLE covariance of one point is 0)."""
        return setup.too_few(2, "the gaussian family estimates a covariance")

    @classmethod
    def working_bytes(cls, params: dict[str, Any], *, chains: int, rows: int, sample_bytes: int,
                      heldout: int) -> int:
        """Memory besides the data: a few (C, D, D) float64 covariances (estimate, Cholesky,
        the metrics' products)."""
        dim = sample_bytes // 8
        return 4 * chains * dim * dim * 8

    def fit(self, data: np.ndarray, *, rng: np.random.Generator | None = None) -> Gaussian:
        x = check_data(data, min_samples=2, shape="(chains, n, dim)")  # (C, M, D)
        ddof = 0 if self.variance == "mle" else 1
        self.mean_, self.cov_ = sample_moments(x, ddof)  # (C, D), (C, D, D)
        return self

    def mixture(self) -> Mixture:
        self.check_fitted()
        return np.ones((len(self.mean_), 1)), self.mean_[:, None], self.cov_[:, None]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        n = check_n(n)
        return sample_mixture(self.mixture(), n, rng)

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        return mixture_logpdf(np.asarray(data, dtype=float), self.mixture())
