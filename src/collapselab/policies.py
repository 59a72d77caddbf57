"""Data policies: how each generation's training set is composed from real and synthetic data.

Every policy sees the real pool ``(chains, n, ...)``, the synthetic sets of all earlier generations
(newest last) and the target ``size``, and returns the next training set ``(chains, size', ...)``.
Random subsets are drawn independently per chain, all chains in one vectorised call.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from collapselab.registry import policies


def subsample(data: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` samples per chain without replacement, a fresh random subset for every chain."""
    chains, n = data.shape[:2]
    if k >= n:
        return np.asarray(data)
    # random keys + argpartition: O(chains * n), no Python loop over chains
    idx = np.argpartition(rng.random((chains, n)), k - 1, axis=1)[:, :k]
    return np.asarray(data)[np.arange(chains)[:, None], idx]


def concat(*parts: np.ndarray) -> np.ndarray:
    """Concatenate along the sample axis (broadcast real pools shared across chains first)."""
    chains = max(p.shape[0] for p in parts)
    return np.concatenate([np.broadcast_to(p, (chains, *p.shape[1:])) for p in parts], axis=1)


@policies.register("replace")
class Replace:
    """Train only on the previous generation's output (the paper's first setting)."""

    history: ClassVar[Literal["last", "all"]] = "last"

    def compose(self, *, real: np.ndarray, history: list[np.ndarray], size: int,
                rng: np.random.Generator, source: Any) -> np.ndarray:
        return history[-1]


@policies.register("real_fraction")
class RealFraction:
    """Keep a fraction of real data every generation (a fresh random subset of the original pool
    each time; the paper's 10% setting); the rest is the previous generation's output."""

    history: ClassVar[Literal["last", "all"]] = "last"

    def __init__(
        self,
        real_fraction: Annotated[float, Field(ge=0.0, le=1.0, description=(
            "share of each training set drawn from real data"))] = 0.1,
    ) -> None:
        self.real_fraction = real_fraction

    def real_part(self, real: np.ndarray, k: int, rng: np.random.Generator, source: Any) -> np.ndarray:
        return subsample(real, k, rng)

    def compose(self, *, real: np.ndarray, history: list[np.ndarray], size: int,
                rng: np.random.Generator, source: Any) -> np.ndarray:
        k_real = int(round(self.real_fraction * size))
        parts = [self.real_part(real, k_real, rng, source)] if k_real else []
        if size - k_real:
            parts.append(subsample(history[-1], size - k_real, rng))
        return concat(*parts)


@policies.register("fresh")
class Fresh(RealFraction):
    """Like ``real_fraction``, but the real part is new data from the source each generation."""

    def real_part(self, real: np.ndarray, k: int, rng: np.random.Generator, source: Any) -> np.ndarray:
        return source.fresh(k, real.shape[0], rng)


@policies.register("accumulate")
class Accumulate:
    """All real data plus every synthetic set so far (Gerstgrasser et al. 2024: no blow-up)."""

    history: ClassVar[Literal["last", "all"]] = "all"

    def compose(self, *, real: np.ndarray, history: list[np.ndarray], size: int,
                rng: np.random.Generator, source: Any) -> np.ndarray:
        return concat(real, *history)


@policies.register("accumulate_subsample")
class AccumulateSubsample:
    """Accumulate, then subsample to a fixed budget (constant compute per generation)."""

    history: ClassVar[Literal["last", "all"]] = "all"

    def __init__(
        self,
        budget: Annotated[int | None, Field(ge=1, description=(
            "training-set size after subsampling; default: data.size"))] = None,
    ) -> None:
        self.budget = budget

    def compose(self, *, real: np.ndarray, history: list[np.ndarray], size: int,
                rng: np.random.Generator, source: Any) -> np.ndarray:
        return subsample(concat(real, *history), self.budget or size, rng)
