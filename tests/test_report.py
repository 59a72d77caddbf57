"""The report's cost does not grow with generations in what it draws: curves thinned to a bounded
number of points, a bounded number of figures, artifacts opened for a bounded number of
generations, composition origins grouped into bands; the tables keep every generation. The bounds
are made small here so that a 30-generation run crosses them all in seconds."""

from __future__ import annotations

import re

import pytest

from collapselab import report
from collapselab.report import origin_groups, thin, write_report
from collapselab.store import RunStore

IMG = re.compile(r'<img alt="([^"]*)" id="([^"]+)" src="data:image/png;base64,')
GENS = 30


@pytest.fixture
def small_bounds(monkeypatch):
    monkeypatch.setattr(report.figures, "MAX_POINTS", 10)
    monkeypatch.setattr(report.view, "MAX_SHOWN", 4)
    monkeypatch.setattr(report.figures, "MAX_ORIGINS", 5)


def _run(run_config, name, gens):
    # a Gaussian run with a curation filter, so that the page has a per-generation table
    return run_config(None, f"name={name}", "chains=4", f"generations={gens}", "data.size=20",
                      "curation=[{name: density_band, low: 0.05}]")


def test_a_long_run_draws_bounded_figures_and_tables_every_generation(run_config, small_bounds,
                                                                      monkeypatch, tmp_path):
    short, long = _run(run_config, "short", 3), _run(run_config, "long", GENS)
    opened: list[int] = []
    read = RunStore.artifacts
    monkeypatch.setattr(RunStore, "artifacts",
                        lambda self, gen: opened.append(gen) or read(self, gen))
    page = write_report([long.root], tmp_path / "long.html").read_text()
    # artifacts of at most MAX_SHOWN generations, each opened once (none: a Gaussian run's
    # metrics declare no per-generation figure)
    assert len(opened) == len(set(opened)) <= 4

    # the same figures as a 3-generation run's: their number does not grow with generations
    figures = IMG.findall(page)
    names = [name for _, name in figures]
    short_page = write_report([short.root], tmp_path / "short.html").read_text()
    assert names == [name.replace("short", "long") for _, name in IMG.findall(short_page)]
    assert len(names) == len(set(names)) and "composition-long-" in names

    captions = dict((name, alt) for alt, name in figures)
    assert captions["metric-variance_ratio"] == (
        f"variance ratio (the spread that is left) (10 of {GENS} generations drawn, evenly spaced)")
    # replace: real data, then each generation's predecessor: GENS origins in at most 5 bands
    assert re.fullmatch(rf"replace: composition \({GENS} origins in [2-5] bands\) "
                        rf"\(10 of {GENS} generations drawn, evenly spaced\)",
                        captions["composition-long-"])

    # the curation table keeps every generation, with the value each row recorded
    table = page.split("Curation: share of each generation")[1].split("</table>")[0]
    rows = long.metrics()
    assert table.count("<tr><td>") == GENS
    assert [int(g) for g in re.findall(r"<tr><td>(\d+)</td>", table)] == list(range(GENS))
    assert all(f"<td>{r['kept.density_band']:.4g}</td>" in table for r in rows)
    final = page.split("<h2>Final generation</h2>")[1].split("</table>")[0]
    assert f"<td>{rows[-1]['variance_ratio']:.4g} ± " in final


def test_a_long_language_run_shows_continuations_of_bounded_generations(run_config, small_bounds,
                                                                         monkeypatch, tmp_path):
    store = run_config(None, "name=lang", f"generations={GENS}",
                       "model={family: ngram, order: 2, prompt_tokens: 2}",
                       "data={source: builtin, size: 40, vocab_size: 100, block_len: 12,"
                       " train_blocks: 60, valid_blocks: 10, test_blocks: 10}",
                       "metrics=[perplexity, synthetic_ppl, {name: continuations, prompts: 2}]")
    opened: list[int] = []
    read = RunStore.artifacts
    monkeypatch.setattr(RunStore, "artifacts",
                        lambda self, gen: opened.append(gen) or read(self, gen))
    page = write_report([store.root], tmp_path / "lang.html").read_text()
    # artifacts of at most MAX_SHOWN generations, each opened once, the first and last among them
    assert len(opened) == len(set(opened)) <= 4 and {0, GENS - 1} <= set(opened)
    table = page.split('<table class="text">')[1].split("</table>")[0]
    assert re.findall(r'<tr class="gen"><th>gen (\d+)</th>', table) == [
        str(g) for g in sorted(set(opened))]
    assert "(4 of 30 generations, evenly spaced)" in page


def test_thin_keeps_first_and_last_and_never_exceeds_the_limit():
    assert thin(5, 10).tolist() == [0, 1, 2, 3, 4]
    for n, limit in ((2000, 500), (11, 10), (1001, 3)):
        idx = thin(n, limit)
        assert idx[0] == 0 and idx[-1] == n - 1 and len(idx) <= limit
        assert (idx[1:] > idx[:-1]).all()


def test_origin_groups_keep_each_origin_once_in_contiguous_ranges():
    origins = ["real", *[f"gen_{g:03d}" for g in range(2000)]]
    groups = origin_groups(origins, limit=10)
    assert len(groups) == 10 and groups[0] == ("real", [0])
    members = [i for _, idx in groups for i in idx]
    assert sorted(members) == list(range(len(origins)))  # every origin in exactly one band
    assert groups[1][0] == "gen_000–222" and groups[-1][0] == "gen_1778–1999"
    for _, idx in groups[1:]:
        assert idx == list(range(idx[0], idx[-1] + 1))  # contiguous generations
    few = ["real", "gen_000", "gen_001"]
    assert origin_groups(few, limit=10) == [("real", [0]), ("gen_000", [1]), ("gen_001", [2])]


def test_producers_are_grouped_separately():
    origins = ["real", *[f"gen_{g:03d}/{p}" for g in range(40) for p in ("a", "b")]]
    groups = origin_groups(origins, limit=7)
    labels = [label for label, _ in groups]
    assert labels[0] == "real" and len(groups) == 7
    assert sum(label.endswith("/a") for label in labels) == 3
    assert sum(label.endswith("/b") for label in labels) == 3


def test_the_report_benchmark_runs_at_a_minuscule_size(tmp_path):
    import json

    from benchmarks import run as bench

    sizes = {"reps": 1, "report": {"gens": 3, "chains": 2}}
    bench.main(["--quick", "--only", "report", "--out", str(tmp_path), "--sizes",
                json.dumps(sizes)])
    (row,) = json.loads((tmp_path / "latest.json").read_text())["rows"]
    assert row["goal_text"] == "< 20 s and < 500 MB peak RSS" and row["met"] is True
    assert row["data"]["generations"] == 3 and row["data"]["peak_rss_bytes"] > 0


def test_metrics_frame_keeps_composition_shares_out_of_the_columns():
    rows = [{"generation": 0, "w2": 0.1, "composition.real": 1.0},
            {"generation": 1, "w2": None, "composition.gen_000": 0.75, "composition.real": 0.25},
            {"generation": 2, "kept": 0.5, "p/composition.gen_001/q": 1.0}]
    frame, shares = report.metrics_frame(rows)
    assert list(frame.columns) == ["generation", "w2", "kept"]
    assert frame["generation"].tolist() == [0, 1, 2] and frame["w2"].isna().tolist() == [
        False, True, True]
    entries = [(int(r), shares.keys[c], v)
               for r, c, v in zip(shares.rows, shares.codes, shares.values, strict=True)]
    assert entries == [(0, "composition.real", 1.0), (1, "composition.gen_000", 0.75),
                       (1, "composition.real", 0.25), (2, "p/composition.gen_001/q", 1.0)]


def test_declarations_may_be_plots_or_dicts_and_unknown_kinds_are_left_out():
    from collapselab.metrics.declare import Plot, declarations

    class Declared:
        describe = {"a_*": "an a"}
        worse = {"a_*": "higher"}
        plots = (Plot.group("a_*", title="the a's", headline=True),
                 {"kind": "curves", "keys": ("b", "c"), "reference": "_real"},
                 {"kind": "histogram", "artifact": "h", "title": "h by generation"},
                 {"kind": "table", "keys": ("ok",), "generations": (0,), "flag": "ok"},
                 {"kind": "bars", "artifact": "classes"})

    describe, worse, plots = declarations(Declared)
    assert [p.kind for p in plots] == ["curves", "curves", "histogram", "table"]
    assert plots[1] == Plot("curves", ("b", "c"), "b, c") and plots[0].matches("a_3")
    assert plots[3] == Plot.table("ok", title="ok", generations=(0,), flag="ok")
    assert declarations(object) == ({}, {}, ())
    rep = report.Declared(describe, worse, list(plots))
    assert rep.lines(["a_0", "a_1", "z"]) == ["a_0, a_1 — an a (↑ worse)",
                                              "z — (no description declared)"]


def test_the_report_tables_theory_against_simulation(tmp_path):
    from collapselab import theory
    from collapselab.config import load_config
    from collapselab.loop import run

    store = run(load_config("configs/gaussian/replace.yaml", [
        f"out_dir={tmp_path}", "chains=300", "generations=5", "metrics=[variance_ratio, w2]"]))
    page = write_report([store.root]).read_text()
    section = page.split('<section id="theory">')[1].split("</section>")[0]
    rows = re.findall(r"<tr><td>([^<]+)</td><td>4</td><td>([^<]+)</td><td>([^<]+)</td>", section)
    want = theory.agreement(store.metrics())
    assert [r[0] for r in rows] == [a.metric for a in want] and len(rows) >= 2
    for (_, measured, predicted), a in zip(rows, want, strict=True):
        assert float(measured) == pytest.approx(a.measured, rel=1e-4)
        assert float(predicted) == pytest.approx(a.theory, rel=1e-4)
    assert section.count("<td>pass</td>") == sum(a.passed for a in want)
