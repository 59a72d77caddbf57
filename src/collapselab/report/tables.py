"""The report's tables, as HTML: runs, theory against simulation, text continuations, declared
value tables, the final generation, curation and watermark details, and the glossary."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from collapselab.metrics.declare import WORSE_ARROW, Plot, lookup
from collapselab.report.view import (
    Declared,
    RunView,
    column,
    family_of,
    frame_metric_keys,
    informative,
    kind_groups,
    shown_note,
)
from collapselab.store import RunStore


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


def value_table(view: RunView, plot: Plot) -> str:
    """A declared table: the plot's keys at its generations (all where it names none), from the
    metrics frame; a row whose ``flag`` key is 0 is marked."""
    esc = html.escape
    out = ""
    for label, frame in view.curves:
        keys = [k for k in plot.keys if k in frame.columns]
        if not keys:
            continue
        gens = column(frame, "generation")
        rows = (np.arange(len(frame)) if plot.generations is None else
                np.flatnonzero(np.isin(gens, plot.generations)))
        body = ""
        for i in rows:
            flagged = plot.flag in frame.columns and column(frame, str(plot.flag))[i] == 0
            cells = "".join(_cell(column(frame, k)[i]) for k in keys)
            body += (f'<tr{" class=warn" if flagged else ""}><td>{int(gens[i])}</td>{cells}</tr>')
        head = "".join(f"<th>{esc(k)}</th>" for k in keys)
        out += (f"<h3>{esc(label)}: {esc(plot.title)}</h3>"
                f"<table><tr><th>gen</th>{head}</tr>{body}</table>")
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
                 f"<td>{a.measured:.5g}</td><td>{html.escape(a.theory_text)}</td><td>{se}</td>"
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
            band = f" ± {1.96 * se:.2g}" if se is not None and np.isfinite(se) else ""
            cells += f"<td>{v:.4g}{band}</td>"
        body += f"<tr><td>{html.escape(lab)}</td>{cells}</tr>"
    return f"<table><tr><th>run</th>{head}</tr>{body}</table>"
