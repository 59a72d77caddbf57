"""The collapse alarm: is this generation's model significantly worse than generation 0's?

The headline quantity is the held-out log-likelihood every family has (``score_samples``: per
sample, or per token for language models): the excess ``Δ = ll_gen0(x) - ll_model(x)`` of real
held-out data ``x`` in nats (per token: the log of the test-perplexity ratio). Generation 0's model
is ``ctx.reference``, evaluated afresh on ``ctx.heldout``, so the comparison needs nothing from
earlier generations and is exact after a resume.

- several chains: paired across chains, a one-sided z-test on the chains' mean excess (each chain
  against its own generation 0);
- one chain (a language model): a bootstrap over the held-out samples (blocks), from a stream
  spawned off the metrics stream (the other metrics' draws are unchanged).

The alarm fires when the lower confidence bound of the excess clears ``margin`` (a tolerance in
nats: 0.01 is 1% in perplexity). Where a model's held-out scores are not all finite, the test and
its values are undefined (NaN, written as null, with a warning), never "no collapse".
``generations_to_collapse(rows)`` reads the first generation it fired from a run's metric rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from collapselab.metrics.base import GenerationContext
from collapselab.metrics.continuous import gaussian_loglik
from collapselab.protocol import scores
from collapselab.registry import metrics

log = logging.getLogger(__name__)


@metrics.register("collapse_alarm")
class CollapseAlarm:
    """Held-out log-likelihood against generation 0's: ``alarm`` (1 when significantly worse by more
    than ``margin``), ``alarm_excess_nll`` (the mean excess, nats per sample or token),
    ``alarm_lower`` (its one-sided lower confidence bound) and ``alarm_effect`` (the excess over
    its standard deviation across chains, or across held-out samples for one chain)."""

    kinds = frozenset({"continuous", "tokens", "images"})
    describe = {
        "alarm": "1 where the model is significantly worse than generation 0 on held-out data",
        "alarm_excess_nll": "held-out NLL minus generation 0's, nats (per token for text)",
        "alarm_lower": "one-sided lower confidence bound of the excess NLL",
        "alarm_effect": "excess NLL over its standard deviation (paired effect size)",
    }
    worse = {"alarm": "higher", "alarm_excess_nll": "higher", "alarm_lower": "higher",
             "alarm_effect": "higher"}

    def __init__(
        self,
        alpha: Annotated[float, Field(gt=0, lt=0.5, description=(
            "one-sided level of the test (per generation)"))] = 0.01,
        margin: Annotated[float, Field(ge=0, description=(
            "excess NLL tolerated, nats per sample or token (0.01: 1% in perplexity)"))] = 0.01,
        bootstrap: Annotated[int, Field(ge=100, le=100_000, description=(
            "bootstrap resamples of the held-out samples (one chain)"))] = 2000,
    ) -> None:
        self.alpha, self.margin, self.bootstrap = alpha, margin, bootstrap
        self._reference: tuple[int, int, np.ndarray] | None = None

    def _reference_ll(self, ctx: GenerationContext) -> np.ndarray:
        key = (id(ctx.reference), id(ctx.heldout))  # generation 0's scores: the same every generation
        if self._reference is None or self._reference[:2] != key:
            self._reference = (*key, loglik(ctx.reference, ctx))
        return self._reference[2]

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        excess = self._reference_ll(ctx) - loglik(ctx.model, ctx)  # (C, n) or (C, 1) nats
        finite = np.isfinite(excess)
        if not finite.all():
            log.warning("generation %d: the collapse alarm is undefined: %d of %d held-out scores "
                        "(this model's or generation 0's) are not finite", ctx.gen,
                        finite.size - finite.sum(), finite.size)
            return dict.fromkeys(self.describe, float("nan"))
        return excess_test(excess, self.alpha, self.margin, self.bootstrap, ctx.rng)


def loglik(model: Any, ctx: GenerationContext) -> np.ndarray:
    """Held-out log-likelihoods ``(C, n)``; with several chains, for a single-Gaussian model, their
    chain means ``(C, 1)`` in closed form (all the paired test reads)."""
    mean = gaussian_loglik(model, ctx.heldout) if ctx.chains > 1 else None
    return scores(model, ctx.heldout_chains()) if mean is None else mean[:, None]


def excess_test(excess: np.ndarray, alpha: float, margin: float, bootstrap: int,
                rng: np.random.Generator) -> dict[str, float]:
    """The alarm's test on per-sample excess NLL ``(chains, n)`` (or its chain means
    ``(chains, 1)``): paired over chains (C > 1), or a bootstrap over samples (C = 1; ``rng`` is
    spawned, not drawn from)."""
    from scipy.special import ndtri  # here, not at import: listing stays fast

    per_chain = excess.mean(axis=1)
    mean = float(per_chain.mean())
    if excess.shape[0] > 1:
        sd = float(per_chain.std(ddof=1))
        lower = mean - ndtri(1 - alpha) * sd / np.sqrt(per_chain.size)
    else:
        sd = float(excess[0].std(ddof=1)) if excess.shape[1] > 1 else 0.0
        (boot_rng,) = rng.spawn(1)
        rows = boot_rng.integers(excess.shape[1], size=(bootstrap, excess.shape[1]))
        lower = float(np.quantile(excess[0][rows].mean(axis=1), alpha))
    effect = mean / sd if sd > 0 else 0.0
    return {"alarm": float(lower > margin), "alarm_excess_nll": mean, "alarm_lower": float(lower),
            "alarm_effect": effect}


def generations_to_collapse(rows: Iterable[dict[str, Any]], key: str = "alarm") -> int | None:
    """The first generation whose row has the alarm on (``None``: it never fired)."""
    for row in rows:
        if (row.get(key) or 0) >= 1:  # null: undefined (non-finite scores), not fired
            return int(row["generation"])
    return None
