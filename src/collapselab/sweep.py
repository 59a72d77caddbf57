"""Sweeps: one experiment config, many points (a grid and/or a list), run on a local process pool
or on Ray, resumable, each point an ordinary run directory.

A sweep file::

    base: ../gaussian/replace.yaml      # an experiment YAML (relative to this file) or a mapping
    grid:                               # cartesian product of dotted keys -> value lists
      policy.name: [replace, accumulate]
      seed: [0, 1, 2]
    points:                             # optional list of override dicts, crossed with the grid
      - {policy.name: real_fraction, policy.real_fraction: 0.1}
    backend: local                      # local (process pool) | ray
    workers: null                       # local: processes (default: the machine's CPUs)
    address: null                       # ray: auto | ray://host:10001 | null (start a local Ray)
    resources: {num_cpus: 1}            # ray: what each point's task asks of the cluster
    out_dir: sweeps/my_sweep            # the sweep directory (default: sweeps/<file stem>)

The sweep directory holds ``sweep.yaml`` (the resolved sweep), ``sweep.json`` (the manifest: points,
overrides, status, attempts, timings) and one run directory per point, named from its overrides
(``policy-replace__seed-0``). The run directories are the truth: a re-run skips points whose run
finished, resumes interrupted ones and starts missing ones. A worker that dies mid-point leaves a
stale run lock; the point is retried once (alone, so a second death is its own) and takes the lock
over.

On Ray each point is a task asking for ``resources``: the sweep's, updated by a point's own
``resources:`` entry (``points: [{model.distributed: {nproc_per_node: 2}, resources: {num_gpus:
2}}]``); ``num_cpus``, ``num_gpus``, ``memory`` (bytes), and custom resources by name (those of
``ray start --resources``). A point that no node of the cluster can hold is refused before
anything is dispatched, naming what it asks and what the nodes offer (Ray would keep it pending
forever). The local pool runs one point per worker and ignores ``resources``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from collapselab.config import ExperimentConfig, apply_override, read_yaml, validate
from collapselab.errors import ConfigError, Interrupted, RunError
from collapselab.store import (
    RunStore,
    cannot_write,
    jsonable,
    lock_state,
    locked,
    write_atomic,
)

log = logging.getLogger(__name__)

MANIFEST = "sweep.json"
MAX_POINTS = 10_000  # points one sweep may hold (each is validated, named and tracked up front)
FINISHED = ("complete", "stopped")  # a run that ended (stopped = degenerate, by its config)
RETRIES = 1  # a point whose worker died is run once more
COMPONENT_KEYS = ("name", "family", "source")  # `policy.name` is named `policy` in run names
RESOURCES = "resources"  # a point's own entry: what its Ray task asks for, not an override
RAY_NAMES = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}  # option -> node resource
Resources = dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]]


class SweepSpec(BaseModel):
    """A sweep file, parsed. Each field is documented once, here."""

    model_config = ConfigDict(extra="forbid")

    base: dict[str, Any] | str = Field(default_factory=dict, description=(
        "the experiment every point starts from: a mapping, or a path to an experiment YAML "
        "(relative to the sweep file)"))
    grid: dict[str, list[Any]] = Field(default_factory=dict, description=(
        "dotted config keys -> value lists; every combination is a point"))
    points: list[dict[str, Any]] = Field(default_factory=list, description=(
        "override dicts; crossed with the grid when both are given"))
    backend: Literal["local", "ray"] = Field("local", description=(
        "local: a process pool on this machine; ray: Ray tasks (pip install 'collapselab[ray]')"))
    workers: int | None = Field(None, ge=1, description=(
        "parallel points; default: this machine's CPUs (local) or num_cpus of a local Ray"))
    address: str | None = Field(None, description=(
        "ray only: 'auto' (a running cluster, e.g. on its head node), 'ray://host:10001', "
        "or null to start a local Ray instance"))
    out_dir: str | None = Field(None, description=(
        "the sweep directory; default: sweeps/<sweep file stem>"))
    resources: Resources = Field(default_factory=lambda: {"num_cpus": 1}, description=(
        "ray only: what each point's task asks of the cluster: num_cpus, num_gpus, memory "
        "(bytes) and custom resources by name, e.g. {num_gpus: 1, num_cpus: 2}; a point's own "
        "`resources:` entry updates it"))


SWEEP_FIELDS = set(SweepSpec.model_fields)


@dataclass
class Point:
    """One run of a sweep: its name (= run directory), its overrides and its validated config."""

    name: str
    overrides: dict[str, Any]
    config: ExperimentConfig
    resources: dict[str, float] = field(default_factory=dict)  # what its Ray task asks for


@dataclass
class Sweep:
    spec: SweepSpec
    root: Path
    points: list[Point]
    source: str | None = None  # the sweep file, if any

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST


# --- loading and expanding ---------------------------------------------------------------------


def load_sweep(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
               raw: dict[str, Any] | None = None) -> Sweep:
    """Read a sweep file (or ``raw``), apply ``key=value`` overrides and validate every point.

    Overrides whose first key is a sweep field (``backend=ray``, ``workers=4``, ``grid.seed=[0]``)
    change the sweep; any other key (``generations=3``, ``base.generations=3``) changes the base
    experiment of every point.
    """
    data: dict[str, Any] = copy.deepcopy(raw) if raw is not None else (
        read_yaml(path) if path is not None else {})
    here = Path(path).parent if path is not None else Path.cwd()
    base_overrides = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        head = key.split(".")[0]
        if head == "base":
            base_overrides.append(item[len("base."):])
        elif head in SWEEP_FIELDS and head != "base":
            if head == "grid" and "." in key:  # grid keys are dotted themselves: grid.policy.name=
                gkey, _, text = item[len("grid."):].partition("=")
                import yaml

                data.setdefault("grid", {})[gkey.strip()] = yaml.safe_load(text)
            else:
                apply_override(data, item)
        else:
            base_overrides.append(item)
    try:
        spec = SweepSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError([_describe_sweep(err) for err in exc.errors()]) from None
    base = resolve_base(spec.base, here)
    for item in base_overrides:
        apply_override(base, item)
    spec = spec.model_copy(update={"base": base})
    stem = Path(path).stem if path is not None else "sweep"
    root = Path(spec.out_dir or Path("sweeps") / stem).absolute()
    spec = spec.model_copy(update={"out_dir": str(root)})
    return Sweep(spec, root, expand(spec, root), str(path) if path is not None else None)


def resolve_base(base: dict[str, Any] | str, here: Path) -> dict[str, Any]:
    if isinstance(base, dict):
        return copy.deepcopy(base)
    candidates = [here / base, Path(base)]
    for p in candidates:
        if p.is_file():
            return read_yaml(p)
    raise ConfigError([f"base: experiment file {base!r} not found (looked in {here} and the "
                       f"current folder)"])


def combinations(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every point's overrides, in order: grid combinations (last key fastest) x points."""
    grid = [dict(zip(spec.grid, values, strict=True))
            for values in itertools.product(*spec.grid.values())]
    points = spec.points or [{}]
    return [{**g, **p} for g in grid for p in points] if spec.grid else list(points)


def expand(spec: SweepSpec, root: Path) -> list[Point]:
    """Validate every point's config before anything runs; all problems at once, per point."""
    assert isinstance(spec.base, dict)
    problems: list[str] = []
    for key, values in spec.grid.items():
        if not values:
            problems.append(f"grid.{key}: needs at least one value; got []")
    count = math.prod(len(v) for v in spec.grid.values()) * max(1, len(spec.points))
    if count > MAX_POINTS:  # counted before expanding: a 1000 x 1000 grid must not hang
        sizes = " x ".join(f"{len(v):,}" for v in [*spec.grid.values(), spec.points] if v)
        problems.append(f"grid: {sizes} = {count:,} points; a sweep holds at most "
                        f"{MAX_POINTS:,} (split it into several sweeps)")
    if problems:
        raise ConfigError(problems)
    combos = [dict(c) for c in combinations(spec)]
    asks = [c.pop(RESOURCES, None) for c in combos]  # not part of the experiment, nor the name
    names = point_names(combos)
    points = []
    for name, combo, ask in zip(names, combos, asks, strict=True):
        try:
            resources = {**spec.resources, **_RESOURCES.validate_python(ask or {})}
        except pydantic.ValidationError as exc:
            problems += [f"point {name}: {RESOURCES}{'.' * bool(err['loc'])}{_describe_sweep(err)}"
                         for err in exc.errors()]  # fmt: skip
            continue
        raw = copy.deepcopy(spec.base)
        for key, value in combo.items():
            set_dotted(raw, key, value)
        raw["name"], raw["out_dir"] = name, str(root)
        try:
            points.append(Point(name, combo, validate(raw), resources))
        except ConfigError as exc:
            problems += [f"point {name}: {p}" for p in exc.problems]
        except pydantic.ValidationError as exc:  # a section field config.validate lets through
            problems += [f"point {name}: {_describe_sweep(err)}" for err in exc.errors()]
    if problems:
        raise ConfigError(problems)
    return points


_RESOURCES = pydantic.TypeAdapter(Resources)


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """``raw[a][b][c] = value`` for ``key='a.b.c'``; a dict value replaces the whole section."""
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError([f"{'.'.join(parts[: depth + 1])} is not a section; got {child!r}"])
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def point_names(combos: list[dict[str, Any]]) -> list[str]:
    """Readable, filesystem-safe, unique run names: ``policy-replace__size-10__seed-0``.

    A key is shortened to its shortest dotted suffix that no other swept key shares; a component
    key (``policy.name``, ``model.family``) is named by its section."""
    keys = list(dict.fromkeys(k for c in combos for k in c))
    short = _short_keys(keys)
    names = []
    for combo in combos:
        ordered = sorted(combo.items(), key=lambda kv: kv[0] == "seed")  # the seed goes last
        parts = [f"{short[k]}-{_slug(v)}" for k, v in ordered]
        name = "__".join(parts) or "base"
        if len(name) > 120:
            name = f"{name[:100]}-{_digest(combo)}"
        names.append(name)
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    return [f"{n}-{_digest(c)}" if seen[n] > 1 else n for n, c in zip(names, combos, strict=True)]


def _short_keys(keys: list[str]) -> dict[str, str]:
    def label(key: str, depth: int) -> str:
        parts = key.split(".")
        if len(parts) > 1 and parts[-1] in COMPONENT_KEYS:
            parts = parts[:-1]
        return ".".join(parts[-depth:])

    out = {}
    for key in keys:
        depth = 1
        while depth < len(key.split(".")) and any(
                label(o, depth) == label(key, depth) for o in keys if o != key):
            depth += 1
        out[key] = _slug(label(key, depth))
    return out


def _slug(value: Any) -> str:
    if isinstance(value, dict):
        named = [str(value[k]) for k in COMPONENT_KEYS if k in value]
        rest = [f"{k}-{_slug(v)}" for k, v in value.items() if k not in COMPONENT_KEYS]
        text = "-".join(named + rest)
    elif isinstance(value, (list, tuple)):
        text = "-".join(_slug(v) for v in value)
    else:
        text = str(value)
    text = re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_.") or "x"
    return text


def _digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:6]


def _describe_sweep(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return (f"{loc}: unknown sweep field. Allowed: {', '.join(SWEEP_FIELDS)} "
                "(experiment keys go under base)")
    return f"{loc}: {err['msg']}; got {err['input']!r}"


# --- the worker's side -------------------------------------------------------------------------


def run_point(config: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) one point in a worker; never raises for a problem with the point itself.

    ``config`` is the resolved experiment config as plain data, so the same call works in a
    forked process and in a Ray worker on another machine."""
    from collapselab.loop import run

    started = time.time()
    result: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(),
                              "started": started}
    try:
        cfg = validate(config)
        before = RunStore(cfg.run_dir).completed()
        # takeover: the sweep lock makes this driver the only one, so a lock here is stale
        from collapselab import tracking

        with tracking.session(cfg) as track:  # a tracker run per point, tagged with the sweep
            store = run(cfg, resume=True, takeover=True, observers=track.observers)
        result.update(status=store.manifest()["status"], completed=store.completed(),
                      resumed_from=before)
    except KeyboardInterrupt as exc:  # Ctrl-C: the run committed its finished generations
        result.update(status="interrupted", message=str(exc) or "interrupted",
                      completed=_completed(config))
    except Exception as exc:  # noqa: BLE001  (reported per point; the sweep goes on)
        log.debug("point failed", exc_info=True)
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(limit=8))
    result.update(finished=time.time(), wall_s=time.time() - started)
    return result


def _completed(config: dict[str, Any]) -> int | None:
    try:
        return RunStore(Path(config["out_dir"]) / config["name"]).completed()
    except Exception:  # noqa: BLE001  (only for the message)
        return None


_LISTEN = True  # in a pool worker: whether Ctrl-C interrupts a running point


def _worker_init(listen: bool = True) -> None:
    """Pool workers die with the driver (Linux), so a killed sweep leaves no orphan writing on;
    they ignore Ctrl-C while idle (a pool worker interrupted between points breaks the pool):
    ``_run_point_local`` listens for it while a point runs, unless the driver ignores it too
    (``listen`` false: a sweep started in the background with ``&`` or nohup)."""
    global _LISTEN
    _LISTEN = listen
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _run_point_local(config: dict[str, Any]) -> dict[str, Any]:
    """``run_point`` in a pool worker: the first Ctrl-C (the terminal's, or the driver's when
    it stops the sweep) interrupts the run, which commits its finished generations; any later
    one is ignored, so it cannot cut that commit short."""
    if _LISTEN:
        signal.signal(signal.SIGINT, _interrupt_once)
    try:
        return run_point(config)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interrupt_once(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


# --- backends ----------------------------------------------------------------------------------

OnResult = Callable[[Point, dict[str, Any]], None]


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_local(points: list[Point], workers: int, on_result: OnResult) -> None:
    """A process pool, fed one point per free worker (so nothing waits in the pool's queue).

    When a worker dies, the pool breaks and every point in flight fails with it; those whose run
    holds a lock of a dead process are retried alone, one at a time, so a second death is
    theirs; the others go back in the queue. Ctrl-C starts no further point, interrupts the
    running ones (each commits its finished generations, as a single run does) and raises
    ``Interrupted`` saying what was kept."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    queue: deque[Point] = deque(points)
    alone: deque[Point] = deque()
    deaths: dict[str, int] = {}
    stopped: dict[str, dict[str, Any]] = {}  # interrupted points -> their results
    listen = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN

    def finish(p: Point, result: dict[str, Any]) -> None:
        if result.get("status") == "interrupted":
            stopped[p.name] = result
        on_result(p, {**result, "worker_deaths": deaths.get(p.name, 0)})

    def died(p: Point) -> None:
        deaths[p.name] = deaths.get(p.name, 0) + 1
        if deaths[p.name] > RETRIES:
            on_result(p, {"status": "failed", "error": (
                f"its worker process died {deaths[p.name]} times (killed, or out of memory?)")})
        else:
            log.warning("%s: worker process died; retrying", p.name)
            alone.append(p)

    with ctrl_c() as presses:
        while (queue or alone) and not presses:
            solo = bool(alone)  # suspects of a worker death run alone
            source = alone if solo else queue
            size = 1 if solo else min(workers, len(queue))
            ex = ProcessPoolExecutor(max_workers=size, mp_context=ctx,
                                     initializer=_worker_init, initargs=(listen,))
            running: dict[Future[dict[str, Any]], Point] = {}
            broken: list[Point] = []
            try:
                while not presses:
                    while source and len(running) < size and not broken:
                        p = source.popleft()
                        try:
                            running[ex.submit(_run_point_local, _payload(p))] = p
                        except BrokenProcessPool:
                            source.appendleft(p)
                            break
                    if not running:
                        break
                    done, _ = wait(running, timeout=0.25, return_when=FIRST_COMPLETED)
                    for fut in done:
                        p = running.pop(fut)
                        result = _outcome(fut)
                        if result is None:
                            broken.append(p)
                        else:
                            finish(p, result)
            except KeyboardInterrupt:  # SIGINT had a handler of its own: ctrl_c() left it
                presses.append(time.monotonic())
            if presses:
                _stop(ex, running, presses, finish)
                ex.shutdown(wait=True, cancel_futures=True)
                break
            ex.shutdown(wait=True)
            # the pool is shut down: every worker is gone, so a point in flight holds a stale lock
            suspects = [p for p in broken if _stale_lock(p)] or broken
            for p in reversed(broken):
                if p in suspects:
                    died(p)
                else:
                    queue.appendleft(p)  # never started: not its fault
        if presses:
            raise Interrupted(_interrupted(stopped, len(queue) + len(alone)))


STOP_GRACE_S = 10.0  # after Ctrl-C, how long running points get to commit and stop


@contextmanager
def ctrl_c() -> Iterator[list[float]]:
    """While the body runs, Ctrl-C (SIGINT) only appends its time to the list it yields: the
    driver notices it between two waits, never mid-write of the sweep manifest. Only where
    SIGINT has Python's default handler and we are on the main thread (elsewhere Ctrl-C is as
    it was: ignored, or a KeyboardInterrupt)."""
    presses: list[float] = []
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield presses
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: presses.append(time.monotonic()))
    try:
        yield presses
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop(ex: Any, running: dict[Future[dict[str, Any]], Point], presses: list[float],
          finish: OnResult) -> None:
    """Interrupt the running points (SIGINT to the pool's workers: a Ctrl-C sent to the driver
    alone reaches them too) and collect their results; a point still running after
    ``STOP_GRACE_S``, or at a second Ctrl-C, has its worker killed (a rerun takes its lock
    over)."""
    from concurrent.futures import wait

    procs = list((getattr(ex, "_processes", None) or {}).values())
    deadline, pressed = time.monotonic() + STOP_GRACE_S, len(presses)
    try:
        while running and time.monotonic() < deadline and len(presses) == pressed:
            for proc in procs:  # again each round: one may have picked its point up just now
                _signal(proc.pid, signal.SIGINT)  # ignored by an idle or interrupted worker
            done, _ = wait(running, timeout=0.2)
            for fut in done:
                p = running.pop(fut)
                finish(p, _outcome(fut) or {"status": "interrupted",
                                            "error": "its worker process died"})
    except KeyboardInterrupt:
        pass
    if running:
        for proc in procs:
            _signal(proc.pid, signal.SIGKILL)
        why = ("a second Ctrl-C" if len(presses) > pressed else
               f"it did not stop within {STOP_GRACE_S:g} s of Ctrl-C")
        for p in list(running):
            finish(p, {"status": "interrupted", "error": f"its worker was killed: {why} (a "
                       "rerun resumes it from its last commit)"})
        running.clear()


def _signal(pid: int | None, signum: int) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _outcome(fut: Future[dict[str, Any]]) -> dict[str, Any] | None:
    """A point's result from its future; None if the pool broke (a worker died)."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        return fut.result()
    except BrokenProcessPool:
        return None
    except KeyboardInterrupt:  # Ctrl-C reached the worker outside the run
        return {"status": "interrupted"}
    except Exception as exc:  # noqa: BLE001  (e.g. a result that does not pickle)
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def _interrupted(stopped: dict[str, dict[str, Any]], not_started: int) -> str:
    """What a Ctrl-C kept: each interrupted point's committed generations."""
    parts = []
    for name, res in stopped.items():
        done = res.get("completed")
        kept = ("nothing kept" if done == 0 else "generation 0 kept" if done == 1 else
                f"generations 0-{done - 1} kept" if done else "kept what it committed")
        parts.append(f"{name}: {kept}" + (f" ({res['error']})" if res.get("error") else ""))
    lines = "".join(f"\n  - {part}" for part in parts)
    left = f"; {not_started} point{'s' * (not_started != 1)} not started" if not_started else ""
    return (f"sweep interrupted{left}; the sweep directory keeps every committed generation; "
            f"rerun the sweep to resume{':' if lines else ''}{lines}")


def run_ray(points: list[Point], workers: int | None, address: str | None,
            on_result: OnResult) -> None:
    """Ray core tasks, one per point (1 CPU each). A task whose worker dies is retried once by
    Ray itself (``max_retries=1``); the retry takes the dead worker's run lock over."""
    try:
        import ray
    except ImportError as exc:
        raise RunError("backend 'ray' needs Ray: pip install 'collapselab[ray]' "
                       f"(or: pip install 'ray[default]'); import failed: {exc}") from None
    if not ray.is_initialized():
        try:
            if address:  # an existing cluster: its resources decide the parallelism
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers or default_workers(), include_dashboard=False,
                         log_to_driver=False)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            raise RunError(f"cannot start or reach {where}: {exc} (on the head node, `ray status` "
                           "checks the cluster; ray://host:10001 needs the client port open)"
                           ) from None
    unplaceable = _unplaceable(points, ray.nodes())
    if unplaceable:  # Ray would keep them pending forever
        raise RunError(f"{len(unplaceable)} point(s) ask for more than any node of the Ray cluster "
                       "has; nothing was dispatched (change their resources, or add such nodes: "
                       "ray start --num-gpus / --resources):\n" + "\n".join(unplaceable))
    task = ray.remote(num_cpus=1, max_retries=RETRIES)(_run_point_ray)
    refs = {task.options(**ray_options(p.resources)).remote(_payload(p)): p for p in points}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            p = refs[ref]
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the worker died twice, or the node went away
                result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            on_result(p, result)


def _run_point_ray(config: dict[str, Any]) -> dict[str, Any]:
    """``run_point`` in a Ray task, with the resources Ray gave it."""
    import ray

    assigned = ray.get_runtime_context().get_assigned_resources()
    return {**run_point(config), "resources": dict(sorted(assigned.items()))}


def ray_options(resources: dict[str, float]) -> dict[str, Any]:
    """A point's ``resources`` as ``ray.remote(...).options`` keywords."""
    out: dict[str, Any] = {k: v for k, v in resources.items() if k in RAY_NAMES}
    if "memory" in out:
        out["memory"] = int(out["memory"])
    custom = {k: v for k, v in resources.items() if k not in RAY_NAMES}
    return out | ({"resources": custom} if custom else {})


def _needs(resources: dict[str, float]) -> dict[str, float]:
    """What a task asks of one node, in the node's names (``CPU``, ``GPU``, ``memory``, custom)."""
    need = {RAY_NAMES.get(k, k): v for k, v in {"num_cpus": 1, **resources}.items()}
    return {k: v for k, v in need.items() if v > 0}


def _unplaceable(points: list[Point], nodes: list[dict[str, Any]]) -> list[str]:
    """``point <name>: ...`` for each point no live node can hold."""
    offers = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    shown = "; ".join(_offer(o) for o in offers[:3]) + ("; ..." if len(offers) > 3 else "")
    out = []
    for p in points:
        need = _needs(p.resources)
        if not any(all(o.get(k, 0) >= v for k, v in need.items()) for o in offers):
            asked = ", ".join(f"{k}: {v:g}" for k, v in {"num_cpus": 1, **p.resources}.items())
            out.append(f"  - point {p.name} asks for {{{asked}}}; the nodes offer: {shown or 'nothing'}")
    return out


def _offer(resources: dict[str, float]) -> str:
    """One node's resources, as a user reads them (no per-node ids, memory in GiB)."""
    parts = []
    for k, v in sorted(resources.items(), key=lambda kv: (kv[0] not in ("CPU", "GPU"), kv[0])):
        if k.startswith("node:") or k.startswith("accelerator_type:") or k == "object_store_memory":
            continue
        parts.append(f"{k} {v / 2**30:.1f} GiB" if k == "memory" else f"{k} {v:g}")
    return "{" + ", ".join(parts) + "}"


def _payload(p: Point) -> dict[str, Any]:
    return p.config.model_dump(mode="json")


def _stale_lock(p: Point) -> bool:
    return lock_state(p.config.run_dir) == "stale"


# --- the driver --------------------------------------------------------------------------------


@dataclass
class SweepResult:
    root: Path
    statuses: dict[str, str]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def check_configs(sweep: Sweep, checked: frozenset[str] = frozenset()) -> frozenset[str]:
    """Refuse (``RunError``, nothing written) when a point's run directory was started with
    another config than the sweep now gives that point: a changed sweep must not skip or resume
    runs of the old one, as a single run refuses to resume a run of another config. Returns the
    points whose run directory holds their config; those in ``checked`` are not read again."""
    problems, same = [], set(checked)
    for p in sweep.points:
        store = RunStore(p.config.run_dir)
        if p.name in checked or not store.exists:
            continue
        try:
            old = resolved(store.config())
        except RunError as exc:
            problems.append(f"point {p.name}: {exc}")
            continue
        new = resolved(p.config)
        if old != new:
            problems.append(f"point {p.name}: {store.root} was started with "
                            f"{_difference(old, new)}")
        else:
            same.add(p.name)
    if problems:
        lines = "\n".join(f"  - {q}" for q in problems)
        n = len(problems)
        raise RunError(f"{n} point{'s' * (n > 1)} of this sweep already "
                       f"{'have run directories' if n > 1 else 'has a run directory'} started "
                       f"with a different config; choose another out_dir or name (or diff "
                       f"against each run's config.yaml):\n{lines}")
    return frozenset(same)


def resolved(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with every default filled in, as a worker runs it (``run_point`` validates the
    point's config as plain data): a config without ``metrics:`` names its default metrics bare,
    the run's stored config names them with their parameters. A config that no longer validates
    (a component since removed) is compared as it is."""
    try:
        return validate(cfg.model_dump(mode="json"))
    except (ConfigError, pydantic.ValidationError):
        return cfg


def _difference(old: ExperimentConfig, new: ExperimentConfig) -> str:
    """``generations=5, the sweep asks for generations=8``: the first differing dotted key."""
    a, b = _flat(old.model_dump(mode="json")), _flat(new.model_dump(mode="json"))
    keys = [k for k in [*a, *(k for k in b if k not in a)]
            if a.get(k, _MISSING) != b.get(k, _MISSING)]
    if not keys:
        return "a different config"  # equal dumps, unequal models: not expected
    key, more = keys[0], len(keys) - 1

    def show(flat: dict[str, Any]) -> str:
        return f"{key}={json.dumps(flat[key])}" if key in flat else f"no {key}"

    also = f" (and {more} other key{'s' * (more > 1)})" if more else ""
    return f"{show(a)}, the sweep asks for {show(b)}{also}"


_MISSING = object()


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def point_status(p: Point) -> str:
    """From the run directory: complete / stopped / interrupted / missing."""
    store = RunStore(p.config.run_dir)
    if not store.exists:
        return "missing"
    status = store.manifest().get("status", "running")
    return status if status in FINISHED else "interrupted"


def run_sweep(sweep: Sweep, progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Run every point not yet finished; returns what ran, what was skipped and what failed."""
    spec = sweep.spec
    checked = check_configs(sweep)  # before anything is written or dispatched, for any backend
    try:
        sweep.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # read-only, no permission: name the folder, not an errno
        raise cannot_write(Path(exc.filename or sweep.root), exc) from None
    with sweep_lock(sweep.root):
        check_configs(sweep, checked)  # a driver may have begun runs since; we hold the lock now
        manifest = _load_manifest(sweep)
        write_atomic(sweep.root / "sweep.yaml", _spec_yaml(spec).encode())
        todo, result = [], SweepResult(sweep.root, {})
        for p in sweep.points:
            status = point_status(p)
            entry = manifest["points"][p.name]
            entry["status"] = status
            if status in FINISHED:
                result.skipped.append(p.name)
            else:
                todo.append(p)
            result.statuses[p.name] = status
        manifest["invocations"].append({"started": time.time(), "backend": spec.backend,
                                        "address": spec.address, "points": len(todo)})
        _save_manifest(sweep, manifest)
        total, done = len(sweep.points), len(result.skipped)
        if progress:
            progress(done, total)

        def on_result(p: Point, res: dict[str, Any]) -> None:
            nonlocal done
            entry = manifest["points"][p.name]
            entry["attempts"] = entry.get("attempts", 0) + 1
            entry.update({k: res.get(k) for k in ("status", "started", "finished", "wall_s",
                                                  "host", "pid", "resumed_from", "completed")})
            entry["error"] = res.get("error")
            if RESOURCES in res:  # what Ray gave the point's task
                entry[RESOURCES] = res[RESOURCES]
            entry["worker_deaths"] = entry.get("worker_deaths", 0) + res.get("worker_deaths", 0)
            result.statuses[p.name] = res["status"]
            if res["status"] == "interrupted":  # by Ctrl-C: not done, resumed by a rerun
                _save_manifest(sweep, manifest)
                return
            if res["status"] == "failed":
                result.failed[p.name] = res.get("error", "?")
                log.error("%s failed: %s\n%s", p.name, res.get("error"), res.get("traceback", ""))
            else:
                result.ran.append(p.name)
            _save_manifest(sweep, manifest)
            done += 1
            if progress:
                progress(done, total)

        try:
            if todo and spec.backend == "ray":
                run_ray(todo, spec.workers, spec.address, on_result)
            elif todo:
                run_local(todo, spec.workers or min(default_workers(), len(todo)), on_result)
        except KeyboardInterrupt:
            manifest["invocations"][-1]["interrupted"] = time.time()
            _save_manifest(sweep, manifest)
            raise
        manifest["invocations"][-1]["finished"] = time.time()
        _save_manifest(sweep, manifest)
    return result


def _spec_yaml(spec: SweepSpec) -> str:
    import yaml

    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def _load_manifest(sweep: Sweep) -> dict[str, Any]:
    path = sweep.manifest_path
    old = json.loads(path.read_text()) if path.is_file() else {}
    old_points = {e["name"]: e for e in old.get("points", [])}
    points = {}
    for p in sweep.points:
        entry = old_points.get(p.name, {"attempts": 0})
        entry.update(name=p.name, overrides=p.overrides,
                     run_dir=str(p.config.run_dir.relative_to(sweep.root)))
        points[p.name] = entry
    return {"created": old.get("created", time.time()), "sweep_file": sweep.source,
            "swept_keys": list(dict.fromkeys(k for p in sweep.points for k in p.overrides)),
            "invocations": old.get("invocations", []), "points": points}


def _save_manifest(sweep: Sweep, manifest: dict[str, Any]) -> None:
    out = {**manifest, "points": list(manifest["points"].values()), "updated": time.time()}
    write_atomic(sweep.manifest_path, json.dumps(jsonable(out), indent=2).encode())


@contextmanager
def sweep_lock(root: Path) -> Iterator[None]:
    """One driver per sweep directory (which is what lets workers take stale run locks over):
    the same kernel lock as a run's. A driver that died left only a record, taken over."""
    with locked(root, takeover=True, what="sweep"):
        yield


def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise RunError(f"{root} is not a sweep directory (no {MANIFEST})")
    return json.loads(path.read_text())
