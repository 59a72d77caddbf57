"""The kernel lock on a directory: one writer per run, one driver per sweep."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from collapselab.errors import RunError


@contextmanager
def locked(root: Path, *, takeover: bool = False, what: str = "run") -> Iterator[None]:
    """Hold the kernel lock (``flock``) on the directory ``root`` while the body runs: the one
    authority over who writes it (deleting ``.lock`` changes nothing). ``.lock`` records the
    holder's pid and host for the message a refused writer gets; one left behind by a writer
    that died, while the kernel lock is free, is taken over with ``takeover`` (whatever process
    now has that pid). Runs and sweeps use this same lock."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    info = root / ".lock"
    _HELD.add(fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_lock(info)
            who = (f"{owner.get('what', 'a writer')} pid {owner.get('pid')} on "
                   f"{owner.get('host')} is writing it" if owner else
                   "another writer holds it (its .lock record was removed)")
            raise RunError(f"{root} is locked: {who}") from None
        if info.exists() and not takeover:
            owner = _read_lock(info)
            who = (f"pid {owner.get('pid')} on {owner.get('host')}" if owner
                   else "an unreadable lock record")
            raise RunError(f"{root} has a stale lock: {who} stopped without releasing it (the "
                           "kernel lock is free); pass --takeover to take it over")
        me = {"what": what, "pid": os.getpid(), "host": socket.gethostname(),
              "since": time.time()}
        info.write_text(json.dumps(me))  # a description only: the flock above is the lock
        try:
            yield
        finally:
            info.unlink(missing_ok=True)
    finally:
        _HELD.discard(fd)
        os.close(fd)  # releases the flock


# A forked child (a sweep's pool worker) would share its parent's locks and keep them after the
# parent dies; it drops its copies, so a lock lives exactly as long as the process that took it.
_HELD: set[int] = set()


def _drop_inherited_locks() -> None:
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def lock_state(root: Path) -> str:
    """``"free"``, ``"held"`` (a live writer holds the kernel lock) or ``"stale"`` (a ``.lock``
    record whose writer is gone)."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return "free"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "held"
    finally:
        os.close(fd)
    return "stale" if (root / ".lock").exists() else "free"


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
