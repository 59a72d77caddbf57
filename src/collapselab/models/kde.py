"""Gaussian kernel density estimate, vectorised over chains.

Bandwidth follows scipy's ``gaussian_kde`` convention — kernel covariance = factor^2 x the data
covariance, with Scott's or Silverman's factor — so it adapts to the data's scale (scikit-learn's
``KernelDensity(bandwidth="scott")`` uses the bare factor, which ignores scale). Each sample is a
training point plus kernel noise, so under ``replace`` the variance *grows* by (1 + factor^2) per
generation: collapse by smearing instead of shrinking.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from collapselab.errors import ConfigError
from collapselab.gaussians import Mixture, mixture_logpdf, sample_moments
from collapselab.protocol import Model, check_data, check_n
from collapselab.registry import families


@families.register("kde")
class KDE(Model):
    """Gaussian kernel density estimate: a kernel on every training point, bandwidth scaled by
    the data covariance (scipy's convention) or fixed."""

    kinds = frozenset({"continuous"})

    def __init__(
        self,
        bandwidth: Annotated[Literal["scott", "silverman"] | float, Field(description=(
            "'scott', 'silverman', or a positive factor on the data covariance"))] = "scott",
        kernel_std: Annotated[float | None, Field(gt=0, description=(
            "a fixed kernel standard deviation h (kernel covariance h² I), in place of the "
            "bandwidth's data-scaled one; null: use bandwidth"))] = None,
    ) -> None:
        if isinstance(bandwidth, (int, float)) and bandwidth <= 0:
            raise ConfigError([f"bandwidth: must be positive; got {bandwidth}"])
        self.bandwidth = bandwidth
        self.kernel_std = kernel_std

    @classmethod
    def check_setup(cls, params: dict[str, Any], setup: Any) -> list[str]:
        """Config time: the bandwidth is scaled by the data covariance, which needs two points."""
        return setup.too_few(2, "the kde family scales its bandwidth by the data covariance")

    def factor(self, n: int, dim: int) -> float:
        if self.bandwidth == "scott":
            return float(n ** (-1.0 / (dim + 4)))
        if self.bandwidth == "silverman":
            return float((n * (dim + 2) / 4.0) ** (-1.0 / (dim + 4)))
        return float(self.bandwidth)

    @classmethod
    def working_bytes(cls, params: dict[str, Any], *, chains: int, rows: int, sample_bytes: int,
                      heldout: int) -> int:
        """Memory besides the data: a (C, D, D) covariance and, when scoring the held-out set,
        its distances to every kernel centre."""
        dim = sample_bytes // 8
        return 4 * chains * dim * dim * 8 + chains * max(heldout, rows) * rows * 8

    def fit(self, data: np.ndarray, *, rng: np.random.Generator | None = None) -> KDE:
        x = check_data(data, min_samples=2, shape="(chains, n, dim)")  # (C, n, D)
        _, cov = sample_moments(x)
        self.points_ = np.array(x, dtype=float)
        if self.kernel_std is not None:  # a fixed kernel: h² I whatever the data's scale
            self.kernel_cov_ = np.broadcast_to(self.kernel_std**2 * np.eye(x.shape[2]),
                                               cov.shape).copy()
        else:
            self.kernel_cov_ = self.factor(x.shape[1], x.shape[2]) ** 2 * cov  # (C, D, D)
        return self

    def mixture(self) -> Mixture:
        self.check_fitted()
        chains, n, dim = self.points_.shape
        covs = np.broadcast_to(self.kernel_cov_[:, None], (chains, n, dim, dim))
        return np.full((chains, n), 1.0 / n), self.points_, covs

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        n = check_n(n)
        self.check_fitted()
        chains, m, dim = self.points_.shape
        idx = rng.integers(m, size=(chains, n))
        noise = rng.standard_normal((chains, n, dim))
        chol = np.linalg.cholesky(self.kernel_cov_)  # one kernel shape per chain
        return self.points_[np.arange(chains)[:, None], idx] + noise @ np.swapaxes(chol, -1, -2)

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        return mixture_logpdf(np.asarray(data, dtype=float), self.mixture())
