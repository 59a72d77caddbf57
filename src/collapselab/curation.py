"""The curation hook: filters applied to each generation's synthetic data before it is composed
into the next training set.

A filter is a registered class whose ``__call__(data, ctx)`` returns a boolean keep-mask
``(chains, m)``. Masks are combined with AND; each filter's kept share is recorded. Because chains
are one rectangular array, every chain then keeps the same number of samples: a random subset of
its survivors, as many as the chain with the fewest survivors has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from collapselab.registry import filters


@dataclass
class CurationContext:
    gen: int
    model: Any  # the generation that produced the data
    reference: Any  # generation 0's model
    rng: np.random.Generator


def curate(
    active: list[tuple[str, Any]], data: np.ndarray, ctx: CurationContext
) -> tuple[np.ndarray, dict[str, float]]:
    """Apply named filters; return the kept data and ``{"kept.<name>": share}``."""
    if not active:
        return data, {}
    keep = np.ones(data.shape[:2], dtype=bool)
    report: dict[str, float] = {}
    for name, fn in active:
        mask = np.asarray(fn(data, ctx), dtype=bool)
        report[f"kept.{name}"] = float(mask.mean())
        keep &= mask
    n_keep = int(keep.sum(axis=1).min())
    report["kept"] = n_keep / data.shape[1]
    if n_keep == 0:
        return data[:, :0], report
    # random keys, survivors first: a uniform random subset of each chain's survivors
    order = np.argsort(np.where(keep, ctx.rng.random(keep.shape), 2.0), axis=1)[:, :n_keep]
    return np.asarray(data)[np.arange(len(data))[:, None], order], report


@filters.register("density_band")
class DensityBand:
    """Keep samples whose log-likelihood under the reference (generation 0) model lies between
    two quantiles of that of the reference's own score on the sample set: drops implausible
    outliers (low) and/or over-typical samples (high). Works for every family with ``score_samples``."""

    def __init__(
        self,
        low: Annotated[float, Field(ge=0, lt=1, description="drop samples below this quantile")] = 0.0,
        high: Annotated[float, Field(gt=0, le=1, description="drop samples above this quantile")] = 1.0,
    ) -> None:
        if low >= high:
            raise ValueError(f"low must be below high; got low={low}, high={high}")
        self.low, self.high = low, high

    def __call__(self, data: np.ndarray, ctx: CurationContext) -> np.ndarray:
        ll = ctx.reference.score_samples(data)  # (C, m)
        lo, hi = np.quantile(ll, [self.low, self.high], axis=1, keepdims=True)
        return (ll >= lo) & (ll <= hi)
