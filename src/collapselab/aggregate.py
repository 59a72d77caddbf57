"""Sweep reports and run comparisons, read only from run directories.

- :func:`tidy_frame`: one long table ``run, group, seed, generation, metric, value`` (+ one column
  per swept key) of every finished generation of every point; written as ``tidy.csv`` (and
  ``tidy.parquet`` when pyarrow is importable).
- :func:`write_sweep_report`: runs grouped by everything but the seed; each metric against
  generation, one colour per group: the mean across seeds with a 95% t-interval
  (``mean ± t(0.975, n-1) · s / √n``, n = seeds in the group) clipped to the metric's declared
  bounds, or, with fewer than ``MIN_BAND_SEEDS`` seeds, each seed's value as a point (a t-band
  from 2 seeds is wider than the data: it put a variance ratio at -0.5); the theory dashed where
  the runs recorded one; a table of final-generation values with the same intervals; per-run
  cost totals.
- :func:`compare_runs`: per-generation differences (B - A) of the metrics two runs share.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import numpy as np

from collapselab import capabilities
from collapselab.report import Declared, Figure, figures_html, html_page, metric_keys
from collapselab.report.draw import (
    COLUMN,
    PALETTE,
    ROW,
    figure,
    legend_below,
    log_axis,
    png_bytes,
    series_style,
    styled,
    wrap,
    ylabel,
)
from collapselab.report.export import check_folder, save_figures
from collapselab.store import RunStore, write_atomic
from collapselab.sweep import read_manifest

log = logging.getLogger(__name__)

TIDY_COLUMNS = ["run", "group", "seed", "generation", "metric", "value"]
LEVEL = 0.95
MIN_BAND_SEEDS = 5  # fewer seeds in a group: their points are drawn, not a t-band


# --- the tidy table ----------------------------------------------------------------------------


def group_label(overrides: dict[str, Any]) -> str:
    """Everything swept but the seed, e.g. ``policy.name=replace, data.size=10``; components read
    as calls: ``curation=[verifier(top=0.5, fn=true_loglik)]``."""
    parts = [f"{k}={_compact(v)}" for k, v in overrides.items() if k != "seed"]
    return ", ".join(parts) or "all"


def _compact(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    if isinstance(value, dict) and isinstance(value.get("name", value.get("family")), str):
        key = "name" if "name" in value else "family"
        args = ", ".join(f"{k}={_compact(v)}" for k, v in value.items() if k != key)
        return f"{value[key]}({args})"
    if isinstance(value, str) and ":" in value:  # "package.module:function": the function
        return value.rpartition(":")[2]
    return str(value)


def _dotted(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if not isinstance(node, (dict, list)) else str(node)


def sweep_runs(root: str | Path) -> list[tuple[dict[str, Any], RunStore]]:
    """(manifest entry, store) of every point with a run directory, in sweep order."""
    root = Path(root)
    out = []
    for entry in read_manifest(root)["points"]:
        store = RunStore(root / entry["run_dir"])
        if store.exists:
            out.append((entry, store))
    return out


def tidy_frame(root: str | Path) -> Any:
    """The long table of a sweep directory (pandas DataFrame)."""
    return tidy_frames(root)[0]


def tidy_frames(root: str | Path) -> tuple[Any, Any]:
    """The long table of a sweep directory, and the same of the theory its runs recorded
    (``<metric>.theory`` in the rows: ``group, generation, metric, theory``)."""
    import pandas as pd

    manifest = read_manifest(root)
    swept = [k for k in manifest["swept_keys"] if k != "seed"]
    records, theory = [], []
    for entry, store in sweep_runs(root):
        cfg = store.config()
        dumped = cfg.model_dump(mode="json")
        extra = {k: _dotted(dumped, k) for k in swept}
        group = group_label(entry["overrides"])
        rows = store.metrics()
        keys = metric_keys(rows)  # once per run: per row it made the table quadratic in rows
        for row in rows:
            for key in keys:
                value = row.get(key)
                records.append({"run": entry["name"], "group": group, "seed": cfg.seed,
                                "generation": row["generation"], "metric": key,
                                "value": np.nan if value is None else float(value), **extra})
                predicted = row.get(f"{key}.theory")
                if predicted is not None:
                    theory.append((group, row["generation"], key, float(predicted)))
    frame = pd.DataFrame.from_records(records, columns=[*TIDY_COLUMNS, *swept])
    frame = frame.astype({"seed": "int64", "generation": "int64", "value": "float64"})
    predictions = pd.DataFrame.from_records(theory, columns=["group", "generation", "metric",
                                                             "theory"])
    return frame, predictions.astype({"generation": "int64", "theory": "float64"})


def export_tidy(frame: Any, root: Path) -> list[Path]:
    """tidy.csv always; tidy.parquet too when pyarrow is importable."""
    paths = [root / "tidy.csv"]
    write_atomic(paths[0], frame.to_csv(index=False).encode())
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        log.info("pyarrow is not installed: tidy.parquet skipped")
        return paths
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    paths.append(root / "tidy.parquet")
    write_atomic(paths[1], buf.getvalue())
    return paths


# --- statistics across seeds -------------------------------------------------------------------


def band_stats(frame: Any) -> Any:
    """Per group, metric and generation: n seeds, mean, and the t-interval's half-width
    (NaN with a single seed)."""
    from scipy import stats

    g = frame.groupby(["group", "metric", "generation"], sort=False)["value"]
    out = g.agg(n="count", mean="mean", sd="std").reset_index()
    t = stats.t.ppf(0.5 + LEVEL / 2, np.maximum(out["n"] - 1, 1))
    out["half"] = np.where(out["n"] > 1, t * out["sd"] / np.sqrt(out["n"].clip(lower=1)), np.nan)
    return out


def final_stats(frame: Any) -> Any:
    """Band statistics at each run's last completed generation (the same one across a group
    when every seed finished)."""
    last = frame.groupby("run")["generation"].transform("max")
    return band_stats(frame[frame["generation"] == last].assign(generation=0))


def sweep_declared(root: str | Path) -> Declared:
    """What the metrics of a sweep's runs declare (titles, bounds), one config per group."""
    configs = {group_label(entry["overrides"]): store.config()
               for entry, store in sweep_runs(root)}
    return Declared.of(list(configs.values()))


def axis_label(metric: str, declared: Declared) -> str:
    """What a metric's y axis says: its declared plot title (with the key where the plot groups
    several), else the key."""
    plot = next((p for p in declared.of_kind("curves") if p.matches(metric)), None)
    if plot is None:
        return metric
    return plot.title if plot.keys == (metric,) else f"{plot.title}: {metric}"


@styled
def band_figure(metric: str, stats: Any, frame: Any | None = None, theory: Any | None = None,
                declared: Declared | None = None, paper: bool = False) -> Figure:
    """One metric against generation, a colour per group: the mean across seeds with its 95%
    t-interval clipped to the declared bounds where the group has at least ``MIN_BAND_SEEDS``
    seeds, else each seed's value as a point (from ``frame``, the tidy table); the theory
    dashed (``theory``: the predictions :func:`tidy_frames` read)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    declared = declared or Declared()
    fig, ax = plt.subplots(figsize=(COLUMN, ROW))
    sub = stats[stats["metric"] == metric]
    n_seeds, handles, labels = set(), [], []
    banded = pointed = predicted = False
    for i, (group, g) in enumerate(sub.groupby("group", sort=False)):
        style = series_style(i)
        color = style["color"]
        g = g.sort_values("generation")
        n = int(g["n"].max())
        n_seeds.add(n)
        (line,) = ax.plot(g["generation"], g["mean"], **style)
        handles.append(line)
        labels.append(f"{group} (n={n})")
        if n >= MIN_BAND_SEEDS and g["half"].notna().any():
            banded = True
            ax.fill_between(g["generation"], declared.clip(metric, g["mean"] - g["half"]),
                            declared.clip(metric, g["mean"] + g["half"]), color=color,
                            alpha=0.18, lw=0)
        elif frame is not None and n > 1:
            pointed = True
            seeds = frame[(frame["metric"] == metric) & (frame["group"] == group)]
            ax.scatter(seeds["generation"], seeds["value"], s=6, color=color, alpha=0.6,
                       lw=0)
        if theory is not None and not theory.empty:
            t = theory[(theory["metric"] == metric) & (theory["group"] == group)]
            t = t.groupby("generation")["theory"].mean()
            if len(t):
                predicted = True
                ax.plot(t.index, t.to_numpy(), color=color, ls="--", lw=1.1)
    finite = sub["mean"].to_numpy()
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
        log_axis(ax.yaxis)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("generation")
    ax.set_ylabel(ylabel(axis_label(metric, declared)))
    keys = _style_keys(banded, pointed, predicted)
    legend_below(fig, [*handles, *keys[0]], [*labels, *keys[1]])
    counts = ", ".join(str(int(v)) for v in sorted(n_seeds))
    caption = (f"{metric}: mean across seeds (n = {counts} seeds per group); band: 95% t-interval "
               f"(mean ± t(0.975, n−1)·s/√n) where a group has at least {MIN_BAND_SEEDS} seeds, "
               f"clipped to the metric's range; with fewer, each seed's value as a point")
    if predicted:
        caption += "; dashed: the exact theory"
    return figure(fig, f"band-{metric}", caption, paper=paper)


def _style_keys(band: bool, points: bool, theory: bool) -> tuple[list[Any], list[str]]:
    """Legend entries for what a mark means (grey: it holds for every group)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    entries: list[tuple[Any, str]] = []
    if band:
        entries.append((Patch(color="0.35", alpha=0.3, lw=0), "95% t-interval"))
    if points:
        entries.append((Line2D([], [], color="0.35", ls="", marker="o", markersize=3),
                        "one seed"))
    if theory:
        entries.append((Line2D([], [], color="0.35", ls="--"), "theory (exact)"))
    return [h for h, _ in entries], [text for _, text in entries]


# --- costs -------------------------------------------------------------------------------------


def run_costs(store: RunStore) -> dict[str, Any]:
    """Totals over completed generations: wall time, samples (tokens for text) trained on and
    generated, summed over chains; FLOPs ≈ 6·N·trained + 2·N·generated tokens when the model
    exposes its parameter count N."""
    from collapselab import registry

    cfg = store.config()
    rows = store.metrics()
    unit, per = "samples", 1
    try:
        kind = registry.sources.get(cfg.data.source).kind
    except (KeyError, ImportError):
        kind = None
    if kind == "tokens" and cfg.data.params.get("block_len"):
        unit, per = "tokens", int(cfg.data.params["block_len"])

    def total(key: str) -> int:
        return sum(r.get(key) or 0 for r in rows) * cfg.chains * per

    out: dict[str, Any] = {"run": store.root.name, "generations": len(rows), "unit": unit,
                           "wall_s": sum(r.get("wall_s") or 0.0 for r in rows),
                           "trained": total("train_size"), "generated": total("generated"),
                           "flops": None, "flops_note": "not a neural family: no parameter count"}
    producers = ([(p.name, p.model.family) for p in cfg.producers] if cfg.producers
                 else [(None, cfg.model.family)])
    if not all(_neural(family) for _, family in producers):
        return out
    flops, sizes = 0.0, []
    for name, _ in producers:  # each producer's parameters times its own samples
        if not store.path(0, "model", "pkl", name).is_file():
            out["flops_note"] = "generation 0's model was not kept"
            return out
        try:
            n = capabilities.parameter_count(store.model(0, name))
        except Exception as exc:  # noqa: BLE001  (a missing optional dependency, an old pickle)
            out["flops_note"] = f"model not loadable here: {type(exc).__name__}"
            return out
        if n is None:
            out["flops_note"] = "generation 0's model has no weights to count"
            return out
        key = f"{name}/" if name else ""
        flops += 6.0 * n * total(f"{key}train_size") + 2.0 * n * total(f"{key}generated")
        sizes.append(f"{name} {n:,}" if name else f"{n:,}")
    out["flops"] = flops
    out["flops_note"] = f"6·N·trained + 2·N·generated, N = {', '.join(sizes)} per chain"
    return out


def _neural(family: str) -> bool:
    """Whether ``family`` declares network weights (``capabilities.HasWeights``); a family that
    cannot be imported here (no torch) has no model to count either."""
    from collapselab import registry

    try:
        return capabilities.is_neural(registry.families.get(family))
    except (KeyError, ImportError):
        return False


# --- the sweep report --------------------------------------------------------------------------


def write_sweep_report(root: str | Path, out: str | Path | None = None) -> Path:
    """report.html, tidy.csv (+ .parquet) and costs.csv in the sweep directory."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    root = Path(root)
    manifest = read_manifest(root)
    frame, theory = tidy_frames(root)
    exported = export_tidy(frame, root)
    costs = pd.DataFrame([run_costs(s) for _, s in sweep_runs(root)])
    if not costs.empty:
        write_atomic(root / "costs.csv", costs.to_csv(index=False).encode())
    figures = sweep_figures(frame, theory, sweep_declared(root))
    out = Path(out) if out else root / "report.html"
    write_atomic(out, render_sweep(manifest, frame, costs, figures, exported).encode())
    return out


def sweep_figures(frame: Any, theory: Any, declared: Declared, paper: bool = False
                  ) -> list[Figure]:
    """One :func:`band_figure` per metric of the tidy table."""
    if frame.empty:
        return []
    stats = band_stats(frame)
    return [band_figure(m, stats, frame, theory, declared, paper=paper)
            for m in frame["metric"].unique()]


def write_sweep_figures(root: str | Path, folder: str | Path) -> list[Path]:
    """Each metric's band figure as PNG (300 dpi), SVG and PDF in ``folder`` (see
    :mod:`collapselab.report.export`); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    check_folder(folder)
    frame, theory = tidy_frames(root)
    return save_figures(sweep_figures(frame, theory, sweep_declared(root), paper=True), folder)


def final_table_html(frame: Any) -> str:
    if frame.empty:
        return "<p>no finished generations yet</p>"
    fs = final_stats(frame)
    metrics = list(dict.fromkeys(fs["metric"]))
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    body = ""
    for group, g in fs.groupby("group", sort=False):
        cells = ""
        for m in metrics:
            r = g[g["metric"] == m]
            if r.empty or not np.isfinite(r["mean"].iloc[0]):
                cells += "<td>–</td>"
                continue
            mean, half = r["mean"].iloc[0], r["half"].iloc[0]
            cells += f"<td>{mean:.4g}" + (f" ± {half:.2g}" if np.isfinite(half) else "") + "</td>"
        n = int(g["n"].max())
        body += f"<tr><td>{html.escape(group)}</td><td>{n}</td>{cells}</tr>"
    return f"<table><tr><th>group</th><th>seeds</th>{head}</tr>{body}</table>"


def render_sweep(manifest: dict[str, Any], frame: Any, costs: Any, figures: list[Figure],
                 exported: list[Path]) -> str:
    esc = html.escape
    points = "".join(
        f"<tr><td>{esc(e['name'])}</td><td>{esc(group_label(e['overrides']))}</td>"
        f"<td>{esc(str(e['overrides'].get('seed', '')))}</td><td>{esc(str(e.get('status')))}</td>"
        f"<td>{e.get('attempts', 0)}</td><td>{esc(str(e.get('error') or ''))}</td></tr>"
        for e in manifest["points"])
    cost_rows = ""
    notes = set()
    for c in costs.to_dict("records") if not costs.empty else []:
        flops = f"{c['flops']:.3g}" if c["flops"] is not None and np.isfinite(c["flops"]) else "–"
        notes.add(c["flops_note"])
        cost_rows += (f"<tr><td>{esc(c['run'])}</td><td>{c['generations']}</td>"
                      f"<td>{c['wall_s']:.2f}</td><td>{c['trained']:,} {c['unit']}</td>"
                      f"<td>{c['generated']:,} {c['unit']}</td><td>{flops}</td></tr>")
    if not costs.empty:
        cost_rows += (f"<tr><th>total</th><th>{int(costs['generations'].sum())}</th>"
                      f"<th>{costs['wall_s'].sum():.2f}</th><th>{int(costs['trained'].sum()):,}</th>"
                      f"<th>{int(costs['generated'].sum()):,}</th><th></th></tr>")
    files = ", ".join(esc(p.name) for p in exported)
    return html_page("collapselab sweep report", f"""<h1>Sweep report</h1>
<p>Runs are grouped by every swept key but the seed. Each curve is the mean across the group's
seeds (each seed's value is itself a mean over its chains); the band is a 95% Student-t
confidence interval across seeds, mean ± t(0.975, n−1)·s/√n, clipped to the metric's declared
range, drawn where a group has at least {MIN_BAND_SEEDS} seeds: with fewer, each seed's value is
drawn as a point instead. Dashed lines: the exact theory, where the runs recorded one. The same
intervals are given in the final-generation table. Tidy data: {files}.</p>
<h2>Final generation (mean ± 95% t-interval half-width across seeds)</h2>{final_table_html(frame)}
<h2>Metrics by generation</h2><div class="grid">{figures_html(figures)}</div>
<h2>Cost per run</h2>
<table><tr><th>run</th><th>generations</th><th>wall s</th><th>trained</th><th>generated</th>
<th>FLOPs (est.)</th></tr>{cost_rows}</table>
<p>Samples and tokens are summed over generations and chains. FLOPs: {esc('; '.join(sorted(notes)))}.
</p>
<h2>Points</h2>
<table><tr><th>run</th><th>group</th><th>seed</th><th>status</th><th>attempts</th><th>error</th>
</tr>{points}</table>""")


# --- comparing two runs ------------------------------------------------------------------------


def compare_runs(run_a: str | Path, run_b: str | Path) -> Any:
    """Per-generation table of shared metrics: a, b, diff = b - a, and the diff's standard error
    where both runs recorded one (independent runs: the SEs add in quadrature)."""
    import pandas as pd

    a, b = RunStore(run_a), RunStore(run_b)
    ra, rb = a.metrics(), b.metrics()
    shared = [k for k in metric_keys(ra) if k in set(metric_keys(rb))]
    by_gen_b = {r["generation"]: r for r in rb}
    records = []
    for row_a in ra:
        row_b = by_gen_b.get(row_a["generation"])
        if row_b is None:
            continue
        for k in shared:
            va, vb = row_a.get(k), row_b.get(k)
            sa, sb = row_a.get(f"{k}.sem"), row_b.get(f"{k}.sem")
            records.append({
                "generation": row_a["generation"], "metric": k,
                "a": np.nan if va is None else va, "b": np.nan if vb is None else vb,
                "diff": np.nan if va is None or vb is None else vb - va,
                "diff_se": np.nan if sa is None or sb is None else float(np.hypot(sa, sb)),
            })
    return pd.DataFrame.from_records(
        records, columns=["generation", "metric", "a", "b", "diff", "diff_se"])


@styled
def compare_figure(table: Any, label_a: str, label_b: str) -> bytes:
    """Small multiples at full width: each shared metric's difference B − A per generation,
    with its ±1.96 SE band."""
    import matplotlib

    matplotlib.use("Agg")
    from collapselab.report.figures import panels

    metrics = list(dict.fromkeys(table["metric"])) or ["(no shared metric)"]
    fig, axes = panels(len(metrics), sharex=True)
    for ax, m in zip(axes, metrics, strict=True):
        t = table[table["metric"] == m]
        ax.plot(t["generation"], t["diff"], color=PALETTE[0])
        if t["diff_se"].notna().any():
            ax.fill_between(t["generation"], t["diff"] - 1.96 * t["diff_se"],
                            t["diff"] + 1.96 * t["diff_se"], color=PALETTE[0], alpha=0.2, lw=0)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel(wrap(f"{m}: B − A", ROW))
        ax.set_xlabel("generation")
    fig.suptitle(wrap(f"{label_b} − {label_a} per generation (band: ±1.96 SE of the difference)",
                      fig.get_figwidth() * 1.1))
    return png_bytes(fig)


def write_compare(run_a: str | Path, run_b: str | Path, out: str | Path | None = None,
                  ) -> tuple[Any, Path, Path]:
    """compare_<a>_vs_<b>.html (the plot embedded, plus the table) and .png; returns
    (table, html path, png path)."""
    a, b = RunStore(run_a), RunStore(run_b)
    a.manifest(), b.manifest()  # clear errors for folders that are not runs
    table = compare_runs(run_a, run_b)
    out = Path(out) if out else Path(f"compare_{a.root.name}_vs_{b.root.name}.html")
    png = compare_figure(table, a.root.name, b.root.name)
    png_path = out.with_suffix(".png")
    write_atomic(png_path, png)
    last = table[table["generation"] == table["generation"].max()] if not table.empty else table
    rows = "".join(
        f"<tr><td>{html.escape(r['metric'])}</td><td>{r['a']:.4g}</td><td>{r['b']:.4g}</td>"
        f"<td>{r['diff']:+.4g}</td></tr>" for r in last.to_dict("records"))
    page = html_page("collapselab compare", f"""<h1>{html.escape(b.root.name)} − {html.escape(a.root.name)}</h1>
{figures_html([Figure("differences", "per-generation differences, B − A", png)])}
<h2>Final shared generation</h2><table><tr><th>metric</th>
<th>A: {html.escape(str(run_a))}</th><th>B: {html.escape(str(run_b))}</th><th>B − A</th></tr>
{rows}</table>""")
    write_atomic(out, page.encode())
    return table, out, png_path
