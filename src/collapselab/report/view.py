"""Runs as a page reads them: each run's metrics frame (read once), its config, manifest and the
artifacts of the few generations a figure shows, and what its metrics declare."""

from __future__ import annotations

import logging
from array import array
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from collapselab.metrics.declare import (
    WORSE_ARROW,
    Bounds,
    Plot,
    declarations,
    declared_bounds,
    lookup,
)
from collapselab.store import RunStore

log = logging.getLogger(__name__)

META = {"generation", "train_size", "generated", "wall_s", "degenerate", "nonfinite"}
MAX_SHOWN = 12  # generations whose artifacts a per-generation figure or table shows


@dataclass
class Shares:
    """The ``[<consumer>/]composition.<origin>`` entries of the metrics rows, long: entry ``i`` is
    row ``rows[i]``'s share ``values[i]`` of origin ``keys[codes[i]]``. A replacing run records a
    new origin every generation, so as frame columns these would grow as generations squared."""

    rows: np.ndarray  # (entries,) int64: row index in the frame
    codes: np.ndarray  # (entries,) int64: index into keys
    values: np.ndarray  # (entries,) float64
    keys: list[str]


def metrics_frame(rows: list[dict[str, Any]]) -> tuple[Any, Shares]:
    """The metrics rows as a pandas frame (one row per generation, columns in first-seen order, a
    key a row lacks is NaN there), without the composition shares, which come back as
    :class:`Shares`."""
    import pandas as pd

    plain: list[dict[str, Any]] = []
    index: dict[str, int] = {}  # composition key -> code
    at, codes, values = array("q"), array("q"), array("d")  # 8 bytes an entry
    for i, row in enumerate(rows):
        flat = {}
        for key, value in row.items():
            if "composition." in key:
                at.append(i)
                codes.append(index.setdefault(key, len(index)))
                values.append(np.nan if value is None else value)
            else:
                flat[key] = value
        plain.append(flat)
    shares = Shares(np.frombuffer(at, dtype=np.int64), np.frombuffer(codes, dtype=np.int64),
                    np.frombuffer(values, dtype=np.float64), list(index))
    if not plain:
        return pd.DataFrame({"generation": np.zeros(0, dtype=np.int64)}), shares
    return pd.DataFrame.from_records(plain), shares


@dataclass
class RunView:
    """One run as a page draws it: its store, its label and its metrics frame, read once; its
    config and manifest, read once; the artifacts of the few generations figures show."""

    store: RunStore
    label: str
    frame: Any  # pandas DataFrame: one row per completed generation (no composition columns)
    shares: Shares  # the composition columns, long
    _artifacts: dict[tuple[int, str | None], dict[str, np.ndarray]] = field(
        default_factory=dict, repr=False)

    @cached_property
    def config(self) -> Any:
        return self.store.config()

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return self.store.manifest()

    @property
    def completed(self) -> int:
        return int(self.manifest["completed_generations"])

    @cached_property
    def curves(self) -> list[tuple[str, Any]]:
        """``(label, frame)``, or one per producer of a multi-producer run, with the
        ``<producer>/`` prefix taken off its columns (so every producer's perplexity shares a
        plot)."""
        names = [p.name for p in self.config.producers or []]
        if not names:
            return [(self.label, self.frame)]
        out = []
        for name in names:
            prefix = f"{name}/"
            cols = [c for c in self.frame.columns if c.startswith(prefix)]
            sub = self.frame[cols].rename(columns=lambda c, p=prefix: c.removeprefix(p))
            sub.insert(0, "generation", self.frame["generation"].to_numpy())
            out.append((f"{self.label} · {name}", sub))
        return out

    @cached_property
    def shown(self) -> list[int]:
        """The generations per-generation figures show: all, or ``MAX_SHOWN`` evenly spaced
        (the first and the last included)."""
        return [int(i) for i in thin(self.completed, MAX_SHOWN)]

    def artifacts(self, gen: int, producer: str | None = None) -> dict[str, np.ndarray]:
        """Generation ``gen``'s artifacts (of ``producer`` in a multi-producer run), read once
        (only generations in ``shown`` are asked)."""
        if (gen, producer) not in self._artifacts:
            self._artifacts[gen, producer] = (self.store.artifacts(gen, producer) if producer
                                              else self.store.artifacts(gen))
        return self._artifacts[gen, producer]

    @property
    def producers(self) -> list[str | None]:
        return [p.name for p in self.config.producers or []] or [None]

    @cached_property
    def kind(self) -> str:
        """The kind of data the run's source gives (``tokens``, ``continuous``, ...)."""
        from collapselab import registry

        try:
            return str(registry.sources.get(self.config.data.source).kind)
        except Exception:  # a plugin source that is not installed here
            return "other"

    @cached_property
    def declared(self) -> Declared:
        return Declared.of([self.config])


def views(stores: list[RunStore]) -> list[RunView]:
    return [RunView(s, lab, *metrics_frame(s.metrics()))
            for s, lab in zip(stores, label_runs(stores), strict=True)]


def metric_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Measured value columns, in first-seen order (no SEs, theory columns or bookkeeping)."""
    keys: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key in META or "." in key or not isinstance(value, (int, float, type(None))):
                continue
            if key.endswith("_real"):
                continue  # reference constants are drawn beside their metric
            keys.setdefault(key)
    return list(keys)


def frame_metric_keys(frame: Any) -> list[str]:
    """:func:`metric_keys` of a metrics frame: numeric (or empty) columns, in column order."""
    from pandas.api.types import is_numeric_dtype

    return [k for k in frame.columns
            if k not in META and "." not in k and not k.endswith("_real")
            and (is_numeric_dtype(frame[k]) or frame[k].isna().all())]


def label_runs(stores: list[RunStore]) -> list[str]:
    """Short labels: the policy (with its parameters) if that tells the runs apart, else the name."""
    labels = []
    for s in stores:
        cfg = s.config()
        params = ", ".join(f"{k}={v}" for k, v in cfg.policy.params.items() if v is not None)
        labels.append(f"{cfg.policy.name}" + (f" ({params})" if params else ""))
    if len(set(labels)) < len(labels):
        labels = [f"{s.root.name}: {lab}" for s, lab in zip(stores, labels, strict=True)]
    return labels


def thin(n: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` evenly spaced items of ``n``, the first and the last included."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def column(frame: Any, key: str) -> np.ndarray:
    """Column ``key`` as floats (NaN where missing); all NaN if the frame lacks it."""
    if key not in frame.columns:
        return np.full(len(frame), np.nan)
    return np.asarray(frame[key].to_numpy(dtype=float, na_value=np.nan), dtype=float)


def thinned_note(drawn: int, total: int) -> str:
    return f" ({drawn} of {total} generations drawn, evenly spaced)" if drawn < total else ""

@dataclass
class Declared:
    """What the metrics of some runs declare: descriptions, the direction that is worse, plots
    (in the order of the configs' metrics; duplicates once) and the range of each value."""

    describe: dict[str, str] = field(default_factory=dict)
    worse: dict[str, str] = field(default_factory=dict)
    plots: list[Plot] = field(default_factory=list)
    bounds: dict[str, Bounds] = field(default_factory=dict)

    @classmethod
    def of(cls, configs: list[Any]) -> Declared:
        from collapselab import registry

        out = cls()
        for cfg in configs:
            for spec in cfg.metrics or []:
                try:
                    metric = registry.metrics.get(spec.name)
                except Exception as exc:  # a plugin metric not installed here: undeclared
                    log.info("report: metric %r not loadable (%s); drawn undeclared", spec.name,
                             exc)
                    continue
                describe, worse, plots = declarations(metric)
                for k, v in describe.items():
                    out.describe.setdefault(k, v)
                for k, v in worse.items():
                    out.worse.setdefault(k, v)
                for k, b in declared_bounds(metric).items():
                    out.bounds.setdefault(k, b)
                out.plots += [p for p in plots if p not in out.plots]
        return out

    def merge(self, other: Declared) -> Declared:
        return Declared({**other.describe, **self.describe}, {**other.worse, **self.worse},
                        self.plots + [p for p in other.plots if p not in self.plots],
                        {**other.bounds, **self.bounds})

    def clip(self, key: str, values: np.ndarray) -> np.ndarray:
        """``values`` clipped to the range ``key`` declares (as they are where it declares
        none), so that a band never leaves the metric's range (a variance ratio below 0)."""
        low, high = lookup(self.bounds, key) or (None, None)
        if low is None and high is None:
            return values
        return np.clip(values, -np.inf if low is None else low, np.inf if high is None else high)

    def line(self, key: str) -> str:
        """``key — description (↑ worse)``, as a glossary and a caption say it."""
        text = lookup(self.describe, key) or "(no description declared)"
        arrow = WORSE_ARROW.get(lookup(self.worse, key) or "", "")
        return f"{key} — {text}" + (f" ({arrow})" if arrow else "")

    def lines(self, keys: list[str]) -> list[str]:
        """:meth:`line` of each key; keys sharing a description (``tail_nll_*``) on one line."""
        shared: dict[tuple[str | None, str | None], list[str]] = {}
        for k in keys:
            shared.setdefault((lookup(self.describe, k), lookup(self.worse, k)), []).append(k)
        out = []
        for members in shared.values():
            first = self.line(members[0])
            out.append(first if len(members) == 1 else
                       ", ".join(members) + first.removeprefix(members[0]))
        return out

    def of_kind(self, kind: str) -> list[Plot]:
        return [p for p in self.plots if p.kind == kind]


def informative(key: str, runs: list[tuple[str, Any]]) -> bool:
    """Whether ``key`` varies in some run: a constant or empty series says nothing as a curve
    (its value stays in the tables)."""
    for _, frame in runs:
        y = column(frame, key)
        y = y[np.isfinite(y)]
        if y.size > 1 and np.ptp(y) > 1e-12 * max(1.0, float(np.abs(y).max())):
            return True
    return False

def shown_note(view: RunView, count: int) -> str:
    if len(view.shown) >= view.completed:
        return ""
    return f" ({count} of {view.completed} generations, evenly spaced)"

def family_of(view: RunView) -> str:
    cfg = view.config
    if cfg.producers:
        return ", ".join(f"{p.name}: {p.model.family}" for p in cfg.producers)
    return cfg.model.family


def kind_groups(pages: list[RunView]) -> list[tuple[str, list[RunView]]]:
    """Runs by the kind of data they model, in page order: each gets its headline panel."""
    groups: dict[str, list[RunView]] = {}
    for v in pages:
        groups.setdefault(v.kind, []).append(v)
    return list(groups.items())

