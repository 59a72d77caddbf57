"""When each real state or word type is forgotten, against how common it was in the real data.

The seed's fairness point: minority data vanish first. ``forgetting`` records, every generation,
which types are still in the training set and in the generated data, as bits (``(C, ⌈V/8⌉)``
uint8 artifacts ``forgetting_train`` and ``forgetting_generated``), and at generation 0 each type's
count in generation 0's real pool (``forgetting_real``, per chain where the chains' real data
differ). :func:`first_absence` reads a run back into, per chain and type, the real
count and the first generation the type was missing from the training set and from the generated
data (-1: never, within the run). The report draws it against the count (``report/forgetting``);
for a categorical chain under ``replace`` the theory's expected loss time sits beside it
(``collapselab.theory.categorical_policies.expected_loss_generation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from collapselab.capabilities import source_sizes
from collapselab.metrics.base import GenerationContext
from collapselab.metrics.declare import Plot
from collapselab.registry import metrics

KEYS = ("forgetting_train", "forgetting_generated")  # the bit artifacts, per generation
REAL = "forgetting_real"  # generation 0: each type's real count


def counts_per_chain(data: np.ndarray, size: int) -> np.ndarray:
    """``(C, size)`` occurrences of each state in each chain's rows (any trailing shape)."""
    flat = np.asarray(data).reshape(data.shape[0], -1).astype(np.intp)
    flat = flat + np.arange(0, data.shape[0] * size, size, dtype=np.intp)[:, None]
    return np.bincount(flat.ravel(), minlength=data.shape[0] * size).reshape(data.shape[0], size)


def presence(data: np.ndarray, size: int) -> np.ndarray:
    """``(C, size)`` bool: which states occur in each chain's rows; ids >= size (not real types)
    land in one extra column, dropped."""
    chains = data.shape[0]
    flat = np.minimum(np.asarray(data).reshape(chains, -1), size).astype(np.intp)
    flat += np.arange(0, chains * (size + 1), size + 1)[:, None]  # each chain its own row
    marks = np.zeros(chains * (size + 1), dtype=bool)
    marks[flat.ravel()] = True  # one flat scatter: ~2x a 2-D fancy index
    return marks.reshape(chains, size + 1)[:, :size]


@metrics.register("forgetting")
class Forgetting:
    """Real types (states, words) absent from the training set and from the generated data; the
    per-type record for the report's "when each category was forgotten" chart."""

    kinds = frozenset({"categorical", "tokens"})
    default_kinds: frozenset[str] = frozenset()  # opt in: it writes two bit arrays per generation
    describe = {"forgotten_train": "real types missing from the training set",
                "forgotten_generated": "real types missing from the generated data"}
    worse = {"forgotten_train": "higher", "forgotten_generated": "higher"}
    plots = (Plot.group("forgotten_*", title="real types forgotten"),)

    _counted: tuple[Any, np.ndarray] | None = None  # (the real pool counted, its counts)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        # the real pool is one array for the whole run: count it once, not every generation
        if self._counted is None or self._counted[0] is not ctx.real:
            self._counted = (ctx.real, self.real_counts(ctx))
        real = self._counted[1]  # (1 or C, V)
        size = real.shape[1]
        seen = real > 0
        out = {}
        for key, data in zip(KEYS, (ctx.train, ctx.synthetic), strict=True):
            present = presence(data, size)  # (C, V)
            ctx.artifacts[key] = np.packbits(present, axis=1)
            out[key.replace("forgetting", "forgotten")] = (seen & ~present).sum(axis=1)
        if ctx.gen == 0:
            ctx.artifacts[REAL] = real.astype(np.min_scalar_type(max(int(real.max()), 1)))
        return out

    @staticmethod
    def real_counts(ctx: GenerationContext) -> np.ndarray:
        """``(1 or C, V)`` each type's count in generation 0's real pool (what the first model saw)."""
        real = np.asarray(ctx.real)
        sizes = source_sizes(ctx.source)
        size = sizes.get("n_states") or sizes.get("vocab_size") or int(real.max()) + 1
        return counts_per_chain(real, max(int(size), int(real.max()) + 1))


@dataclass(frozen=True)
class FirstAbsence:
    """A run's forgetting record: per chain (rows) and type (columns)."""

    real: np.ndarray  # (C, V) the type's count in the real data (chains share it for tokens)
    train: np.ndarray  # (C, V) first generation it was missing from the training set; -1: never
    generated: np.ndarray  # (C, V) first generation it was missing from the generated data
    generations: int  # generations recorded

    def lost(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Real types (count > 0) as flat arrays: count, train and generated first absence."""
        seen = self.real > 0
        return self.real[seen], self.train[seen], self.generated[seen]


def first_absence(store: Any, producer: str | None = None) -> FirstAbsence:
    """Read a run's ``forgetting`` artifacts back (``store``: a ``RunStore``); a ``DataError``
    naming the run if it did not record the metric."""
    from collapselab.errors import DataError

    first = store.artifacts(0, producer)
    if REAL not in first:
        raise DataError(f"{store.root} has no forgetting record: add 'forgetting' to metrics")
    real = np.asarray(first[REAL]).astype(np.int64)
    size = real.shape[1]
    gens = store.completed()
    found = {key: np.full((1, size), -1, dtype=np.int64) for key in KEYS}
    for gen in range(gens):
        arts = first if gen == 0 else store.artifacts(gen, producer)
        for key in KEYS:
            if key not in arts:
                continue  # a degenerate generation: nothing recorded
            present = np.unpackbits(arts[key], axis=1, count=size).astype(bool)
            mark = found[key]
            if mark.shape[0] != present.shape[0]:
                mark = found[key] = np.broadcast_to(mark, present.shape).copy()
            mark[(mark < 0) & ~present] = gen
    chains = max(real.shape[0], *(v.shape[0] for v in found.values()))
    real, train, generated = (np.broadcast_to(a, (chains, size)) for a in (real, *found.values()))
    return FirstAbsence(real, train, generated, gens)
