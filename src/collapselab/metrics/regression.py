"""Metrics of a regression family against a linear source's true weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.metrics.base import GenerationContext
from collapselab.metrics.declare import Plot
from collapselab.registry import metrics


@metrics.register("excess_risk")
class ExcessRisk:
    """||ŵ - w*||²: the test error above the noise under an isotropic design (a fitted ``coef_``
    against a source's true ``weights``; absent otherwise)."""

    kinds = frozenset({"continuous"})
    describe = {"excess_risk": "squared distance of the fitted weights from the true ones"}
    worse = {"excess_risk": "higher"}
    plots = (Plot.curve("excess_risk", "excess risk", headline=True),)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        truth = getattr(ctx.source, "truth", None) or {}
        if "weights" not in truth or not hasattr(ctx.model, "coef_"):
            return {}
        return {"excess_risk": ((ctx.model.coef_ - np.asarray(truth["weights"])[None]) ** 2).sum(axis=1)}
