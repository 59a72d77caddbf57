"""Metrics of a regression family against a linear source's true weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab import capabilities
from collapselab.capabilities import HasCoefficients
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
        truth = capabilities.truth(ctx.source)
        if "weights" not in truth or not capabilities.provides(ctx.model, HasCoefficients):
            return {}
        return {"excess_risk": ((ctx.model.coef_ - np.asarray(truth["weights"])[None]) ** 2).sum(axis=1)}


def linreg_loglik(model: Any, heldout: np.ndarray) -> np.ndarray | None:
    """Mean log-likelihood ``(C,)`` of the held-out set ``(1, n, d + 1)`` under each chain's
    fitted ``linreg`` (its label's likelihood, as ``LinearRegression.score_samples``), from the
    set's moments: no pass over ``chains x n`` points. The mean squared residual of weights w is
    the held-out set's own least-squares residual plus (w - ŵ_h)^T (X^T X / n) (w - ŵ_h)
    (orthogonal parts: no cancellation). ``None`` for other models (a subclass that scores
    otherwise included): the caller scores the samples."""
    from collapselab.models.linreg import LinearRegression

    if not (isinstance(model, LinearRegression)
            and type(model).score_samples is LinearRegression.score_samples
            and type(model).score is LinearRegression.score) or heldout.ndim != 3 \
            or heldout.shape[0] != 1 or heldout.shape[2] != model.coef_.shape[1] + 1:
        return None
    x, y = heldout[0, :, :-1].astype(float), heldout[0, :, -1].astype(float)  # (n, d), (n,)
    own = np.linalg.lstsq(x, y, rcond=None)[0]  # (d,) the held-out set's own fit
    gap = model.coef_ - own  # (C, d)
    mse = np.mean((y - x @ own) ** 2) + np.einsum("ci,ij,cj->c", gap, x.T @ x / len(x), gap)
    var = model.noise_**2  # (C,)
    return -0.5 * (mse / var + np.log(2 * np.pi * var))
