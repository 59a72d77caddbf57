"""A component named by import path is checked before anything of it is called, and what every
component returns is checked at the loop's boundary (issue 22, point 4).

From the command line: ``os:system`` as a family is refused by ``validate`` and ``run`` without
being called (the file its ``command`` would create never appears); a class that is not a
component (``collections:OrderedDict``) is refused naming the rule; a family whose ``sample``
returns half the rows, whose ``score_samples`` has the wrong shape, a metric whose values are not
one per chain or not numbers, a source without a sample axis or a policy without a plan stops the
run with exit 2 and one message naming the component, the method and the rule (tests/badplug.py
holds them). All-NaN scores make the collapse alarm
undefined (null, with a warning), never "no collapse". Nothing of the user's changes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from collapselab.cli import app
from collapselab.metrics.alarm import generations_to_collapse
from collapselab.store import RunStore

CONFIG = """\
name: bad
generations: 2
chains: 20
model: {family: gaussian}
data: {source: normal, size: 50, heldout_size: 200}
metrics: [collapse_alarm]
"""
FAMILY = ("a model family is a class defining fit, sample, score_samples, score and clone")
METRIC = "a metric value is a number, or numbers per chain: shape (20, ...)"


def squash(text: str) -> str:
    return "".join(text.split())


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(tmp_path: Path, command: str, *overrides: str) -> str:
    """``collapselab <command> config.yaml <overrides>`` in ``tmp_path``: exit 2, one error, no
    traceback, no file of ``tmp_path`` changed or added (a run that fails in generation 0 leaves
    nothing); the output squashed."""
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    (tmp_path / "notes.txt").write_text("the user's own file")
    before = snapshot(tmp_path)
    args = [command, str(config), f"out_dir={tmp_path / 'runs'}", *overrides]
    result = CliRunner().invoke(app, args + (["--no-report"] if command == "run" else []))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    assert snapshot(tmp_path) == before
    return squash(result.output)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_os_system_as_a_family_is_refused_and_never_called(tmp_path, command):
    target = tmp_path / "FILE"
    output = refused(tmp_path, command, "model={family: 'os:system', command: 'touch "
                                        f"{target}'}}")
    assert output == squash(
        "error: invalid config (1 problem): - model.family: model family 'os:system' is not a "
        f"component: {FAMILY}; got a builtin_function_or_method")
    assert not target.exists()


def test_a_class_that_is_not_a_family_is_refused(tmp_path):
    output = refused(tmp_path, "validate", "model.family=collections:OrderedDict")
    assert output == squash(
        "error: invalid config (1 problem): - model.family: model family "
        f"'collections:OrderedDict' is not a component: {FAMILY}; got a class without fit, "
        "sample, score_samples, score and clone")


def test_every_kind_is_held_to_its_own_protocol(tmp_path):
    output = refused(tmp_path, "validate", "policy.name=tests.badplug:HalfRows",
                     "metrics=['tests.badplug:HalfRows']",
                     "curation=[{name: 'os:system', command: 'true'}]")
    assert output == squash(
        "error: invalid config (3 problems): "
        "- policy.name: policy 'tests.badplug:HalfRows' is not a component: a policy is a class "
        "defining plan and history; got a class without plan and history "
        "- curation[0].name: filter 'os:system' is not a component: a filter is a class defining "
        "__call__; got a builtin_function_or_method "
        "- metrics[0].name: metric 'tests.badplug:HalfRows' is not a component: a metric is a "
        "class defining __call__ and kinds; got a class without __call__")


def test_a_filter_function_by_import_path_is_checked_before_it_is_called(tmp_path):
    output = refused(tmp_path, "validate", "curation=[{name: verifier, fn: 'os:system'}]")
    assert output == squash(
        "error: invalid config (1 problem): - curation[0]: fn 'os:system' must be a Python "
        "function taking (data, ctx); got a builtin_function_or_method")


def test_a_family_that_samples_half_the_rows_stops_the_run(tmp_path):
    output = refused(tmp_path, "run", "model.family=tests.badplug:HalfRows")
    assert output == squash(
        "error: tests.badplug:HalfRows.sample returned 25 rows per chain; asked for 50")


def test_scores_of_the_wrong_shape_stop_the_run(tmp_path):
    output = refused(tmp_path, "run", "model.family=tests.badplug:ChainScores")
    assert output == squash(
        "error: tests.badplug:ChainScores.score_samples returned shape (20,); one score per "
        "sample is shape (20, 200)")


def test_a_source_whose_data_has_no_sample_axis_stops_the_run(tmp_path):
    output = refused(tmp_path, "run", "data.source=tests.badplug:Flat")
    assert output == squash(
        "error: tests.badplug:Flat.real returned shape (20,) and dtype float64; data are numbers "
        "of shape (1 or 20 chains, 50, ...)")


def test_a_policy_that_returns_no_plan_stops_the_run_in_generation_1(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    result = CliRunner().invoke(app, ["run", str(config), f"out_dir={tmp_path / 'runs'}",
                                      "policy.name=tests.badplug:Rows", "--no-report"])
    assert result.exit_code == 2, result.output
    assert squash(result.output) == squash(
        "error: tests.badplug:Rows.plan returned a list; a policy returns a "
        "collapselab.provenance.Plan")
    assert config.read_text() == CONFIG
    assert len(RunStore(tmp_path / "runs" / "bad").metrics()) == 1  # generation 0 was kept


@pytest.mark.parametrize("metric,got", [
    ("SevenValues", "shape (7,) and dtype float64"),
    ("NoChainAxis", "shape (50, 1) and dtype float64"),
    ("ObjectValues", "shape (20,) and dtype object"),
    ("Word", "'high'"),
])
def test_a_metric_that_returns_no_value_per_chain_stops_the_run(tmp_path, metric, got):
    output = refused(tmp_path, "run", f"metrics=['tests.badplug:{metric}']")
    assert output == squash(
        f"error: tests.badplug:{metric}.__call__ returned {got} for 'bad'; {METRIC}")


def test_non_finite_scores_make_the_alarm_undefined_not_no_collapse(tmp_path, caplog):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    with caplog.at_level(logging.WARNING, logger="collapselab.metrics.alarm"):
        result = CliRunner().invoke(app, ["run", str(config), f"out_dir={tmp_path / 'runs'}",
                                          "model.family=tests.badplug:NaNScores", "--no-report"])
    assert result.exit_code == 0, result.output
    rows = RunStore(tmp_path / "runs" / "bad").metrics()
    keys = ["alarm", "alarm_excess_nll", "alarm_lower", "alarm_effect"]
    for row in rows:
        assert [row[k] for k in keys] == [None] * 4 and row["nonfinite"] == keys
        assert "generations_to_collapse" not in row
    assert [r.getMessage() for r in caplog.records if r.name == "collapselab.metrics.alarm"] == [
        f"generation {g}: the collapse alarm is undefined: 4000 of 4000 held-out scores (this "
        "model's or generation 0's) are not finite" for g in (0, 1)]


def test_an_undefined_alarm_read_back_as_null_is_not_a_collapse():  # as a resume reads it
    rows = [{"generation": 0, "alarm": None}, {"generation": 1, "alarm": 0.0},
            {"generation": 2, "alarm": 1.0}]
    assert generations_to_collapse(rows) == 2
    assert generations_to_collapse(rows[:2]) is None
