"""Run-store details that the fault-injection tests do not reach directly."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from collapselab.errors import RunError
from collapselab.store import RunStore


def test_a_lock_held_by_an_unreaped_dead_process_is_stale(tmp_path):
    """A killed writer that nobody reaped (a zombie: containers' init may not reap) still answers
    kill(pid, 0); it must count as dead, or a killed sweep's points could never be resumed."""
    child = subprocess.Popen(["sleep", "0.05"])
    time.sleep(0.5)  # exited, not yet waited for: a zombie
    store = RunStore(tmp_path / "run")
    store.root.mkdir()
    lock = {"pid": child.pid, "host": os.uname().nodename, "since": 0}
    (store.root / ".lock").write_text(json.dumps(lock))
    try:
        with pytest.raises(RunError, match=r"holds a stale lock \(its process is gone\)"):
            with store.writer():
                pass
        with store.writer(takeover=True):
            assert json.loads((store.root / ".lock").read_text())["pid"] == os.getpid()
    finally:
        child.wait()
