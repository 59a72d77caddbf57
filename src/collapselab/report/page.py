"""The page: its sections top to bottom, and the self-contained HTML around them."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

from collapselab.report import figures as plots
from collapselab.report.draw import Figure
from collapselab.report.figures import (
    artifact_histogram,
    chart_figure,
    charts,
    composition_figures,
    distribution_figure,
    sample_grid_figure,
    slug,
)
from collapselab.report.forgetting import forgetting_figures
from collapselab.report.tables import (
    detail_table,
    final_table,
    glossary,
    runs_table,
    text_table,
    theory_table,
    value_table,
)
from collapselab.report.view import Declared, RunView, kind_groups


@dataclass
class Section:
    """A part of the page, listed in the table of contents."""

    id: str
    title: str
    body: str
    figures: list[Figure] = field(default_factory=list)


KIND_NAMES = {"tokens": "language", "continuous": "continuous", "categorical": "categorical",
              "images": "image"}


def sections(pages: list[RunView]) -> list[Section]:
    """The page, top to bottom (see the package docstring). A new part of the page is a function
    ``(pages) -> Section | None`` in this list (its figures drawn in :mod:`.figures`)."""
    headline, others = headline_sections(pages)
    parts = [Section("runs", "Runs", runs_table(pages)), *headline, theory_section(pages),
             text_section(pages), distribution_section(pages), composition_section(pages),
             figure_section("forgetting", "When each category was forgotten",
                            "", forgetting_figures(pages)),
             figure_section("metrics", "Every other metric", "", others),
             final_section(pages), details_section(pages),
             Section("glossary", "Metrics: what each means, and which way is worse",
                     glossary(pages))]
    return [p for p in parts if p is not None]


def figure_section(id: str, title: str, intro: str, figures: list[Figure]) -> Section | None:
    """A section of figures in a grid (None without figures)."""
    if not figures:
        return None
    return Section(id, title, intro + f'<div class="grid">{figures_html(figures)}</div>', figures)


def headline_sections(pages: list[RunView]) -> tuple[list[Section], list[Figure]]:
    """A headline panel per kind of data (the charts the metrics declare headline), and the
    other charts, for "Every other metric"."""
    esc = html.escape
    out, others = [], []
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
        out.append(Section(f"headline-{slug(kind)}", f"Headline: {what} runs",
                           intro + (f'<div class="grid">{figures_html(head)}</div>' if head else
                                    "<p>No headline metric was recorded.</p>"), head))
    return out, others


def theory_section(pages: list[RunView]) -> Section | None:
    agree = "".join(theory_table(v) for v in pages)
    if not agree:
        return None
    return Section("theory", "Theory against simulation",
                   "<p>Each predicted metric at the final generation: the value the run "
                   "measured, the exact prediction, the standard error (from the theory's "
                   "per-chain sd, or from the chains), z, and whether |z| &lt; 4. "
                   "<code>collapselab theory RUN -g …</code> prints it for any "
                   "generation.</p>" + agree)


def text_section(pages: list[RunView]) -> Section | None:
    texts = "".join(text_table(v, plot, producer) for v in pages
                    for plot in v.declared.of_kind("text") for producer in v.producers)
    return Section("text", "Fixed prompts, continued by every generation", texts) if texts else None


def distribution_section(pages: list[RunView]) -> Section | None:
    dists: list[Figure] = []
    for v in pages:
        grids = [sample_grid_figure(v, p.keys[0]) for p in v.declared.of_kind("grid")]
        if not v.declared.of_kind("grid"):
            grids = [sample_grid_figure(v)]  # stored image samples, where the run kept them
        hists = [artifact_histogram(v, p.keys[0], p.title) for p in v.declared.of_kind("histogram")]
        dists += [f for f in (distribution_figure(v), *hists, *grids) if f is not None]
    return figure_section("distributions", "Distributions by generation", "", dists)


def composition_section(pages: list[RunView]) -> Section | None:
    return figure_section("composition", "Training-set composition",
                          "<p>Each generation's training set by origin: real data, and the "
                          "generation whose output it came from.</p>",
                          [f for v in pages for f in composition_figures(v)])


def final_section(pages: list[RunView]) -> Section:
    tables = "".join(value_table(v, plot) for v in pages for plot in v.declared.of_kind("table"))
    return Section("final", "Final generation", final_table(pages) + tables)


def details_section(pages: list[RunView]) -> Section | None:
    details = "".join(detail_table(v) for v in pages)
    return Section("details", "Curation and watermark, by generation", details) if details else None


def build_figures(pages: list[RunView]) -> list[Figure]:
    """Every figure of the page, in page order."""
    return [f for s in sections(pages) for f in s.figures]


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
every run are left out of the charts and kept in the tables. Curves of more than {plots.MAX_POINTS}
generations are drawn at {plots.MAX_POINTS} evenly spaced ones; the tables hold every generation.</p>
<nav id="toc"><h2>Contents</h2><ol>{toc}</ol></nav>
{body}""")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222;
       padding: 0 1em; box-sizing: border-box; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
table:not(.text) { display: block; overflow-x: auto; max-width: 100%; }  /* wide: scroll inside */
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
.grid { display: flex; flex-wrap: wrap; gap: 1.2em; }
figure { margin: 0; max-width: 100%; } figure img { max-width: 100%; }
figure { width: 490px; } figure.wide { width: 1015px; flex-basis: 100%; }  /* 150 dpi */
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
        wide = ' class="wide"' if f.wide else ""
        out.append(f'<figure{wide}><img alt="{esc(f.title)}" id="{esc(f.name)}" '
                   f'src="data:image/png;base64,{base64.b64encode(f.png).decode()}"/>'
                   f"<figcaption>{esc(f.title)}{lines}</figcaption></figure>")
    return "\n".join(out)


