"""Figures for a paper: each headline figure of a report written as its own files, PNG (300 dpi),
SVG and PDF, at a paper's sizes (6.75 in small multiples, 3.25 in a column).

A folder of figures is the user's: files are only added or replaced there, never removed, and a
file is replaced only if an earlier export wrote it (``figures.json`` lists what each export
wrote, with each figure's caption); any other file in the way is refused by name.
"""

from __future__ import annotations

import json
from pathlib import Path

from collapselab.errors import DataError
from collapselab.report.draw import Figure
from collapselab.report.figures import (
    artifact_histogram,
    chart_figure,
    charts,
    distribution_figure,
    slug,
)
from collapselab.report.view import Declared, RunView, kind_groups
from collapselab.store import write_atomic

FORMATS = ("png", "svg", "pdf")
INDEX = "figures.json"


def headline_figures(pages: list[RunView]) -> list[Figure]:
    """The headline charts of each kind of data (as the page's headline panels), then each
    run's distributions by generation (samples against the truth, declared histograms)."""
    out = []
    for _, group in kind_groups(pages):
        runs = [curve for v in group for curve in v.curves]
        declared = Declared.of([v.config for v in group])
        out += [chart_figure(c, runs, declared, paper=True)  # metric-<key>, chart-<title>
                for c in charts(runs, declared) if c.keys and c.plot.headline]
    for v in pages:
        hists = [artifact_histogram(v, p.keys[0], p.title, paper=True)
                 for p in v.declared.of_kind("histogram")]
        out += [f for f in (distribution_figure(v, paper=True), *hists) if f is not None]
    return out


def check_folder(folder: str | Path) -> Path:
    """``folder`` if figures can go there: a folder, or nothing yet (it is made)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"--figures {folder}: a file, not a folder (give a folder for the "
                        "figures; it is made if missing)")
    return folder


def save_figures(figures: list[Figure], folder: str | Path) -> list[Path]:
    """Write each figure's paper files into ``folder`` (made if missing) and list them in
    ``figures.json``; returns the paths written."""
    folder = check_folder(folder)
    index = folder / INDEX
    ours = set(_index(index).get("files", []))
    files = {f"{slug(f.name)}.{fmt}": data for f in figures for fmt, data in f.files.items()}
    for name in [*files, INDEX]:
        path = folder / name
        if path.exists() and name not in ours and not (name == INDEX and ours):
            raise DataError(f"--figures {folder}: {path} exists and no earlier figure export "
                            "wrote it (never replaced: give another folder, or move it)")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in files.items():
        write_atomic(folder / name, data)
        written.append(folder / name)
    listing = [{"name": slug(f.name), "caption": f.title, "lines": f.lines,
                "files": [f"{slug(f.name)}.{fmt}" for fmt in f.files]} for f in figures]
    write_atomic(index, json.dumps({"files": sorted(ours | set(files)), "figures": listing},
                                   indent=1, ensure_ascii=False).encode())
    return written


def _index(path: Path) -> dict:
    """An earlier export's ``figures.json`` (empty where there is none or it is unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
