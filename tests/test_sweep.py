"""Sweeps: expansion and validation, local pool vs Ray (same files), kill + resume, worker death,
aggregation (tidy table, band report), compare. Tiny Gaussian runs: the whole file in seconds."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from collapselab.aggregate import TIDY_COLUMNS, group_label, tidy_frame, write_sweep_report
from collapselab.cli import app
from collapselab.errors import ConfigError, RunError
from collapselab.store import RunStore
from collapselab.sweep import load_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]

GENS = 12
SPEC = {  # 2 policies x 2 sizes x 2 seeds = 8 points, ~0.1-0.3 s each
    "base": {
        "generations": GENS, "chains": 20,
        "model": {"family": "gaussian", "variance": "mle"},
        "data": {"source": "normal", "size": 10, "dim": 1},
        "metrics": ["variance_ratio", "w2"],
    },
    "grid": {"policy.name": ["replace", "accumulate"], "data.size": [10, 20], "seed": [0, 1]},
}
NAMES = [f"policy-{p}__size-{n}__seed-{s}" for p in ("replace", "accumulate") for n in (10, 20)
         for s in (0, 1)]


def sweep_at(out: Path, **fields):
    return load_sweep(raw={**SPEC, "out_dir": str(out), **fields})


def metric_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the only non-deterministic column."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The sweep, run once, uninterrupted, on the local pool."""
    out = tmp_path_factory.mktemp("ref") / "sweep"
    result = run_sweep(sweep_at(out, backend="local", workers=2))
    assert result.failed == {} and sorted(result.ran) == sorted(NAMES)
    return out


def test_points_are_named_from_their_overrides_and_crossed_with_points(tmp_path):
    sw = load_sweep(raw={"base": SPEC["base"], "grid": {"seed": [0, 1]}, "out_dir": str(tmp_path),
                         "points": [{"policy.name": "replace"},
                                    {"policy.name": "real_fraction", "policy.real_fraction": 0.1}]})
    assert [p.name for p in sw.points] == [
        "policy-replace__seed-0", "policy-real_fraction__real_fraction-0.1__seed-0",
        "policy-replace__seed-1", "policy-real_fraction__real_fraction-0.1__seed-1"]
    assert sw.points[1].config.policy.params == {"real_fraction": 0.1}
    assert all(p.config.run_dir == tmp_path / p.name for p in sw.points)


def test_every_bad_point_is_reported_before_anything_runs(tmp_path):
    raw = {"base": SPEC["base"], "out_dir": str(tmp_path / "bad"),
           "grid": {"generations": [0, 10], "policy.name": ["replace", "replac"]}}
    with pytest.raises(ConfigError) as info:
        load_sweep(raw=raw)
    assert info.value.problems == [
        "point generations-0__policy-replace: generations: Input should be greater than or "
        "equal to 1; got 0",
        "point generations-0__policy-replac: generations: Input should be greater than or "
        "equal to 1; got 0",
        "point generations-0__policy-replac: policy.name: Unknown policy 'replac'. Did you mean: "
        "replace? Available: accumulate, accumulate_subsample, fresh, real_fraction, replace",
        "point generations-10__policy-replac: policy.name: Unknown policy 'replac'. Did you mean: "
        "replace? Available: accumulate, accumulate_subsample, fresh, real_fraction, replace",
    ]
    assert not (tmp_path / "bad").exists()


def test_sweep_fields_and_base_overrides_from_the_command_line(tmp_path):
    sw = load_sweep(raw={**SPEC, "out_dir": str(tmp_path)},
                    overrides=["backend=ray", "address=auto", "generations=3", "grid.seed=[5]"])
    assert (sw.spec.backend, sw.spec.address) == ("ray", "auto")
    assert {p.config.generations for p in sw.points} == {3}
    assert {p.config.seed for p in sw.points} == {5} and len(sw.points) == 4


def test_shipped_sweeps_expand_and_validate():
    sizes = {}
    for path in sorted((ROOT / "configs" / "sweeps").glob("*.yaml")):
        sizes[path.stem] = len(load_sweep(path).points)
    assert sizes == {"curation": 20, "curation_correct": 15, "curation_correct_language": 20,
                     "gaussian_table": 40,
                     "language_policies": 15}


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance for the module (starting one takes seconds): 2 CPUs and one unit
    of a custom resource, ``probe``."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'collapselab[ray]')")
    ray.init(num_cpus=2, resources={"probe": 1}, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_backend_writes_the_same_runs_as_the_local_pool(reference, tmp_path, ray_cluster):
    result = run_sweep(sweep_at(tmp_path / "ray", backend="ray"))
    assert result.failed == {} and sorted(result.ran) == sorted(NAMES)
    for name in NAMES:  # deterministic from config + seed, whichever backend ran it
        assert metric_rows(tmp_path / "ray" / name) == metric_rows(reference / name), name


def test_ray_tasks_get_the_resources_their_points_ask_for(tmp_path, ray_cluster):
    base = {**SPEC["base"], "generations": 2}
    sw = load_sweep(raw={"base": base, "backend": "ray", "out_dir": str(tmp_path),
                         "resources": {"num_cpus": 1, "probe": 0.5},
                         "points": [{"seed": 0}, {"seed": 1, "resources": {"probe": 1}}]})
    assert [p.resources for p in sw.points] == [{"num_cpus": 1, "probe": 0.5},
                                                {"num_cpus": 1, "probe": 1}]
    result = run_sweep(sw)
    assert result.failed == {} and sorted(result.ran) == ["seed-0", "seed-1"]
    points = {e["name"]: e for e in json.loads((tmp_path / "sweep.json").read_text())["points"]}
    assert points["seed-0"]["resources"] == {"CPU": 1.0, "probe": 0.5}  # what Ray gave the task
    assert points["seed-1"]["resources"] == {"CPU": 1.0, "probe": 1.0}


def test_a_point_no_ray_node_can_hold_is_refused_before_anything_runs(tmp_path, ray_cluster):
    sw = load_sweep(raw={"base": SPEC["base"], "backend": "ray", "out_dir": str(tmp_path),
                         "points": [{"seed": 0}, {"seed": 1, "resources": {"num_gpus": 1}},
                                    {"seed": 2, "resources": {"probe": 2, "num_cpus": 4}}]})
    with pytest.raises(RunError) as info:
        run_sweep(sw)
    lines = str(info.value).splitlines()
    assert lines[0] == ("2 point(s) ask for more than any node of the Ray cluster has; nothing was "
                        "dispatched (change their resources, or add such nodes: ray start "
                        "--num-gpus / --resources):")
    assert re.fullmatch(r"  - point seed-1 asks for \{num_cpus: 1, num_gpus: 1\}; the nodes offer: "
                        r"\{CPU 2, memory [0-9.]+ GiB, probe 1\}", lines[1]), lines[1]
    assert lines[2].startswith("  - point seed-2 asks for {num_cpus: 4, probe: 2}; "), lines[2]
    assert not any((tmp_path / p.name).exists() for p in sw.points)


def test_bad_resources_are_named_per_point(tmp_path):
    raw = {"base": SPEC["base"], "out_dir": str(tmp_path), "resources": {"num_gpus": 1},
           "points": [{"seed": 0, "resources": {"num_gpus": -1}}, {"seed": 1, "resources": 2}]}
    with pytest.raises(ConfigError) as info:
        load_sweep(raw=raw)
    assert info.value.problems == [
        "point seed-0: resources.num_gpus: Input should be greater than or equal to 0; got -1",
        "point seed-1: resources: Input should be a valid dictionary; got 2"]


def test_killed_sweep_resumes_without_recomputing_finished_runs(reference, tmp_path):
    out = tmp_path / "killed"
    code = ("import sys; from collapselab.sweep import load_sweep, run_sweep; "
            f"run_sweep(load_sweep(raw={{**{SPEC!r}, 'out_dir': {str(out)!r}, 'workers': 1}}))")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while sum(_complete(out / n) for n in NAMES) < 3:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its pool worker, mid-point
        proc.wait()
    finished = {n: RunStore(out / n).manifest()["updated"] for n in NAMES if _complete(out / n)}
    assert 3 <= len(finished) < len(NAMES)

    result = run_sweep(sweep_at(out, workers=2))
    assert sorted(result.skipped) == sorted(finished) and result.failed == {}
    assert sorted(result.ran) == sorted(set(NAMES) - set(finished))
    for name, stamp in finished.items():  # not recomputed: the run's commit point is untouched
        assert RunStore(out / name).manifest()["updated"] == stamp
    manifest = json.loads((out / "sweep.json").read_text())
    assert {p["status"] for p in manifest["points"]} == {"complete"}
    assert len(manifest["invocations"]) == 2
    pd.testing.assert_frame_equal(tidy_frame(out), tidy_frame(reference))


def test_a_worker_killed_mid_point_is_retried_once(reference, tmp_path):
    out = tmp_path / "worker"
    sw = sweep_at(out, workers=2)
    killed: list[str] = []

    def kill_first_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for name in NAMES:
                lock = out / name / ".lock"
                try:
                    pid = json.loads(lock.read_text())["pid"]
                except (OSError, ValueError, KeyError):
                    continue
                if pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(name)
                    return
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_first_worker)
    watcher.start()
    result = run_sweep(sw)
    watcher.join()
    assert len(killed) == 1 and result.failed == {}
    entries = {p["name"]: p for p in json.loads((out / "sweep.json").read_text())["points"]}
    assert entries[killed[0]]["worker_deaths"] == 1 and entries[killed[0]]["status"] == "complete"
    assert {e["status"] for e in entries.values()} == {"complete"}
    pd.testing.assert_frame_equal(tidy_frame(out), tidy_frame(reference))


def test_a_changed_sweep_is_refused_before_anything_runs(reference, tmp_path):
    """A rerun whose points now have another config than their run directories hold is
    refused (as a single run's resume is), naming each point and a differing key, and changes
    no file; the CLI exits 2."""
    before = _snapshot(reference)
    with pytest.raises(RunError) as info:
        run_sweep(load_sweep(raw={**SPEC, "out_dir": str(reference)},
                             overrides=[f"generations={GENS + 1}"]))
    for name in NAMES:
        assert (f"point {name}: {reference / name} was started with generations={GENS}, the "
                f"sweep asks for generations={GENS + 1}\n") in str(info.value) + "\n"
    assert _snapshot(reference) == before

    changed = {**SPEC, "out_dir": str(reference), "grid": {**SPEC["grid"], "seed": [1, 2]}}
    (tmp_path / "s.yaml").write_text(json.dumps(changed))  # JSON is YAML
    res = CliRunner().invoke(app, ["sweep", str(tmp_path / "s.yaml"), "chains=21"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "4 points of this sweep already have run directories" in text  # the seed-1 points
    assert "was started with chains=20, the sweep asks for chains=21" in text
    assert _snapshot(reference) == before


LONG_GENS = 3000  # ~3 s a point here: still running when both have committed once (a commit a second)
LONG = {  # 4 points, long enough to be interrupted mid-run
    "base": {**SPEC["base"], "generations": LONG_GENS, "metrics": ["variance_ratio"],
             "policy": {"name": "real_fraction", "real_fraction": 0.5}},
    "grid": {"seed": [0, 1, 2, 3]}, "workers": 2,
}


@pytest.mark.slow  # flaky on a loaded 2-core CI (the sweep ends before ^C lands): issue to follow
@pytest.mark.parametrize("to", ["group", "driver"])
def test_ctrl_c_stops_a_local_sweep_and_a_rerun_resumes_it(tmp_path, to):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it, or to the driver alone):
    the queued points never start, the running ones commit what they finished and stop, the
    command exits 130 within seconds saying what was kept; a rerun resumes them."""
    out = tmp_path / "sweep"
    (tmp_path / "s.yaml").write_text(json.dumps({**LONG, "out_dir": str(out)}))
    cmd = [sys.executable, "-m", "collapselab", "sweep", str(tmp_path / "s.yaml"), "--no-report"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # both workers are running a point
            started = {d.name for d in out.glob("seed-*") if RunStore(d).exists}
            if len(started) == 2:
                break
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # some generations finish (they are committed once a second, or at ^C)
        sent = time.monotonic()
        if to == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        output = proc.communicate(timeout=10)[0]
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130 and took < 5, (took, output)
    assert {d.name for d in out.glob("seed-*")} == started  # no queued point started
    kept = {n: RunStore(out / n).manifest() for n in started}
    assert {m["status"] for m in kept.values()} == {"interrupted"}
    assert all(0 < m["completed_generations"] < LONG_GENS for m in kept.values())
    text = " ".join(output.split())
    assert "sweep interrupted; 2 points not started" in text and "Traceback" not in output
    for name, m in kept.items():
        assert f"{name}: generations 0-{m['completed_generations'] - 1} kept" in text
    manifest = json.loads((out / "sweep.json").read_text())
    assert "interrupted" in manifest["invocations"][-1]
    assert {p["name"]: p["status"] for p in manifest["points"] if p["name"] in started} == {
        n: "interrupted" for n in started}
    if to == "driver":
        return
    result = run_sweep(load_sweep(raw={**LONG, "out_dir": str(out)}))
    assert sorted(result.ran) == [f"seed-{s}" for s in range(4)] and result.failed == {}
    entries = {p["name"]: p for p in json.loads((out / "sweep.json").read_text())["points"]}
    for name, m in kept.items():
        assert entries[name]["resumed_from"] == m["completed_generations"]
        assert entries[name]["status"] == "complete"


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in [root, *root.rglob("*")]}


def test_a_point_still_running_past_the_grace_after_ctrl_c_is_reported_by_its_point(monkeypatch):
    """Its worker is killed and the point (not its future) is reported interrupted, with why."""
    from concurrent.futures import Future

    from collapselab import sweep_backends

    monkeypatch.setattr(sweep_backends, "STOP_GRACE_S", 0.0)
    point, seen = object(), []
    sweep_backends._stop(object(), {Future(): point}, [time.monotonic()],
                         lambda p, result: seen.append((p, result)))
    assert seen == [(point, {"status": "interrupted", "error": (
        "its worker was killed: it did not stop within 0 s of Ctrl-C (a rerun resumes it from "
        "its last commit)")})]


def test_tidy_table_and_band_report(reference):
    report = write_sweep_report(reference)
    frame = pd.read_csv(reference / "tidy.csv")
    assert list(frame.columns) == [*TIDY_COLUMNS, "policy.name", "data.size"]
    assert set(frame["metric"]) == {"variance_ratio", "w2", "log_variance_ratio", "w2_sq"}
    assert len(frame) == len(NAMES) * GENS * 4
    assert set(frame["group"]) == {f"policy.name={p}, data.size={n}"
                                   for p in ("replace", "accumulate") for n in (10, 20)}
    if (reference / "tidy.parquet").exists():
        pd.testing.assert_frame_equal(pd.read_parquet(reference / "tidy.parquet"),
                                      tidy_frame(reference))
    page = report.read_text()
    assert page.count('src="data:image/png;base64,') == 4  # one band plot per metric
    assert "95% t-interval" in page and "t(0.975, n−1)" in page
    costs = pd.read_csv(reference / "costs.csv")
    assert costs["generated"].tolist() == [GENS * 20 * n for n in (10, 10, 20, 20) * 2]


def test_cli_report_of_a_sweep_dir_and_compare(reference, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(reference), "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert "Sweep report" in (tmp_path / "r.html").read_text()
    a, b = reference / NAMES[0], reference / NAMES[4]
    res = runner.invoke(app, ["compare", str(a), str(b), "-o", str(tmp_path / "c.html")])
    assert res.exit_code == 0, res.output
    assert "variance_ratio" in res.output
    assert (tmp_path / "c.png").stat().st_size > 0


def _complete(run_dir: Path) -> bool:
    try:
        return RunStore(run_dir).manifest()["status"] == "complete"
    except (OSError, ValueError, Exception):
        return False


def test_group_labels_read_components_as_calls():
    assert group_label({"policy.name": "replace", "data.size": 10, "seed": 3}) == (
        "policy.name=replace, data.size=10")
    assert group_label({"curation": [{"name": "verifier", "top": 0.5,
                                      "fn": "collapselab.curation:true_loglik"}], "seed": 0}) == (
        "curation=[verifier(top=0.5, fn=true_loglik)]")
    assert group_label({"curation": [], "seed": 1}) == "curation=[]"
