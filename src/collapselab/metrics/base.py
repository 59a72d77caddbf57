"""What a metric sees, and what it returns.

A metric is a registered class: hyperparameters as typed ``__init__`` keywords (its config fields), a
class attribute ``kinds`` naming the source kinds it understands, and ``__call__(ctx)`` returning a
dict of named values, each a scalar or one value per chain ``(chains,)``. The run store keeps the
chain mean and its standard error per generation; per-sample arrays a report wants to draw (e.g.
per-sequence perplexities for histograms) go into ``ctx.artifacts`` and land in the generation's
folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np


@dataclass
class GenerationContext:
    gen: int
    model: Any  # this generation's fitted model
    reference: Any  # generation 0's fitted model (trained on real data only)
    train: np.ndarray  # (chains, n, ...) what this generation was trained on
    synthetic: np.ndarray  # (chains, m, ...) what it generated (after curation)
    real: np.ndarray  # (chains, n, ...) generation 0's real pool
    heldout: np.ndarray  # (1, m, ...) real held-out data
    source: Any
    rng: np.random.Generator
    artifacts: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def chains(self) -> int:
        return int(self.synthetic.shape[0])

    def heldout_chains(self) -> np.ndarray:
        """Held-out data broadcast to ``(chains, m, ...)``."""
        return np.broadcast_to(self.heldout, (self.chains, *self.heldout.shape[1:]))


class Metric(Protocol):
    kinds: ClassVar[frozenset[str]]

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]: ...
