"""The run directory: everything a report, a comparison or a resume needs, and nothing half-written.

    runs/<name>/
      config.yaml        the resolved config (all defaults filled in)
      manifest.json      status, completed generations, seeds, versions — the commit point
      metrics.jsonl      one JSON object per generation: "<metric>", "<metric>.sem", theory columns
      gen_000/           model.pkl (generation 0: the reference), samples.npz, artifacts.npz,
                         provenance.npz (where each training sample came from); a multi-producer
                         run keeps one of each per producer: samples_<producer>.npz, ...
      .lock              pid and host of the one writer

Every file is written to a temporary name, fsynced and renamed over the target, so a reader (or a
crash) only ever sees a whole old file or a whole new one. A generation counts as done when the
manifest says so; files of a later generation than the manifest records are ignored on resume.
"""

from __future__ import annotations

import fcntl
import io
import json
import math
import os
import pickle
import platform
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from collapselab import __version__
from collapselab.errors import RunError


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that the path never holds a partial file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk, a lost mount: say which file
            raise cannot_write(path, exc) from exc
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def cannot_write(path: Path, exc: OSError) -> RunError:
    return RunError(f"cannot write {path}: {exc.strerror or exc}")


def jsonable(value: Any) -> Any:
    """Plain JSON values; non-finite floats become null (JSON has no NaN/inf)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.integer, bool, np.bool_)):
        return value.item() if hasattr(value, "item") else value
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class RunStore:
    """Reads and writes one run directory. Use ``RunStore(path)`` to read; ``writer()`` to write."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # --- reading ------------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return (self.root / "manifest.json").is_file()

    def manifest(self) -> dict[str, Any]:
        path = self.root / "manifest.json"
        if not path.is_file():
            raise RunError(f"{self.root} is not a collapselab run directory (no manifest.json)")
        return json.loads(path.read_text())

    def completed(self) -> int:
        return int(self.manifest()["completed_generations"]) if self.exists else 0

    def config_text(self) -> str:
        return (self.root / "config.yaml").read_text()

    def config(self) -> Any:
        import yaml

        from collapselab.config import ExperimentConfig

        return ExperimentConfig.model_validate(yaml.safe_load(self.config_text()))

    def metrics(self) -> list[dict[str, Any]]:
        """Rows of completed generations only."""
        path = self.root / "metrics.jsonl"
        if not path.is_file():
            return []
        done = self.completed()
        rows = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn last line of an interrupted append: not committed
            if row["generation"] < done:
                rows.append(row)
        return rows

    def metrics_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.metrics())

    def gen_dir(self, gen: int) -> Path:
        return self.root / f"gen_{gen:03d}"

    def path(self, gen: int, stem: str, suffix: str, producer: str | None = None) -> Path:
        """``gen_XXX/<stem>.<suffix>``, or ``<stem>_<producer>.<suffix>`` for one producer of a
        multi-producer run."""
        name = f"{stem}_{producer}" if producer else stem
        return self.gen_dir(gen) / f"{name}.{suffix}"

    def samples(self, gen: int, producer: str | None = None) -> np.ndarray:
        path = self.path(gen, "samples", "npz", producer)
        if not path.is_file():
            raise RunError(f"samples of generation {gen} were not kept in {self.root}")
        with np.load(path) as f:
            return f["samples"]

    def has_samples(self, gen: int, producer: str | None = None) -> bool:
        return self.path(gen, "samples", "npz", producer).is_file()

    def artifacts(self, gen: int) -> dict[str, np.ndarray]:
        path = self.gen_dir(gen) / "artifacts.npz"
        if not path.is_file():
            return {}
        with np.load(path) as f:
            return {k: f[k] for k in f.files}

    def provenance(self, gen: int, producer: str | None = None) -> dict[str, np.ndarray]:
        """Generation ``gen``'s provenance: its training set's origins, the produced rows kept,
        filter scores and the producing model (see ``collapselab.provenance``)."""
        path = self.path(gen, "provenance", "npz", producer)
        if not path.is_file():
            raise RunError(f"generation {gen} of {self.root} has no provenance record"
                           + (f" for producer {producer!r}" if producer else ""))
        with np.load(path) as f:
            return {k: f[k] for k in f.files}

    def model(self, gen: int, producer: str | None = None) -> Any:
        with open(self.path(gen, "model", "pkl", producer), "rb") as f:
            return pickle.load(f)

    # --- writing ------------------------------------------------------------------------------

    @contextmanager
    def writer(self, *, takeover: bool = False) -> Iterator[RunWriter]:
        """Hold the run's lock while writing; a second writer is refused with the owner's pid.

        The lock file names its owner (pid, host) and is held with ``flock`` for the writer's
        lifetime: the owner's record says who to blame, the kernel lock makes two writers that take
        over the same stale lock at once impossible (the second sees the first's lock held)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = self._lock(self.root / ".lock", takeover)
        try:
            yield RunWriter(self)
        finally:
            (self.root / ".lock").unlink(missing_ok=True)
            os.close(fd)  # releases the flock

    def _lock(self, lock: Path, takeover: bool) -> int:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        while True:
            try:
                fd, created = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_RDWR), True
            except FileExistsError:
                try:
                    fd, created = os.open(lock, os.O_RDWR), False
                except FileNotFoundError:
                    continue  # its writer just finished: try to create it again
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                held = False
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if held and not same:  # we locked a file its writer had just removed: start again
                os.close(fd)
                continue
            if not held or not created:  # held elsewhere, or left behind: whose is it?
                owner = _read_lock(lock)
                here = owner.get("host") == me["host"]
                alive = not held or (here and _pid_alive(owner.get("pid")))
                if alive or not takeover:
                    os.close(fd)
                    raise RunError(self._locked_message(owner, alive, here))
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(me).encode())
            return fd

    def _locked_message(self, owner: dict[str, Any], alive: bool, here: bool) -> str:
        if alive:
            state = "is running"
        elif not owner:
            state = "left an unreadable lock (a writer died while taking it)"
        elif here:
            state = "holds a stale lock (its process is gone)"
        else:  # a shared file system: the pid means nothing here
            state = "holds the lock (another host: make sure it has stopped)"
        hint = "" if alive else "; pass --takeover to take the lock over"
        return f"{self.root} is locked: pid {owner.get('pid')} on {owner.get('host')} {state}{hint}"


class RunWriter:
    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.root = store.root
        self._rows = store.metrics() if store.exists else []
        # uncommitted or torn lines from a crash must go before the first append
        self._dirty = (self.root / "metrics.jsonl").exists()
        for tmp in [*self.root.glob(".*.tmp-*"), *self.root.glob("gen_*/.*.tmp-*")]:
            tmp.unlink(missing_ok=True)  # a crashed writer's files that were never renamed in

    def start(self, config_yaml: str, seeds: dict[str, Any]) -> None:
        write_atomic(self.root / "config.yaml", config_yaml.encode())
        if not self.store.exists:
            self._manifest(status="running", completed=0, seeds=seeds, created=time.time())
        else:
            self._manifest(status="running")

    def generation(
        self,
        gen: int,
        row: dict[str, Any],
        *,
        samples: np.ndarray | None,
        artifacts: dict[str, np.ndarray],
        model: Any | None = None,
        provenance: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Write generation ``gen``'s files, then its metrics row, then commit it in the manifest."""
        self.files(gen, samples=samples, model=model, provenance=provenance)
        if artifacts:
            write_atomic(self.store.gen_dir(gen) / "artifacts.npz", npz_bytes(artifacts))
        self._append_row(jsonable(row))
        self._manifest(completed=gen + 1)

    def files(self, gen: int, producer: str | None = None, *, samples: np.ndarray | None = None,
              model: Any | None = None, provenance: dict[str, np.ndarray] | None = None) -> None:
        """One producer's files of generation ``gen`` (uncommitted until ``generation``)."""
        path = self.store.path
        if provenance is not None:
            write_atomic(path(gen, "provenance", "npz", producer), npz_bytes(provenance))
        if model is not None:
            write_atomic(path(gen, "model", "pkl", producer),
                         pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        if samples is not None:
            write_atomic(path(gen, "samples", "npz", producer),
                         npz_bytes({"samples": np.asarray(samples)}))

    def _append_row(self, row: dict[str, Any]) -> None:
        """Append one line (O(1) per generation); the manifest, written next, commits it.
        After a crash the file is rewritten once with only the committed rows."""
        path = self.root / "metrics.jsonl"
        if self._dirty:
            text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in self._rows)
            write_atomic(path, text.encode())
            self._dirty = False
        line = json.dumps(row, allow_nan=False) + "\n"
        try:
            with open(path, "a") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            self._dirty = True  # part of the line may be on disk
            raise cannot_write(path, exc) from exc
        self._rows.append(row)

    def drop_samples(self, gen: int) -> None:
        path = self.store.gen_dir(gen) / "samples.npz"
        path.unlink(missing_ok=True)

    def finish(self, status: str, **extra: Any) -> None:
        self._manifest(status=status, **extra)

    def _manifest(self, **update: Any) -> None:
        manifest = self.store.manifest() if self.store.exists else {
            "collapselab": __version__,
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
        }
        if "completed" in update:
            update["completed_generations"] = update.pop("completed")
        manifest.update(update, updated=time.time())
        write_atomic(self.root / "manifest.json", json.dumps(jsonable(manifest), indent=2).encode())


def remove_run(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed process nobody has reaped yet (common in containers, whose init may not reap):
    it still answers ``kill(pid, 0)`` but will never write again."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
