"""Figures a paper can use: ``collapselab report RUN --figures DIR`` writes each headline figure as
PNG (300 dpi), SVG and PDF at a paper's width, files that parse; every drawn line is visible on
white (contrast >= 3:1, WCAG 2.1's rule for graphics), legends sit outside the axes, y axes say
what they measure; the folder is the user's (a file as DIR is refused, a file the export did not
write is never replaced). One tiny Gaussian run (3 generations) serves the whole file."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from collapselab.cli import app
from collapselab.report import draw, write_figures, write_report

GAUSSIAN = ["generations=3", "chains=20", "data.size=20", "metrics=[variance_ratio, w2, tail_mass]"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from collapselab.config import load_config
    from collapselab.loop import run

    out = tmp_path_factory.mktemp("figs")
    cfg = load_config("configs/gaussian/replace.yaml", [f"out_dir={out}", "name=g", *GAUSSIAN])
    return run(cfg).root


def test_figures_are_written_at_paper_size_and_parse(run_dir, tmp_path):
    folder = tmp_path / "figs"
    written = write_figures([run_dir], folder)
    by_kind = {ext: sorted(p for p in written if p.suffix == f".{ext}")
               for ext in ("png", "svg", "pdf")}
    assert len(by_kind["png"]) >= 2 and len(by_kind["svg"]) >= 2 and len(by_kind["pdf"]) >= 2
    assert {p.stem for p in by_kind["png"]} == {p.stem for p in by_kind["svg"]}
    assert "metric-variance_ratio" in {p.stem for p in by_kind["png"]}
    for png in by_kind["png"]:
        with Image.open(png) as im:
            im.load()  # decodes the whole image
            width, height = im.size
        dpi = draw.PAPER_DPI
        assert width in (round(draw.COLUMN * dpi), round(draw.FULL * dpi)), (png, width)
        assert 1.5 * dpi < height < 5 * dpi
    for svg in by_kind["svg"]:
        root = ET.parse(svg).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert root.get("width", "").endswith("pt")
    assert all(p.read_bytes().startswith(b"%PDF-") for p in by_kind["pdf"])
    index = json.loads((folder / "figures.json").read_text())
    assert sorted(index["files"]) == sorted(p.name for p in written)
    captions = {f["name"]: f["caption"] for f in index["figures"]}
    assert captions["metric-variance_ratio"] == "variance ratio (the spread that is left)"
    # again into the same folder: its own files are replaced, byte for byte the same
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert write_figures([run_dir], folder) == written
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first


def test_the_cli_writes_figures_and_never_replaces_what_it_did_not_write(run_dir, tmp_path):
    runner = CliRunner()
    folder = tmp_path / "figs"
    res = runner.invoke(app, ["report", str(run_dir), "-o", str(tmp_path / "r.html"),
                              "--figures", str(folder)])
    assert res.exit_code == 0, res.output
    assert f"files in {folder} (pdf, png, svg)" in " ".join(res.output.split())
    assert len(list(folder.glob("*.png"))) >= 2 and len(list(folder.glob("*.svg"))) >= 2

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metric-variance_ratio.svg").write_text("my drawing")
    res = runner.invoke(app, ["report", str(run_dir), "-o", str(tmp_path / "refused.html"),
                              "--figures", str(mine)])
    assert res.exit_code == 2 and not (tmp_path / "refused.html").exists()
    assert " ".join(res.output.split()) == (
        f"error: --figures {mine}: {mine / 'metric-variance_ratio.svg'} exists and no earlier "
        "figure export wrote it (never replaced: give another folder, or move it)")
    assert [p.name for p in mine.iterdir()] == ["metric-variance_ratio.svg"]  # nothing added
    assert (mine / "metric-variance_ratio.svg").read_text() == "my drawing"

    a_file = tmp_path / "figs.txt"
    a_file.write_text("notes")
    res = runner.invoke(app, ["report", str(run_dir), "--figures", str(a_file)])
    assert res.exit_code == 2 and a_file.read_text() == "notes"
    assert " ".join(res.output.split()) == (
        f"error: --figures {a_file}: a file, not a folder (give a folder for the figures; it "
        "is made if missing)")


@pytest.fixture
def drawn(monkeypatch):
    """Every matplotlib figure the report encodes, inspected just before: its axes, y labels,
    the colours of its lines, bars and histograms, and legend boxes (in display pixels)."""
    seen = []
    encode = draw.encode

    def inspect(fig, *args, **kwargs):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        axes = [ax for ax in fig.axes if ax.get_visible()]
        seen.append({
            "ylabels": [ax.get_ylabel() for ax in axes],
            "colors": [*(line.get_color() for ax in axes for line in ax.get_lines()),
                       *(p.get_facecolor() if p.get_fill() else p.get_edgecolor()
                         for ax in axes for p in ax.patches)],  # bars, histograms
            "axes": [ax.get_window_extent(renderer) for ax in axes],
            "legends": [lg.get_window_extent(renderer) for lg in
                        [*fig.legends, *(ax.get_legend() for ax in axes if ax.get_legend())]],
        })
        return encode(fig, *args, **kwargs)

    monkeypatch.setattr(draw, "encode", inspect)
    return seen


def test_every_line_is_visible_on_white_and_legends_sit_outside_the_data(run_dir, tmp_path,
                                                                         drawn):
    write_report([run_dir], tmp_path / "r.html")
    charts = [f for f in drawn if f["axes"]]
    assert len(charts) >= 5
    for fig in charts:
        assert fig["colors"] and all(draw.contrast(c) >= 3 for c in fig["colors"]), fig
        for legend in fig["legends"]:
            assert not any(legend.overlaps(ax) for ax in fig["axes"]), fig
        assert all(label and label.strip().lower() != "value" for label in fig["ylabels"][:1])
    ylabels = {label.replace("\n", " ") for fig in charts for label in fig["ylabels"]}
    # named by the declared plot titles (metrics/continuous.py), not by a key or "value"
    assert {"variance ratio (the spread that is left)", "mass in the tails"} <= ylabels


def test_the_palette_and_the_ordered_colours_keep_3_to_1_on_white():
    assert all(draw.contrast(c) >= 3 for c in draw.PALETTE)
    assert all(draw.contrast(draw.ordered(i, 12)) >= 3 for i in range(12))
    assert len(set(draw.PALETTE)) == len(draw.PALETTE)
    # the check tells: Okabe-Ito's yellow and matplotlib's default orange fail it
    assert draw.contrast("#F0E442") < 1.5 and draw.contrast("#ff7f0e") < 3
    assert draw.contrast("#000000") == pytest.approx(21)
