"""A linear model with Gaussian noise and an isotropic Gaussian design: the regression track's truth."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from collapselab.registry import sources


@sources.register("linear")
class Linear:
    """y = x·w* + noise·ε with x ~ N(0, I_d), ε ~ N(0, 1) and w* = (1, ..., 1)/sqrt(d) (unit norm).
    Samples ``(chains, n, d + 1)``: the d inputs, then the label."""

    kind = "continuous"

    def __init__(
        self,
        features: Annotated[int, Field(ge=1, le=1024, description="input dimension d")] = 10,
        noise: Annotated[float, Field(gt=0, description="sd σ of the label noise")] = 1.0,
        heldout_size: Annotated[int, Field(ge=1, description="real held-out samples for metrics")] = 2000,
    ) -> None:
        self.features, self.noise, self.heldout_size = features, noise, heldout_size
        self.weights = np.full(features, 1 / np.sqrt(features))

    @property
    def truth(self) -> dict[str, Any]:
        return {"weights": self.weights, "noise": self.noise}

    def real(self, n: int, chains: int, rng: np.random.Generator) -> np.ndarray:
        x = rng.standard_normal((chains, n, self.features))
        y = x @ self.weights + self.noise * rng.standard_normal((chains, n))
        return np.concatenate([x, y[..., None]], axis=-1)

    fresh = real

    def heldout(self, rng: np.random.Generator) -> np.ndarray:
        return self.real(self.heldout_size, 1, rng)
