"""What the README shows is what the tool does: its example output blocks (a ``$ command`` line, then
what it prints) are run from the repository root and compared whole; the annotated config is the
shipped file it names; the Usage block, which the CI step ``.ci/readme_usage.sh`` runs verbatim in
a fresh base-only install, names commands and files that exist; the README is a front door (at
most 200 lines, its links into docs/ resolve), ``.ci/run`` runs its test command verbatim, and its
benchmark table is the harness's."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from collapselab.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(heading: str) -> str:
    start = README.index(f"\n## {heading}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end >= 0 else None]


def blocks(text: str, language: str = "") -> list[str]:
    """The fenced blocks of ``text`` labelled ``language`` ("": unlabelled), in order."""
    found, current, label = [], None, ""
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, label = [], line[3:].strip()
            else:
                if label == language:
                    found.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return found


def examples() -> list[tuple[str, str]]:
    """Every unlabelled block of the README that starts with ``$ command``: (command, output)."""
    found = []
    for block in blocks(README):
        first, _, output = block.partition("\n")
        if first.startswith("$ "):
            found.append((first[2:], output))
    return found


def test_the_readme_has_examples_to_run():
    assert ["collapselab", "validate"] in [cmd.split()[:2] for cmd, _ in examples()]


@pytest.mark.parametrize("command,expected", examples(), ids=lambda v: v[:60])
def test_an_example_prints_what_the_readme_shows(tmp_path, command, expected):
    """Run where the repository's configs/ is at hand (relative paths as in the README), in a
    folder of its own: an error example exits 2 and writes nothing."""
    argv = shlex.split(command)
    assert argv[0] == "collapselab"
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}
    result = subprocess.run([sys.executable, "-m", "collapselab", *argv[1:]], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    printed = result.stdout + result.stderr
    assert printed == expected, f"README:\n{expected}\ntool:\n{printed}"
    if expected.startswith("error:"):
        assert result.returncode == 2
        assert [p.name for p in tmp_path.iterdir()] == ["configs"]
    else:
        assert result.returncode == 0


def test_the_annotated_config_is_the_file_it_names():
    text = section("Configs")
    (path,) = re.findall(r"`(configs/[\w/]+\.yaml)`, annotated:", text)
    shown = yaml.safe_load(blocks(text, "yaml")[0])
    shipped = yaml.safe_load((ROOT / path).read_text())
    assert shown.pop("curation") == []  # shown with its default
    assert shown == shipped
    assert load_config(ROOT / path).curation == []


def usage_commands() -> list[str]:
    """The Usage block as ``.ci/readme_usage.sh`` runs it: comments stripped, blank lines dropped."""
    (block,) = blocks(section("Usage"), "bash")
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_usage_block_names_commands_and_files_that_exist():
    from collapselab.cli import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    for line in usage_commands():
        argv = shlex.split(line)
        assert argv[0] == "collapselab" and argv[1] in commands, line
        for arg in argv[2:]:
            if arg.endswith(".yaml"):
                assert (ROOT / arg).is_file(), line


def test_the_ci_step_extracts_the_usage_block_as_the_test_does():
    script = ROOT / ".ci" / "readme_usage.sh"
    out = subprocess.run(["bash", str(script), "--print"], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.splitlines() == usage_commands()


def test_the_readme_is_a_front_door():
    """At most 200 lines; every relative link and picture it shows exists (the docs pages)."""
    assert len(README.splitlines()) <= 200
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if "://" not in t]
    assert any(t.startswith("docs/tutorials/") for t in local)
    assert any(t.endswith(".png") for t in local)
    for target in local:
        assert (ROOT / target).exists(), target


def test_ci_runs_the_readme_test_command_verbatim():
    (_, test_command) = blocks(section("Quick start (fresh machine, Python ≥ 3.11)"), "bash")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command.strip() in ci
    docs = [i for i, line in enumerate(ci) if "mkdocs build --strict" in line]
    assert docs and docs[0] > ci.index(test_command.strip())  # the site, after the test command


def test_the_benchmark_table_is_the_harness_table():
    """Between the bench markers: headline rows of benchmarks/results/latest.md, each as the harness
    wrote it (the lead copies them over after a full harness run); the issue's rows among them."""
    inside = README.split("<!-- bench:start -->\n")[1].split("<!-- bench:end -->")[0].splitlines()
    latest = (ROOT / "benchmarks" / "results" / "latest.md").read_text()
    table = [line for line in latest.splitlines() if line.startswith("|")]
    assert inside[:2] == table[:2]  # the header
    assert [row for row in inside if row not in table] == []
    for headline in ("2 GMM, 8 seeds", "3 n-gram score test", "4 gpt training", "5 gpt sampling",
                     "5 gpt beam search", "6 `collapselab demo`"):
        assert any(row.startswith("| " + headline) for row in inside), headline
