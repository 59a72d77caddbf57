"""What a metric sees, and what it returns.

A metric is a registered class: hyperparameters as typed ``__init__`` keywords (its config fields), a
class attribute ``kinds`` naming the source kinds it understands, and ``__call__(ctx)`` returning a
dict of named values, each a scalar or one value per chain ``(chains,)``. The loop stores the chain
mean and its standard error per generation (``<key>``, ``<key>.sem`` in ``metrics.jsonl``) and the
per-chain values in the run's ``records/``. Per-sample arrays a report wants to draw (e.g.
per-sequence perplexities for histograms) go into ``ctx.artifacts``: the store saves them in the
same ``records/`` chunk (``artifacts.<producer>.<key>``), read back with ``RunStore.artifacts(gen)``.

:class:`Metric` is that protocol as a ``typing.Protocol``; :class:`MetricBase` the base class with
the defaults of what a metric may declare: ``needs`` (capabilities of the source or the model
family, ``collapselab.capabilities``), ``default_kinds`` (where it is a default metric), and for the
report ``describe``, ``worse``, ``plots`` and ``bounds`` (``metrics/declare.py``). A metric that
does not subclass it gets the same defaults. ``collapselab.testing.check_component`` checks a
metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

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


@runtime_checkable
class Metric(Protocol):
    """A metric (``registry.PROTOCOLS["metric"]`` asks a registered class for the same)."""

    kinds: ClassVar[frozenset[str]]  # source kinds it measures

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]: ...


class MetricBase:
    """Base class of metrics: a subclass sets ``kinds`` and defines ``__call__`` (registration
    refuses it without them); the rest are declarations with their defaults."""

    kinds: ClassVar[frozenset[str]]
    # capabilities (collapselab.capabilities Protocols) of the source or the model family it
    # needs: config validation refuses the metric where one is missing, naming it
    needs: ClassVar[tuple[type, ...]] = ()
    # the data kinds on which it is a default metric; None: every kind it accepts; empty: never
    default_kinds: ClassVar[frozenset[str] | None] = None
    describe: ClassVar[dict[str, str]] = {}  # key or pattern -> what the value means
    worse: ClassVar[dict[str, str]] = {}  # key or pattern -> "higher" | "lower" under collapse
    plots: ClassVar[tuple[Any, ...]] = ()  # metrics.declare.Plot (or dicts): how the report draws
    # key or pattern -> (low, high) the values can take (None: open): the report clips bands there
    bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {}
