"""Runs where labs track experiments: a config's ``tracking:`` block logs the run to MLflow
(``backend: mlflow``) or to Weights & Biases (``backend: wandb``).

- the resolved config (MLflow: params with dotted keys, ``model.family``; W&B: the run's config);
- every committed generation's metrics with ``step = generation`` (live: the tracker is a loop
  observer, told of each commit);
- at the end, the report and the run directory as artifacts, and the run's status.

A resumed run continues the tracker's run of the same directory (MLflow: tag
``collapselab.run_dir``; W&B: a run id made from the directory's path). A point of a sweep is one
tracker run tagged ``collapselab.sweep`` (the sweep directory) and with its swept values as
``collapselab.point.<key>`` tags (W&B: in the run's config under ``collapselab``, grouped by sweep).

W&B runs offline unless told otherwise (``mode: offline``: files under ``<dir>/wandb/``, uploaded
later by ``wandb sync``); ``mode: online`` (the default where ``uri`` names a server) logs live.

The run directory stays the record: a tracker that is down or refuses a call costs one warning
and is then left alone; the run goes on. MLflow's HTTP calls are made without retries and with a
short timeout (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``, ``MLFLOW_HTTP_REQUEST_TIMEOUT=10`` unless
set); a ``file:`` URI turns on MLflow 3's file store (``MLFLOW_ALLOW_FILE_STORE=true`` unless set).

    with tracking.session(cfg) as track:               # nothing to do without cfg.tracking
        store = loop.run(cfg, observers=track.observers)
        track.report(write_report([store.root]))       # else the report is written at the end
"""
from __future__ import annotations

import abc
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from collapselab.config import ExperimentConfig
from collapselab.store import RunStore

log = logging.getLogger(__name__)

PARAM_CHARS = 6000  # MLflow's limit on a param value
BATCH = 1000  # metrics per log_batch call (MLflow's limit)


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """Nested config data as ``{dotted.key: text}`` (lists as JSON)."""
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    text = node if isinstance(node, str) else json.dumps(node)
    return {prefix.rstrip("."): text[:PARAM_CHARS]}


def metrics_of(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row (not its generation)."""
    out = {}
    for key, value in row.items():
        if key == "generation" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def sweep_tags(run_dir: Path) -> dict[str, str]:
    """``collapselab.sweep`` and the point's swept values, where ``run_dir`` is a sweep's point."""
    from collapselab.sweep_spec import is_sweep_dir, read_manifest

    root = run_dir.parent
    if not is_sweep_dir(root):
        return {}
    tags = {"collapselab.sweep": str(root.resolve()), "collapselab.sweep_name": root.name}
    try:
        points = read_manifest(root)["points"]  # by name, or a list of entries with names
        entry = (points.get(run_dir.name, {}) if isinstance(points, dict) else
                 next((p for p in points if p.get("name") == run_dir.name), {}))
    except Exception:  # a manifest being rewritten: the sweep tag is enough
        return tags
    for key, value in (entry.get("overrides") or {}).items():
        tags[f"collapselab.point.{key}"] = (value if isinstance(value, str)
                                           else json.dumps(value))[:PARAM_CHARS]
    return tags


class Tracker(abc.ABC):
    """What both trackers share: a failure costs one warning, then the tracker is left alone."""

    name = "tracker"
    where = ""
    alive = True

    def _call(self, fn: Any, *args: Any) -> None:
        if not self.alive:
            return
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001  (any failure of the tracker: warn once, go on)
            self.alive = False
            log.warning("tracking: %s at %s failed (%s: %s); the run goes on without it "
                        "(its directory is the record)", self.name, self.where,
                        type(exc).__name__,
                        str(exc).splitlines()[0][:300] if str(exc) else "")

    def committed(self, rows: list[dict[str, Any]]) -> None:
        self._call(self._log_rows, rows)

    def end(self, store: RunStore | None, report: Path | None, status: str) -> None:
        self._call(self._end, store, report, status)

    @abc.abstractmethod
    def _log_rows(self, rows: list[dict[str, Any]]) -> None:
        """Log committed metrics rows, step = generation."""

    @abc.abstractmethod
    def _end(self, store: RunStore | None, report: Path | None, status: str) -> None:
        """Log the report and the run directory, and the run's status."""


class MLflowTracker(Tracker):
    """One MLflow run for one run directory (see the module docstring)."""

    name = "MLflow"

    def __init__(self, cfg: ExperimentConfig) -> None:
        spec = cfg.tracking
        assert spec is not None
        self.cfg, self.spec = cfg, spec
        self.where = spec.uri or os.environ.get("MLFLOW_TRACKING_URI") or "./mlruns"
        self.alive = True
        self.run_id = ""  # set by _start; nothing is logged unless it succeeded
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        if "://" not in self.where or self.where.startswith("file:"):
            # a file store, asked for by name: MLflow 3 keeps it behind this switch
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._call(self._start)

    def _start(self) -> None:
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.spec.uri)
        found = self.client.get_experiment_by_name(self.spec.experiment)
        experiment = (found.experiment_id if found is not None
                      else self.client.create_experiment(self.spec.experiment))
        run_dir = str(self.cfg.run_dir.resolve())
        earlier = self.client.search_runs(
            [experiment], filter_string=f"tags.`collapselab.run_dir` = '{run_dir}'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if earlier and earlier[0].info.status != "FINISHED":  # a resumed run continues its own
            self.run_id = earlier[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        tags = {"collapselab.run_dir": run_dir, "collapselab.name": self.cfg.name,
                **sweep_tags(self.cfg.run_dir)}
        run = self.client.create_run(experiment, run_name=self.cfg.name, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten(self.cfg.model_dump(mode="json")).items()]
        for i in range(0, len(params), 100):  # MLflow takes 100 params a batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.client.log_batch(self.run_id, tags=[RunTag("collapselab.status", "running")])

    def _log_rows(self, rows: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, int(row["generation"]))
                   for row in rows for key, value in metrics_of(row).items()]
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + BATCH])

    def _end(self, store: RunStore | None, report: Path | None, status: str) -> None:
        if self.spec.artifacts:
            if report is not None and Path(report).is_file():
                self.client.log_artifact(self.run_id, str(report))
            if store is not None and store.root.is_dir():
                self.client.log_artifacts(self.run_id, str(store.root), artifact_path="run")
        self.client.set_tag(self.run_id, "collapselab.status", status)
        self.client.set_terminated(self.run_id, {"complete": "FINISHED", "stopped": "FINISHED",
                                                 "interrupted": "KILLED"}.get(status, "FAILED"))


class WandbTracker(Tracker):
    """One Weights & Biases run for one run directory (see the module docstring): offline by
    default, its files under ``<dir>/wandb/``."""

    name = "W&B"

    def __init__(self, cfg: ExperimentConfig) -> None:
        spec = cfg.tracking
        assert spec is not None
        self.cfg, self.spec = cfg, spec
        self.mode = spec.mode or ("online" if spec.uri else "offline")
        self.where = (spec.uri or os.environ.get("WANDB_BASE_URL") or "W&B's cloud"
                      if self.mode == "online" else str(Path(spec.dir or os.environ.get(
                          "WANDB_DIR") or ".") / "wandb"))
        self.run: Any = None
        os.environ.setdefault("WANDB_SILENT", "true")  # its own lines would interleave ours
        self._call(self._start)

    def _start(self) -> None:
        import wandb

        run_dir = self.cfg.run_dir.resolve()
        tags = sweep_tags(self.cfg.run_dir)
        config = {**self.cfg.model_dump(mode="json"),
                  "collapselab": {"run_dir": str(run_dir), **tags}}
        settings = {"silent": True, "console": "off", "x_disable_stats": True}
        if self.spec.uri:
            settings["base_url"] = self.spec.uri
        if self.spec.dir:
            Path(self.spec.dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.spec.project or self.spec.experiment, entity=self.spec.entity,
            dir=self.spec.dir, mode=self.mode, name=self.cfg.name, config=config,
            id=hashlib.sha1(str(run_dir).encode()).hexdigest()[:16],  # a resume continues it
            group=tags.get("collapselab.sweep_name"), resume="allow", reinit="create_new",
            settings=wandb.Settings(**settings))
        self.run.summary["collapselab.status"] = "running"

    def _log_rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.run.log(metrics_of(row), step=int(row["generation"]))

    def _end(self, store: RunStore | None, report: Path | None, status: str) -> None:
        import wandb

        if self.spec.artifacts:
            artifact = wandb.Artifact(f"run-{self.cfg.name}", type="collapselab-run")
            if report is not None and Path(report).is_file():
                artifact.add_file(str(report))
            if store is not None and store.root.is_dir():
                artifact.add_dir(str(store.root), name="run")
            self.run.log_artifact(artifact)
        self.run.summary["collapselab.status"] = status
        self.run.finish(exit_code=0 if status in ("complete", "stopped") else 1)
        wandb.teardown()  # finish hands the run to wandb's service, which writes it later: wait


class Session:
    """The trackers of one run: ``observers`` for the loop, ``report(path)`` to log the report."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        backends = {"mlflow": MLflowTracker, "wandb": WandbTracker}
        self.trackers: list[Tracker] = ([backends[cfg.tracking.backend](cfg)]
                                        if cfg.tracking is not None else [])
        self.report_path: Path | None = None

    @property
    def observers(self) -> list[Any]:
        return list(self.trackers)

    def report(self, path: Path | None) -> Path | None:
        self.report_path = path
        return path

    def end(self, status: str | None = None, write_report: bool = True) -> None:
        if not self.trackers:
            return
        store = RunStore(self.cfg.run_dir) if self.cfg.run_dir.is_dir() else None
        if status is None:
            try:
                status = store.manifest().get("status", "unknown") if store else "failed"
            except Exception:  # noqa: BLE001
                status = "failed"
        if self.report_path is None and write_report and store is not None:
            try:
                from collapselab.report import write_report as write

                self.report_path = write([store.root])
            except Exception as exc:  # noqa: BLE001  (the tracker goes without a report)
                log.warning("tracking: no report to log (%s)", exc)
        for tracker in self.trackers:
            tracker.end(store, self.report_path, status)


@contextmanager
def session(cfg: ExperimentConfig, *, write_report: bool = True) -> Iterator[Session]:
    """Trackers for ``cfg`` (none without ``cfg.tracking``), ended when the block ends: with
    the report (written into the run directory unless logged with ``report(path)`` or
    ``write_report=False``) and the run directory as artifacts, and the run's status."""
    track = Session(cfg)
    try:
        yield track
    except KeyboardInterrupt:
        track.end("interrupted", write_report=False)
        raise
    except BaseException:
        track.end("failed", write_report=False)
        raise
    track.end(write_report=write_report)
