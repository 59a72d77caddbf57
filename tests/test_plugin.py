"""Bring your own model: components by import path and by entry point, the example plugin
(examples/plugin) run from a YAML config through the CLI and through ``collapselab.run``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import collapselab
from collapselab import registry
from collapselab.cli import app
from collapselab.config import load_config
from collapselab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "plugin"
TINY = ["generations=3", "chains=8", "data.size=30"]


def fake_install(site: Path) -> None:
    """What ``pip install`` leaves for importlib.metadata: a ``.dist-info`` with the plugin's
    entry points, read from its own pyproject.toml (the package itself: examples/plugin/src)."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    info = site / f"collapselab_laplace-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = [f"{name} = {value}"
             for name, value in project["entry-points"]["collapselab.components"].items()]
    (info / "entry_points.txt").write_text("[collapselab.components]\n" + "\n".join(lines) + "\n")


@pytest.fixture
def registries(monkeypatch):
    """The registries as they are now (the built-ins loaded), restored after the test."""
    registry.load_components()
    for reg in registry.REGISTRIES.values():
        for attr in ("_entries", "_origins"):
            monkeypatch.setattr(reg, attr, dict(getattr(reg, attr)))


@pytest.fixture
def importable(monkeypatch):
    """The plugin package importable (not installed: no entry points)."""
    monkeypatch.syspath_prepend(str(PLUGIN / "src"))


@pytest.fixture
def installed(tmp_path, monkeypatch, registries, importable):
    """The plugin importable and its entry points visible, loaded into the registries."""
    fake_install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    registry.load_entry_points()


def test_entry_points_register_the_plugin_lazily_with_its_distribution(installed):
    assert registry.families.origin("laplace") == "collapselab-laplace"
    assert registry.policies.origin("window") == "collapselab-laplace"
    assert registry.metrics.origin("kurtosis") == "collapselab-laplace"
    assert registry.families.origin("gaussian") == "collapselab"
    assert "laplace" not in registry.families.names(registry.BUILTIN)
    assert registry.families._entries["laplace"] == "collapselab_laplace.family:Laplace"
    from collapselab_laplace import Laplace

    assert registry.families.get("laplace") is Laplace


def test_cli_list_shows_plugins_with_their_distribution(installed):
    result = CliRunner().invoke(app, ["list"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[2].strip(): line for line in result.output.splitlines()
            if line.count("│") == 4}  # name -> its row: kind, name, one-line description
    assert "│ model family" in rows["laplace (collapselab-laplace)"]
    assert "Independent Laplace distributions" in rows["laplace (collapselab-laplace)"]
    assert "│ metric" in rows["kurtosis (collapselab-laplace)"]
    assert "the synthetic data's excess kurtosis" in rows["kurtosis (collapselab-laplace)"]
    assert "Multivariate Gaussian" in rows["gaussian"]  # a built-in: no distribution named


def test_the_plugin_runs_by_entry_point_from_the_cli(installed, tmp_path):
    result = CliRunner().invoke(app, ["run", str(PLUGIN / "laplace.yaml"), *TINY,
                                      f"out_dir={tmp_path / 'runs'}", "--no-report"])
    assert result.exit_code == 0, result.output
    run = collapselab.load(tmp_path / "runs" / "laplace-window")
    assert run.status == "complete"
    assert run.config.model.family == "laplace" and run.config.policy.params == {
        "window": 3, "real_fraction": 0.0}
    metrics = run.metrics()
    assert list(metrics.index) == [0, 1, 2]
    assert {"kurtosis", "kurtosis.sem", "kurtosis_gap", "variance_ratio"} <= set(metrics.columns)
    assert np.isfinite(metrics["kurtosis"]).all()


def test_the_plugin_runs_by_import_path_from_the_cli(importable, registries, tmp_path):
    result = CliRunner().invoke(app, ["run", str(PLUGIN / "laplace_import_path.yaml"), *TINY,
                                      f"out_dir={tmp_path / 'runs'}", "--no-report"])
    assert result.exit_code == 0, result.output
    metrics = collapselab.load(tmp_path / "runs" / "laplace-window-by-path").metrics()
    assert len(metrics) == 3 and "kurtosis" in metrics


@pytest.mark.parametrize("config", ["laplace.yaml", "laplace_import_path.yaml"])
def test_the_plugin_runs_from_collapselab_run(installed, tmp_path, config):
    run = collapselab.run(PLUGIN / config, generations=3, chains=8, out_dir=tmp_path / "runs",
                          **{"data.size": 30, "policy.window": 2})
    metrics = run.metrics()
    assert list(metrics.index) == [0, 1, 2]
    assert {"kurtosis", "kurtosis_gap", "variance_ratio", "tail_mass_2sigma"} <= set(metrics.columns)
    assert run.samples(2).shape == (8, 30, 1)
    # the two ways of naming the components are the same experiment
    by_name = run.metrics()["kurtosis"].to_numpy()
    other = "laplace_import_path.yaml" if config == "laplace.yaml" else "laplace.yaml"
    again = collapselab.run(PLUGIN / other, generations=3, chains=8, out_dir=tmp_path / "again",
                            **{"data.size": 30, "policy.window": 2})
    np.testing.assert_array_equal(again.metrics()["kurtosis"].to_numpy(), by_name)


def test_plugin_parameters_are_validated_like_a_builtins(importable):
    path = "collapselab_laplace.family:Laplace"
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"model.family={path}", "model.location=mode", "model.scale=2"])
    assert err.value.problems == [
        "model.location: Input should be 'median' or 'mean'; got 'mode'",
        "model.scale: unknown field. Did you mean: min_scale? Allowed: location, min_scale",
    ]


def test_a_component_that_cannot_be_imported_is_a_config_error_naming_field_and_path(importable):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.family=collapselab_laplace.family:Nope",
                           "policy.name=no_such_package.policies:Window",
                           "metrics=[variance_ratio, 'collapselab_laplace.metric:Kurtosis', "
                           "'collapselab_laplace:excess']"])
    assert err.value.problems == [
        "model.family: cannot import model family 'collapselab_laplace.family:Nope': "
        "AttributeError: module 'collapselab_laplace.family' has no attribute 'Nope'",
        "policy.name: cannot import policy 'no_such_package.policies:Window': "
        "ModuleNotFoundError: No module named 'no_such_package'",
        "metrics[2].name: cannot import metric 'collapselab_laplace:excess': "
        "AttributeError: module 'collapselab_laplace' has no attribute 'excess'",
    ]


def test_the_cli_reports_an_unimportable_component_in_one_line(monkeypatch, registries):
    for name in [m for m in sys.modules if m.startswith("collapselab_laplace")]:
        monkeypatch.delitem(sys.modules, name)  # imported by an earlier test: not any more
    result = CliRunner().invoke(app, ["validate", str(PLUGIN / "laplace_import_path.yaml")])
    assert result.exit_code == 2
    assert "model.family: cannot import model family 'collapselab_laplace.family:Laplace': " \
           "ModuleNotFoundError: No module named 'collapselab_laplace'" in " ".join(result.output.split())


BAD_SIGNATURE = """
from collapselab.models.gaussian import Gaussian


class Broken(Gaussian):  # a family, but for its signature
    kinds = frozenset({"continuous"})

    def __init__(self, width: NoSuchType = 3) -> None:
        self.width = width
"""


def test_a_bad_signature_is_an_error_at_registration_never_no_parameters(registries):
    namespace: dict = {}
    exec(compile("from __future__ import annotations\n" + BAD_SIGNATURE, "broken", "exec"),
         namespace)
    with pytest.raises(registry.ComponentError, match=(
            r"^cannot read the parameters of model family 'broken': "
            r"NameError: name 'NoSuchType' is not defined$")):
        registry.families.register("broken", namespace["Broken"])
    assert "broken" not in registry.families.names()


def test_a_bad_signature_by_import_path_is_an_error_naming_the_field(tmp_path, monkeypatch,
                                                                     registries):
    (tmp_path / "broken_plugin.py").write_text("from __future__ import annotations\n" + BAD_SIGNATURE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.family=broken_plugin:Broken"])
    assert err.value.problems == [
        "model.family: cannot read the parameters of model family 'broken_plugin:Broken': "
        "NameError: name 'NoSuchType' is not defined"]


def test_an_entry_point_with_a_bad_signature_fails_when_resolved(tmp_path, monkeypatch,
                                                                 registries):
    site = tmp_path / "site"
    (site / "broken_ep-1.0.dist-info").mkdir(parents=True)
    (site / "broken_ep-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-ep\nVersion: 1.0\n")
    (site / "broken_ep-1.0.dist-info" / "entry_points.txt").write_text(
        "[collapselab.components]\nfamily.broken = broken_plugin:Broken\n")
    (site / "broken_plugin.py").write_text("from __future__ import annotations\n" + BAD_SIGNATURE)
    monkeypatch.syspath_prepend(str(site))
    registry.load_entry_points()
    assert registry.families.origin("broken") == "broken-ep"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.family=broken"])
    assert err.value.problems == [
        "model.family: cannot read the parameters of model family 'broken' (from broken-ep): "
        "NameError: name 'NoSuchType' is not defined"]


def test_malformed_or_shadowing_entry_points_are_skipped_with_a_warning(tmp_path, monkeypatch,
                                                                         registries):
    site = tmp_path / "site"
    info = site / "odd-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: odd\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [collapselab.components]
        laplace = odd:Laplace
        model.laplace = odd:Laplace
        family.gaussian = odd:Gaussian
        """))
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(UserWarning) as caught:
        registry.load_entry_points()
    assert sorted(str(w.message) for w in caught) == [
        "entry point 'family.gaussian' of odd ignored: model family 'gaussian' is already "
        "provided by collapselab",
        "entry point 'laplace' of odd ignored: its name must be <kind>.<name> with kind one of "
        "family, source, policy, filter, metric; got 'laplace'",
        "entry point 'model.laplace' of odd ignored: its name must be <kind>.<name> with kind one "
        "of family, source, policy, filter, metric; got 'model.laplace'",
    ]
    assert registry.families.origin("gaussian") == "collapselab"


def test_installed_plugin_metrics_are_not_added_to_the_defaults(installed):
    # a config that leaves metrics unset measures the same whatever else is installed
    cfg = load_config(None, ["model.family=laplace"])
    assert "kurtosis" not in [m.name for m in cfg.metrics]


def test_window_plans_the_last_generations():
    sys.path.insert(0, str(PLUGIN / "src"))
    try:
        from collapselab_laplace import Window
    finally:
        sys.path.remove(str(PLUGIN / "src"))
    rng = np.random.default_rng(0)
    plan = Window(window=2, real_fraction=0.2).plan([10, 10, 10, 10], 10, 3, rng)
    real, recent = plan.parts
    assert real.pools == (0,) and real.rows.shape == (3, 2)
    assert recent.pools == (2, 3) and recent.rows.shape == (3, 8)
    assert (recent.rows < 20).all()
    only = Window(window=5).plan([10, 10], 10, 3, rng)  # fewer generations than the window
    assert [p.pools for p in only.parts] == [(1,)] and only.parts[0].rows is None


def test_the_plugins_own_conformance_tests_pass_one_per_rule():
    """examples/plugin/tests: what a plugin author writes (docs/how-to/conformance.md)."""
    env = {**os.environ, "PYTHONPATH": str(PLUGIN / "src")}
    done = subprocess.run([sys.executable, "-m", "pytest", str(PLUGIN / "tests"), "-q", "-rA",
                           "-p", "no:cacheprovider"], capture_output=True, text=True, env=env,
                          cwd=PLUGIN)
    assert done.returncode == 0, done.stdout + done.stderr
    passed = {line.split("::")[-1] for line in done.stdout.splitlines()
              if line.startswith("PASSED")}
    assert {"test_conforms[Laplace-sample_shape]", "test_conforms[Window-plan_within_pools]",
            "test_conforms[Kurtosis-values]"} <= passed
    assert len(passed) == 12 + 4 + 6  # the rules of a family, a policy and a metric
