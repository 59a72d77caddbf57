"""Per-state survival of a categorical model: the quantity the Wright-Fisher theory predicts exactly.

``present_k`` is 1 for a chain whose model still gives state k mass; its chain mean estimates
P(state k present at generation t), which tends to p_k, the probability that the chain is absorbed
in state k (``collapselab.theory``).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from collapselab.metrics.base import GenerationContext
from collapselab.metrics.declare import Plot
from collapselab.registry import metrics


@metrics.register("state_presence")
class StatePresence:
    """Whether each of the first ``max_states`` true states (p_k > 0) is still present, per chain."""

    kinds = frozenset({"categorical"})
    describe = {"present_*": "share of chains in which true state * is still present"}
    worse = {"present_*": "lower"}
    plots = (Plot.group("present_*", title="true states still present", headline=True),)

    def __init__(
        self,
        max_states: Annotated[int, Field(ge=1, description=(
            "report the first this many states of the source (those with p_k > 0)"))] = 10,
    ) -> None:
        self.max_states = max_states

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        probs = ctx.model.probs_  # (C, K)
        true = np.asarray(ctx.source.truth["probs"])
        states = np.flatnonzero(true > 0)[: self.max_states]
        return {f"present_{k}": (probs[:, k] > 0).astype(float) for k in states}
