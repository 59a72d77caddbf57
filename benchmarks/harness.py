"""Alternated pairs, medians of per-pair ratios, and result rows.

The machine is shared and noisy, so absolute times drift; a ratio of two runs made back to back
drifts far less. Each pair runs ours and the peer one after the other (the order flips every pair,
so a slow spell does not always land on the same side), and the figure reported is the median of
the per-pair ratios ``peer_seconds / our_seconds`` (> 1: we are faster).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

Timed = Callable[[], float]  # runs the workload once, returns the seconds of its timed part


def timed(fn: Callable[[], Any]) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


@dataclass
class Pairs:
    ours: list[float]  # seconds per rep
    peer: list[float]

    @property
    def ratios(self) -> list[float]:
        return [p / o for o, p in zip(self.ours, self.peer, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def alternate(ours: Timed, peer: Timed, reps: int, *, warmup: bool = True) -> Pairs:
    """``reps`` pairs; with ``warmup`` each side runs once untimed first (imports, caches)."""
    if warmup:
        ours()
        peer()
    out = Pairs([], [])
    for i in range(reps):
        if i % 2 == 0:
            out.ours.append(ours())
            out.peer.append(peer())
        else:
            out.peer.append(peer())
            out.ours.append(ours())
    return out


@dataclass
class Row:
    """One line of the table. ``ratio`` is ours over the peer as a speed-up (> 1: ours faster);
    ``goal`` the ratio the issue asks for (None: reported, no goal)."""

    workload: str
    ours: str  # human-readable figure, e.g. "12.3k tok/s"
    peer: str
    ratio: float | None
    goal: float | None = None
    goal_text: str = ""
    seconds: float | None = None  # with ``limit_s``: a time goal (ours must take <= limit_s)
    limit_s: float | None = None
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # raw numbers: seconds per rep, sizes ...

    @property
    def has_goal(self) -> bool:
        return self.goal is not None or self.limit_s is not None

    @property
    def met(self) -> bool | None:
        if self.limit_s is not None:
            return None if self.seconds is None else self.seconds <= self.limit_s
        if self.goal is None or self.ratio is None:
            return None
        return self.ratio >= self.goal

    def result(self) -> str:
        if self.met is None:
            return "not measured" if self.has_goal else "—"
        if self.met:
            return "met"
        if self.limit_s is not None:
            assert self.seconds is not None
            return f"missed: {self.seconds / self.limit_s:.2f}x over"
        assert self.ratio is not None and self.goal is not None
        return f"missed: {self.goal / self.ratio:.2f}x short"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["met"] = self.met
        out["result"] = self.result()
        return out


def fmt_rate(x: float, unit: str) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix} {unit}"
    return f"{x:.3g} {unit}"


def fmt_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def fmt_ratio(r: float | None) -> str:
    if r is None or not math.isfinite(r):
        return "—"
    return f"{r:.3g}x"


def median(xs: list[float]) -> float:
    return statistics.median(xs)
