"""The documentation site, built once per test session: ``mkdocs build --strict`` into a
temporary folder (the ``site`` fixture of tests/test_docs.py and tests/test_docs_browser.py)."""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def build() -> Path:
    out = Path(tempfile.mkdtemp(prefix="collapselab-site-")) / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    atexit.register(shutil.rmtree, out.parent, ignore_errors=True)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-4000:]}"
    return out


def built() -> Path:
    """The built site (skips where mkdocs is not installed)."""
    pytest.importorskip("mkdocs", reason="mkdocs not installed (pip install -e '.[docs]')")
    return build()
