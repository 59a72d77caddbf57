"""What a metric declares about its outputs, for the report (which reads nothing else).

A metric class may carry three class attributes; keys are metric keys or ``fnmatch`` patterns
(``tail_nll_*``), the first matching pattern wins:

- ``describe``: ``{key: one line}`` — what the value means;
- ``worse``: ``{key: "higher" | "lower"}`` — the direction collapse moves it (absent: neither);
- ``plots``: ``(Plot, ...)`` — how the report draws it: related series in one chart
  (:meth:`Plot.group`), the headline panel (``headline=True``), per-generation histograms of an
  artifact (:meth:`Plot.histogram`), a table of generated text (:meth:`Plot.text`), an image
  grid (:meth:`Plot.grid`) or values at some generations as a table (:meth:`Plot.table`); the
  same as dicts (``{"kind": "curves", "keys": (...), "title": ...}``, ``"artifact"`` for the
  per-generation kinds) are read too. Keys no plot names get a chart of their own;
- ``bounds``: ``{key: (low, high)}`` — the values the key can take (None: open on that side),
  e.g. ``(0, None)`` for a variance ratio: bands the report draws around it are clipped there.

A metric without declarations (a plugin's) is drawn one chart per key, described as undeclared.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from collapselab.capabilities import declared
from collapselab.metrics.base import MetricBase

Kind = Literal["curves", "histogram", "text", "grid", "table"]
WORSE_ARROW = {"higher": "↑ worse", "lower": "↓ worse"}


@dataclass(frozen=True)
class Plot:
    kind: Kind
    keys: tuple[str, ...]  # curves: metric keys/patterns; others: (artifact, [prompt artifact])
    title: str
    headline: bool = False
    generations: tuple[int, ...] | None = None  # table: the generations it shows (None: all)
    flag: str | None = None  # table: a key whose value 0 marks a row as a warning

    @classmethod
    def curve(cls, key: str, title: str = "", *, headline: bool = False) -> Plot:
        """One series against generation (with its SE band, theory and real-data reference)."""
        return cls("curves", (key,), title or key, headline)

    @classmethod
    def group(cls, *keys: str, title: str, headline: bool = False) -> Plot:
        """Related series in one chart (tail buckets, quantiles, distinct-n)."""
        return cls("curves", tuple(keys), title, headline)

    @classmethod
    def histogram(cls, artifact: str, title: str) -> Plot:
        """Per-generation histograms (log x) of a per-sample artifact, e.g. the paper's Fig. 1."""
        return cls("histogram", (artifact,), title)

    @classmethod
    def text(cls, artifact: str, prompts: str, title: str) -> Plot:
        """A table of generated text, one row per generation: ``artifact`` holds the continuation
        of each prompt in ``prompts`` (both unicode arrays ``(n_prompts,)``)."""
        return cls("text", (artifact, prompts), title)

    @classmethod
    def grid(cls, artifact: str, title: str) -> Plot:
        """An image grid, one row per generation, from an artifact ``(n, H, W)``."""
        return cls("grid", (artifact,), title)

    @classmethod
    def table(cls, *keys: str, title: str, generations: tuple[int, ...] | None = None,
              flag: str | None = None) -> Plot:
        """Values at ``generations`` as a table (e.g. checks made once, at generation 0)."""
        return cls("table", tuple(keys), title, False, generations, flag)

    @classmethod
    def of(cls, spec: Any) -> Plot | None:
        """A declaration as a :class:`Plot`: a Plot, or the same as a dict (``kind``, ``keys`` or
        ``artifact``, ``title``, ``headline``, ``generations``, ``flag``); None for a kind the
        report does not draw."""
        if isinstance(spec, Plot):
            return spec
        if not isinstance(spec, dict):
            return None
        kind, title = spec.get("kind"), spec.get("title")
        keys = tuple(spec.get("keys") or ())
        artifact = spec.get("artifact")
        if kind == "curves" and keys:
            return cls("curves", keys, title or ", ".join(keys), bool(spec.get("headline")))
        if kind in ("histogram", "grid") and artifact:
            return cls(kind, (artifact,), title or artifact)
        if kind == "text" and artifact:
            return cls("text", (artifact, spec.get("prompts", "")), title or artifact)
        if kind == "table" and keys:
            gens = spec.get("generations")
            return cls.table(*keys, title=title or ", ".join(keys),
                             generations=tuple(gens) if gens is not None else None,
                             flag=spec.get("flag"))
        return None

    def matches(self, key: str) -> bool:
        return self.kind == "curves" and any(fnmatch.fnmatchcase(key, p) for p in self.keys)


T = TypeVar("T")


def lookup(table: dict[str, T], key: str) -> T | None:
    """The entry of ``table`` whose key or pattern matches ``key`` (exact keys first)."""
    if key in table:
        return table[key]
    for pattern, value in table.items():
        if fnmatch.fnmatchcase(key, pattern):
            return value
    return None


def declarations(metric: Any) -> tuple[dict[str, str], dict[str, str], tuple[Plot, ...]]:
    """``(describe, worse, plots)`` of a metric class (empty where it declares none)."""
    plots = (Plot.of(p) for p in declared(metric, "plots", MetricBase) or ())
    return (dict(declared(metric, "describe", MetricBase) or {}),
            dict(declared(metric, "worse", MetricBase) or {}),
            tuple(p for p in plots if p is not None))


Bounds = tuple[float | None, float | None]


def declared_bounds(metric: Any) -> dict[str, Bounds]:
    """The ``bounds`` a metric class declares (empty where it declares none)."""
    bounds = dict(declared(metric, "bounds", MetricBase) or {})
    return {k: (lo, hi) for k, (lo, hi) in bounds.items()}
