"""Known distributions as real data: what the theory track's closed forms are written for."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from collapselab.errors import ConfigError
from collapselab.registry import sources

LARGEST = 1e50  # a moment of order 4 of larger values overflows float64 (1e308)


@sources.register("normal")
class Normal:
    """An isotropic Gaussian N(mean, std^2 I) in ``dim`` dimensions; samples ``(chains, n, dim)``."""

    kind = "continuous"

    def __init__(
        self,
        dim: Annotated[int, Field(ge=1, le=1024, description="dimension of each sample")] = 1,
        mean: Annotated[float, Field(description=(
            "mean of every coordinate; |mean| <= 1e50, so that the fourth powers metrics take "
            "stay finite in float64"))] = 0.0,
        std: Annotated[float, Field(gt=0, description=(
            "standard deviation of every coordinate; <= 1e50 (see mean)"))] = 1.0,
        heldout_size: Annotated[int, Field(ge=1, description="real held-out samples for metrics")] = 2000,
    ) -> None:
        self.dim, self.mean, self.std, self.heldout_size = dim, mean, std, heldout_size
        huge = [f"{k}: must be at most {LARGEST:g} in magnitude (a fourth power of the samples "
                f"must stay finite in float64); got {v:g}"
                for k, v in (("mean", mean), ("std", std)) if abs(v) > LARGEST]
        if huge:
            raise ConfigError(huge)

    @property
    def truth(self) -> dict[str, Any]:
        """Closed-form parameters: one-component mixture ``(weights, means, covs)``."""
        return {
            "weights": np.ones(1),
            "means": np.full((1, self.dim), self.mean),
            "covs": (self.std**2 * np.eye(self.dim))[None],
        }

    def real(self, n: int, chains: int, rng: np.random.Generator) -> np.ndarray:
        return self.mean + self.std * rng.standard_normal((chains, n, self.dim))

    fresh = real

    def heldout(self, rng: np.random.Generator) -> np.ndarray:
        return self.real(self.heldout_size, 1, rng)


@sources.register("categorical")
class Categorical:
    """A discrete distribution over ``k`` states: given ``probs``, or Zipf ``p_i ~ i^-zipf``.
    Samples are state indices ``(chains, n)``."""

    kind = "categorical"

    def __init__(
        self,
        probs: Annotated[list[float] | None, Field(description=(
            "state probabilities (normalised); overrides k and zipf"))] = None,
        k: Annotated[int, Field(ge=2, description="number of states for the Zipf default")] = 10,
        zipf: Annotated[float, Field(ge=0, description="Zipf exponent: p_i ~ i^-zipf")] = 1.0,
        heldout_size: Annotated[int, Field(ge=1, description="real held-out samples")] = 2000,
    ) -> None:
        self.probs, self.k, self.zipf, self.heldout_size = probs, k, zipf, heldout_size
        if probs is not None:
            p = np.asarray(probs, dtype=float)
            if p.ndim != 1 or len(p) < 2 or (p < 0).any() or not np.isfinite(p).all() or p.sum() <= 0:
                raise ValueError(f"probs must be >= 2 non-negative finite numbers; got {probs}")
        else:
            p = np.arange(1, k + 1, dtype=float) ** -zipf
        self.p = p / p.sum()

    @property
    def truth(self) -> dict[str, Any]:
        return {"probs": self.p}

    @property
    def n_states(self) -> int:
        return len(self.p)

    def real(self, n: int, chains: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self.p), size=(chains, n), p=self.p)

    fresh = real

    def heldout(self, rng: np.random.Generator) -> np.ndarray:
        return self.real(self.heldout_size, 1, rng)
