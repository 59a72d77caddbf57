"""Static HTML reports, drawn only from run directories (never from live objects).

One page per run or per comparison: each metric against generation, one line per run with its
±1.96 SE band across chains, the theory's curve dashed with its Monte-Carlo band where the run
recorded one, then final-generation distributions against the real data and any text samples.
Plots are PNGs embedded as data URIs, so the page is one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from collapselab.store import RunStore, write_atomic

META = {"generation", "train_size", "generated", "wall_s", "degenerate", "nonfinite"}


@dataclass
class Figure:
    name: str
    title: str
    png: bytes


@dataclass
class RunView:
    """One run as a page draws it: its store, its label and its metrics rows, read once."""

    store: RunStore
    label: str
    rows: list[dict[str, Any]]

    @cached_property
    def curves(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """``(label, rows)``, or one per producer of a multi-producer run, with the
        ``<producer>/`` prefix taken off its keys (so every producer's perplexity shares a plot)."""
        names = [p.name for p in self.store.config().producers or []]
        if not names:
            return [(self.label, self.rows)]
        return [(f"{self.label} · {name}",
                 [{"generation": r["generation"], **{k.removeprefix(f"{name}/"): v
                                                      for k, v in r.items()
                                                      if k.startswith(f"{name}/")}}
                  for r in self.rows]) for name in names]


def views(stores: list[RunStore]) -> list[RunView]:
    return [RunView(s, lab, s.metrics()) for s, lab in zip(stores, label_runs(stores), strict=True)]


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


def _column(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)


def metric_figure(key: str, runs: list[tuple[str, list[dict[str, Any]]]]) -> Figure:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    positive = True
    for i, (label, rows) in enumerate(runs):
        color = f"C{i % 10}"
        gens = _column(rows, "generation")
        y = _column(rows, key)
        positive &= bool(np.nanmin(y, initial=1.0) > 0)
        ax.plot(gens, y, color=color, label=label, lw=1.6)
        sem = _column(rows, f"{key}.sem")
        if np.isfinite(sem).any():
            ax.fill_between(gens, y - 1.96 * sem, y + 1.96 * sem, color=color, alpha=0.18, lw=0)
        theory = _column(rows, f"{key}.theory")
        if np.isfinite(theory).any():
            ax.plot(gens, theory, color=color, ls="--", lw=1.2, label=f"{label}: theory")
            se = _column(rows, f"{key}.theory_se")
            if np.isfinite(se).any():
                ax.fill_between(gens, theory - 1.96 * se, theory + 1.96 * se, color=color,
                                alpha=0.08, hatch="///", lw=0)
        real = _column(rows, f"{key}_real")
        if np.isfinite(real).any():
            ax.axhline(np.nanmean(real), color="k", ls=":", lw=1, label="real data")
    values = np.concatenate([_column(r, key) for _, r in runs])
    finite = values[np.isfinite(values)]
    if positive and finite.size and finite.max() / max(finite.min(), 1e-300) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("generation")
    ax.set_ylabel(key)
    ax.set_title(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return Figure(f"metric-{key}", key, _png(fig))


def distribution_figure(store: RunStore, label: str) -> Figure | None:
    """Generation 0 against the last kept generation, against the truth where it is known."""
    import matplotlib.pyplot as plt

    last = store.completed() - 1
    if last < 0 or not store.has_samples(last) or not store.has_samples(0):
        return None
    first, final = store.samples(0), store.samples(last)
    cfg = store.config()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    if first.ndim == 3 and first.shape[-1] == 1 and first.dtype.kind == "f":  # 1-D continuous
        x0, x1 = first[..., 0].ravel(), final[..., 0].ravel()
        lo, hi = np.percentile(np.concatenate([x0, x1]), [0.5, 99.5])
        bins = np.linspace(min(lo, -4), max(hi, 4), 80)
        ax.hist(x0, bins=bins, density=True, alpha=0.5, label="generation 0")
        ax.hist(x1, bins=bins, density=True, alpha=0.5, label=f"generation {last}")
        if cfg.data.source == "normal":
            from scipy import stats

            p = cfg.data.params
            ax.plot(bins, stats.norm.pdf(bins, p.get("mean", 0.0), p.get("std", 1.0)), "k-",
                    lw=1, label="real distribution")
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


def artifact_histogram(store: RunStore, label: str, key: str, title: str) -> Figure | None:
    """Per-generation histograms of a per-sample artifact (log x-axis), e.g. the paper's
    perplexity-of-generated-text plots."""
    import matplotlib.pyplot as plt

    gens = [g for g in range(store.completed()) if key in store.artifacts(g)]
    if not gens:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    values = [np.asarray(store.artifacts(g)[key], dtype=float).ravel() for g in gens]
    finite = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in values])
    if finite.size == 0:
        plt.close(fig)
        return None
    bins = np.geomspace(finite.min(), finite.max(), 60)
    for g, v, i in zip(gens, values, range(len(gens)), strict=True):
        ax.hist(v, bins=bins, density=True, histtype="step", lw=1.4,
                color=plt.cm.viridis(i / max(len(gens) - 1, 1)), label=f"generation {g}")
    ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_title(f"{label}: {title}")
    ax.legend(fontsize=6, ncol=2)
    return Figure(f"hist-{key}-{store.root.name}", title, _png(fig))


def sample_grid_figure(store: RunStore, label: str, count: int = 12,
                       max_rows: int = 12) -> Figure | None:
    """Image runs: one row per generation (evenly spaced if there are many) of its first samples
    (chain 0), from the ``sample_grid`` artifact or else the stored samples."""
    import matplotlib.pyplot as plt

    grids: dict[int, np.ndarray] = {}
    for g in range(store.completed()):
        art = store.artifacts(g).get("sample_grid")
        if art is not None and art.ndim == 3:
            grids[g] = art[:count]
        elif store.has_samples(g):
            samples = store.samples(g)
            if samples.ndim == 4:
                grids[g] = samples[0, :count]
    if not grids:
        return None
    gens = sorted(grids)
    if len(gens) > max_rows:
        gens = [gens[int(round(i))] for i in np.linspace(0, len(gens) - 1, max_rows)]
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


def text_samples(store: RunStore, key: str = "continuations") -> list[tuple[int, list[str]]]:
    out = []
    for g in range(store.completed()):
        arts = store.artifacts(g)
        if key in arts:
            out.append((g, [str(t) for t in np.asarray(arts[key]).ravel()]))
    return out


def composition_figures(view: RunView) -> list[Figure]:
    """Stacked bars per consumer: each generation's training set by origin (real, gen_XXX and, in
    a multi-producer run, the producer), from the ``[<consumer>/]composition.*`` shares recorded."""
    rows, label, store = view.rows, view.label, view.store
    consumers = sorted({k.partition("composition.")[0] for r in rows for k in r
                        if "composition." in k})
    out = [composition_figure(rows, prefix, f"{label} {prefix.rstrip('/')}".strip(),
                              f"{store.root.name}-{prefix.rstrip('/')}") for prefix in consumers]
    return [f for f in out if f is not None]


def composition_figure(rows: list[dict[str, Any]], prefix: str, label: str,
                       name: str) -> Figure | None:
    import matplotlib.pyplot as plt

    real = f"{prefix}composition.real"
    keys = sorted({k for r in rows for k in r if k.startswith(f"{prefix}composition.")},
                  key=lambda k: (k != real, k))
    if len(keys) < 2:  # real data only: nothing to stack
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    gens = _column(rows, "generation")
    bottom = np.zeros(len(rows))
    cmap = plt.get_cmap("viridis")
    for i, key in enumerate(keys):
        share = np.nan_to_num(_column(rows, key))
        color = "0.35" if key == real else cmap(i / max(len(keys) - 1, 1))
        ax.bar(gens, share, bottom=bottom, color=color, width=0.8,
               label=key.removeprefix(f"{prefix}composition."))
        bottom += share
    ax.set_xlabel("generation")
    ax.set_ylabel("share of the training set")
    ax.set_title(f"{label}: training-set composition by origin")
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return Figure(f"composition-{name}", f"{label}: composition", _png(fig))


def family_of(store: RunStore) -> str:
    cfg = store.config()
    if cfg.producers:
        return ", ".join(f"{p.name}: {p.model.family}" for p in cfg.producers)
    return cfg.model.family


def build_figures(pages: list[RunView]) -> list[Figure]:
    runs = [curve for v in pages for curve in v.curves]
    keys: dict[str, None] = {}
    for _, rows in runs:
        keys.update(dict.fromkeys(metric_keys(rows)))
    figures = [metric_figure(k, [(lab, r) for lab, r in runs if any(k in row for row in r)])
               for k in keys]
    for view in pages:
        store, label = view.store, view.label
        for fig in (distribution_figure(store, label),
                    artifact_histogram(store, label, "synthetic_ppl",
                                       "perplexity of generated text under generation 0"),
                    artifact_histogram(store, label, "latent_spread",
                                       "norm of latent means under generation 0's encoder"),
                    sample_grid_figure(store, label)):
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
    stores = [v.store for v in pages]
    rows = []
    for s in stores:
        cfg, man = s.config(), s.manifest()
        rows.append(
            f"<tr><td>{esc(s.root.name)}</td><td>{esc(family_of(s))}</td>"
            f"<td>{esc(cfg.data.source)} (size {cfg.data.size})</td><td>{esc(cfg.policy.name)}</td>"
            f"<td>{man['completed_generations']}/{cfg.generations}</td><td>{cfg.chains}</td>"
            f"<td>{cfg.seed}</td><td>{esc(man.get('status', '?'))}</td></tr>")
    final = final_table(pages)
    details = "".join(detail_table(v) for v in pages)
    texts = ""
    for s in stores:
        samples = text_samples(s)
        if samples:
            items = "".join(f"<tr><td>{g}</td><td>{'<hr/>'.join(esc(t) for t in ts)}</td></tr>"
                            for g, ts in samples)
            texts += (f"<h2>{esc(s.root.name)}: fixed prompts, continued by each generation</h2>"
                      f"<table class='text'><tr><th>gen</th><th>text</th></tr>{items}</table>")
    return html_page("collapselab report", f"""<h1>Model collapse report</h1>
<p>Each curve is the mean over chains with a ±1.96 SE band; dashed lines are the closed-form
theory with its Monte-Carlo band; dotted lines the real data's value.</p>
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


def detail_table(view: RunView) -> str:
    """Per-generation tables of the curation and watermark columns a run recorded (``kept.*``,
    ``watermark.*``; each producer's in a multi-producer run), which the curves leave out."""
    out = ""
    for name, rows in view.curves:
        for prefix, caption in DETAILS.items():
            keys = list(dict.fromkeys(k for r in rows for k in r if k.startswith(prefix)))
            if not keys:
                continue
            head = "".join(f"<th>{html.escape(k.removeprefix(prefix))}</th>" for k in keys)
            body = "".join(
                f"<tr><td>{r['generation']}</td>"
                + "".join("<td>–</td>" if r.get(k) is None else f"<td>{r[k]:.4g}</td>" for k in keys)
                + "</tr>" for r in rows)
            out += (f"<h3>{html.escape(name)}</h3><p>{html.escape(caption)}.</p>"
                    f"<table><tr><th>gen</th>{head}</tr>{body}</table>")
    return out


def final_table(pages: list[RunView]) -> str:
    finals = [(curve, (rows or [{}])[-1]) for v in pages for curve, rows in v.curves]
    keys: dict[str, None] = {}
    for _, row in finals:
        keys.update(dict.fromkeys(metric_keys([row])))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = ""
    for lab, row in finals:
        cells = ""
        for k in keys:
            v, se = row.get(k), row.get(f"{k}.sem")
            cells += "<td>–</td>" if v is None else (
                f"<td>{v:.4g}" + (f" ± {1.96 * se:.2g}" if se is not None else "") + "</td>")
        body += f"<tr><td>{html.escape(lab)}</td>{cells}</tr>"
    return f"<table><tr><th>run</th>{head}</tr>{body}</table>"
