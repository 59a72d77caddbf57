"""One run, as every entry point runs it: the CLI's ``run`` and ``demo``, ``collapselab.run`` and
each point of a sweep.

    resources.check(cfg)                       # optional: refuse what the machine cannot hold
    with tracking.session(cfg) as track:       # the config's tracker, if any, sees every commit
        store = loop.run(cfg, observers=track.observers)
        track.report(write_report([store.root]))
"""

from __future__ import annotations

from pathlib import Path

from collapselab import loop, tracking
from collapselab.config import ExperimentConfig
from collapselab.store import RunStore


def run_experiment(
    cfg: ExperimentConfig, *, resume: bool = False, takeover: bool = False,
    progress: loop.Progress | None = None, check_resources: bool = False,
    report: bool | None = None,
) -> tuple[RunStore, Path | None]:
    """Run (or resume) ``cfg`` into ``cfg.run_dir``; returns its store and its report's path.

    ``check_resources``: first refuse (``ConfigError``) a config whose estimated memory or disk
    exceeds what is free. ``report``: ``True`` writes ``report.html`` into the run directory,
    ``False`` writes none, ``None`` writes one only for the config's tracker to log. The
    tracker's run ends with the run's status, or ``interrupted`` / ``failed``.
    """
    if check_resources:
        from collapselab.resources import check

        check(cfg)
    with tracking.session(cfg, write_report=report is not False) as track:
        store = loop.run(cfg, resume=resume, takeover=takeover, progress=progress,
                         observers=track.observers)
        path = None
        if report:
            from collapselab.report import write_report

            path = track.report(write_report([store.root]))
    return store, path
