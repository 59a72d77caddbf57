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

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from collapselab.config import ExperimentConfig, validate
from collapselab.errors import ConfigError, RunError
from collapselab.formats import jsonable
from collapselab.lock import locked
from collapselab.store import RunStore, cannot_write, write_atomic
from collapselab.sweep_backends import default_workers, run_local, run_ray
from collapselab.sweep_spec import (
    MANIFEST,
    RESOURCES,
    Point,
    Sweep,
    SweepSpec,
    is_sweep_dir,
    load_sweep,
    read_manifest,
)

__all__ = ["MANIFEST", "Point", "Sweep", "SweepResult", "SweepSpec", "check_configs",
           "is_sweep_dir", "load_sweep", "point_status", "read_manifest", "resolved", "run_sweep",
           "sweep_lock"]

log = logging.getLogger(__name__)

FINISHED = ("complete", "stopped")  # a run that ended (stopped = degenerate, by its config)


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


