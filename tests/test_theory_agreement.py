"""The agreement table: per predicted metric, measured chain mean against the theory, its standard
error, z and |z| < 4 — as a function of a run's rows, of a run directory, and as `collapselab theory`."""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from collapselab import theory
from collapselab.cli import app

ROWS = [
    {"generation": 0, "variance_ratio": 0.95, "variance_ratio.sem": 0.02,
     "variance_ratio.theory": 0.9, "variance_ratio.theory_se": 0.01,
     "kl": 0.25, "kl.sem": 0.05, "kl.theory": 0.1, "mean_drift": 0.1},
    {"generation": 1, "variance_ratio": 0.70, "variance_ratio.sem": 0.02,
     "variance_ratio.theory": 0.81, "variance_ratio.theory_se": 0.02,
     "kl.theory": 0.2, "degenerate": "LinAlgError: singular"},  # kl not measured: left out
]


def test_agreement_uses_the_theory_se_else_the_chains():
    last, = [a for a in theory.agreement(ROWS) if a.metric == "variance_ratio"]
    assert (last.generation, last.z, last.se_from) == (1, pytest.approx(-5.5), "theory")
    assert not last.passed
    first = {a.metric: a for a in theory.agreement(ROWS, [0])}
    assert set(first) == {"variance_ratio", "kl"}  # mean_drift has no theory
    assert first["variance_ratio"].z == pytest.approx(5.0) and first["kl"].se_from == "chains"
    assert first["kl"].z == pytest.approx(3.0) and first["kl"].passed
    assert [a.generation for a in theory.agreement(ROWS, [-2, -1, 7])] == [0, 0, 1]
    assert theory.agreement([]) == []


def test_agreement_without_a_standard_error_is_not_a_pass():
    rows = [{"generation": 0, "x": 1.0, "x.theory": 1.0}]
    a, = theory.agreement(rows)
    assert math.isnan(a.z) and not a.passed


def test_cli_prints_the_table_of_a_run(run_config):
    store = run_config(None, "chains=200", "generations=6", "data.size=20",
                       "metrics=[variance_ratio, w2]")
    result = CliRunner().invoke(app, ["theory", str(store.root), "-g", "0", "-g", "-1"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "variance_ratio" in out and "w2_sq" in out and "theory vs simulation" in out
    found = theory.run_agreement(store.root, [0, -1])
    assert [(a.metric, a.generation) for a in found] == [
        (m, g) for g in (0, 5) for m in ("variance_ratio", "log_variance_ratio", "w2_sq")]
    assert f"{sum(a.passed for a in found)} of {len(found)} within 4 standard errors" in out


def test_cli_says_when_no_theory_applies(run_config, tmp_path):
    store = run_config(None, "chains=2", "generations=2", "data.size=20", "model.family=gmm",
                       "metrics=[variance_ratio]")
    result = CliRunner().invoke(app, ["theory", str(store.root)])
    assert result.exit_code == 0 and "no theory applies" in result.output
    result = CliRunner().invoke(app, ["theory", str(tmp_path / "nowhere")])
    assert result.exit_code == 2


def test_a_bound_is_checked_one_sided_and_printed_as_a_bound():
    rows = [{"generation": 0, "w2_sq": 0.2, "w2_sq.sem": 0.01, "w2_sq.theory": 0.5,
             "w2_sq.theory_bound": 1.0, "x": 0.9, "x.sem": 0.01, "x.theory": 0.5,
             "x.theory_bound": -1.0}]
    upper, lower = theory.agreement(rows)
    assert (upper.bound, upper.z, upper.passed) == ("upper", pytest.approx(-30.0), True)
    assert upper.theory_text == "<= 0.5 (upper bound)"
    assert (lower.bound, lower.passed, lower.theory_text) == ("lower", True, ">= 0.5 (lower bound)")
    rows[0]["w2_sq"] = 0.6  # 10 standard errors above an upper bound: a failure
    assert not theory.agreement(rows)[0].passed
    with pytest.raises(ValueError, match=r"Prediction.bound must be 'upper', 'lower' or None; got 'both'"):
        theory.Prediction(np.zeros(1), None, "", bound="both")
