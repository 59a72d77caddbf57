"""A product of independent Laplace distributions, one per coordinate, fitted by maximum likelihood.

The MLE of the scale (mean absolute deviation from the median) is biased low on small samples, so
refitting to its own samples shrinks the scale generation after generation: collapse, as for the
Gaussian. Vectorised over chains: data ``(chains, n, dim)``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from collapselab.errors import NumericalError
from collapselab.protocol import Model, check_data, check_n


class Laplace(Model):
    """Independent Laplace distributions, one per coordinate, fitted by maximum likelihood (the
    first line of the docstring is what ``collapselab list`` shows)."""

    kinds = frozenset({"continuous"})  # data kinds it can model

    def __init__(
        self,
        location: Annotated[Literal["median", "mean"], Field(description=(
            "location estimator: 'median' (the MLE) or 'mean'"))] = "median",
        min_scale: Annotated[float, Field(ge=0, description=(
            "a fitted scale below this is degenerate (the run records it)"))] = 1e-12,
    ) -> None:
        self.location = location
        self.min_scale = min_scale

    def fit(self, data: np.ndarray, *, rng: np.random.Generator | None = None) -> Laplace:
        x = check_data(data, min_samples=2, shape="(chains, n, dim)")  # (C, n, D)
        center = np.median(x, axis=1) if self.location == "median" else x.mean(axis=1)  # (C, D)
        scale = np.abs(x - center[:, None]).mean(axis=1)  # (C, D): the MLE given the location
        if not (scale > self.min_scale).all():
            raise NumericalError(f"Laplace scale collapsed to {scale.min():.3g}")
        self.loc_, self.scale_ = center, scale  # every fit replaces both: a refit starts afresh
        return self

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        n = check_n(n)
        self.check_fitted()
        chains, dim = self.loc_.shape
        # (C, n, D); the generator is passed in, never re-seeded here
        return self.loc_[:, None] + self.scale_[:, None] * rng.laplace(size=(chains, n, dim))

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        self.check_fitted()
        x = np.asarray(data, dtype=float)  # (C, n, D)
        z = np.abs(x - self.loc_[:, None]) / self.scale_[:, None]
        return (-np.log(2 * self.scale_)[:, None] - z).sum(axis=-1)  # (C, n) log-density
