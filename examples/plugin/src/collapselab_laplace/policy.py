"""A data policy: a share of real data plus a sliding window over the recent generations' output.

Like every collapselab policy it sees only pool sizes and returns an index plan: which rows of
which pools make the next training set (the loop applies it and records it as provenance).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field

from collapselab.provenance import Part, Plan, draw_rows


class Window:
    """``real_fraction`` of each training set drawn from the real pool, the rest from the pooled
    output of the last ``window`` generations (between ``replace``, window 1, and ``accumulate``)."""

    history: ClassVar[Literal["last", "all"]] = "all"  # the loop keeps every generation's output

    def __init__(
        self,
        window: Annotated[int, Field(ge=1, description="recent generations pooled")] = 3,
        real_fraction: Annotated[float, Field(ge=0.0, le=1.0, description=(
            "share of each training set drawn from real data"))] = 0.0,
    ) -> None:
        self.window = window
        self.real_fraction = real_fraction

    def plan(self, sizes: list[int], size: int, chains: int, rng: np.random.Generator) -> Plan:
        """``sizes[0]``: rows per chain of the real pool; ``sizes[1:]``: of each generation's
        output, oldest first."""
        k_real = int(round(self.real_fraction * size))
        parts = [Part((0,), draw_rows(sizes[0], k_real, chains, rng))] if k_real else []
        if size - k_real:
            recent = tuple(range(max(1, len(sizes) - self.window), len(sizes)))
            pooled = sum(sizes[i] for i in recent)
            parts.append(Part(recent, draw_rows(pooled, size - k_real, chains, rng)))
        return Plan(tuple(parts))
