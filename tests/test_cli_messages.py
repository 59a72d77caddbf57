"""What the command line says is what happened: a generation outside the run, an out_dir that is
a file, a config that is a directory, two runs with no metric in common are refused by name (exit
2, nothing written); --version; theory's summary after its table on stdout; the demo's help lists
the runs the demo runs. Tiny runs (3 generations, 20 chains): the file in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import collapselab
from collapselab.cli import app, demo_configs

GAUSS = "model: {family: gaussian}\ndata: {source: normal, size: 20}\n"
LANG = ["model={family: ngram, order: 2, prompt_tokens: 2}",
        "data={source: builtin, size: 60, vocab_size: 200, block_len: 16, train_blocks: 120,"
        " valid_blocks: 20, test_blocks: 20}",
        "metrics=[perplexity, {name: continuations, prompts: 2, prompt_tokens: 3, new_tokens: 4}]"]


def squash(text: str) -> str:
    return "".join(text.split())


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(root: Path, *args: str) -> str:
    """Exit 2, one error, no traceback, ``root`` untouched; the message squashed."""
    before = snapshot(root)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    assert snapshot(root) == before
    return squash(result.output)


def make_run(root: Path, name: str, *overrides: str) -> Path:
    cfg = root / f"{name}.yaml"
    cfg.write_text(GAUSS)
    result = invoke("run", cfg, f"name={name}", f"out_dir={root / 'runs'}", "generations=3",
                    "chains=20", *overrides, "--no-report")
    assert result.exit_code == 0, result.output
    return root / "runs" / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_run(root, "gauss")
    make_run(root, "lang", *LANG)
    make_run(root, "only_w2", "metrics=[w2]")
    make_run(root, "only_tail", "metrics=[tail_mass]")
    return root


# ------------------------------------------------------------ -g: one range for every command


@pytest.mark.parametrize("command,run,gens", [
    ("theory", "gauss", ["100"]),
    ("theory", "gauss", ["1", "100"]),  # not silently dropped beside a good one
    ("theory", "gauss", ["-4"]),
    ("samples", "lang", ["12"]),
    ("samples", "lang", ["-4"]),
    ("provenance", "gauss", ["30"]),
    ("provenance", "gauss", ["-4"]),
])
def test_a_generation_outside_the_run_is_refused_by_name(runs, command, run, gens):
    run_dir = runs / "runs" / run
    args = [a for g in gens for a in ("-g", g)]
    out = refused(runs, command, run_dir, *args)
    bad = gens[-1]
    assert out == squash(f"error: generation {bad} is not in {run_dir} (generations 0-2)"), out


def test_negative_generations_count_from_the_end_in_every_command(runs):
    gauss, lang = runs / "runs" / "gauss", runs / "runs" / "lang"
    last = invoke("theory", gauss, "-g", "-1")
    assert last.exit_code == 0 and last.output == invoke("theory", gauss, "-g", "2").output

    first = invoke("samples", lang, "-g", "-3")
    assert first.exit_code == 0, first.output
    assert first.output == invoke("samples", lang, "-g", "0").output
    assert "gen   0:" in first.output and "gen   1:" not in first.output

    prov = invoke("provenance", gauss, "-g", "-1")
    assert prov.exit_code == 0, prov.output
    assert prov.output == invoke("provenance", gauss, "-g", "2").output
    assert "training set in generation 2" in prov.output


def test_theory_prints_its_summary_after_the_table_on_stdout(runs):
    result = CliRunner().invoke(app, ["theory", str(runs / "runs" / "gauss"),
                                                      "-g", "0", "-g", "-1"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.rstrip().splitlines()
    n = sum(line.count("pass") + line.count("FAIL") for line in lines)
    assert n > 0 and lines[-1] == f"{n} of {n} within 4 standard errors", result.stdout
    assert "standard errors" not in result.stderr


# ------------------------------------------------------------ run: out_dir and config paths


@pytest.mark.parametrize("out_dir,problem", [
    ("afile", "out_dir: '{root}/afile' is a file, not a directory"),
    ("afile/sub", "out_dir: '{root}/afile/sub' cannot be a directory: '{root}/afile' is a file"),
    (".", "name: the run directory '{root}/x' (<out_dir>/<name>) is a file, not a directory"),
])
def test_an_out_dir_that_is_a_file_is_refused_by_name(tmp_path, out_dir, problem):
    (tmp_path / "afile").write_text("precious\n")
    (tmp_path / "x").write_text("precious\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GAUSS)
    out = refused(tmp_path, "run", cfg, "name=x", f"out_dir={tmp_path / out_dir}",
                  "generations=3", "chains=20", "--no-report")
    assert out == squash("error: invalid config (1 problem):\n  - "
                         + problem.format(root=tmp_path)), out
    assert "Errno" not in out


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_config_that_is_a_directory_is_called_one(tmp_path, command):
    folder = tmp_path / "configs"
    folder.mkdir()
    out = refused(tmp_path, command, folder)
    assert out == squash(f"error: invalid config (1 problem):\n  - config file '{folder}' is a "
                         "directory, not a config file (give the experiment's YAML file)"), out


# ------------------------------------------------------------ compare


def test_compare_without_a_metric_in_common_writes_nothing(runs, tmp_path):
    a, b = runs / "runs" / "only_w2", runs / "runs" / "only_tail"
    page = tmp_path / "c.html"
    out = refused(tmp_path, "compare", a, b, "-o", page)
    assert out == squash(f"error: no metric in common between {a} and {b} (no metric both "
                         "recorded in a generation both completed); nothing written"), out
    assert not page.exists() and not page.with_suffix(".png").exists()

    shared = invoke("compare", runs / "runs" / "gauss", runs / "runs" / "only_w2", "-o", page)
    assert shared.exit_code == 0, shared.output
    assert page.is_file() and page.with_suffix(".png").is_file() and "w2" in shared.output


# ------------------------------------------------------------ --version, demo --help


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output == f"collapselab {collapselab.__version__}\n"


def test_the_demo_help_names_the_runs_the_demo_runs():
    names = {"replace": "replace", "real_fraction": "keep 10% real", "accumulate": "accumulate"}
    order = list(names)
    tracks: dict[str, list[str]] = {}
    for path in demo_configs():
        raw = yaml.safe_load(path.read_text())
        policy = raw["policy"]
        if policy["name"] == "real_fraction":
            assert policy["real_fraction"] == 0.1
        track = "ground-truth language" if raw["model"]["family"] == "ngram" else "Gaussian"
        tracks.setdefault(track, []).append(policy["name"])
    said = squash(invoke("demo", "--help").output).replace("│", "")
    doc = squash(collapselab.cli.demo.__doc__)
    assert squash(f"{len(demo_configs())} runs") in said and squash(f"{len(demo_configs())} runs") in doc
    for track, policies in tracks.items():
        listed = " / ".join(names[p] for p in sorted(policies, key=order.index))
        assert squash(f"{track} under {listed}") in said, said
        assert squash(f"{track} under {listed}") in doc, doc
