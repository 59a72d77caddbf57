"""Shared test helpers: run a config tiny, in a temporary out_dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from collapselab.config import load_config
from collapselab.loop import run
from collapselab.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def run_config(tmp_path: Path):
    """``run_config(path_or_None, *overrides) -> RunStore`` with out_dir in tmp_path."""

    def _run(path: str | Path | None = None, *overrides: str) -> RunStore:
        cfg = load_config(path, [f"out_dir={tmp_path / 'runs'}", *overrides])
        return run(cfg)

    return _run
