"""The documentation site, built once per test session: ``mkdocs build --strict`` into a
temporary folder (the ``site`` fixtures of tests/test_docs.py and tests/test_docs_browser.py).
The build starts in the background when this module is imported (collection), so it overlaps the
pages' examples; ``built()`` waits for it."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAVE_MKDOCS = importlib.util.find_spec("mkdocs") is not None


@functools.cache
def start() -> tuple[subprocess.Popen, Path]:
    out = Path(tempfile.mkdtemp(prefix="collapselab-site-")) / "site"
    atexit.register(shutil.rmtree, out.parent, ignore_errors=True)
    log = open(out.parent / "build.log", "w+")  # the build's output, read back in built()
    proc = subprocess.Popen([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                             str(out)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    atexit.register(proc.kill)
    return proc, out


def built() -> Path:
    """The built site (skips where mkdocs is not installed)."""
    if not HAVE_MKDOCS:
        pytest.skip("mkdocs not installed (pip install -e '.[docs]')")
    proc, out = start()
    code = proc.wait(timeout=300)
    assert code == 0, ("mkdocs build --strict failed:\n"
                       + (out.parent / "build.log").read_text()[-4000:])
    return out


if HAVE_MKDOCS:
    start()
