"""What a metric declares about its outputs, for the report (which reads nothing else).

A metric class may carry three class attributes; keys are metric keys or ``fnmatch`` patterns
(``tail_nll_*``), the first matching pattern wins:

- ``describe``: ``{key: one line}`` — what the value means;
- ``worse``: ``{key: "higher" | "lower"}`` — the direction collapse moves it (absent: neither);
- ``plots``: ``(Plot, ...)`` — how the report draws it: related series in one chart
  (:meth:`Plot.group`), the headline panel (``headline=True``), per-generation histograms of an
  artifact (:meth:`Plot.histogram`), a table of generated text (:meth:`Plot.text`) or an image
  grid (:meth:`Plot.grid`). Keys no plot names get a chart of their own.

A metric without declarations (a plugin's) is drawn one chart per key, described as undeclared.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["curves", "histogram", "text", "grid"]
WORSE_ARROW = {"higher": "↑ worse", "lower": "↓ worse"}


@dataclass(frozen=True)
class Plot:
    kind: Kind
    keys: tuple[str, ...]  # curves: metric keys/patterns; others: (artifact, [prompt artifact])
    title: str
    headline: bool = False

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

    def matches(self, key: str) -> bool:
        return self.kind == "curves" and any(fnmatch.fnmatchcase(key, p) for p in self.keys)


def lookup(table: dict[str, str], key: str) -> str | None:
    """The entry of ``table`` whose key or pattern matches ``key`` (exact keys first)."""
    if key in table:
        return table[key]
    for pattern, value in table.items():
        if fnmatch.fnmatchcase(key, pattern):
            return value
    return None


def declarations(metric: Any) -> tuple[dict[str, str], dict[str, str], tuple[Plot, ...]]:
    """``(describe, worse, plots)`` of a metric class (empty where it declares none)."""
    return (dict(getattr(metric, "describe", {}) or {}), dict(getattr(metric, "worse", {}) or {}),
            tuple(getattr(metric, "plots", ()) or ()))
