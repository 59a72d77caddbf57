"""Reliability: crash-safe runs, exact resume, one writer, numerical faults, a full disk.

Faults are inflicted, not imagined. ``crash`` forks this process; the child arms one fault point and
runs the real CLI (``collapselab run``), and dies by SIGKILL at the k-th event of that point: no
``finally``, no ``atexit``, no flush, exactly like a power cut for the files. Fault points:

- ``rename``  a temporary file is written, the target not yet replaced
- ``renamed`` the target is replaced, the next file not yet written
- ``torn``    half of a metrics line is appended (a torn last line)
- ``fit`` / ``sample``  inside the model, between the files of two generations

After each kill the run directory must be readable, and ``--resume --takeover`` must finish it
bit for bit equal to an uninterrupted run (timing fields aside).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pytest
from pydantic import Field
from typer.testing import CliRunner

import collapselab.components  # noqa: F401  (registers every component)
from collapselab import registry, store
from collapselab.cli import app
from collapselab.errors import RunError
from collapselab.models.gaussian import Gaussian
from collapselab.store import RunStore

POINTS = ("rename", "renamed", "torn", "fit", "sample")
TIMING = {"wall_s"}

GAUSSIAN = """
name: {name}
generations: 4
seed: 7
chains: 3
model: {{family: gaussian}}
data: {{source: normal, size: 20, dim: 2}}
policy: {{name: {policy}}}
metrics: [variance_ratio, w2, kl, tail_mass, collapse_alarm]
keep_samples: {keep}
out_dir: {out}
"""
NGRAM = """
name: {name}
generations: 3
seed: 5
chains: 2
model: {{family: ngram, order: 2}}
data: {{source: builtin, size: 12, vocab_size: 40, states: 4, block_len: 6, train_blocks: 30,
        valid_blocks: 4, test_blocks: 8}}
policy: {{name: {policy}}}
metrics: [perplexity, types, true_kl]
keep_samples: {keep}
out_dir: {out}
"""
PRODUCERS = """
name: {name}
generations: 3
seed: 3
chains: 2
data: {{source: builtin, size: 12, vocab_size: 40, states: 4, block_len: 6, train_blocks: 30,
        valid_blocks: 4, test_blocks: 8}}
producers:
  - {{name: a, model: {{family: ngram, order: 2}}, trains_on: {{b: 1.0}}}}
  - {{name: b, model: {{family: ngram, order: 3}}, trains_on: {{a: 0.5, b: 0.5}}}}
policy: {{name: {policy}}}
metrics: [perplexity, types]
curation: [{{name: dedup}}]
keep_samples: {keep}
out_dir: {out}
"""
FLAKY = """
name: {name}
generations: 6
seed: 1
chains: 4
data: {{source: normal, size: 6, dim: 1}}
producers:
  - {{name: a, model: {{family: flaky, fail_below: 0.6}}, trains_on: {{b: 1.0}}}}
  - {{name: b, model: {{family: gaussian}}, trains_on: {{a: 0.5, b: 0.5}}}}
policy: {{name: {policy}}}
metrics: [variance_ratio]
on_degenerate: continue
keep_samples: {keep}
out_dir: {out}
"""
FLAKY_ONE = GAUSSIAN.replace("family: gaussian", "family: flaky, fail_below: 0.1").replace(
    "size: 20, dim: 2", "size: 5, dim: 1").replace("generations: 4", "generations: 6") \
    + "on_degenerate: continue\n"
TEMPLATES = {"gaussian": (GAUSSIAN, "gaussian"), "ngram": (NGRAM, "ngram"),
             "flaky": (FLAKY, "flaky"), "flaky_one": (FLAKY_ONE, "flaky"),
             "producers": (PRODUCERS, "ngram")}


# ------------------------------------------------------------------------------ the fault harness


def arm(mp: pytest.MonkeyPatch, family: str, point: str | None = None, k: int = 0) -> Counter:
    """Count fault-point events in this process; SIGKILL it at the k-th ``point`` event."""
    counts: Counter = Counter()

    def tick(name: str) -> None:
        counts[name] += 1
        if name == point and counts[name] == k:
            os.kill(os.getpid(), signal.SIGKILL)

    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        tick("rename")
        real_replace(src, dst)
        tick("renamed")

    def open_(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = open(path, mode, *args, **kwargs)
        if "a" in mode:  # each appended line is an event
            write = f.write

            def torn(text: str) -> int:
                counts["torn"] += 1
                if point == "torn" and counts["torn"] == k:
                    write(text[: len(text) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)
                return write(text)

            f.write = torn
        return f

    mp.setattr(store.os, "replace", replace)
    mp.setattr(store, "open", open_, raising=False)
    cls = registry.families.get(family)
    for name in ("fit", "sample"):
        real = getattr(cls, name)

        def wrapped(self: Any, *a: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            tick(_name)
            return _real(self, *a, **kw)

        mp.setattr(cls, name, wrapped)
    return counts


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, [*args])


def crash(config: Path, family: str, point: str, k: int) -> None:
    """Run the CLI in a forked child that SIGKILLs itself at the k-th ``point`` event."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            arm(pytest.MonkeyPatch(), family, point, k)
            app(["run", str(config), "--no-report"], standalone_mode=False)
        finally:
            os._exit(0)  # reached only when the fault never fired
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"fault {point}:{k} never fired")


def write_config(tmp: Path, kind: str, policy: str, keep: str = "last", name: str = "r") -> Path:
    template, _ = TEMPLATES[kind]
    path = tmp / f"{name}.yaml"
    path.write_text(template.format(name=name, policy=policy, keep=keep, out=tmp / "runs"))
    return path


def snapshot(root: Path) -> dict[str, Any]:
    """What a run stores, timing and the grouping of commits aside: {what: content}."""
    run = RunStore(root)
    out: dict[str, Any] = {"config.yaml": run.config_text().encode()}
    rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    out["metrics.jsonl"] = [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
    m = run.manifest()
    out["manifest.json"] = (m["status"], m["completed_generations"], m["seeds"])
    for gen in range(run.completed()):
        out[f"record {gen}"] = run.record(gen)
    for p in sorted(root.glob("gen_*/*")):  # samples and models: which are kept, and their bytes
        rel = p.relative_to(root).as_posix()
        out[rel] = {"": np.load(p)} if p.suffix == ".npy" else p.read_bytes()
    return out


def assert_same_run(got: dict[str, Any], want: dict[str, Any], when: str = "") -> None:
    assert sorted(got) == sorted(want), when
    for rel, value in want.items():
        if isinstance(value, dict):
            assert sorted(got[rel]) == sorted(value), f"{when}: {rel}"
            for key, arr in value.items():
                assert got[rel][key].dtype == arr.dtype, f"{when}: {rel}:{key}"
                assert np.array_equal(got[rel][key], arr, equal_nan=arr.dtype.kind == "f"), (
                    f"{when}: {rel}:{key} differs")
        else:
            assert got[rel] == value, f"{when}: {rel}"


def assert_readable(root: Path) -> None:
    """A killed run's directory: manifest, config and metrics parse; committed files load."""
    run = RunStore(root)
    if not run.exists:  # killed before the first manifest: nothing was committed
        return
    done = run.completed()
    producers = [p.name for p in run.config().producers or []] or [None]
    rows = run.metrics()
    assert [r["generation"] for r in rows] == list(range(done))
    assert {g for first, last, _ in run.chunks() for g in range(first, last + 1)} \
        >= {g for g in range(done) if not any(k.endswith("degenerate") for k in rows[g])}
    for gen in range(done):
        run.record(gen)
        for p in producers:
            if run.has_samples(gen, p):
                run.samples(gen, p)
    if done and not any(k.endswith("degenerate") for k in rows[0]):
        for p in producers:
            run.model(0, p)


def reference(tmp: Path, kind: str, policy: str, keep: str) -> tuple[dict[str, Any], Counter]:
    """An uninterrupted run and the number of events of each fault point in it."""
    cfg = write_config(tmp, kind, policy, keep, name="ref")
    with pytest.MonkeyPatch.context() as mp:
        counts = arm(mp, TEMPLATES[kind][1])
        result = cli("run", str(cfg), "--no-report")
    assert result.exit_code == 0, result.output
    return snapshot(tmp / "runs" / "ref"), counts


def crash_and_resume(tmp: Path, kind: str, policy: str, keep: str,
                     points: list[tuple[str, int]] | None = None, every: int = 1) -> int:
    want, counts = reference(tmp, kind, policy, keep)
    want["config.yaml"] = None  # the run name differs; compared through the metrics and samples
    if points is None:
        points = [(p, k) for p in POINTS for k in range(1, counts[p] + 1, every)]
    for point, k in points:
        assert k <= counts[point], f"{point}:{k} does not happen in a run of this config"
        name = f"{point}{k}"
        cfg = write_config(tmp, kind, policy, keep, name=name)
        root = tmp / "runs" / name
        crash(cfg, TEMPLATES[kind][1], point, k)
        assert_readable(root)
        result = cli("run", str(cfg), "--resume", "--takeover", "--no-report")
        assert result.exit_code == 0, f"{point}:{k}: {result.output}"
        got = snapshot(root)
        got["config.yaml"] = None
        assert_same_run(got, want, f"after a kill at {point}:{k}")
    return len(points)


# ------------------------------------------------------------------ crash safety and exact resume


@pytest.fixture(autouse=True)
def commit_every_generation(monkeypatch):
    """A commit per generation: the most commits, so the most places for a fault to land. (By
    default fast generations are committed together, once a second: see the batched test.)"""
    monkeypatch.setattr(store, "COMMIT_EVERY_S", 0.0)


@pytest.mark.parametrize("kind,policy", [("gaussian", "replace"), ("producers", "accumulate")])
def test_sigkill_at_every_fault_point_of_batched_commits_then_resume_is_exact(tmp_path, monkeypatch,
                                                                            kind, policy):
    """Generations 1.. of these tiny runs finish within a second: one commit holds them all."""
    monkeypatch.setattr(store, "COMMIT_EVERY_S", 3600.0)
    assert crash_and_resume(tmp_path, kind, policy, "last") > 5


def test_sigkill_at_many_fault_points_then_resume_is_exact_gaussian_replace(tmp_path):
    """Every fourth event of each fault point (all of them under ``-m slow``)."""
    assert crash_and_resume(tmp_path, "gaussian", "replace", "last", every=4) > 10


@pytest.mark.parametrize("kind,policy,points", [
    ("gaussian", "accumulate", [("rename", 4), ("torn", 2), ("renamed", 9), ("sample", 4)]),
    ("ngram", "replace", [("torn", 2), ("rename", 6), ("fit", 3)]),
    ("ngram", "accumulate", [("renamed", 5), ("torn", 3), ("sample", 2)]),
    # two producers, each pool a mix of both outputs: rebuilt from the stored outputs on resume
    ("producers", "accumulate", [("sample", 3), ("torn", 2), ("rename", 11), ("fit", 6)]),
])
def test_sigkill_then_resume_is_exact(tmp_path, kind, policy, points):
    crash_and_resume(tmp_path, kind, policy, "last", points)


@pytest.mark.slow
@pytest.mark.parametrize("kind,policy,keep", [
    ("gaussian", "replace", "last"),
    ("gaussian", "accumulate", "last"),
    ("gaussian", "real_fraction", "all"),
    ("gaussian", "accumulate_subsample", "last"),
    ("ngram", "replace", "last"),
    ("ngram", "accumulate", "last"),
    ("ngram", "fresh", "all"),
    ("producers", "real_fraction", "last"),
    ("producers", "accumulate_subsample", "last"),
])
def test_sigkill_at_every_fault_point_then_resume_is_exact(tmp_path, kind, policy, keep):
    assert crash_and_resume(tmp_path, kind, policy, keep) > 15


def test_a_torn_metrics_line_is_ignored_by_readers_and_cleaned_by_the_next_writer(tmp_path):
    cfg = write_config(tmp_path, "gaussian", "replace")
    root = tmp_path / "runs" / "r"
    crash(cfg, "gaussian", "torn", 3)
    lines = (root / "metrics.jsonl").read_text().split("\n")
    assert lines[-1] and not lines[-1].endswith("}")  # the torn tail is there, unterminated
    assert [r["generation"] for r in RunStore(root).metrics()] == [0, 1]
    assert cli("run", str(cfg), "--resume", "--takeover", "--no-report").exit_code == 0
    rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in rows] == [0, 1, 2, 3]


# --------------------------------------------------------------------------------- one writer


def hold(root: Path) -> subprocess.Popen:
    """A live writer of ``root`` in another process, holding the lock until its stdin closes."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, sys\nfrom collapselab.store import RunStore\n"
         "lock = RunStore(sys.argv[1]).writer()\nlock.__enter__()\n"
         "print('locked', flush=True)\nsys.stdin.read()\nos._exit(0)\n", str(root)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_is_refused_naming_pid_and_host_then_a_stale_lock_needs_takeover(tmp_path):
    root = tmp_path / "runs" / "r"
    holder = hold(root)
    host = socket.gethostname()
    live = rf"{root} is locked: run pid {holder.pid} on {host} is writing it"
    try:
        with pytest.raises(RunError, match=live):
            with RunStore(root).writer():
                pass
        with pytest.raises(RunError, match=live):  # --takeover never steals a live lock
            with RunStore(root).writer(takeover=True):
                pass
        cfg = write_config(tmp_path, "gaussian", "replace")
        result = cli("run", str(cfg), "--resume", "--takeover", "--no-report")
        assert result.exit_code == 2 and f"pid {holder.pid}" in result.output
    finally:
        holder.communicate("")  # the holder dies without releasing: its lock record goes stale
    stale = (rf"{root} has a stale lock: pid {holder.pid} on {host} stopped without releasing "
             r"it \(the kernel lock is free\); pass --takeover to take it over")
    with pytest.raises(RunError, match=stale):
        with RunStore(root).writer():
            pass
    result = cli("run", str(cfg), "--resume", "--no-report")
    assert result.exit_code == 2 and "--takeover" in result.output
    result = cli("run", str(cfg), "--resume", "--takeover", "--no-report")
    assert result.exit_code == 0, result.output
    assert not (root / ".lock").exists()


def test_deleting_the_lock_file_under_a_live_writer_does_not_let_a_second_one_in(tmp_path):
    """The kernel lock is the authority, not the file that describes it."""
    root = tmp_path / "r"
    holder = hold(root)
    try:
        (root / ".lock").unlink()
        with pytest.raises(RunError, match=r"is locked: another writer holds it \(its \.lock record was removed\)"):
            with RunStore(root).writer(takeover=True):
                pass
    finally:
        holder.communicate("")


@pytest.mark.parametrize("lock", ["", '{{"pid": {pid}, "host": "{host}"}}',
                                  '{{"pid": 1, "host": "elsewhere"}}'])
def test_a_stale_lock_naming_a_live_foreign_process_is_taken_over(tmp_path, lock):
    """A pid that now belongs to some other live process (here: this one's parent) or another
    host is information for the message; the free kernel lock lets --takeover through."""
    root = tmp_path / "r"
    root.mkdir()
    (root / ".lock").write_text(lock.format(pid=os.getppid(), host=socket.gethostname()))
    with pytest.raises(RunError, match=r"has a stale lock: .* pass --takeover to take it over"):
        with RunStore(root).writer():
            pass
    with RunStore(root).writer(takeover=True):
        assert json.loads((root / ".lock").read_text())["pid"] == os.getpid()
    assert not (root / ".lock").exists()


# ---------------------------------------------------------------------------- numerical faults


class FailsAt(Gaussian):
    """A Gaussian whose ``at``-th fit in this process goes wrong: NaN samples, or a raise."""

    fits = 0

    def __init__(
        self,
        at: Annotated[int, Field(ge=1)] = 3,
        mode: Literal["nan", "raise"] = "nan",
    ) -> None:
        super().__init__()
        self.at, self.mode = at, mode

    def fit(self, data: np.ndarray, *, rng: np.random.Generator | None = None) -> FailsAt:
        super().fit(data, rng=rng)
        FailsAt.fits += 1
        if FailsAt.fits == self.at:
            if self.mode == "raise":
                raise FloatingPointError("training diverged")
            self.mean_ = np.full_like(self.mean_, np.nan)
        return self


class Flaky(Gaussian):
    """A Gaussian whose fit fails numerically once any chain's spread falls below ``fail_below``:
    under replace it fails from some generation on, the same one in every process."""

    def __init__(self, fail_below: float = 0.5) -> None:
        super().__init__()
        self.fail_below = fail_below

    def fit(self, data: np.ndarray, *, rng: np.random.Generator | None = None) -> Flaky:
        super().fit(data, rng=rng)
        if (np.asarray(data).std(axis=1) < self.fail_below).any():
            raise FloatingPointError("the spread collapsed")
        return self


@pytest.fixture
def flaky(monkeypatch):
    monkeypatch.setitem(registry.families._entries, "flaky", Flaky)


def test_a_producer_that_degenerates_is_recorded_while_the_others_go_on(tmp_path, flaky):
    cfg = write_config(tmp_path, "flaky", "replace", "last")
    result = cli("run", str(cfg), "--no-report")
    assert result.exit_code == 0, result.output
    run = RunStore(tmp_path / "runs" / "r")
    rows = run.metrics()
    failed = [r["generation"] for r in rows if "a/degenerate" in r]
    assert failed and failed[0] > 0 and run.manifest()["status"] == "complete"
    assert all(r["a/degenerate"] == "FloatingPointError: the spread collapsed"
               for r in rows if "a/degenerate" in r)
    assert all("b/variance_ratio" in r for r in rows)  # b trains every generation
    assert all("a/variance_ratio" not in r for r in rows if "a/degenerate" in r)
    # keep_samples=last: generation 0 and the newest of each producer that wrote any
    assert run.has_samples(0, "a") and run.has_samples(5, "b")
    assert not any(run.has_samples(g, "b") for g in range(1, 5))


@pytest.mark.parametrize("keep", ["last", "all"])
def test_sigkill_after_degenerate_generations_then_resume_is_exact(tmp_path, flaky, keep):
    """on_degenerate=continue: a failed generation adds nothing to the history, and a resume
    starts again from the last good pool (not from the failed generation)."""
    assert crash_and_resume(tmp_path, "flaky_one", "replace", keep, every=3) > 5
    rows = RunStore(tmp_path / "runs" / "ref").metrics()
    assert 0 < [r["generation"] for r in rows if "degenerate" in r][0] < len(rows) - 1


@pytest.mark.parametrize("keep", ["last", "all"])
def test_sigkill_in_a_multi_producer_run_with_a_degenerate_producer_then_resume_is_exact(
        tmp_path, flaky, keep):
    assert crash_and_resume(tmp_path, "flaky", "replace", keep, every=3) > 5


@pytest.fixture
def fails_at(monkeypatch):
    monkeypatch.setitem(registry.families._entries, "fails_at", FailsAt)
    monkeypatch.setattr(FailsAt, "fits", 0)
    return FailsAt


def degenerate_config(tmp: Path, mode: str, on_degenerate: str, name: str = "d") -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(GAUSSIAN.format(name=name, policy="replace", keep="all", out=tmp / "runs")
                    .replace("family: gaussian", f"family: fails_at, at: 3, mode: {mode}")
                    + f"on_degenerate: {on_degenerate}\n")
    return path


@pytest.mark.parametrize("mode,why", [("nan", "non-finite samples"),
                                      ("raise", "FloatingPointError: training diverged")])
def test_a_degenerate_generation_stops_the_run(tmp_path, fails_at, mode, why):
    result = cli("run", str(degenerate_config(tmp_path, mode, "stop")), "--no-report")
    assert result.exit_code == 0, result.output
    run = RunStore(tmp_path / "runs" / "d")
    assert run.manifest()["status"] == "stopped"
    rows = run.metrics()
    assert [r.get("degenerate") for r in rows] == [None, None, why]
    assert not run.has_samples(2)


def test_a_degenerate_generation_is_recorded_and_the_run_continues(tmp_path, fails_at):
    result = cli("run", str(degenerate_config(tmp_path, "nan", "continue")), "--no-report")
    assert result.exit_code == 0, result.output
    run = RunStore(tmp_path / "runs" / "d")
    rows = run.metrics()
    assert run.manifest()["status"] == "complete"
    assert [r.get("degenerate") for r in rows] == [None, None, "non-finite samples", None]
    assert np.isfinite(run.samples(3)).all() and not run.has_samples(2)


def test_a_crash_at_the_stopping_commit_resumes_into_the_same_stop(tmp_path, fails_at):
    """The stopping generation and the status "stopped" are one commit: a crash there loses that
    generation alone, which the resume trains again, to the same stop; resuming a stopped run
    trains nothing."""
    cfg = degenerate_config(tmp_path, "nan", "stop", name="ref")
    with pytest.MonkeyPatch.context() as mp:
        renames = arm(mp, "fails_at")
        assert cli("run", str(cfg), "--no-report").exit_code == 0
    FailsAt.fits = 0
    cfg = degenerate_config(tmp_path, "nan", "stop")
    crash(cfg, "fails_at", "rename", renames["rename"])  # the last manifest is never written
    run = RunStore(tmp_path / "runs" / "d")
    assert run.manifest()["status"] == "running" and run.completed() == 2
    FailsAt.fits = 2  # the resumed process's first fit is the run's third: degenerate again
    result = cli("run", str(cfg), "--resume", "--takeover", "--no-report")
    assert result.exit_code == 0, result.output
    assert run.manifest()["status"] == "stopped" and run.completed() == 3
    assert FailsAt.fits == 3  # the lost generation alone was trained again
    untimed = [[{k: v for k, v in row.items() if k != "wall_s"} for row in store.metrics()]
               for store in (run, RunStore(tmp_path / "runs" / "ref"))]
    assert untimed[0] == untimed[1]  # the same run as one never interrupted
    result = cli("run", str(cfg), "--resume", "--no-report")
    assert result.exit_code == 0, result.output
    assert run.manifest()["status"] == "stopped" and FailsAt.fits == 3


# ------------------------------------------------------------------------------------ disk full


def fill_disk_at(mp: pytest.MonkeyPatch, k: int) -> None:
    """The k-th file write of the run store fails with ENOSPC (an append after half its line)."""
    calls = Counter()

    def open_(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = open(path, mode, *args, **kwargs)
        if "w" in mode or "a" in mode:
            write = f.write

            def full(data: Any) -> int:
                calls["write"] += 1
                if calls["write"] == k:
                    if "a" in mode:
                        write(data[: len(data) // 2])
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return write(data)

            f.write = full
        return f

    mp.setattr(store, "open", open_, raising=False)


def test_a_full_disk_fails_cleanly_and_the_run_resumes_exactly(tmp_path):
    want, counts = reference(tmp_path, "gaussian", "replace", "last")
    want["config.yaml"] = None
    writes = counts["rename"] + counts["torn"]  # one file write each
    for k in range(1, writes + 1):
        cfg = write_config(tmp_path, "gaussian", "replace", name=f"full{k}")
        root = tmp_path / "runs" / f"full{k}"
        with pytest.MonkeyPatch.context() as mp:
            fill_disk_at(mp, k)
            result = cli("run", str(cfg), "--no-report")
        assert result.exit_code == 2, result.output
        assert "No space left on device" in result.output and "Traceback" not in result.output
        assert f"cannot write {root}" in " ".join(result.output.split())
        if not RunStore(root).exists or RunStore(root).completed() == 0:
            assert not root.exists()  # nothing committed: nothing left behind
            continue
        assert_readable(root)
        assert not (root / ".lock").exists()
        result = cli("run", str(cfg), "--resume", "--no-report")
        assert result.exit_code == 0, f"k={k}: {result.output}"
        got = snapshot(root)
        got["config.yaml"] = None
        assert_same_run(got, want, f"after a full disk at write {k}")
