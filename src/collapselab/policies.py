"""Data policies: how each generation's training set is composed from real and synthetic data.

A policy sees only sizes: ``sizes[0]`` rows per chain in the real pool, ``sizes[1:]`` in the
synthetic pools it keeps (``history``: the newest only, or all, oldest first), and the target
``size``. It returns an index plan (``collapselab.provenance.Plan``): which rows of which pools make
the next training set. The loop applies the plan once and records it as the provenance, so a policy
can only select rows. Random subsets are drawn independently per chain, in one vectorised call.

A policy of your own: a class with ``history`` ("last" or "all") and ``plan(sizes, size, chains,
rng) -> Plan``; its typed ``__init__`` keywords are its config fields. :class:`Policy` is that
protocol as a ``typing.Protocol``, :class:`PolicyBase` a base class (``history`` "last");
``collapselab.testing.check_component`` checks a policy (its plans stay within the pools).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field

from collapselab.provenance import FRESH_POOL, Part, Plan, draw_rows
from collapselab.registry import policies


@runtime_checkable
class Policy(Protocol):
    """A data policy (``registry.PROTOCOLS["policy"]`` asks a registered class for the same)."""

    history: ClassVar[Literal["last", "all"]]  # synthetic pools the loop keeps: newest, or all

    def plan(self, sizes: list[int], size: int, chains: int, rng: np.random.Generator) -> Plan:
        """``sizes[0]``: rows per chain of the real pool, ``sizes[1:]`` of the kept synthetic
        pools (oldest first); ``size``: rows per chain of the training set -> the index plan."""
        ...


class PolicyBase:
    """Base class of policies: a subclass defines ``plan``; it keeps the newest synthetic pool
    unless it sets ``history = "all"``."""

    history: ClassVar[Literal["last", "all"]] = "last"


def _last(sizes: list[int]) -> int:
    return len(sizes) - 1  # the newest synthetic pool


@policies.register("replace")
class Replace(PolicyBase):
    """Train only on the previous generation's output (the paper's first setting)."""

    history: ClassVar[Literal["last", "all"]] = "last"

    def plan(self, sizes: list[int], size: int, chains: int, rng: np.random.Generator) -> Plan:
        return Plan((Part((_last(sizes),)),))


@policies.register("real_fraction")
class RealFraction(PolicyBase):
    """Keep a fraction of real data every generation (a fresh random subset of the original pool
    each time; the paper's 10% setting); the rest is a random subset of the previous generation's
    output."""

    history: ClassVar[Literal["last", "all"]] = "last"

    def __init__(
        self,
        real_fraction: Annotated[float, Field(ge=0.0, le=1.0, description=(
            "share of each training set drawn from real data"))] = 0.1,
    ) -> None:
        self.real_fraction = real_fraction

    def split(self, size: int) -> tuple[int, int]:
        k_real = int(round(self.real_fraction * size))
        return k_real, size - k_real

    def plan(self, sizes: list[int], size: int, chains: int, rng: np.random.Generator) -> Plan:
        k_real, k_synth = self.split(size)
        parts = [Part((0,), draw_rows(sizes[0], k_real, chains, rng))] if k_real else []
        if k_synth:
            last = _last(sizes)
            parts.append(Part((last,), draw_rows(sizes[last], k_synth, chains, rng)))
        return Plan(tuple(parts))


@policies.register("fresh")
class Fresh(RealFraction):
    """Like ``real_fraction``, but the real part is new data from the source each generation."""

    def plan(self, sizes: list[int], size: int, chains: int, rng: np.random.Generator) -> Plan:
        k_real, k_synth = self.split(size)
        parts = [Part((FRESH_POOL,))] if k_real else []
        if k_synth:
            last = _last(sizes)
            parts.append(Part((last,), draw_rows(sizes[last], k_synth, chains, rng)))
        return Plan(tuple(parts), fresh=k_real)


@policies.register("accumulate")
class Accumulate(PolicyBase):
    """All real data plus every synthetic set so far (Gerstgrasser et al. 2024: no blow-up)."""

    history: ClassVar[Literal["last", "all"]] = "all"

    def plan(self, sizes: list[int], size: int, chains: int, rng: np.random.Generator) -> Plan:
        return Plan((Part(tuple(range(len(sizes)))),))


@policies.register("accumulate_subsample")
class AccumulateSubsample(PolicyBase):
    """Accumulate, then subsample to a fixed budget (constant compute per generation)."""

    history: ClassVar[Literal["last", "all"]] = "all"

    def __init__(
        self,
        budget: Annotated[int | None, Field(ge=1, description=(
            "training-set size after subsampling; default: data.size"))] = None,
    ) -> None:
        self.budget = budget

    def plan(self, sizes: list[int], size: int, chains: int, rng: np.random.Generator) -> Plan:
        every = tuple(range(len(sizes)))
        return Plan((Part(every, draw_rows(sum(sizes), self.budget or size, chains, rng)),))
