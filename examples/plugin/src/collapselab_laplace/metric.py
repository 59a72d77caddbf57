"""A metric: excess kurtosis of the synthetic data, beside the real pool's.

Tails vanish first under collapse; kurtosis measures how heavy they are (Laplace: 3, Gaussian: 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.metrics.base import GenerationContext


def excess_kurtosis(x: np.ndarray) -> np.ndarray:
    """Per chain, averaged over coordinates: ``(C, n, D) -> (C,)``."""
    z = x - x.mean(axis=1, keepdims=True)
    m2, m4 = (z**2).mean(axis=1), (z**4).mean(axis=1)  # (C, D)
    return (m4 / m2**2 - 3.0).mean(axis=-1)


class Kurtosis:
    """``kurtosis``: the synthetic data's excess kurtosis; ``kurtosis_gap``: minus the real
    pool's (negative: lighter tails than the data the run started from)."""

    kinds = frozenset({"continuous"})  # source kinds it can measure

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        synthetic = excess_kurtosis(np.asarray(ctx.synthetic, dtype=float))  # (C,)
        real = excess_kurtosis(np.asarray(ctx.real, dtype=float))  # (C,)
        return {"kurtosis": synthetic, "kurtosis_gap": synthetic - real}
