"""The run directory: everything a report, a comparison or a resume needs, and nothing half-written.

    runs/<name>/
      config.yaml        the resolved config (all defaults filled in)
      manifest.json      status (and a failed run's error), completed generations, seeds,
                         versions, and ``files``: what the commits wrote, each file's size and
                         CRC-32 (``metrics.jsonl``: its committed rows): the commit point
      metrics.jsonl      one JSON object per generation: "<metric>", "<metric>.sem", theory columns
      records/<first>-<last>.npz
                         the per-generation arrays of one commit, compressed and stacked across its
                         generations: each metric's per-chain values and per-sample artifacts
                         (``artifacts.<producer>.<key>``), the provenance (``provenance.<producer>.*``
                         and ``pool.<producer>.*``, see ``collapselab.provenance``)
      gen_XXX/samples.npy  curated synthetic samples, where ``keep_samples`` keeps them
                         (``samples_<producer>.npy`` in a multi-producer run)
      gen_000/model.pkl  generation 0's model (the reference; ``model_<producer>.pkl``)
      .lock              pid and host of the writer, for messages; the kernel lock (flock on the
                         directory) is what excludes a second writer

Finished generations are staged and committed together: at the end, on a failure or Ctrl-C, and
otherwise at most once a second, so fast generations share one commit and slow ones get one each.
A commit writes its files under temporary names and renames them in (a reader, or a killed writer,
only ever sees whole files), appends the metrics rows, fsyncs what it wrote, then replaces the
manifest. Files the manifest does not cover are removed when a writer resumes; generations that
were staged but not committed are computed again, identically. A directory collapselab did not
create is never removed, and a non-empty folder that is not a run is refused before anything is
written. ``RunStore.verify`` checks the files against the manifest's listing; readers and resumes
refuse a run that disagrees (``RunStore.check``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import platform
import re
import shutil
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from collapselab import __version__, integrity
from collapselab.errors import RunError
from collapselab.formats import (
    Staged,
    json_line,
    jsonable,
    npy_writer,
    npz_bytes,
    stack,
    summarize,
    unstack,
)
from collapselab.integrity import METRICS, Checksum, Summed, damaged, malformed
from collapselab.lock import locked

SINGLE = "model"  # the producer name of a one-model run in a generation's record
KeepSamples = str | int  # keep_samples: "last", "all", "none", or every k-th generation
COMMIT_EVERY_S = 1.0  # the longest a finished generation waits to be committed
HOLD_BYTES = 256 * 2**20  # samples held for the next commit beyond this: commit now
OWN = {"config.yaml", "manifest.json", "metrics.jsonl"}  # besides gen_XXX/


def write_atomic(path: Path, data: bytes | Callable[[Any], Any], *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` so that the path never holds a partial file; ``durable``: fsync
    it before the rename (the commit point), so the rename never reaches the disk before it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True)
        with open(tmp, "wb") as f:
            f.write(data) if isinstance(data, bytes) else data(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        # said before the temporary file is removed: a short write is judged by the space left
        error = cannot_write(path, exc) if isinstance(exc, OSError) else None
        with contextlib.suppress(OSError):  # a read-only file system refuses even this
            tmp.unlink(missing_ok=True)
        if error is not None:  # a full disk, a lost mount: say which file (not its temporary)
            raise error from exc
        raise


def fsync(path: Path) -> None:
    """Make ``path`` (a file, or a folder's entries) durable; one that is gone has nothing to
    make durable (samples dropped since they were written)."""
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")  # NumPy's tofile, errno unset


def cannot_write(path: Path, exc: OSError) -> RunError:
    """``cannot write PATH: No space left on device``. NumPy reports a short write without its
    cause ("32000 requested and 4592 written"): a file system with less room than was asked is
    full, so it is said so."""
    short = SHORT_WRITE.fullmatch(str(exc)) if exc.errno is None else None
    if short is None:
        return RunError(f"cannot write {path}: {exc.strerror or exc}")
    asked, wrote = (int(n) for n in short.groups())
    try:
        full = shutil.disk_usage(path.parent).free < asked - wrote
    except OSError:
        full = False
    cause = (os.strerror(errno.ENOSPC) if full
             else "the write stopped short (a full disk or a quota reached?)")
    return RunError(f"cannot write {path}: {cause} ({wrote} of {asked} bytes written)")


def _ours(name: str) -> bool:
    """What a writer killed before its first commit can leave in a folder: its lock record and
    temporary files (``.<name>.tmp-<pid>``)."""
    return name == ".lock" or (name.startswith(".") and ".tmp-" in name) or (
        name.startswith("gen_") and name[4:].isdigit())


# --- reading -------------------------------------------------------------------------------------


class RunStore:
    """Reads one run directory; ``writer()`` writes it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._chunks: list[tuple[int, int, Path]] | None = None
        self._loaded: dict[Path, dict[str, np.ndarray]] = {}

    @property
    def exists(self) -> bool:
        return (self.root / "manifest.json").is_file()

    def manifest(self) -> dict[str, Any]:
        path = self.root / "manifest.json"
        if not path.is_file():
            raise RunError(f"{self.root} is not a collapselab run directory (no manifest.json)")
        try:
            manifest = json.loads(path.read_bytes())
        except ValueError as exc:
            raise RunError(f"{path} is not valid JSON ({exc}); the run cannot be read") from None
        problem = malformed(manifest)
        if problem:
            raise RunError(f"{path} is malformed ({problem}); the run cannot be read")
        return manifest  # type: ignore[no-any-return]

    def check(self) -> None:
        """Refuse (``RunError``) a run whose files disagree with its manifest (``verify``)."""
        problems = self.verify()
        if problems:
            raise RunError(damaged(self.root, problems))

    def verify(self) -> list[str]:
        """What is wrong with the run's committed files, each naming the file (empty: nothing).
        Every file the manifest lists must hold the size and CRC-32 committed; ``metrics.jsonl``
        one row per committed generation, in order, then only rows of uncommitted generations
        (a killed writer's, removed by the next) and perhaps a torn last line; no more
        generations committed than ``config.yaml`` allows. A manifest without ``files`` (an
        older collapselab's run) is checked for its rows and generations only."""
        manifest = self.manifest()
        done = manifest["completed_generations"]
        problems = integrity.problems(self.root, manifest)
        if not any(p.startswith("config.yaml ") for p in problems):
            allowed = self.config().generations
            if done > allowed:
                problems.append(f"the manifest committed {done} generations; config.yaml has "
                                f"generations: {allowed}")
        return problems

    def completed(self) -> int:
        return int(self.manifest()["completed_generations"]) if self.exists else 0

    def generation(self, gen: int) -> int:
        """``gen`` as a completed generation (negative: counted from the end, -1 the last); one
        outside the run is a RunError naming the run's range."""
        done = self.completed()
        k = gen + done if gen < 0 else gen
        if not 0 <= k < done:
            span = ("no completed generation" if done == 0 else "generation 0" if done == 1
                    else f"generations 0-{done - 1}")
            raise RunError(f"generation {gen} is not in {self.root} ({span})")
        return k

    def config_text(self) -> str:
        return (self.root / "config.yaml").read_text()

    def config(self) -> Any:
        import pydantic
        import yaml

        from collapselab.config import ExperimentConfig

        try:
            return ExperimentConfig.model_validate(yaml.safe_load(self.config_text()))
        except FileNotFoundError:
            raise RunError(f"{self.root} is not a collapselab run directory (no config.yaml)"
                           ) from None
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RunError(f"{self.root} was written by another version of collapselab: its "
                           f"config.yaml does not validate ({where}: {first['msg']}; got "
                           f"{first['input']!r}); run it again with this version") from None

    def producer_names(self) -> list[str]:
        """The producers of a multi-producer run; empty for a one-model run."""
        return [p.name for p in self.config().producers or []]

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

    def gen_dir(self, gen: int) -> Path:
        return self.root / f"gen_{gen:03d}"

    def path(self, gen: int, stem: str, suffix: str, producer: str | None = None) -> Path:
        """``gen_XXX/<stem>.<suffix>``, or ``<stem>_<producer>.<suffix>`` for one producer of a
        multi-producer run."""
        name = f"{stem}_{producer}" if producer else stem
        return self.gen_dir(gen) / f"{name}.{suffix}"

    def samples(self, gen: int, producer: str | None = None) -> np.ndarray:
        path = self.path(gen, "samples", "npy", producer)
        if not path.is_file():
            raise RunError(f"samples of generation {gen} were not kept in {self.root} "
                           "(keep_samples chooses which generations keep theirs)")
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise RunError(f"{path} is unreadable ({exc}); the run cannot resume exactly from "
                           "it") from None

    def has_samples(self, gen: int, producer: str | None = None) -> bool:
        return self.path(gen, "samples", "npy", producer).is_file()

    def chunks(self) -> list[tuple[int, int, Path]]:
        """Committed record chunks ``(first, last, path)``: ``records/<first>-<last>.npz``."""
        if self._chunks is None:
            done = self.completed()
            found = []
            for path in (self.root / "records").glob("*.npz"):
                first, _, last = path.stem.partition("-")
                if first.isdigit() and last.isdigit() and int(last) < done:
                    found.append((int(first), int(last), path))
            self._chunks = sorted(found)
        return self._chunks

    def record(self, gen: int) -> dict[str, np.ndarray]:
        """Every array generation ``gen`` recorded (empty for a generation without any)."""
        for first, last, path in self.chunks():
            if first <= gen <= last:
                return unstack(self._load(path), gen)
        return {}

    def _load(self, path: Path) -> dict[str, np.ndarray]:
        if path not in self._loaded:
            try:
                with np.load(path, allow_pickle=False) as f:
                    self._loaded[path] = {k: f[k] for k in f.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                raise RunError(f"{path} is unreadable ({exc})") from None
        return self._loaded[path]

    def section(self, gen: int, kind: str, producer: str | None = None) -> dict[str, np.ndarray]:
        """The ``<kind>.<producer>.*`` arrays of generation ``gen``'s record, prefix removed."""
        prefix = f"{kind}.{producer or SINGLE}."
        return {k.removeprefix(prefix): v for k, v in self.record(gen).items()
                if k.startswith(prefix)}

    def artifacts(self, gen: int, producer: str | None = None) -> dict[str, np.ndarray]:
        """Generation ``gen``'s per-chain metric arrays (``chain.<metric>``) and per-sample
        artifacts."""
        return self.section(gen, "artifacts", producer)

    def provenance(self, gen: int, producer: str | None = None) -> dict[str, np.ndarray]:
        """Generation ``gen``'s provenance record (see ``collapselab.provenance``)."""
        out = self.section(gen, "provenance", producer)
        if not out:
            raise RunError(f"generation {gen} of {self.root} has no provenance record"
                           + (f" for producer {producer!r}" if producer else "")
                           + " (a degenerate or uncommitted generation)")
        return out

    def pool(self, gen: int, consumer: str | None = None) -> dict[str, np.ndarray]:
        """How ``consumer``'s synthetic pool of generation ``gen`` was mixed (empty: it is its own
        curated output)."""
        return self.section(gen, "pool", consumer)

    def model(self, gen: int, producer: str | None = None) -> Any:
        with open(self.path(gen, "model", "pkl", producer), "rb") as f:
            return pickle.load(f)

    # --- writing ------------------------------------------------------------------------------

    @contextmanager
    def writer(self, *, takeover: bool = False) -> Iterator[RunWriter]:
        """Hold the run's lock while writing. A folder that exists, is not empty and is not a
        run is refused, untouched. If the body fails before a generation of a new run is
        committed, exactly what this writer created is removed (the folder too, if it made it)."""
        if self.root.exists() and not self.exists:
            if not self.root.is_dir():
                raise RunError(f"{self.root} exists and is not a folder; choose another name")
            names = [p.name for p in self.root.iterdir()]
            # a writer killed before its first commit left its lock record beside its files
            started = ".lock" in names and all(_ours(n) or n in OWN for n in names)
            foreign = [] if started else sorted(names)
            if foreign:
                shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
                raise RunError(f"{self.root} exists and is not a collapselab run (it holds "
                               f"{shown}); choose another name or out_dir")
        made_root = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # read-only, no permission: name the folder, not an errno
            raise cannot_write(Path(exc.filename or self.root), exc) from None
        try:
            with locked(self.root, takeover=takeover):
                writer = RunWriter(self)
                try:
                    yield writer
                except BaseException:
                    writer.close()
                    if writer.new_run and self.completed() == 0:
                        writer.remove_created()
                    raise
                finally:
                    writer.close()
        finally:
            if made_root and not any(self.root.iterdir()):
                self.root.rmdir()


class RunWriter:
    """Writes one run directory; made by ``RunStore.writer`` under the lock. Generations are
    staged as they finish and committed together by ``flush``: at most once a second (or when
    held samples grow large), at the end, and on a failure, so a run of fast generations pays
    for one commit a second, a run of slow ones for one a generation. The writer decides which
    samples stay (``commit``): those ``keep_samples`` keeps and, until the run ends, those a
    resume reads back; it derives ``generations_to_collapse`` from the rows it commits."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.root = store.root
        self.new_run = not store.exists
        self.created: list[Path] = []  # what this writer made, removed if a new run fails early
        self._manifest_data: dict[str, Any] = store.manifest() if store.exists else {}
        self._log: Any = None  # metrics.jsonl, open for appending while the writer lives
        self._unsynced: dict[Path, None] = {}  # written since the last durable commit
        self._written: dict[str, dict[str, Any]] = {}  # files the next commit lists
        self._dropped: list[Path] = []  # samples to delete once the manifest stops listing them
        self._rows = store.completed()  # committed rows of metrics.jsonl (one a generation)
        self._collapsed: dict[str, int] = {}  # alarm column's prefix -> first generation it fired
        self.last_row: dict[str, Any] | None = None  # the last committed row (a resume reads it)
        self._metrics = self._read_committed()  # size and CRC-32 of the committed rows
        self._staged: list[Staged] = []
        self._held = 0  # bytes of staged samples
        self._flushed_at = time.monotonic()
        # uncommitted or torn lines from a crash must go before the first append
        self._dirty = (self.root / "metrics.jsonl").exists()
        self._forget_uncommitted(store.completed())
        self._keep: KeepSamples = "all"  # the config's keep_samples (``start``)
        self._needed: set[int] = set()  # generations whose samples the loop's pools hold
        self._on_disk = self._committed_samples()  # generation -> its committed samples files
        self._newest = max(self._on_disk, default=0)  # the newest generation that had samples

    def _read_committed(self) -> Checksum:
        """The size and CRC-32 of ``metrics.jsonl``'s committed rows (its first lines), read
        once: a resume also takes the last row and where each collapse alarm fired from them."""
        out = Checksum()
        path = self.root / METRICS
        if not self._rows or not path.is_file():
            return out
        lines = path.read_bytes().split(b"\n")[:self._rows]
        out.update(b"".join(line + b"\n" for line in lines))
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn line: RunStore.check refuses such a run before a resume
            self._collapse(row)
            self.last_row = row
        return out

    def _committed_samples(self) -> dict[int, set[Path]]:
        """The samples files of committed generations (a killed writer's others are gone)."""
        out: dict[int, set[Path]] = {}
        for path in sorted(self.root.glob("gen_*/samples*.npy")):
            if path.parent.name[4:].isdigit():
                out.setdefault(int(path.parent.name[4:]), set()).add(path)
        return out

    def _forget_uncommitted(self, done: int) -> None:
        """A killed writer's files that no manifest committed: never-renamed temporaries, record
        chunks, samples and models of generations from ``done`` on."""
        for tmp in [*self.root.glob(".*.tmp-*"), *self.root.glob("*/.*.tmp-*")]:
            tmp.unlink(missing_ok=True)
        for path in self.root.glob("records/*.npz"):
            first = path.stem.partition("-")[0]
            if not first.isdigit() or int(first) >= done:
                path.unlink()
        for folder in self.root.glob("gen_*"):
            if folder.name[4:].isdigit() and int(folder.name[4:]) >= done:
                shutil.rmtree(folder)

    def _write(self, path: Path, data: bytes | Callable[[Any], Any]) -> None:
        """Write a file of the next commit, which lists it with its size and CRC-32."""
        if not path.parent.exists():
            self.created.append(path.parent)
        if not path.exists():
            self.created.append(path)
        checksum = Checksum()
        if isinstance(data, bytes):
            checksum.update(data)
            write_atomic(path, data)
        else:
            write_atomic(path, lambda f: data(Summed(f, checksum)))
        self._written[path.relative_to(self.root).as_posix()] = checksum.entry
        self._unsynced[path] = None

    def _files(self) -> dict[str, dict[str, Any]]:
        """The files a commit lists: the committed ones, those written since, the rows."""
        files = {**self._manifest_data.get("files", {}), **self._written,
                 METRICS: {"rows": self._rows, **self._metrics.entry}}
        self._written = {}
        return files

    def start(self, config_yaml: str, seeds: dict[str, Any], keep_samples: KeepSamples = "all"
              ) -> None:
        """Begin (or resume) writing the run of ``config_yaml``, which keeps the samples
        ``keep_samples`` asks for once it ends (``last``, ``all``, ``none`` or every k-th)."""
        self._keep = keep_samples
        self._write(self.root / "config.yaml", config_yaml.encode())
        # durable with the first commit: nothing before it is worth an fsync
        if self.new_run:
            self._manifest(durable=False, status="running", completed=0, seeds=seeds,
                           created=time.time(), files=self._files())
        else:
            self._manifest_data.pop("error", None)  # a failed run's
            self._manifest(durable=False, status="running", files=self._files())

    def stage(self, gen: int, row: dict[str, Any], *, record: dict[str, np.ndarray],
              samples: dict[str | None, np.ndarray], models: dict[str | None, Any],
              per_chain: dict[str, np.ndarray] | None = None,
              needed: Iterable[int] = ()) -> None:
        """Generation ``gen``, done: its metrics row, record, samples (by producer; ``None`` in a
        one-model run) and models, held until the next ``flush`` commits them. ``per_chain``
        values join the row as their mean and standard error (``summarize``). ``needed``: the
        generations whose samples the next generations learn from (a resume reads them back);
        staged samples that neither it nor ``keep_samples`` wants are dropped, never written."""
        self._staged.append(Staged(gen, row, record, dict(samples), models, per_chain or {}))
        self._held += sum(a.nbytes for a in samples.values())
        if samples:
            self._newest = max(self._newest, gen)
        self._needed = set(needed)
        self._release(final=False)

    def due(self) -> bool:
        """Whether staged generations should be committed now: a second has passed since the
        last commit, or the samples held in memory grow large."""
        return time.monotonic() - self._flushed_at >= COMMIT_EVERY_S or self._held > HOLD_BYTES

    def flush(self, status: str | None = None) -> list[dict[str, Any]]:
        """Commit every staged generation, durably: their samples (those not dropped since),
        models and one record chunk, then their metrics rows, then the manifest (with the run's
        final ``status``, if this is its last commit). Returns the committed rows. Until the
        manifest says so, nothing of them counts."""
        if not self._staged:
            return []
        path = self.store.path
        for st in self._staged:
            for producer, data in st.samples.items():
                file = path(st.gen, "samples", "npy", producer)
                self._write(file, npy_writer(data))
                self._on_disk.setdefault(st.gen, set()).add(file)
            for producer, model in st.models.items():
                self._write(path(st.gen, "model", "pkl", producer),
                            pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        first, last = self._staged[0].gen, self._staged[-1].gen
        records = {st.gen: st.record for st in self._staged if st.record}
        if records:
            self._write(self.root / "records" / f"{first:06d}-{last:06d}.npz",
                        npz_bytes(stack(records)))
        for st in self._staged:
            self._collapse(st.row)
        summarize(self._staged)
        written = [json_line(st.row) for st in self._staged]
        rows = [row for row, _ in written]
        self._append_rows(rows, "".join(line for _, line in written))
        self._staged, self._held = [], 0
        self._manifest(completed=last + 1, durable=True, files=self._files(),
                       **({"status": status} if status else {}))
        self.store._chunks = None
        self._flushed_at = time.monotonic()
        return [dict(row) for row in rows]  # the observers' own: the log's rows stay as written

    def _append_rows(self, rows: list[dict[str, Any]], text: str) -> None:
        """Append the rows (``text``: their JSON lines) in one write and hand them to the kernel;
        the manifest, written next, commits them. If the write fails, part of it may be on disk:
        the file is rewritten with only the committed rows before the next append."""
        path = self.root / METRICS
        if self._dirty:  # only the committed rows: the manifest's size of them
            os.truncate(path, self._metrics.bytes)
            self._dirty = False
        if self._log is None:
            if not path.exists():
                self.created.append(path)
            self._log = open(path, "ab")
        data = text.encode()
        try:
            self._log.write(data)
            self._log.flush()
        except BaseException as exc:  # a full disk, or Ctrl-C between two lines
            self._dirty = True
            self.close()
            if isinstance(exc, OSError):
                raise cannot_write(path, exc) from exc
            raise
        self._unsynced[path] = None
        self._rows += len(rows)
        self._metrics.update(data)

    def close(self) -> None:
        if self._log is not None:
            try:
                self._log.close()
            except OSError:
                pass  # a line that could not be flushed: the next writer rewrites the file
            self._log = None

    # --- what stays: keep_samples, and until the run ends what a resume needs ---------------

    def commit(self, end: str | None = None) -> list[dict[str, Any]]:
        """Commit the staged generations (``flush``), then delete the committed samples the
        commit made unnecessary. ``end``: the run's status, at its last commit: only what
        ``keep_samples`` keeps stays (staged samples it does not keep are never written), and the
        manifest says ``end`` once nothing is left to delete (else ``finish`` says it after)."""
        if end is not None:
            self._release(final=True)
        rows = self.flush(end if end is not None and not self._leftovers() else None)
        self._release(final=end is not None, disk=True)
        return rows

    def _kept(self, gen: int, newest: int) -> bool:
        """Whether ``keep_samples`` keeps generation ``gen``'s samples: generation 0 and the
        newest for ``last``; every k-th and the newest for an integer k."""
        keep = self._keep
        if isinstance(keep, int):
            return gen % keep == 0 or gen == newest
        return gen in (0, newest) if keep == "last" else keep == "all"

    def _leftovers(self) -> bool:
        """Whether committed samples await deletion when the run ends (kept until then for a
        resume, not by ``keep_samples``)."""
        return any(not self._kept(g, self._newest) for g in self._on_disk)

    def _release(self, *, final: bool, disk: bool = False) -> None:
        """Drop the samples that neither ``keep_samples`` nor, until the run ends (``final``), a
        resume (the ``needed`` generations) asks for: those staged for the next commit and, with
        ``disk``, the committed ones, deleted once the manifest stops listing them (a crash in
        between leaves a file unlisted, never a listed file missing)."""
        newest, needed = self._newest, set() if final else self._needed
        for st in self._staged:
            if st.samples and st.gen not in needed and not self._kept(st.gen, newest):
                self._held -= sum(a.nbytes for a in st.samples.values())
                st.samples = {}
        if not disk:
            return
        for gen in [g for g in sorted(self._on_disk)
                    if g not in needed and not self._kept(g, newest)]:
            for path in sorted(self._on_disk.pop(gen)):
                self._manifest_data["files"].pop(path.relative_to(self.root).as_posix(), None)
                self._dropped.append(path)
        if not self._dropped:
            return
        self._manifest()
        for path in self._dropped:
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()  # a generation with nothing left keeps no folder
            except OSError:
                pass
        self._dropped = []

    def _collapse(self, row: dict[str, Any]) -> None:
        """``generations_to_collapse`` into ``row``: the first generation whose collapse alarm
        fired (``alarm`` >= 1, ``<producer>/alarm`` per producer; see
        ``collapselab.metrics.alarm``), in every row from then on."""
        for key, value in row.items():
            if (key == "alarm" or key.endswith("/alarm")) and isinstance(value, int | float) \
                    and value >= 1:
                self._collapsed.setdefault(key[:-len("alarm")], int(row["generation"]))
        for prefix, gen in self._collapsed.items():
            row[f"{prefix}generations_to_collapse"] = gen

    def finish(self, status: str, **extra: Any) -> None:
        if extra or self._manifest_data.get("status") != status:  # not said already
            self._manifest(status=status, **extra)

    def _manifest(self, durable: bool = True, **update: Any) -> None:
        """Replace the manifest, the commit point, durably: the files written since the last
        commit are fsynced first, then the manifest. A crash of the process loses nothing
        committed; a power cut, at most what was staged."""
        manifest = self._manifest_data = self._manifest_data or {
            "collapselab": __version__,
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
        }
        if "completed" in update:
            update["completed_generations"] = update.pop("completed")
        manifest.update(update, updated=time.time())
        if durable:
            self._sync()
        path = self.root / "manifest.json"
        if not path.exists():
            self.created.append(path)
        write_atomic(path, json.dumps(jsonable(manifest), indent=2).encode(), durable=durable)

    def _sync(self) -> None:
        """fsync the files written since the last commit, then their folders (the renames)."""
        if not self._unsynced:
            return
        for path in [*self._unsynced, *{self.root, *(path.parent for path in self._unsynced)}]:
            fsync(path)
        self._unsynced.clear()

    def remove_created(self) -> None:
        """Remove what this writer created (files first, then the folders it made)."""
        for path in reversed(self.created):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.created.clear()
