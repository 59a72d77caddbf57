"""What the base install (``pip install -e .``, no extras) runs needs only what it declares: the
base commands are run tiny in a fresh interpreter, and every distribution whose modules they
imported must be a base dependency of pyproject.toml or one of theirs (psutil reached this
environment only through accelerate, so the suite never noticed that resources.py needed it).
The CI step ``.ci/readme_usage.sh`` runs the README in a real base-only venv; this test says the
same in seconds, here."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

BASE_COMMANDS = r"""
import json, sys
from pathlib import Path
from typer.testing import CliRunner
from collapselab.cli import app

out = Path(sys.argv[1])
cfg = out / "g.yaml"
cfg.write_text("generations: 3\nchains: 4\nmodel: {family: gaussian}\n"
               "data: {source: normal, size: 20}\n")
lang = out / "l.yaml"
lang.write_text("generations: 2\nchains: 1\nmodel: {family: ngram, order: 2}\n"
                "data: {source: builtin, size: 60}\n")
sweep = out / "s.yaml"
sweep.write_text(f"base: {cfg}\ngrid: {{seed: [0]}}\nworkers: 1\nout_dir: {out / 'sweep'}\n")
runs = out / "runs"
commands = [
    ["list"], ["validate", cfg],
    ["run", cfg, "name=a", f"out_dir={runs}"],
    ["run", cfg, "name=b", "policy.name=accumulate", f"out_dir={runs}"],
    ["run", cfg, "name=a", f"out_dir={runs}", "--resume"],
    ["run", lang, "name=lang", f"out_dir={runs}"],
    ["report", runs / "a", runs / "b", "-o", out / "r.html"],
    ["theory", runs / "a", "-g", "0", "-g", "-1"],
    ["samples", runs / "lang", "-g", "0"],
    ["provenance", runs / "b", "-g", "1"],
    ["compare", runs / "a", runs / "b", "-o", out / "c.html"],
    ["sweep", sweep],
    ["report", out / "sweep"],
]
for args in commands:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (args, result.output)
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""


def base_closure() -> set[str]:
    """The base dependencies of pyproject.toml and, recursively, theirs (no extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonical(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in metadata.requires(req.name) or []]
        except metadata.PackageNotFoundError:
            pass
    return seen


def unguarded_imports() -> set[str]:
    """Top-level modules collapselab's own code imports outside ``try: ... except ImportError``
    (an import so guarded is optional: pyarrow, for tidy.parquet)."""
    found: set[str] = set()

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Try) and any(
                h.type is not None and {n.id for n in ast.walk(h.type) if isinstance(n, ast.Name)}
                & {"ImportError", "ModuleNotFoundError"} for h in node.handlers):
            for child in node.body:
                visit(child, True)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        if not guarded and isinstance(node, ast.Import):
            found.update(a.name.partition(".")[0] for a in node.names)
        elif not guarded and isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    for path in (ROOT / "src" / "collapselab").rglob("*.py"):
        visit(ast.parse(path.read_text()), False)
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_base_commands_import_only_declared_dependencies(tmp_path):
    done = subprocess.run([sys.executable, "-c", BASE_COMMANDS, str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # what the commands loaded of what collapselab imports itself (its dependencies' own optional
    # imports, numpy's of charset_normalizer say, are theirs to guard)
    modules = set(json.loads(done.stdout.strip().splitlines()[-1])) & unguarded_imports()
    providers = metadata.packages_distributions()
    allowed = base_closure() | {"collapselab"}
    imported = {canonical(d): m for m in modules for d in providers.get(m, [])}
    undeclared = {d: m for d, m in imported.items() if d not in allowed}
    assert undeclared == {}, (f"imported by the base commands but not a base dependency (nor one "
                              f"of theirs) in pyproject.toml: {undeclared}")
