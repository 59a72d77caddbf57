"""The README's "Bring your own model" section, run as a new user would: its shell commands verbatim
(``pip install -e examples/plugin`` included) and its Python snippet, in a throwaway environment that
sees this one's packages, on a copy of examples/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Bring your own model"


def section_blocks(language: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(SECTION + "\n")
    end = readme.find("\n## ", start + len(SECTION))
    text = readme[start:end if end >= 0 else None]
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def commands() -> list[str]:
    (block,) = section_blocks("bash")
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture
def user(tmp_path):
    """A venv of its own (so ``pip install`` lands there, not in the test environment) that sees
    this environment's packages, with ``pip`` and ``collapselab`` on PATH; a copy of examples/."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True)
    here = sysconfig.get_paths()["purelib"]
    Path(purelib.stdout.strip(), "_parent_env.pth").write_text(
        f"import site; site.addsitedir({here!r})\n")
    for name, main in (("pip", "from pip._internal.cli.main import main"),
                       ("collapselab", "from collapselab.cli import app as main")):
        script = venv / "bin" / name
        script.write_text(f"#!{python}\nimport sys\n{main}\nsys.exit(main())\n")
        script.chmod(0o755)
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples",
                    ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               COLUMNS="300", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return work, env, python


def test_the_readme_section_runs_end_to_end(user):
    work, env, python = user
    out = {}
    for line in commands():
        done = subprocess.run(["bash", "-c", line], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        out[line] = done.stdout + done.stderr
    listing = out["collapselab list"]
    assert "laplace (collapselab-laplace)" in listing and "window (collapselab-laplace)" in listing
    assert "kurtosis (collapselab-laplace)" in listing
    assert (work / "runs" / "laplace-window-by-path" / "metrics.jsonl").is_file()
    assert (work / "runs" / "laplace-window" / "report.html").is_file()

    (snippet,) = section_blocks("python")
    done = subprocess.run([str(python), "-c", snippet], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "kurtosis_gap" in done.stdout and "(200, 50, 1)" in done.stdout
    assert (work / "laplace-window-5.html").is_file()


def test_the_section_holds_the_commands_it_promises():
    assert commands() == [
        "PYTHONPATH=examples/plugin/src collapselab run examples/plugin/laplace_import_path.yaml "
        "--no-report",
        "pip install -e examples/plugin",
        "collapselab list",
        "collapselab run examples/plugin/laplace.yaml",
    ]
