"""The report's figures: curves against generation (declared charts), distributions by
generation (histograms, image grids, samples against the truth) and training-set composition.
Each function draws from :class:`~collapselab.report.view.RunView` s only and returns a
:class:`~collapselab.report.draw.Figure` (or None where the runs recorded nothing to draw)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from collapselab.metrics.declare import Plot
from collapselab.report.draw import (
    COLUMN,
    FULL,
    PALETTE,
    REAL,
    ROW,
    Figure,
    figure,
    legend_below,
    log_axis,
    ordered,
    series_style,
    styled,
    wrap,
    ylabel,
)
from collapselab.report.view import (
    Declared,
    RunView,
    Shares,
    column,
    frame_metric_keys,
    informative,
    shown_note,
    thin,
    thinned_note,
)

MAX_POINTS = 500  # generations drawn per curve; more are thinned evenly (tables keep them all)
MAX_ORIGINS = 10  # bands in a composition plot; more origins are grouped into generation ranges


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


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def _draw_series(ax: Any, frame: Any, key: str, style: dict[str, Any], idx: np.ndarray,
                 declared: Declared) -> tuple[Any, bool, bool, bool]:
    """One metric of one run: the chain mean with its ±1.96 SE band, the theory dashed with its
    band, the real data's value dotted; bands clipped to the key's declared range; a theory that
    only bounds the expectation (``<key>.theory_bound``) dash-dotted. Returns the mean's line and
    whether an exact theory, a real-data line and a bound were drawn."""
    part = frame.iloc[idx]
    gens, y = column(part, "generation"), column(frame, key)[idx]
    (line,) = ax.plot(gens, y, **style)
    color = style["color"]
    sem = column(part, f"{key}.sem")
    if np.isfinite(sem).any():
        ax.fill_between(gens, declared.clip(key, y - 1.96 * sem),
                        declared.clip(key, y + 1.96 * sem), color=color, alpha=0.18, lw=0)
    theory = column(part, f"{key}.theory")
    has_theory = bool(np.isfinite(theory).any())
    has_bound = has_theory and bool(np.isfinite(column(part, f"{key}.theory_bound")).any())
    if has_theory:
        ax.plot(gens, theory, color=color, ls="-." if has_bound else "--", lw=1.1)
        se = column(part, f"{key}.theory_se")
        if np.isfinite(se).any():
            ax.fill_between(gens, declared.clip(key, theory - 1.96 * se),
                            declared.clip(key, theory + 1.96 * se), color=color, alpha=0.08,
                            lw=0)
    real = column(frame, f"{key}_real")
    has_real = bool(np.isfinite(real).any())
    if has_real:
        ax.axhline(np.nanmean(real), color=color, ls=":", lw=1.1)
    return line, has_theory and not has_bound, has_real, has_bound


def _log_scale(ax: Any, values: list[np.ndarray]) -> None:
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
        log_axis(ax.yaxis)


def style_keys(theory: bool, real: bool, bound: bool = False) -> tuple[list[Any], list[str]]:
    """Legend entries for what a line's style means (grey: it holds for every colour)."""
    from matplotlib.lines import Line2D

    entries = [("-", "mean over chains, ±1.96 SE band"), ("--", "theory (exact)"),
               (":", "real data"), ("-.", "theory: a bound (no closed form)")]
    shown = [e for e, on in zip(entries, (True, theory, real, bound), strict=True) if on]
    return ([Line2D([], [], color="0.35", ls=ls, lw=1.2) for ls, _ in shown],
            [text for _, text in shown])


def panels(count: int, height: float = ROW, **kwargs: Any) -> tuple[Any, list[Any]]:
    """A figure of ``count`` panels: one at a column's width, several as small multiples at the
    page's full width, at most three a row."""
    import matplotlib.pyplot as plt

    cols = min(count, 3)
    rows = -(-count // cols)
    width = COLUMN if count == 1 else FULL
    fig, grid = plt.subplots(rows, cols, figsize=(width, height * rows), squeeze=False,
                             **kwargs)
    axes = list(grid.ravel())
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


@styled
def chart_figure(chart: Chart, runs: list[tuple[str, Any]], declared: Declared,
                 name: str | None = None, paper: bool = False) -> Figure:
    """A declared plot against generation. One key: a line per run, one colour each. Several
    keys (a group): small multiples, one panel per run, a colour per key, sharing the y axis.
    The y axis is named by the plot's declared title; the legend sits under the axes."""
    from matplotlib.ticker import MaxNLocator

    keys = chart.keys
    runs = [(lab, f) for lab, f in runs if any(k in f.columns for k in keys)]
    drawn = total = 0
    for _, frame in runs:
        drawn = max(drawn, thin(len(frame), MAX_POINTS).size)
        total = max(total, len(frame))
    single = len(keys) == 1
    fig, axes = panels(1 if single else len(runs), sharex=True, sharey=True)
    legend: dict[str, Any] = {}
    theory = real = bound = False
    values = []
    for i, (label, frame) in enumerate(runs):
        ax = axes[0 if single else i]
        idx = thin(len(frame), MAX_POINTS)
        for j, key in enumerate(keys):
            if key not in frame.columns:
                continue
            values.append(column(frame, key))
            line, t, r, b = _draw_series(ax, frame, key, series_style(i if single else j), idx,
                                         declared)
            legend.setdefault(label if single else key, line)
            theory, real, bound = theory or t, real or r, bound or b
        if not single:  # a panel per run: a third of the page's width at most
            ax.set_title(wrap(label, 1.2 * (FULL / min(len(runs), 3) - 0.3)))
    for ax in axes:
        _log_scale(ax, values)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("generation")
    axes[0].set_ylabel(ylabel(chart.plot.title))
    handles, labels = style_keys(theory, real, bound)
    legend_below(fig, [*legend.values(), *handles], [*legend, *labels])
    caption = chart.plot.title + thinned_note(drawn, total)
    lines = declared.lines(keys)
    if chart.left_out:
        lines.append("constant or empty, in the tables only: " + ", ".join(chart.left_out))
    return figure(fig, name or (f"metric-{keys[0]}" if single else
                                f"chart-{slug(chart.plot.title)}"),
                  caption, lines, wide=len(axes) > 1, paper=paper)


@styled
def distribution_figure(view: RunView, paper: bool = False) -> Figure | None:
    """Generation 0 against the last kept generation, against the truth where it is known."""
    import matplotlib.pyplot as plt

    store, label = view.store, view.label
    last = view.completed - 1
    if last < 0 or not store.has_samples(last) or not store.has_samples(0):
        return None
    first, final = store.samples(0), store.samples(last)
    cfg = view.config
    fig, ax = plt.subplots(figsize=(COLUMN, ROW))
    early, late = PALETTE[0], PALETTE[1]
    if first.ndim == 3 and first.shape[-1] == 1 and first.dtype.kind == "f":  # 1-D continuous
        x0, x1 = first[..., 0].ravel(), final[..., 0].ravel()
        lo, hi = np.percentile(np.concatenate([x0, x1]), [0.5, 99.5])
        bins = np.linspace(min(lo, -4), max(hi, 4), 80).tolist()
        ax.hist(x0, bins=bins, density=True, histtype="step", lw=1.2, color=early,
                label="generation 0")
        ax.hist(x1, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color=late,
                label=f"generation {last}")
        pdf = truth_density(cfg, np.asarray(bins))
        if pdf is not None:
            ax.plot(bins, pdf, color="k", lw=1, ls="--", label="real distribution")
        ax.set_xlabel("x (all chains pooled)")
        ax.set_ylabel("density")
    elif first.ndim == 3 and first.dtype.kind == "f":  # multivariate: first two coordinates
        for data, color, marker, name in ((first, early, "o", "generation 0"),
                                          (final, late, "s", f"generation {last}")):
            ax.scatter(data[0, :, 0], data[0, :, 1], s=3, alpha=0.5, color=color,
                       marker=marker, label=f"{name} (chain 0)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
    elif first.ndim == 2 and first.dtype.kind in "iu":  # categorical states
        k = int(max(first.max(), final.max())) + 1
        for data, name, off, color in ((first, "generation 0", -0.2, early),
                                       (final, f"generation {last}", 0.2, late)):
            freq = np.bincount(data.ravel(), minlength=k) / data.size
            ax.bar(np.arange(k) + off, freq, width=0.4, color=color, label=name)
        ax.set_xlabel("state")
        ax.set_ylabel("share of samples")
        ax.set_yscale("log")
    else:
        plt.close(fig)
        return None
    legend_below(fig, *ax.get_legend_handles_labels())
    return figure(fig, f"dist-{store.root.name}",
                  f"{label}: samples, generation 0 against generation {last}", paper=paper)


@styled
def artifact_histogram(view: RunView, key: str, title: str, paper: bool = False
                       ) -> Figure | None:
    """Histograms of a per-sample artifact (log x-axis) at the generations the page shows, e.g.
    the paper's perplexity-of-generated-text plots; generations dark to light."""
    import matplotlib.pyplot as plt

    store, label = view.store, view.label
    gens = [g for g in view.shown if key in view.artifacts(g)]
    if not gens:
        return None
    values = [np.asarray(view.artifacts(g)[key], dtype=float).ravel() for g in gens]
    finite = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values])
    if finite.size == 0:
        return None
    fig, ax = plt.subplots(figsize=(COLUMN, ROW))
    bins = np.geomspace(finite.min(), finite.max(), 60).tolist()
    for i, (g, v) in enumerate(zip(gens, values, strict=True)):
        ax.hist(v, bins=bins, density=True, histtype="step", lw=1.2, color=ordered(i, len(gens)),
                label=f"generation {g}")
    ax.set_xscale("log")
    log_axis(ax.xaxis)
    ax.set_xlabel(key)
    ax.set_ylabel("density")
    legend_below(fig, *ax.get_legend_handles_labels())
    return figure(fig, f"hist-{key}-{store.root.name}",
                  f"{label}: {title}" + shown_note(view, len(gens)), paper=paper)


@styled
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
    fig, axes = plt.subplots(len(gens), cols, figsize=(0.5 * cols + 0.6, 0.5 * len(gens) + 0.2),
                             squeeze=False, gridspec_kw={"wspace": 0.02, "hspace": 0.02})
    for row, g in zip(axes, gens, strict=True):
        for j, ax in enumerate(row):
            if j < len(grids[g]):
                ax.imshow(grids[g][j], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            ax.spines[:].set_visible(False)
        row[0].set_ylabel(f"gen {g}", rotation=0, ha="right", va="center")
    return figure(fig, f"grid-{store.root.name}",
                  f"{label}: samples by generation (the first of chain 0)")


def truth_density(cfg: Any, x: np.ndarray) -> np.ndarray | None:
    """The density at ``x`` of the first coordinate of a source whose ``truth`` is a Gaussian
    mixture (``weights``, ``means``, ``covs``), or None: the source is built from the run's config
    (cheap: sources load their data on first use)."""
    from collapselab import capabilities, registry

    try:
        truth = capabilities.truth(registry.sources.build(cfg.data.source, cfg.data.params))
        w, mu, cov = (np.asarray(truth[k], dtype=float) for k in ("weights", "means", "covs"))
        sd = np.sqrt(cov[:, 0, 0])
        z = (x[:, None] - mu[None, :, 0]) / sd[None]
        return (w[None] * np.exp(-0.5 * z**2) / (sd[None] * np.sqrt(2 * np.pi))).sum(axis=1)
    except Exception:  # no truth, another kind of truth, a source not installed here
        return None


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


@styled
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
    gens = column(frame.iloc[idx], "generation")
    fig, ax = plt.subplots(figsize=(COLUMN, ROW))
    bottom = np.zeros(idx.size)
    for i, (origin, _) in enumerate(groups):
        share = stacked[:, i]
        color = REAL if origin == "real" else ordered(i, len(groups))
        if idx.size <= 60:  # few generations: one bar each
            ax.bar(gens, share, bottom=bottom, color=color, width=0.8, label=origin)
        else:  # many: one filled band per origin (a bar per generation costs a patch each)
            ax.fill_between(gens, bottom, bottom + share, step="mid", color=color, lw=0,
                            label=origin)
        bottom = bottom + share
    ax.set_xlabel("generation")
    ax.set_ylabel("share of the training set")
    ax.set_ylim(0, 1)
    ax.grid(False)
    legend_below(fig, *ax.get_legend_handles_labels())
    grouped = (f" ({len(origins)} origins in {len(groups)} bands)" if len(groups) < len(origins)
               else "")
    return figure(fig, f"composition-{name}", f"{label}: composition" + grouped
                  + thinned_note(idx.size, len(frame)))


