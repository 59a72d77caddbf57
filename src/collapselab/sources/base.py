"""The data-source protocol.

A source provides the *real* distribution of an experiment. Every array it returns has a leading
chains axis, like all data in collapselab: ``(chains, n, *event_shape)``.

- ``kind``: ``"continuous"`` (float vectors), ``"categorical"`` (ints in ``[0, k)``, one per sample),
  ``"tokens"`` (int blocks ``(chains, n, block_len)``) or ``"images"`` (float ``(chains, n, h, w)``);
  metrics and families declare which kinds they accept.
- ``real(n, chains, rng)``: the real training pool of generation 0 (``n`` samples per chain).
  Finite corpora return a subset of their train split; every chain may share it.
- ``fresh(n, chains, rng)``: new real samples for the ``fresh`` policy (finite corpora draw a new
  random subset of the train split).
- ``heldout(rng)``: real held-out data for metrics, ``(1, m, ...)``; broadcast over chains.
- optional: what ``collapselab.capabilities`` names for a source (``truth``, ``vocab`` and
  ``vocab_size``, ``n_states``, ``block_len``, ``heldout_size``, ``log_prob_tokens``, ...); a
  source declares each by having it (or by subclassing the capability's Protocol), and metrics,
  filters and families ask ``capabilities.provides`` or its helpers (``capabilities.truth``).

:class:`Source` is that protocol as a ``typing.Protocol``; :class:`SourceBase` a base class with
what a source may leave out (``fresh``: more draws of ``real``).
``collapselab.testing.check_component`` checks a source against it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from collapselab import registry
from collapselab.errors import RunError
from collapselab.protocol import NUMBERS

KINDS = ("continuous", "categorical", "tokens", "images")  # what a source's ``kind`` may be


@runtime_checkable
class Source(Protocol):
    """A data source (``registry.PROTOCOLS["source"]`` asks a registered class for the same)."""

    kind: ClassVar[str]

    def real(self, n: int, chains: int, rng: np.random.Generator) -> np.ndarray: ...

    def fresh(self, n: int, chains: int, rng: np.random.Generator) -> np.ndarray: ...

    def heldout(self, rng: np.random.Generator) -> np.ndarray: ...


class SourceBase:
    """Base class of sources: a subclass sets ``kind`` and defines ``real`` and ``heldout``
    (registration refuses it without them); ``fresh`` defaults to more draws of ``real`` (right
    for a distribution; a finite corpus draws a new subset of its train split instead)."""

    kind: ClassVar[str]

    def fresh(self, n: int, chains: int, rng: np.random.Generator) -> np.ndarray:
        return self.real(n, chains, rng)  # type: ignore[attr-defined,no-any-return]


def checked(source: Any, method: str, data: Any, chains: int, n: int | None = None) -> np.ndarray:
    """What ``source.method`` returned, checked (shape and dtype): numbers of shape ``(chains or 1,
    n, ...)`` (any ``n`` when None); else a ``RunError`` naming the source, the method and the
    rule."""
    x = np.asarray(data)
    if (x.dtype.kind in NUMBERS and x.ndim >= 2 and x.shape[0] in (1, chains)
            and n in (None, x.shape[1])):
        return x
    raise RunError(f"{registry.name_of(source)}.{method} returned shape {x.shape} and dtype "
                   f"{x.dtype}; data are numbers of shape (1 or {chains} chains, "
                   f"{'n' if n is None else n}, ...)")


def tile_chains(data: np.ndarray, chains: int) -> np.ndarray:
    """Share one ``(n, ...)`` pool across ``chains``: ``(chains, n, ...)`` without copying."""
    return np.broadcast_to(data, (chains, *data.shape))

