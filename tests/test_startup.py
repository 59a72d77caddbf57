"""``collapselab --help``, ``list`` and ``validate`` import no heavy module: scipy.stats,
scikit-learn, torch and the like load only in the components that use them, when they run.

A behaviour test, not a timing test: a fresh interpreter runs the commands and reports which of
the heavy modules each one left in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["scipy.stats", "sklearn", "torch", "transformers", "matplotlib", "pandas"]
COMMANDS = [
    ["--help"],
    ["list"],
    *(["validate", str(ROOT / path)] for path in (
        "configs/gaussian/replace.yaml", "configs/gmm/paper_replace.yaml",
        "configs/categorical/absorption.yaml", "configs/kde/replace.yaml",
        "configs/theory/linreg_replace.yaml", "configs/curation/importance_gaussian.yaml",
        "src/collapselab/configs/demo/language_replace.yaml")),
]

SCRIPT = """
import json, sys
from typer.testing import CliRunner
from collapselab.cli import app

heavy, out = {heavy}, []
for args in {commands}:
    result = CliRunner().invoke(app, args, env={{"COLUMNS": "300"}})
    loaded = [m for m in heavy if m in sys.modules]
    out.append({{"args": args, "exit": result.exit_code, "output": result.output,
                 "loaded": loaded}})
print(json.dumps(out))
"""


def test_help_list_and_validate_import_no_heavy_module():
    script = SCRIPT.format(heavy=HEAVY, commands=COMMANDS)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    results = json.loads(done.stdout.splitlines()[-1])
    assert [r["args"] for r in results] == COMMANDS
    for r in results:
        assert r["exit"] == 0, (r["args"], r["output"])
        assert r["loaded"] == [], f"collapselab {' '.join(r['args'])} imported {r['loaded']}"
    listing = results[1]["output"]
    # the lazy torch families are described from their source files, not imported
    assert "nanoGPT-like language model" in listing and "Convolutional VAE" in listing
