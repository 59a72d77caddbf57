"""Metrics for categorical data: which states survive, and how far the fit is from the truth."""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.metrics.base import GenerationContext
from collapselab.metrics.declare import Plot
from collapselab.registry import metrics

CATEGORICAL = frozenset({"categorical"})


def _probs(ctx: GenerationContext) -> tuple[np.ndarray, np.ndarray]:
    """The model's probabilities ``(C, K)`` and the truth's ``(K,)``."""
    return ctx.model.probs_, np.asarray(ctx.source.truth["probs"])


@metrics.register("support")
class Support:
    """Support size, lost states (true states with zero model mass) and the absorbed share."""

    kinds = CATEGORICAL
    describe = {"support_size": "states the model still gives mass to",
                "lost_states": "true states the model has lost",
                "absorbed": "share of chains left with a single state"}
    worse = {"support_size": "lower", "lost_states": "higher", "absorbed": "higher"}
    bounds = {"support_size": (0, None), "lost_states": (0, None), "absorbed": (0, 1)}
    plots = (Plot.group("support_size", "lost_states", title="states kept and lost",
                        headline=True),
             Plot.curve("absorbed", "chains absorbed in one state", headline=True))

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        probs, true = _probs(ctx)
        alive = (probs > 0).view(np.uint8)  # 0/1 bytes: summed as they are, no cast
        live = (true > 0).view(np.uint8)
        count = np.min_scalar_type(alive.shape[1])  # holds any count of states, exactly
        size = np.einsum("ck->c", alive, dtype=count)  # row sums, 2x faster than .sum(axis=1)
        return {
            "support_size": size,
            "lost_states": np.einsum("ck,k->c", alive ^ 1, live, dtype=count),
            "absorbed": size == 1,
        }


@metrics.register("entropy")
class Entropy:
    """Shannon entropy of the model (nats), next to the truth's."""

    kinds = CATEGORICAL
    describe = {"entropy": "entropy of the model's state distribution (real: dotted)"}
    worse = {"entropy": "lower"}
    bounds = {"entropy": (0, None)}
    plots = (Plot.curve("entropy", "entropy of the states", headline=True),)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        from scipy.special import rel_entr  # here, not at import: listing stays fast

        probs, true = _probs(ctx)
        return {"entropy": -rel_entr(probs, 1.0).sum(axis=1),  # rel_entr(p, 1) = p log p
                "entropy_real": float(-rel_entr(true, 1.0).sum())}


@metrics.register("categorical_kl")
class CategoricalKL:
    """KL(model || truth): finite even after states are lost (KL(truth || model) is then inf)."""

    kinds = CATEGORICAL
    describe = {"kl_model_truth": "KL(model || truth) of the state distribution"}
    worse = {"kl_model_truth": "higher"}
    bounds = {"kl_model_truth": (0, None)}
    plots = (Plot.curve("kl_model_truth", "KL to the truth", headline=True),)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        from scipy.special import rel_entr

        probs, true = _probs(ctx)
        return {"kl_model_truth": rel_entr(probs, true[None]).sum(axis=1)}
