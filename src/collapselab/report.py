"""Static HTML reports, drawn only from run directories (never from live objects).

A page reads top to bottom: a table of contents; the runs; a headline panel per kind of data
(the metrics that define collapse there, with their theory and real-data references); the
fixed prompts continued by every generation (language runs); per-generation distributions
(perplexity histograms, image grids, samples against the truth); the training-set composition;
every other metric; the final generation and a glossary of every metric. What is drawn, and how,
comes only from the metrics' declarations (``describe``, ``worse``, ``plots``: see
:mod:`collapselab.metrics.declare`): the report names no metric, artifact or source. A series
that is constant or empty in every run is left out of the charts and kept in the tables. Plots
are PNGs embedded as data URIs, so the page is one self-contained file that works offline.

The cost is linear in generations and the figure count does not grow with them:

- each run's metrics are read once into a frame (one row per generation, one column per key);
  every curve, bar and table is drawn from it;
- a curve of more than ``MAX_POINTS`` generations is drawn at ``MAX_POINTS`` evenly spaced ones
  (first and last included, said in the caption); the tables keep every generation;
- per-generation figures (histograms, image grids, text) open the artifacts of at most
  ``MAX_SHOWN`` evenly spaced generations;
- the composition plot stacks at most ``MAX_ORIGINS`` origins: beyond that, the generations a
  training set came from are grouped into contiguous ranges (real data stays its own band).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import re
from array import array
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from collapselab.metrics.declare import WORSE_ARROW, Plot, declarations, lookup
from collapselab.store import RunStore, write_atomic

log = logging.getLogger(__name__)

META = {"generation", "train_size", "generated", "wall_s", "degenerate", "nonfinite"}
MAX_POINTS = 500  # generations drawn per curve; more are thinned evenly (tables keep them all)
MAX_SHOWN = 12  # generations whose artifacts a per-generation figure or table shows
MAX_ORIGINS = 10  # bands in a composition plot; more origins are grouped into generation ranges


@dataclass
class Figure:
    name: str
    title: str
    png: bytes
    lines: list[str] = field(default_factory=list)  # what each series means, under the caption


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
        import collapselab.components  # noqa: F401  (registers the built-in sources)
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


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def thin(n: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` evenly spaced items of ``n``, the first and the last included."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def _column(frame: Any, key: str) -> np.ndarray:
    """Column ``key`` as floats (NaN where missing); all NaN if the frame lacks it."""
    if key not in frame.columns:
        return np.full(len(frame), np.nan)
    return np.asarray(frame[key].to_numpy(dtype=float, na_value=np.nan), dtype=float)


def thinned_note(drawn: int, total: int) -> str:
    return f" ({drawn} of {total} generations drawn, evenly spaced)" if drawn < total else ""


@dataclass
class Declared:
    """What the metrics of some runs declare: descriptions, the direction that is worse, and
    plots (in the order of the configs' metrics; duplicates once)."""

    describe: dict[str, str] = field(default_factory=dict)
    worse: dict[str, str] = field(default_factory=dict)
    plots: list[Plot] = field(default_factory=list)

    @classmethod
    def of(cls, configs: list[Any]) -> Declared:
        import collapselab.components  # noqa: F401  (registers the built-in metrics)
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
                out.plots += [p for p in plots if p not in out.plots]
        return out

    def merge(self, other: Declared) -> Declared:
        return Declared({**other.describe, **self.describe}, {**other.worse, **self.worse},
                        self.plots + [p for p in other.plots if p not in self.plots])

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
        y = _column(frame, key)
        y = y[np.isfinite(y)]
        if y.size > 1 and np.ptp(y) > 1e-12 * max(1.0, float(np.abs(y).max())):
            return True
    return False


@dataclass
class Chart:
    """One chart of the page: a declared plot and the keys of it the runs recorded."""

    plot: Plot
    keys: list[str]
    left_out: list[str]  # keys of the plot that are constant or empty


def charts(runs: list[tuple[str, Any]], declared: Declared) -> list[Chart]:
    """Every metric key of ``runs`` in one chart: the declared curve plots that match it (the
    first wins), else a chart of its own; keys constant or empty everywhere are left out."""
    keys: dict[str, None] = {}
    for _, frame in runs:
        keys.update(dict.fromkeys(frame_metric_keys(frame)))
    out: list[Chart] = []
    placed: set[str] = set()
    for plot in declared.of_kind("curves"):
        mine = [k for k in keys if k not in placed and plot.matches(k)]
        if not mine:
            continue
        placed.update(mine)
        shown = [k for k in mine if informative(k, runs)]
        out.append(Chart(plot, shown, [k for k in mine if k not in shown]))
    for k in keys:
        if k not in placed:
            shown = [k] if informative(k, runs) else []
            out.append(Chart(Plot.curve(k), shown, [] if shown else [k]))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def _draw_series(ax: Any, frame: Any, key: str, color: Any, label: str, idx: np.ndarray,
                 reference: bool) -> None:
    """One metric of one run: the chain mean with its ±1.96 SE band, the theory dashed with its
    band, the real data's value dotted (``reference``)."""
    part = frame.iloc[idx]
    gens, y = _column(part, "generation"), _column(frame, key)[idx]
    ax.plot(gens, y, color=color, label=label, lw=1.6)
    sem = _column(part, f"{key}.sem")
    if np.isfinite(sem).any():
        ax.fill_between(gens, y - 1.96 * sem, y + 1.96 * sem, color=color, alpha=0.18, lw=0)
    theory = _column(part, f"{key}.theory")
    if np.isfinite(theory).any():
        ax.plot(gens, theory, color=color, ls="--", lw=1.2, label=f"{label}: theory")
        se = _column(part, f"{key}.theory_se")
        if np.isfinite(se).any():
            ax.fill_between(gens, theory - 1.96 * se, theory + 1.96 * se, color=color,
                            alpha=0.08, hatch="///", lw=0)
    real = _column(frame, f"{key}_real")
    if reference and np.isfinite(real).any():
        ax.axhline(np.nanmean(real), color=color, ls=":", lw=1, label=f"{label}: real data")


def _log_scale(ax: Any, values: list[np.ndarray]) -> None:
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")


def chart_figure(chart: Chart, runs: list[tuple[str, Any]], declared: Declared,
                 name: str | None = None) -> Figure:
    """A declared plot against generation. One key: a line per run. Several keys (a group):
    one panel per run, a line per key, sharing the y axis."""
    import matplotlib.pyplot as plt

    keys = chart.keys
    runs = [(lab, f) for lab, f in runs if any(k in f.columns for k in keys)]
    drawn = total = 0
    for _, frame in runs:
        drawn = max(drawn, thin(len(frame), MAX_POINTS).size)
        total = max(total, len(frame))
    if len(keys) == 1:
        (key,) = keys
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        axes = [ax] * len(runs)
        colors = [[f"C{i % 10}"] for i in range(len(runs))]
    else:
        width = 6.4 if len(runs) == 1 else min(4.2 * len(runs), 13)
        fig, grid = plt.subplots(1, len(runs), figsize=(width, 3.6),
                                 sharey=True, squeeze=False)
        axes = list(grid[0])
        cmap = plt.get_cmap("viridis")
        colors = [[cmap(j / max(len(keys) - 1, 1)) for j in range(len(keys))]] * len(runs)
    values = []
    for (label, frame), ax, cols in zip(runs, axes, colors, strict=True):
        idx = thin(len(frame), MAX_POINTS)
        for key, color in zip(keys, cols * len(keys), strict=False):
            if key not in frame.columns:
                continue
            values.append(_column(frame, key))
            _draw_series(ax, frame, key, color, label if len(keys) == 1 else key, idx,
                         reference=True)
        if len(keys) > 1:
            ax.set_title(label, fontsize=9)
    for ax in dict.fromkeys(axes):
        _log_scale(ax, values)
        ax.set_xlabel("generation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    axes[0].set_ylabel(keys[0] if len(keys) == 1 else "value")
    if len(keys) == 1:
        axes[0].set_title(chart.plot.title)
    else:
        fig.suptitle(chart.plot.title, fontsize=10)
    caption = chart.plot.title + thinned_note(drawn, total)
    lines = declared.lines(keys)
    if chart.left_out:
        lines.append("constant or empty, in the tables only: " + ", ".join(chart.left_out))
    return Figure(name or (f"metric-{keys[0]}" if len(keys) == 1 else
                           f"chart-{_slug(chart.plot.title)}"), caption, _png(fig), lines)


def metric_figure(key: str, runs: list[tuple[str, Any]]) -> Figure:
    """One metric against generation, a line per run (kept for callers outside the page)."""
    return chart_figure(Chart(Plot.curve(key), [key], []), runs, Declared())


def distribution_figure(view: RunView) -> Figure | None:
    """Generation 0 against the last kept generation, against the truth where it is known."""
    import matplotlib.pyplot as plt

    store, label = view.store, view.label
    last = view.completed - 1
    if last < 0 or not store.has_samples(last) or not store.has_samples(0):
        return None
    first, final = store.samples(0), store.samples(last)
    cfg = view.config
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    if first.ndim == 3 and first.shape[-1] == 1 and first.dtype.kind == "f":  # 1-D continuous
        x0, x1 = first[..., 0].ravel(), final[..., 0].ravel()
        lo, hi = np.percentile(np.concatenate([x0, x1]), [0.5, 99.5])
        bins = np.linspace(min(lo, -4), max(hi, 4), 80)
        ax.hist(x0, bins=bins, density=True, alpha=0.5, label="generation 0")
        ax.hist(x1, bins=bins, density=True, alpha=0.5, label=f"generation {last}")
        pdf = truth_density(cfg, bins)
        if pdf is not None:
            ax.plot(bins, pdf, "k-", lw=1, label="real distribution")
        ax.set_xlabel("x (all chains pooled)")
    elif first.ndim == 3 and first.dtype.kind == "f":  # multivariate: first two coordinates
        ax.scatter(*first[0, :, :2].T, s=4, alpha=0.4, label="generation 0 (chain 0)")
        ax.scatter(*final[0, :, :2].T, s=4, alpha=0.4, label=f"generation {last} (chain 0)")
        ax.set_aspect("equal", adjustable="datalim")
    elif first.ndim == 2 and first.dtype.kind in "iu":  # categorical states
        k = int(max(first.max(), final.max())) + 1
        for data, name, off in ((first, "generation 0", -0.2), (final, f"generation {last}", 0.2)):
            freq = np.bincount(data.ravel(), minlength=k) / data.size
            ax.bar(np.arange(k) + off, freq, width=0.4, label=name)
        ax.set_xlabel("state")
        ax.set_yscale("log")
    else:
        plt.close(fig)
        return None
    ax.set_title(f"{label}: samples, generation 0 vs {last}")
    ax.legend(fontsize=7)
    return Figure(f"dist-{store.root.name}", f"{label}: distribution", _png(fig))


def artifact_histogram(view: RunView, key: str, title: str) -> Figure | None:
    """Histograms of a per-sample artifact (log x-axis) at the generations the page shows, e.g.
    the paper's perplexity-of-generated-text plots."""
    import matplotlib.pyplot as plt

    store, label = view.store, view.label
    gens = [g for g in view.shown if key in view.artifacts(g)]
    if not gens:
        return None
    values = [np.asarray(view.artifacts(g)[key], dtype=float).ravel() for g in gens]
    finite = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values])
    if finite.size == 0:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bins = np.geomspace(finite.min(), finite.max(), 60)
    for g, v, i in zip(gens, values, range(len(gens)), strict=True):
        ax.hist(v, bins=bins, density=True, histtype="step", lw=1.4,
                color=plt.cm.viridis(i / max(len(gens) - 1, 1)), label=f"generation {g}")
    ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_title(f"{label}: {title}")
    ax.legend(fontsize=6, ncol=2)
    return Figure(f"hist-{key}-{store.root.name}", title + shown_note(view, len(gens)),
                  _png(fig))


def shown_note(view: RunView, count: int) -> str:
    if len(view.shown) >= view.completed:
        return ""
    return f" ({count} of {view.completed} generations, evenly spaced)"


def sample_grid_figure(view: RunView, key: str | None = None, count: int = 12) -> Figure | None:
    """Image runs: one row per shown generation of its first samples (chain 0), from the
    declared grid artifact ``key`` or else the stored samples."""
    import matplotlib.pyplot as plt

    store, label = view.store, view.label
    grids: dict[int, np.ndarray] = {}
    for g in view.shown:
        art = view.artifacts(g).get(key) if key else None
        if art is not None and art.ndim == 3:
            grids[g] = art[:count]
        elif store.has_samples(g):
            samples = store.samples(g)
            if samples.ndim == 4:
                grids[g] = samples[0, :count]
    if not grids:
        return None
    gens = sorted(grids)
    cols = max(len(grids[g]) for g in gens)
    fig, axes = plt.subplots(len(gens), cols, figsize=(0.6 * cols + 0.8, 0.6 * len(gens) + 0.4),
                             squeeze=False)
    for row, g in zip(axes, gens, strict=True):
        for j, ax in enumerate(row):
            if j < len(grids[g]):
                ax.imshow(grids[g][j], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"gen {g}", rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"{label}: first samples of each generation (chain 0)", fontsize=8)
    return Figure(f"grid-{store.root.name}", f"{label}: samples by generation", _png(fig))


def truth_density(cfg: Any, x: np.ndarray) -> np.ndarray | None:
    """The density at ``x`` of the first coordinate of a source whose ``truth`` is a Gaussian
    mixture (``weights``, ``means``, ``covs``), or None: the source is built from the run's config
    (cheap: sources load their data on first use)."""
    from collapselab import registry

    try:
        truth = registry.sources.build(cfg.data.source, cfg.data.params).truth
        w, mu, cov = (np.asarray(truth[k], dtype=float) for k in ("weights", "means", "covs"))
        sd = np.sqrt(cov[:, 0, 0])
        z = (x[:, None] - mu[None, :, 0]) / sd[None]
        return (w[None] * np.exp(-0.5 * z**2) / (sd[None] * np.sqrt(2 * np.pi))).sum(axis=1)
    except Exception:  # no truth, another kind of truth, a source not installed here
        return None


def text_rows(view: RunView, plot: Plot, producer: str | None = None
              ) -> list[tuple[int, list[str], list[str]]]:
    """``(generation, prompts, continuations)`` of a declared text plot, at the shown
    generations that recorded it."""
    key, prompts_key = plot.keys
    out = []
    for g in view.shown:
        arts = view.artifacts(g, producer)
        if key in arts:
            texts = [str(t) for t in np.asarray(arts[key]).ravel()]
            prompts = [str(t) for t in np.asarray(arts.get(prompts_key, [])).ravel()]
            out.append((g, prompts + [""] * (len(texts) - len(prompts)), texts))
    return out


def continuations(store: RunStore, generations: list[int] | None = None,
                  producer: str | None = None) -> list[tuple[str, list[tuple[int, list[str],
                                                                          list[str]]]]]:
    """Every declared text plot of a run: ``(title, [(generation, prompts, texts), ...])`` at
    ``generations`` (default: every completed one), for ``collapselab samples``."""
    gens = range(store.completed()) if generations is None else generations
    out = []
    for plot in Declared.of([store.config()]).of_kind("text"):
        key, prompts_key = plot.keys
        rows = []
        for g in gens:
            arts = store.artifacts(g, producer) if producer else store.artifacts(g)
            if key in arts:
                texts = [str(t) for t in np.asarray(arts[key]).ravel()]
                prompts = [str(t) for t in np.asarray(arts.get(prompts_key, [])).ravel()]
                rows.append((g, prompts + [""] * (len(texts) - len(prompts)), texts))
        out.append((plot.title, rows))
    return out


def text_samples(view: RunView) -> list[tuple[int, list[str]]]:
    """Every declared text plot's continuations by shown generation (the first plot's)."""
    for plot in view.declared.of_kind("text"):
        rows = text_rows(view, plot)
        if rows:
            return [(g, texts) for g, _, texts in rows]
    return []


def text_table(view: RunView, plot: Plot, producer: str | None = None) -> str:
    """Prompts side by side, one row per shown generation; each cell the prompt (marked) and
    what that generation's model wrote after it."""
    esc = html.escape
    rows = text_rows(view, plot, producer)
    if not rows:
        return ""
    width = max(len(texts) for _, _, texts in rows)
    head = "".join(f"<th>prompt {i + 1}</th>" for i in range(width))
    body = ""
    for g, prompts, texts in rows:
        cells = "".join(f'<td><mark class="prompt">{esc(p)}</mark> {esc(t)}</td>'
                        for p, t in zip(prompts, texts, strict=True))
        body += f'<tr class="gen"><th>gen {g}</th>{cells}</tr>'
    whose = f" · {producer}" if producer else ""
    return (f"<h3>{esc(view.label)}{esc(whose)}: {esc(plot.title)}"
            f"{esc(shown_note(view, len(rows)))}</h3>"
            f'<p class="note">Highlighted: the prompt, the same in every row; after it, what '
            f"that generation's model wrote.</p>"
            f'<table class="text"><tr><th>generation</th>{head}</tr>{body}</table>')


def composition_figures(view: RunView) -> list[Figure]:
    """Stacked shares per consumer: each generation's training set by origin (real, gen_XXX and,
    in a multi-producer run, the producer), from the ``[<consumer>/]composition.*`` shares
    recorded."""
    label, store = view.label, view.store
    consumers = sorted({k.partition("composition.")[0] for k in view.shares.keys})
    out = [composition_figure(view.frame, view.shares, prefix,
                              f"{label} {prefix.rstrip('/')}".strip(),
                              f"{store.root.name}-{prefix.rstrip('/')}") for prefix in consumers]
    return [f for f in out if f is not None]


GEN_ORIGIN = re.compile(r"gen_(\d+)(?:/(.+))?$")


def origin_groups(origins: list[str], limit: int | None = None) -> list[tuple[str, list[int]]]:
    """Bands of a composition plot: ``(label, indices into origins)``. Up to ``limit`` origins,
    one band each; beyond, the ``gen_XXX[/producer]`` origins of each producer are grouped into
    contiguous generation ranges (``gen_000–099``), the others (real data) keep their own."""
    limit = MAX_ORIGINS if limit is None else limit
    if len(origins) <= limit:
        return [(o, [i]) for i, o in enumerate(origins)]
    others = [(o, [i]) for i, o in enumerate(origins) if not GEN_ORIGIN.match(o)]
    by_producer: dict[str, list[tuple[int, int]]] = {}
    for i, o in enumerate(origins):
        m = GEN_ORIGIN.match(o)
        if m:
            by_producer.setdefault(m.group(2) or "", []).append((int(m.group(1)), i))
    per = max(1, (limit - len(others)) // max(len(by_producer), 1))
    groups = list(others)
    for producer, members in by_producer.items():
        members.sort()
        gens = np.array([g for g, _ in members])
        edges = np.linspace(gens[0], gens[-1] + 1, per + 1)
        band = np.clip(np.searchsorted(edges, gens, side="right") - 1, 0, per - 1)
        for b in np.unique(band):
            inside = [members[j] for j in np.flatnonzero(band == b)]
            lo, hi = inside[0][0], inside[-1][0]
            name = f"gen_{lo:03d}" + (f"–{hi:03d}" if hi > lo else "")
            groups.append((name + (f"/{producer}" if producer else ""), [i for _, i in inside]))
    return groups


def composition_figure(frame: Any, shares: Shares, prefix: str, label: str,
                       name: str) -> Figure | None:
    import matplotlib.pyplot as plt

    real = f"{prefix}composition.real"
    mine = [i for i, k in enumerate(shares.keys) if k.startswith(f"{prefix}composition.")]
    mine.sort(key=lambda i: (shares.keys[i] != real, shares.keys[i]))
    if len(mine) < 2:  # real data only: nothing to stack
        return None
    origins = [shares.keys[i].removeprefix(f"{prefix}composition.") for i in mine]
    groups = origin_groups(origins)
    band = np.full(len(shares.keys), -1)  # key code -> band
    for b, (_, members) in enumerate(groups):
        band[[mine[j] for j in members]] = b
    idx = thin(len(frame), MAX_POINTS)
    position = np.full(len(frame), -1)  # frame row -> row drawn
    position[idx] = np.arange(idx.size)
    take = (band[shares.codes] >= 0) & (position[shares.rows] >= 0)
    stacked = np.zeros((idx.size, len(groups)))  # (generations drawn, bands)
    np.add.at(stacked, (position[shares.rows[take]], band[shares.codes[take]]),
              np.nan_to_num(shares.values[take]))
    gens = _column(frame.iloc[idx], "generation")
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bottom = np.zeros(idx.size)
    cmap = plt.get_cmap("viridis")
    for i, (origin, _) in enumerate(groups):
        share = stacked[:, i]
        color = "0.35" if origin == "real" else cmap(i / max(len(groups) - 1, 1))
        if idx.size <= 60:  # few generations: one bar each
            ax.bar(gens, share, bottom=bottom, color=color, width=0.8, label=origin)
        else:  # many: one filled band per origin (a bar per generation costs a patch each)
            ax.fill_between(gens, bottom, bottom + share, step="mid", color=color, lw=0,
                            label=origin)
        bottom = bottom + share
    ax.set_xlabel("generation")
    ax.set_ylabel("share of the training set")
    ax.set_title(f"{label}: training-set composition by origin")
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    grouped = (f" ({len(origins)} origins in {len(groups)} bands)" if len(groups) < len(origins)
               else "")
    return Figure(f"composition-{name}", f"{label}: composition" + grouped
                  + thinned_note(idx.size, len(frame)), _png(fig))


def family_of(view: RunView) -> str:
    cfg = view.config
    if cfg.producers:
        return ", ".join(f"{p.name}: {p.model.family}" for p in cfg.producers)
    return cfg.model.family


@dataclass
class Section:
    """A part of the page, listed in the table of contents."""

    id: str
    title: str
    body: str
    figures: list[Figure] = field(default_factory=list)


def kind_groups(pages: list[RunView]) -> list[tuple[str, list[RunView]]]:
    """Runs by the kind of data they model, in page order: each gets its headline panel."""
    groups: dict[str, list[RunView]] = {}
    for v in pages:
        groups.setdefault(v.kind, []).append(v)
    return list(groups.items())


KIND_NAMES = {"tokens": "language", "continuous": "continuous", "categorical": "categorical",
              "images": "image"}


def sections(pages: list[RunView]) -> list[Section]:
    """The page, top to bottom (see the module docstring)."""
    esc = html.escape
    out: list[Section] = [Section("runs", "Runs", runs_table(pages))]
    others: list[Figure] = []
    for kind, views_ in kind_groups(pages):
        runs = [curve for v in views_ for curve in v.curves]
        declared = Declared.of([v.config for v in views_])
        made = [(c, chart_figure(c, runs, declared, name=f"metric-{c.keys[0]}"))
                for c in charts(runs, declared) if c.keys]
        head = [f for c, f in made if c.plot.headline]
        others += [f for c, f in made if not c.plot.headline]
        names = ", ".join(v.label for v in views_)
        what = KIND_NAMES.get(kind, kind)
        intro = (f"<p>The metrics that define collapse for {esc(what)} data, declared so by the "
                 f"metrics themselves; runs: {esc(names)}.</p>")
        out.append(Section(f"headline-{_slug(kind)}", f"Headline: {what} runs",
                           intro + (f'<div class="grid">{figures_html(head)}</div>' if head else
                                    "<p>No headline metric was recorded.</p>"), head))
    agree = "".join(theory_table(v) for v in pages)
    if agree:
        out.append(Section("theory", "Theory against simulation",
                           "<p>Each predicted metric at the final generation: the value the run "
                           "measured, the exact prediction, the standard error (from the theory's "
                           "per-chain sd, or from the chains), z, and whether |z| &lt; 4. "
                           "<code>collapselab theory RUN -g …</code> prints it for any "
                           "generation.</p>" + agree))
    texts = "".join(text_table(v, plot, producer) for v in pages
                    for plot in v.declared.of_kind("text") for producer in v.producers)
    if texts:
        out.append(Section("text", "Fixed prompts, continued by every generation", texts))
    dists: list[Figure] = []
    for v in pages:
        grids = [sample_grid_figure(v, p.keys[0]) for p in v.declared.of_kind("grid")]
        if not v.declared.of_kind("grid"):
            grids = [sample_grid_figure(v)]  # stored image samples, where the run kept them
        hists = [artifact_histogram(v, p.keys[0], p.title) for p in v.declared.of_kind("histogram")]
        dists += [f for f in (distribution_figure(v), *hists, *grids) if f is not None]
    if dists:
        out.append(Section("distributions", "Distributions by generation",
                           f'<div class="grid">{figures_html(dists)}</div>', dists))
    comps = [f for v in pages for f in composition_figures(v)]
    if comps:
        out.append(Section("composition", "Training-set composition",
                           "<p>Each generation's training set by origin: real data, and the "
                           "generation whose output it came from.</p>"
                           f'<div class="grid">{figures_html(comps)}</div>', comps))
    if others:
        out.append(Section("metrics", "Every other metric",
                           f'<div class="grid">{figures_html(others)}</div>', others))
    tables = "".join(value_table(v, plot) for v in pages for plot in v.declared.of_kind("table"))
    out.append(Section("final", "Final generation", final_table(pages) + tables))
    details = "".join(detail_table(v) for v in pages)
    if details:
        out.append(Section("details", "Curation and watermark, by generation", details))
    out.append(Section("glossary", "Metrics: what each means, and which way is worse",
                       glossary(pages)))
    return out


def value_table(view: RunView, plot: Plot) -> str:
    """A declared table: the plot's keys at its generations (all where it names none), from the
    metrics frame; a row whose ``flag`` key is 0 is marked."""
    esc = html.escape
    out = ""
    for label, frame in view.curves:
        keys = [k for k in plot.keys if k in frame.columns]
        if not keys:
            continue
        gens = _column(frame, "generation")
        rows = (np.arange(len(frame)) if plot.generations is None else
                np.flatnonzero(np.isin(gens, plot.generations)))
        body = ""
        for i in rows:
            flagged = plot.flag in frame.columns and _column(frame, plot.flag)[i] == 0
            cells = "".join(_cell(_column(frame, k)[i]) for k in keys)
            body += (f'<tr{" class=warn" if flagged else ""}><td>{int(gens[i])}</td>{cells}</tr>')
        head = "".join(f"<th>{esc(k)}</th>" for k in keys)
        out += (f"<h3>{esc(label)}: {esc(plot.title)}</h3>"
                f"<table><tr><th>gen</th>{head}</tr>{body}</table>")
    return out


def build_figures(pages: list[RunView]) -> list[Figure]:
    """Every figure of the page, in page order."""
    return [f for s in sections(pages) for f in s.figures]


def write_report(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """Write the HTML report of one or more runs; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    stores = [RunStore(d) for d in run_dirs]
    for s in stores:
        s.check()  # a clear error for a folder that is not a run, or a damaged run
    out = Path(out) if out else (stores[0].root / "report.html" if len(stores) == 1
                                 else Path("report.html"))
    write_atomic(out, render(views(stores)).encode())
    return out


def status_of(manifest: dict[str, Any]) -> str:
    """A run's status as the runs table shows it: a failed run's with its error."""
    error = manifest.get("error")
    if manifest["status"] == "failed" and isinstance(error, dict):
        return f"failed: {error.get('type')}: {error.get('message')}"
    return str(manifest["status"])


def runs_table(pages: list[RunView]) -> str:
    esc = html.escape
    rows = []
    for v in pages:
        s, cfg, man = v.store, v.config, v.manifest
        rows.append(
            f"<tr><td>{esc(s.root.name)}</td><td>{esc(family_of(v))}</td>"
            f"<td>{esc(cfg.data.source)} (size {cfg.data.size})</td><td>{esc(cfg.policy.name)}</td>"
            f"<td>{man['completed_generations']}/{cfg.generations}</td><td>{cfg.chains}</td>"
            f"<td>{cfg.seed}</td><td>{esc(status_of(man))}</td></tr>")
    return ("<table><tr><th>run</th><th>family</th><th>data</th><th>policy</th>"
            "<th>generations</th><th>chains</th><th>seed</th><th>status</th></tr>"
            + "".join(rows) + "</table>")


def render(pages: list[RunView], parts: list[Section] | None = None) -> str:
    esc = html.escape
    parts = sections(pages) if parts is None else parts
    toc = "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>' for s in parts)
    body = "".join(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{s.body}</section>'
                   for s in parts)
    return html_page("collapselab report", f"""<h1>Model collapse report</h1>
<p class="note">Each curve is the mean over chains with a ±1.96 SE band; dashed lines are the
closed-form theory with its Monte-Carlo band; dotted lines the real data's value. Under each chart,
what its series mean and which way is worse (↑ worse: higher is worse). Series constant or empty in
every run are left out of the charts and kept in the tables. Curves of more than {MAX_POINTS}
generations are drawn at {MAX_POINTS} evenly spaced ones; the tables hold every generation.</p>
<nav id="toc"><h2>Contents</h2><ol>{toc}</ol></nav>
{body}""")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222;
       padding: 0 1em; box-sizing: border-box; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
table:not(.text) { display: block; overflow-x: auto; max-width: 100%; }  /* wide: scroll inside */
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
.grid { display: flex; flex-wrap: wrap; gap: 1.2em; }
figure { margin: 0; max-width: 680px; } figure img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #333; }
figcaption ul { margin: 0.3em 0; padding-left: 1.2em; color: #555; font-size: 0.95em; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
nav#toc ol { columns: 2; font-size: 0.95em; }
section { border-top: 1px solid #ddd; margin-top: 1.5em; }
table.text { width: 100%; table-layout: fixed; }
table.text td { font-family: Georgia, serif; font-size: 0.85em; overflow-wrap: anywhere; }
table.text tr > :first-child { width: 5em; }
table.text th { white-space: nowrap; }
mark.prompt { background: #ffe9a8; font-weight: 600; }
tr.warn td { background: #fde2e1; }
"""


def html_page(title: str, body: str) -> str:
    """A self-contained page: the shared style, then ``body``."""
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title>\n<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def figures_html(figures: list[Figure]) -> str:
    """Each figure as an embedded PNG (a data URI) with its caption and what its series mean."""
    esc = html.escape
    out = []
    for f in figures:
        lines = ("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in f.lines) + "</ul>"
                 if f.lines else "")
        out.append(f'<figure><img alt="{esc(f.title)}" id="{esc(f.name)}" '
                   f'src="data:image/png;base64,{base64.b64encode(f.png).decode()}"/>'
                   f"<figcaption>{esc(f.title)}{lines}</figcaption></figure>")
    return "\n".join(out)


def glossary(pages: list[RunView]) -> str:
    """Every metric key the runs recorded: its declared description and worse direction, and
    where the page shows it."""
    esc = html.escape
    declared = Declared()
    runs = [curve for v in pages for curve in v.curves]
    for _, views_ in kind_groups(pages):
        declared = declared.merge(Declared.of([v.config for v in views_]))
    keys: dict[str, None] = {}
    for _, frame in runs:
        keys.update(dict.fromkeys(frame_metric_keys(frame)))
    rows = ""
    for k in keys:
        have = [(lab, f) for lab, f in runs if k in f.columns]
        where = "chart" if informative(k, have) else "tables only (constant or empty)"
        worse = WORSE_ARROW.get(lookup(declared.worse, k) or "", "–")
        rows += (f"<tr><td>{esc(k)}</td><td>{esc(lookup(declared.describe, k) or '–')}</td>"
                 f"<td>{esc(worse)}</td><td>{esc(where)}</td></tr>")
    return ("<table><tr><th>metric</th><th>what it measures</th><th>worse</th><th>shown</th></tr>"
            f"{rows}</table>")


DETAILS = {
    "kept.": "Curation: share of each generation's samples each filter kept",
    "watermark.": "Watermark: detection rate on the watermarked samples (tpr) and on real text "
                  "of the same length (fpr; fpr_implied = 1 − Φ(z threshold)), and the producing "
                  "model's perplexity of its watermarked vs unwatermarked text",
}


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return "<td>–</td>"
    return f"<td>{value:.4g}</td>"


def detail_table(view: RunView) -> str:
    """Per-generation tables of the curation and watermark columns a run recorded (``kept.*``,
    ``watermark.*``; each producer's in a multi-producer run), which the curves leave out. Every
    generation has its row, however many there are."""
    out = ""
    for name, frame in view.curves:
        for prefix, caption in DETAILS.items():
            keys = [k for k in frame.columns if k.startswith(prefix)]
            if not keys:
                continue
            head = "".join(f"<th>{html.escape(k.removeprefix(prefix))}</th>" for k in keys)
            columns = [frame[k].tolist() for k in keys]
            body = "".join(
                f"<tr><td>{int(g)}</td>" + "".join(_cell(c[i]) for c in columns) + "</tr>"
                for i, g in enumerate(frame["generation"].tolist()))
            out += (f"<h3>{html.escape(name)}</h3><p>{html.escape(caption)}.</p>"
                    f"<table><tr><th>gen</th>{head}</tr>{body}</table>")
    return out


def theory_table(view: RunView) -> str:
    """The run's agreement with its theory at the final generation (empty without theory)."""
    from collapselab import theory

    columns = [c for c in view.frame.columns if c.endswith(".theory")]
    if not columns or not len(view.frame):
        return ""
    last = {k: v for k, v in view.frame.iloc[-1].items()
            if not (isinstance(v, float) and not np.isfinite(v))}
    rows = ""
    for a in theory.agreement([last]):
        se = f"{a.se:.3g}" + (" (chains)" if a.se_from == "chains" else "")
        rows += (f"<tr><td>{html.escape(a.metric)}</td><td>{a.generation}</td>"
                 f"<td>{a.measured:.5g}</td><td>{a.theory:.5g}</td><td>{se}</td>"
                 f"<td>{a.z:+.2f}</td><td>{'pass' if a.passed else 'FAIL'}</td></tr>")
    return (f"<h3>{html.escape(view.label)}</h3><table><tr><th>metric</th><th>generation</th>"
            "<th>measured</th><th>theory</th><th>se</th><th>z</th><th>|z| &lt; 4</th></tr>"
            f"{rows}</table>") if rows else ""


def final_table(pages: list[RunView]) -> str:
    finals = [(label, frame) for v in pages for label, frame in v.curves]
    keys: dict[str, None] = {}
    for _, frame in finals:
        keys.update(dict.fromkeys(frame_metric_keys(frame)))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = ""
    for lab, frame in finals:
        last = frame.iloc[-1] if len(frame) else {}
        cells = ""
        for k in keys:
            v, se = last.get(k), last.get(f"{k}.sem")
            if v is None or not np.isfinite(v):
                cells += "<td>–</td>"
                continue
            sem = se is not None and np.isfinite(se)
            cells += f"<td>{v:.4g}" + (f" ± {1.96 * se:.2g}" if sem else "") + "</td>"
        body += f"<tr><td>{html.escape(lab)}</td>{cells}</tr>"
    return f"<table><tr><th>run</th>{head}</tr>{body}</table>"
