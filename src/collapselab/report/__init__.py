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
- a curve of more than ``figures.MAX_POINTS`` generations is drawn at that many evenly spaced
  ones (first and last included, said in the caption); the tables keep every generation;
- per-generation figures (histograms, image grids, text) open the artifacts of at most
  ``view.MAX_SHOWN`` evenly spaced generations;
- the composition plot stacks at most ``figures.MAX_ORIGINS`` origins: beyond that, the
  generations a training set came from are grouped into contiguous ranges (real data stays its
  own band).

:func:`write_figures` writes the headline figures for a paper (PNG, SVG, PDF; :mod:`.export`).

Modules: :mod:`.view` (runs as the page reads them), :mod:`.draw` (the look: palette, sizes,
fonts, legends; the figure record and its encoding), :mod:`.figures` (every chart),
:mod:`.tables` (every table), :mod:`.page` (the sections top to bottom and the HTML around
them), :mod:`.export` (figures as files).
"""

from __future__ import annotations

from pathlib import Path

from collapselab.report.draw import Figure
from collapselab.report.export import check_folder, headline_figures, save_figures
from collapselab.report.figures import origin_groups
from collapselab.report.page import Section, build_figures, figures_html, html_page, render
from collapselab.report.tables import continuations
from collapselab.report.view import Declared, RunView, metric_keys, metrics_frame, thin, views
from collapselab.store import RunStore, write_atomic

__all__ = ["Declared", "Figure", "RunView", "Section", "build_figures", "continuations",
           "figures_html", "html_page", "metric_keys", "metrics_frame", "origin_groups",
           "render", "thin", "views", "write_figures", "write_report"]


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


def write_figures(run_dirs: list[str | Path], folder: str | Path) -> list[Path]:
    """Write each headline figure of the runs' report into ``folder`` as PNG (300 dpi), SVG and
    PDF at a paper's size; returns the files written (see :mod:`.export`)."""
    import matplotlib

    matplotlib.use("Agg")
    check_folder(folder)
    stores = [RunStore(d) for d in run_dirs]
    for s in stores:
        s.check()
    return save_figures(headline_figures(views(stores)), folder)
