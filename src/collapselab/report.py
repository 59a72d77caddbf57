"""Static HTML reports, drawn only from run directories (never from live objects).

One page per run or per comparison: each metric against generation, one line per run with its
±1.96 SE band across chains, the theory's curve dashed with its Monte-Carlo band where the run
recorded one, then final-generation distributions against the real data and any text samples.
Plots are PNGs embedded as data URIs, so the page is one self-contained file.

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
import re
from array import array
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from collapselab.store import RunStore, write_atomic

META = {"generation", "train_size", "generated", "wall_s", "degenerate", "nonfinite"}
MAX_POINTS = 500  # generations drawn per curve; more are thinned evenly (tables keep them all)
MAX_SHOWN = 12  # generations whose artifacts a per-generation figure or table shows
MAX_ORIGINS = 10  # bands in a composition plot; more origins are grouped into generation ranges


@dataclass
class Figure:
    name: str
    title: str
    png: bytes


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
    _artifacts: dict[int, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

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

    def artifacts(self, gen: int) -> dict[str, np.ndarray]:
        """Generation ``gen``'s artifacts, read once (only generations in ``shown`` are asked)."""
        if gen not in self._artifacts:
            self._artifacts[gen] = self.store.artifacts(gen)
        return self._artifacts[gen]


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


def metric_figure(key: str, runs: list[tuple[str, Any]]) -> Figure:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    positive = True
    drawn = total = 0
    finite_parts = []
    for i, (label, frame) in enumerate(runs):
        color = f"C{i % 10}"
        y_all = _column(frame, key)
        positive &= bool(np.nanmin(y_all, initial=1.0) > 0)
        finite_parts.append(y_all[np.isfinite(y_all)])
        idx = thin(len(frame), MAX_POINTS)
        drawn, total = max(drawn, idx.size), max(total, len(frame))
        part = frame.iloc[idx]
        gens, y = _column(part, "generation"), y_all[idx]
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
        if np.isfinite(real).any():
            ax.axhline(np.nanmean(real), color="k", ls=":", lw=1, label="real data")
    finite = np.concatenate(finite_parts) if finite_parts else np.zeros(0)
    if positive and finite.size and finite.max() / max(finite.min(), 1e-300) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("generation")
    ax.set_ylabel(key)
    ax.set_title(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return Figure(f"metric-{key}", key + thinned_note(drawn, total), _png(fig))


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
        if cfg.data.source == "normal":
            p = cfg.data.params
            mean, std = p.get("mean", 0.0), p.get("std", 1.0)
            pdf = np.exp(-0.5 * ((bins - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))
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


def sample_grid_figure(view: RunView, count: int = 12) -> Figure | None:
    """Image runs: one row per shown generation of its first samples (chain 0), from the
    ``sample_grid`` artifact or else the stored samples."""
    import matplotlib.pyplot as plt

    store, label = view.store, view.label
    grids: dict[int, np.ndarray] = {}
    for g in view.shown:
        art = view.artifacts(g).get("sample_grid")
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


def text_samples(view: RunView, key: str = "continuations") -> list[tuple[int, list[str]]]:
    out = []
    for g in view.shown:
        arts = view.artifacts(g)
        if key in arts:
            out.append((g, [str(t) for t in np.asarray(arts[key]).ravel()]))
    return out


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


def build_figures(pages: list[RunView]) -> list[Figure]:
    runs = [curve for v in pages for curve in v.curves]
    keys: dict[str, None] = {}
    for _, frame in runs:
        keys.update(dict.fromkeys(frame_metric_keys(frame)))
    figures = [metric_figure(k, [(lab, f) for lab, f in runs if k in f.columns]) for k in keys]
    for view in pages:
        for fig in (distribution_figure(view),
                    artifact_histogram(view, "synthetic_ppl",
                                       "perplexity of generated text under generation 0"),
                    artifact_histogram(view, "latent_spread",
                                       "norm of latent means under generation 0's encoder"),
                    sample_grid_figure(view)):
            if fig is not None:
                figures.append(fig)
        figures += composition_figures(view)
    return figures


def write_report(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """Write the HTML report of one or more runs; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    stores = [RunStore(d) for d in run_dirs]
    for s in stores:
        s.manifest()  # a clear error for a folder that is not a run
    out = Path(out) if out else (stores[0].root / "report.html" if len(stores) == 1
                                 else Path("report.html"))
    pages = views(stores)
    write_atomic(out, render(pages, build_figures(pages)).encode())
    return out


def render(pages: list[RunView], figures: list[Figure]) -> str:
    esc = html.escape
    rows = []
    for v in pages:
        s, cfg, man = v.store, v.config, v.manifest
        rows.append(
            f"<tr><td>{esc(s.root.name)}</td><td>{esc(family_of(v))}</td>"
            f"<td>{esc(cfg.data.source)} (size {cfg.data.size})</td><td>{esc(cfg.policy.name)}</td>"
            f"<td>{man['completed_generations']}/{cfg.generations}</td><td>{cfg.chains}</td>"
            f"<td>{cfg.seed}</td><td>{esc(man.get('status', '?'))}</td></tr>")
    final = final_table(pages)
    details = "".join(detail_table(v) for v in pages)
    texts = ""
    for v in pages:
        samples = text_samples(v)
        if samples:
            items = "".join(f"<tr><td>{g}</td><td>{'<hr/>'.join(esc(t) for t in ts)}</td></tr>"
                            for g, ts in samples)
            texts += (f"<h2>{esc(v.store.root.name)}: fixed prompts, continued by each generation"
                      f"{esc(shown_note(v, len(samples)))}</h2>"
                      f"<table class='text'><tr><th>gen</th><th>text</th></tr>{items}</table>")
    return html_page("collapselab report", f"""<h1>Model collapse report</h1>
<p>Each curve is the mean over chains with a ±1.96 SE band; dashed lines are the closed-form
theory with its Monte-Carlo band; dotted lines the real data's value. Curves of more than
{MAX_POINTS} generations are drawn at {MAX_POINTS} evenly spaced ones; the tables hold every
generation.</p>
<table><tr><th>run</th><th>family</th><th>data</th><th>policy</th><th>generations</th>
<th>chains</th><th>seed</th><th>status</th></tr>{''.join(rows)}</table>
<h2>Final generation</h2>{final}
{details}
<h2>Metrics by generation</h2><div class="grid">{figures_html(figures)}</div>
{texts}""")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figure img { max-width: 660px; }
figcaption { font-size: 0.8em; color: #555; max-width: 660px; }
table.text td { font-family: monospace; font-size: 0.8em; max-width: 1200px; }
"""


def html_page(title: str, body: str) -> str:
    """A self-contained page: the shared style, then ``body``."""
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title>\n<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def figures_html(figures: list[Figure]) -> str:
    """Each figure as an embedded PNG (a data URI) with its caption."""
    esc = html.escape
    return "\n".join(
        f'<figure><img alt="{esc(f.title)}" id="{esc(f.name)}" '
        f'src="data:image/png;base64,{base64.b64encode(f.png).decode()}"/>'
        f"<figcaption>{esc(f.title)}</figcaption></figure>" for f in figures)


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
