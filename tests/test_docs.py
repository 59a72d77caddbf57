"""The documentation cannot drift from the tool.

- ``mkdocs build --strict`` succeeds (once per session, into a temporary folder: the ``site``
  fixture, which the browser test shares) with at least 15 pages;
- every ```` ```console ```` block on every page is run: its ``$ command`` lines from a scratch
  folder of the page's own (with the repository's ``configs/`` and ``examples/`` at hand, as from
  the repository root), each followed by what it prints, compared line by line (a line ``...``
  matches any lines, ``...`` inside a line any characters, trailing spaces ignored); an
  ``error:`` output exits 2, any other 0;
- every ```` ```python ```` block on the pages under ``tutorials/`` and ``how-to/`` is executed
  in page order with the console blocks, one namespace per page, in the same folder;
- a block titled as a file (```` ```yaml title="tiny.yaml" ````) is written there first;
- tutorials and how-tos hold no other blocks: commands too long for CI are ```` ```text ````
  blocks on the results and explanation pages only.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import docs_site  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUNNABLE = ("tutorials", "how-to")  # python blocks run on these pages only
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```\s*$", re.S | re.M)


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)


def blocks(page: Path) -> list[tuple[str, str, str]]:
    """(language, attributes, body) of each fenced block of ``page``, in order."""
    return [(m[1], m[2].strip(), m[3]) for m in FENCE.finditer(page.read_text())]


def runnable(page: Path) -> bool:
    return page.relative_to(DOCS).parts[0] in RUNNABLE


def title(attributes: str) -> str | None:
    found = re.search(r'title="([^"]+)"', attributes)
    return found[1] if found else None


def console_examples(body: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines, each with the lines it is expected to print."""
    found: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], []))
        elif found:
            found[-1][1].append(line)
        else:
            raise AssertionError(f"console block starts with output, not a $ command: {line!r}")
    return found


def matches(expected: list[str], printed: list[str]) -> bool:
    """Line by line; ``...`` matches any number of lines (none included)."""
    expected = [e.rstrip() for e in expected]
    printed = [p.rstrip() for p in printed]
    while expected and not expected[-1]:
        expected.pop()
    while printed and not printed[-1]:
        printed.pop()
    if not expected:
        return not printed
    if expected[0] == "...":
        return any(matches(expected[1:], printed[i:]) for i in range(len(printed) + 1))
    return (bool(printed) and same_line(expected[0], printed[0])
            and matches(expected[1:], printed[1:]))


def same_line(expected: str, printed: str) -> bool:
    """Equal, where ``...`` inside a line stands for any characters (as doctest's ELLIPSIS)."""
    if "..." not in expected:
        return expected == printed
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, printed) is not None


def scratch(tmp_path: Path) -> Path:
    """A folder with the repository's configs/ and examples/ at hand, as from its root."""
    for name in ("configs", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI",
                                                            "WANDB_DIR", "WANDB_MODE")}
    bin_dir = str(Path(sys.executable).parent)
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", COLUMNS="200", NO_COLOR="1",
               TERM="dumb", PYTHONUNBUFFERED="1", WANDB_SILENT="true", NO_MKDOCS_2_WARNING="1")
    return env


def run_console(body: str, cwd: Path, env: dict[str, str], where: str) -> None:
    for command, expected in console_examples(body):
        done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=300)
        printed = done.stdout.splitlines()
        assert matches(expected, printed), (
            f"{where}: $ {command}\nthe page shows:\n" + "\n".join(expected)
            + "\nthe tool printed:\n" + done.stdout)
        wanted = 2 if expected and expected[0].startswith("error:") else 0
        assert done.returncode == wanted, f"{where}: $ {command} exited {done.returncode}"


def run_python(body: str, namespace: dict, cwd: Path, where: str) -> None:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(body, where, "exec"), namespace)
    finally:
        os.chdir(old)


def page_id(page: Path) -> str:
    return str(page.relative_to(DOCS))


EXAMPLE_PAGES = [p for p in pages()
                 if any(lang == "console" or (lang == "python" and runnable(p))
                        for lang, _, _ in blocks(p))]


@pytest.mark.parametrize("page", EXAMPLE_PAGES, ids=page_id)
def test_every_example_on_a_page_runs_and_prints_what_the_page_shows(page, tmp_path,
                                                                     monkeypatch):
    cwd, env = scratch(tmp_path), environment()
    for key in ("MLFLOW_TRACKING_URI", "WANDB_DIR", "WANDB_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    namespace: dict = {"__name__": "__docs__"}
    # a page's python may put a package on sys.path (the plugin tutorial does): not for later tests
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    try:
        run_page(page, cwd, env, namespace)
    finally:
        for name in set(sys.modules) - before:
            if name.startswith("collapselab_"):  # the plugin's modules, imported by the page
                del sys.modules[name]


def run_page(page: Path, cwd: Path, env: dict, namespace: dict) -> None:
    for i, (language, attributes, body) in enumerate(blocks(page)):
        where = f"{page_id(page)} block {i + 1}"
        if title(attributes):
            (cwd / title(attributes)).write_text(body)
        elif language == "console":
            run_console(body, cwd, env, where)
        elif language == "python" and runnable(page):
            run_python(body, namespace, cwd, where)


@pytest.mark.parametrize("page", [p for p in pages() if runnable(p)], ids=page_id)
def test_tutorials_and_how_tos_hold_only_blocks_that_run(page):
    for language, attributes, body in blocks(page):
        assert language in ("console", "python") or title(attributes), (
            f"{page_id(page)}: a ```{language} block that no test runs (commands too long for "
            "CI go in ```text blocks on results/ or explanation/ pages):\n" + body[:200])
        if language == "console":
            assert console_examples(body), f"{page_id(page)}: a console block without $ commands"


def test_text_blocks_only_on_results_and_explanation_pages():
    for page in pages():
        if any(lang == "text" and not title(attrs) for lang, attrs, _ in blocks(page)):
            assert page.relative_to(DOCS).parts[0] in ("results", "explanation"), page_id(page)


def test_the_matcher_takes_ellipsis_for_any_lines():
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert matches(["a", "...", "b"], ["a", "b"])
    assert not matches(["a", "d"], ["a", "b", "d"])
    assert not matches(["a"], ["a", "b"])
    assert matches(["...", "z  "], ["x", "z"])
    assert matches(["│ kl │ 19 │ ..."], ["│ kl │ 19 │ 0.33 │"])
    assert not matches(["│ kl │ 19 │ ..."], ["│ w2 │ 19 │ 0.33 │"])


@pytest.fixture(scope="session")
def site() -> Path:
    return docs_site.built()


def test_the_site_builds_strict_with_every_page(site):
    built = sorted(p.relative_to(site).as_posix() for p in site.rglob("index.html"))
    assert len(built) >= 15, built
    for page in pages():
        rel = page.relative_to(DOCS).with_suffix("")
        target = (site / rel.parent / "index.html" if rel.name == "index"
                  else site / rel / "index.html")
        assert target.is_file(), f"{page_id(page)} was not built"
    cli = (site / "reference" / "cli" / "index.html").read_text()
    from collapselab.cli import app

    for command in app.registered_commands:
        name = command.name or command.callback.__name__.replace("_", "-")
        assert f"collapselab {name}" in cli, name
    components = (site / "reference" / "components" / "index.html").read_text()
    from collapselab import registry

    for reg in registry.REGISTRIES.values():
        for name in reg.names(origin=registry.BUILTIN):
            assert f"<code>{name}</code>" in components, (reg.kind, name)
    assert "n_components" in components and "real_fraction" in components
