"""Plugin components that break their protocol's contract, each in one way, named by import path
(``tests.badplug:HalfRows``) by tests/test_component_checks.py."""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.models.gaussian import Gaussian
from collapselab.policies import Replace
from collapselab.sources.distributions import Normal


class HalfRows(Gaussian):
    """``sample(n)`` returns n // 2 rows per chain."""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return super().sample(n // 2, rng)


class ChainScores(Gaussian):
    """``score_samples`` returns one score per chain, not per sample."""

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        return super().score_samples(data).mean(axis=1)


class NaNScores(Gaussian):
    """``score_samples`` returns NaN for every sample."""

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        return np.full(np.shape(data)[:2], np.nan)


class Flat(Normal):
    """``real`` returns one number per chain: no sample axis."""

    def real(self, n: int, chains: int, rng: np.random.Generator) -> np.ndarray:
        return super().real(n, chains, rng)[:, 0, 0]


class Rows(Replace):
    """``plan`` returns row indices, not a ``Plan``."""

    def plan(self, sizes: list[int], size: int, chains: int, rng: np.random.Generator) -> Any:
        return list(range(size))


class Metric:
    kinds = frozenset({"continuous"})
    value: Any = None

    def __call__(self, ctx: Any) -> dict[str, Any]:
        return {"bad": self.value(ctx)}


class SevenValues(Metric):
    """7 values, whatever the number of chains."""

    @staticmethod
    def value(ctx: Any) -> Any:
        return np.zeros(7)


class NoChainAxis(Metric):
    """Chain 0's samples: ``(m, dim)``, no chain axis."""

    @staticmethod
    def value(ctx: Any) -> Any:
        return ctx.synthetic[0]


class ObjectValues(Metric):
    """One Python object per chain."""

    @staticmethod
    def value(ctx: Any) -> Any:
        return np.array([None] * ctx.chains, dtype=object)


class Word(Metric):
    """A string."""

    @staticmethod
    def value(ctx: Any) -> Any:
        return "high"
