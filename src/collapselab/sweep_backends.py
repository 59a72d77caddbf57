"""Where a sweep's points run: a local process pool or Ray tasks, each point in a worker that
runs it with the run recipe (``collapselab.recipe``) and reports a result instead of raising."""

from __future__ import annotations

import logging
import os
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
from pathlib import Path
from typing import Any

from collapselab.config import validate
from collapselab.errors import Interrupted, RunError
from collapselab.lock import lock_state
from collapselab.store import RunStore
from collapselab.sweep_spec import Point

log = logging.getLogger(__name__)

RETRIES = 1  # a point whose worker died is run once more
RAY_NAMES = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}  # option -> node resource


# --- the worker's side -------------------------------------------------------------------------


def run_point(config: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) one point in a worker; never raises for a problem with the point itself.

    ``config`` is the resolved experiment config as plain data, so the same call works in a
    forked process and in a Ray worker on another machine."""
    from collapselab.recipe import run_experiment

    started = time.time()
    result: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(),
                              "started": started}
    try:
        cfg = validate(config)
        before = RunStore(cfg.run_dir).completed()
        # takeover: the sweep lock makes this driver the only one, so a lock here is stale;
        # a tracker run per point, tagged with the sweep
        store, _ = run_experiment(cfg, resume=True, takeover=True)
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
        for p in list(running.values()):
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


