"""Runs logged to MLflow: against a real ``mlflow server`` on localhost and against the local
file store: the resolved config as params, every generation's metrics at step = generation,
the report and the run directory as artifacts; sweeps one run per point, tagged; a tracker that
is down costs one warning, never the run. And to Weights & Biases offline: the run read back from
its ``.wandb`` file holds the config and every generation's metrics; W&B-only fields are refused
for MLflow, naming the field."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow", reason="mlflow not installed (pip install -e '.[dev]')")
from mlflow.tracking import MlflowClient  # noqa: E402

import collapselab  # noqa: E402
from collapselab.store import RunStore  # noqa: E402

GAUSS = {"name": "g", "generations": 3, "chains": 8, "model": {"family": "gaussian"},
         "data": {"source": "normal", "size": 20}, "metrics": ["variance_ratio", "w2"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def the_run(uri: str, experiment: str = "collapselab"):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    return client, runs


def check_logged(client: MlflowClient, run, store: RunStore) -> None:
    assert run.info.status == "FINISHED" and run.data.tags["collapselab.status"] == "complete"
    params = run.data.params
    assert params["policy.name"] == "replace" and params["generations"] == "3"
    assert params["data.size"] == "20" and params["metrics"].startswith('[{"name": "variance_ratio"')
    rows = store.metrics()
    for key in ("variance_ratio", "w2", "variance_ratio.theory"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == [(r["generation"], pytest.approx(r[key])) for r in rows], key
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "run"} <= top
    inside = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert {"run/config.yaml", "run/metrics.jsonl", "run/manifest.json"} <= inside


def test_a_run_is_logged_to_the_local_file_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"file:{tmp_path / 'mlruns'}"
    run = collapselab.run(GAUSS, out_dir=str(tmp_path / "runs"), progress=False,
                          **{"tracking.backend": "mlflow", "tracking.uri": uri})
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client, runs = the_run(uri)
    assert len(runs) == 1 and runs[0].info.run_name == "g"
    assert runs[0].data.tags["collapselab.run_dir"] == str(run.root.resolve())
    check_logged(client, runs[0], RunStore(run.root))


def test_each_point_of_a_sweep_is_one_run_tagged_with_the_sweep(tmp_path):
    uri = f"file:{tmp_path / 'mlruns'}"
    spec = {"base": {**GAUSS, "tracking": {"backend": "mlflow", "uri": uri,
                                           "experiment": "sweeps", "artifacts": False}},
            "grid": {"policy.name": ["replace", "accumulate"]}, "backend": "local",
            "workers": 1, "out_dir": str(tmp_path / "sw")}
    result = collapselab.sweep(spec, progress=False)
    assert len(result.runs) == 2 and not result.failed
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    _, runs = the_run(uri, "sweeps")
    assert len(runs) == 2
    assert {r.data.tags["collapselab.sweep_name"] for r in runs} == {"sw"}
    assert {r.data.tags["collapselab.point.policy.name"] for r in runs} == {"replace",
                                                                            "accumulate"}
    assert {r.data.params["policy.name"] for r in runs} == {"replace", "accumulate"}


def test_a_tracker_that_is_down_costs_one_warning_never_the_run(tmp_path, caplog):
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    tic = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="collapselab.tracking"):
        run = collapselab.run(GAUSS, out_dir=str(tmp_path / "runs"), progress=False,
                              **{"tracking.backend": "mlflow", "tracking.uri": down})
    assert run.status == "complete" and len(run.metrics()) == 3
    warnings = [r for r in caplog.records if r.name == "collapselab.tracking"]
    assert len(warnings) == 1 and down in warnings[0].getMessage()
    assert "the run goes on without it" in warnings[0].getMessage()
    assert time.perf_counter() - tic < 60  # no minutes of retries


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real tracking server on localhost (file backend: no database migrations to wait for;
    artifacts served by the server)."""
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if exe is None:
        pytest.skip("no mlflow executable")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"file:{root / 'mlruns'}",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "wb"),
        env={**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"}, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start in 120 s")
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn workers (its own group)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_run_is_logged_live_to_a_real_mlflow_server(mlflow_server, tmp_path):
    from typer.testing import CliRunner

    from collapselab.cli import app

    cfg = tmp_path / "g.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(GAUSS))
    out = CliRunner().invoke(app, ["run", str(cfg), f"out_dir={tmp_path / 'runs'}",
                                   "tracking.backend=mlflow", f"tracking.uri={mlflow_server}",
                                   "tracking.experiment=live"])
    assert out.exit_code == 0, out.output
    client, runs = the_run(mlflow_server, "live")
    assert len(runs) == 1
    check_logged(client, runs[0], RunStore(tmp_path / "runs" / "g"))


# --- Weights & Biases, offline: the run read back from its .wandb file -----------------------

def wandb_records(path: Path):
    """The records of a ``.wandb`` file (W&B's run log: a LevelDB-style log of 32 KiB blocks,
    each record a ``wandb_internal_pb2.Record``, split FIRST/MIDDLE/LAST across blocks)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)  # its header
    pos, part = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        part += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(part)
            part = b""
            yield record


def item_key(item) -> str:
    """A logged item's key: ``key``, or (as wandb-core writes them) its ``nested_key`` path."""
    return item.key or "/".join(item.nested_key)


def test_a_wandb_offline_run_holds_the_config_and_every_generations_metrics(tmp_path):
    import json

    pytest.importorskip("wandb", reason="wandb not installed (pip install -e '.[track]')")
    run = collapselab.run(GAUSS, out_dir=str(tmp_path / "runs"), progress=False,
                          **{"tracking.backend": "wandb", "tracking.dir": str(tmp_path / "wb"),
                             "tracking.project": "collapse-tests"})
    (found,) = (tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb")
    records = list(wandb_records(found))
    kinds = [r.WhichOneof("record_type") for r in records]
    (started,) = [r.run for r in records if r.HasField("run")]
    assert started.project == "collapse-tests" and started.display_name == "g"
    config = {item_key(i): json.loads(i.value_json) for i in started.config.update}
    assert {k: config[k] for k in run.config.model_dump(mode="json")} == run.config.model_dump(
        mode="json")
    assert config["collapselab"]["run_dir"] == str(run.root.resolve())

    history: dict[int, dict] = {}  # step -> what was logged at it (wandb may split a step)
    for r in records:
        if r.HasField("history"):
            history.setdefault(int(r.history.step.num), {}).update(
                {item_key(i): json.loads(i.value_json) for i in r.history.item})
    rows = RunStore(run.root).metrics()
    assert sorted(history) == [r["generation"] for r in rows] == [0, 1, 2]
    for row in rows:
        logged = history[row["generation"]]
        for key in ("variance_ratio", "w2", "variance_ratio.theory", "variance_ratio.sem"):
            assert logged[key] == pytest.approx(row[key]), key
    summary = {item_key(i): json.loads(i.value_json) for r in records if r.HasField("summary")
               for i in r.summary.update}
    assert summary["collapselab.status"] == "complete"
    assert "artifact" in kinds and records[-1].exit.exit_code == 0


@pytest.mark.parametrize("override,message", [
    ("tracking.project=x", r"tracking.project: a wandb field; tracking.backend is 'mlflow'; got 'x'"),
    ("tracking.mode=offline", r"tracking.mode: a wandb field; tracking.backend is 'mlflow'; "
                              r"got 'offline'"),
])
def test_wandb_fields_are_refused_for_mlflow_naming_the_field(tmp_path, override, message):
    from collapselab.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(gauss_yaml(tmp_path), ["tracking.backend=mlflow", override])


def test_a_wandb_project_name_is_checked(tmp_path):
    from collapselab.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"tracking.project: String should match pattern .*; "
                                          r"got 'a/b'"):
        load_config(gauss_yaml(tmp_path), ["tracking.backend=wandb", "tracking.project=a/b"])


def gauss_yaml(folder: Path) -> Path:
    import yaml

    path = folder / "g.yaml"
    path.write_text(yaml.safe_dump(GAUSS))
    return path


def test_each_point_of_a_sweep_is_one_wandb_run_grouped_by_the_sweep(tmp_path):
    import json

    pytest.importorskip("wandb", reason="wandb not installed (pip install -e '.[track]')")
    spec = {"base": {**GAUSS, "generations": 2,
                     "tracking": {"backend": "wandb", "dir": str(tmp_path / "wb"),
                                  "artifacts": False}},
            "grid": {"policy.name": ["replace", "accumulate"]}, "backend": "local",
            "workers": 1, "out_dir": str(tmp_path / "sw")}
    result = collapselab.sweep(spec, progress=False)
    assert len(result.runs) == 2 and not result.failed
    found = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    started = [r.run for path in found for r in wandb_records(path) if r.HasField("run")]
    assert len(started) == 2 and {s.run_group for s in started} == {"sw"}
    points = set()
    for s in started:
        config = {item_key(i): json.loads(i.value_json) for i in s.config.update}
        assert config["collapselab"]["collapselab.sweep_name"] == "sw"
        assert config["collapselab"]["collapselab.point.policy.name"] == config["policy"]["name"]
        points.add(config["policy"]["name"])
    assert points == {"replace", "accumulate"}
