"""The Python API, for scripts and notebooks: the same config, loop, run store and reports as the CLI.

```python
import collapselab

run = collapselab.run("configs/gaussian/replace.yaml", generations=20,
                      **{"policy.name": "accumulate"})  # dotted keys, as on the command line
run.metrics()                 # pandas DataFrame, one row per generation
run.samples(3)                # generation 3's (curated) samples, (chains, n, ...)
run.report("replace.html")    # the HTML report the CLI writes
collapselab.load("runs/gaussian-replace")  # any run directory, later
collapselab.sweep("configs/sweeps/gaussian_table.yaml", workers=2).metrics()
```
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collapselab.errors import ConfigError, RunError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from collapselab.config import ExperimentConfig
    from collapselab.store import RunStore

Progress = bool | Callable[[int, int], None] | None


class Run:
    """One run directory, read from disk only (what ``run`` returns and ``load`` opens)."""

    def __init__(self, run_dir: str | Path) -> None:
        from collapselab.store import RunStore

        self.store: RunStore = RunStore(run_dir)
        self.store.manifest()  # not a run directory: a RunError naming it

    @property
    def root(self) -> Path:
        return self.store.root

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def status(self) -> str:
        """``complete``, ``stopped`` (a degenerate generation, by ``on_degenerate``),
        ``interrupted`` (Ctrl-C), ``failed`` (an error: see ``error``) or ``running`` (or its
        writer was killed)."""
        return str(self.store.manifest()["status"])

    @property
    def error(self) -> str | None:
        """Why a failed run failed (``"<type>: <message>"``); None for any other run."""
        error = self.store.manifest().get("error")
        return f"{error['type']}: {error['message']}" if error else None

    @property
    def config(self) -> ExperimentConfig:
        """The resolved config the run recorded."""
        return self.store.config()  # type: ignore[no-any-return]

    @property
    def generations(self) -> int:
        """Completed generations."""
        return self.store.completed()

    def metrics(self) -> pd.DataFrame:
        """One row per completed generation, indexed by ``generation``: each metric's chain mean,
        ``<metric>.sem``, theory (``.theory``, ``.theory_se``), composition, timings."""
        import pandas as pd

        frame = pd.DataFrame(self.store.metrics())
        if frame.empty:
            return pd.DataFrame(index=pd.RangeIndex(0, name="generation"))
        return frame.set_index("generation")

    def samples(self, generation: int, producer: str | None = None) -> np.ndarray:
        """The samples ``generation`` produced (after curation; negative: counted from the end):
        ``(chains, n, ...)``; in a multi-producer run, ``producer``'s. Only kept ones: ``keep_samples`` ``last`` (the
        default) keeps generation 0's and the newest, ``all`` every one, ``k`` every k-th."""
        if isinstance(generation, bool) or not isinstance(generation, int):
            raise RunError(f"generation must be an integer (negative: from the end); "
                           f"got {generation!r}")
        return self.store.samples(self.store.generation(generation), producer)

    def report(self, path: str | Path | None = None) -> Path:
        """Write the HTML report (default: ``report.html`` in the run directory); returns its path."""
        from collapselab.report import write_report

        with _keep_matplotlib_backend():
            return write_report([self.root], path)

    def __repr__(self) -> str:
        total = self.config.generations
        return f"Run({str(self.root)!r}, status={self.status!r}, generations={self.generations}/{total})"


def run(config: str | Path | Mapping[str, Any] | ExperimentConfig, /, *, resume: bool = False,
        takeover: bool = False, progress: Progress = None, **overrides: Any) -> Run:
    """Run one experiment into ``<out_dir>/<name>`` and return it.

    ``config``: a YAML path, a dict (as the YAML would hold) or an ``ExperimentConfig``.
    ``overrides``: config fields, dotted keys as in the CLI (``generations=20``,
    ``**{"policy.name": "accumulate", "data.size": 32}``); values are Python values. Renaming the
    component of a resolved ``ExperimentConfig`` (``model.family``, ``data.source``,
    ``policy.name``) starts that component from its defaults.
    ``resume`` / ``takeover``: continue an interrupted run / take over a dead writer's lock.
    ``progress``: ``None`` a bar in a notebook or terminal, ``False`` none, ``True`` always, or
    a callable ``(done, total)``.
    """
    from collapselab.recipe import run_experiment

    cfg = experiment(config, **overrides)
    with progress_bar(cfg.name, progress) as update:
        store, _ = run_experiment(cfg, resume=resume, takeover=takeover, progress=update)
    return Run(store.root)


def load(run_dir: str | Path) -> Run:
    """Open a run directory (finished, stopped, failed or interrupted), verified: one whose
    files disagree with its manifest is refused (``RunError`` naming the file and the problem)."""
    run = Run(run_dir)
    run.store.check()
    return run


def experiment(config: str | Path | Mapping[str, Any] | ExperimentConfig, /,
               **overrides: Any) -> ExperimentConfig:
    """The validated config ``run`` would use (every problem reported at once, as a ConfigError)."""
    from collapselab.config import (
        COMPONENTS,
        SECTION_FIELDS,
        ExperimentConfig,
        apply_override,
        read_yaml,
        validate,
    )

    if isinstance(config, ExperimentConfig):
        raw = config.model_dump(mode="json")
        for key, value in overrides.items():  # a new component: the old one's parameters go
            section, _, field = key.partition(".")
            named = COMPONENTS.get(section)
            old = raw.get(section)
            if named and field == named[1] and isinstance(old, dict) and old.get(field) != value:
                raw[section] = {k: v for k, v in old.items() if k in SECTION_FIELDS.get(section, ())}
    elif isinstance(config, Mapping):
        raw = copy.deepcopy(dict(config))
    elif isinstance(config, (str, os.PathLike)):
        raw = read_yaml(config)
    else:
        raise ConfigError([f"config must be a YAML path, a dict or an ExperimentConfig; "
                           f"got {type(config).__name__}"])
    for item in override_items(overrides):
        apply_override(raw, item)
    return validate(raw)


def sweep(spec: str | Path | Mapping[str, Any], /, *, progress: Progress = None,
          **overrides: Any) -> SweepRuns:
    """Run every point of a sweep not yet finished (a sweep YAML path, or its dict: ``base`` +
    ``grid`` / ``points`` + backend) and return its runs. ``overrides`` as for the CLI's sweep:
    sweep fields (``workers=2``, ``backend="ray"``, ``out_dir=...``) or base-experiment fields
    (``generations=5``, ``**{"data.size": 32}``)."""
    from collapselab.sweep import load_sweep, run_sweep

    items = override_items(overrides)
    if isinstance(spec, Mapping):
        sw = load_sweep(None, items, raw=dict(spec))
    elif isinstance(spec, (str, os.PathLike)):
        sw = load_sweep(spec, items)
    else:
        raise ConfigError([f"sweep must be a YAML path or a dict; got {type(spec).__name__}"])
    with progress_bar("points", progress) as update:
        result = run_sweep(sw, progress=update)
    runs = {p.name: Run(p.config.run_dir) for p in sw.points
            if (p.config.run_dir / "manifest.json").is_file()}
    return SweepRuns(sw.root, runs, dict(result.failed))


class SweepRuns:
    """The runs of a sweep, by point name; ``failed`` names the points that failed, with why."""

    def __init__(self, root: Path, runs: dict[str, Run], failed: dict[str, str]) -> None:
        self.root, self.runs, self.failed = root, runs, failed

    def metrics(self) -> pd.DataFrame:
        """Every run's metrics, one row per run and generation, indexed by (``run``, ``generation``)."""
        import pandas as pd

        frames = {name: r.metrics() for name, r in self.runs.items()}
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, names=["run"])

    def report(self, path: str | Path | None = None) -> Path:
        """The sweep report (bands across seeds, ``tidy.csv``, costs); returns its path."""
        from collapselab.aggregate import write_sweep_report

        with _keep_matplotlib_backend():
            return write_sweep_report(self.root, path)

    def __repr__(self) -> str:
        return f"SweepRuns({str(self.root)!r}, runs={len(self.runs)}, failed={len(self.failed)})"


def override_items(overrides: Mapping[str, Any]) -> list[str]:
    """Python values as the CLI's ``key=value`` items (the value in YAML, read back exactly)."""
    import numpy as np
    import yaml

    def plain(value: Any) -> Any:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    items = []
    for key, value in overrides.items():
        try:
            text = yaml.safe_dump(plain(value), default_flow_style=True, width=10**9)
        except yaml.YAMLError:
            raise ConfigError([f"{key}: a config value must be a number, string, bool, None, "
                               f"list or dict; got {type(value).__name__}"]) from None
        items.append(f"{key}={text.removesuffix(chr(10)).removesuffix('...').strip()}")
    return items


@contextmanager
def progress_bar(label: str, progress: Progress) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar that suits where it runs: a live widget in a notebook, a bar on a
    terminal, nothing in a pipe or a test (``progress=None``)."""
    if callable(progress) or progress is False:
        yield progress or None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    console = Console(stderr=True)
    show = progress is True or console.is_jupyter or console.is_terminal
    with Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
             TimeElapsedColumn(), console=console, disable=not show) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@contextmanager
def _keep_matplotlib_backend() -> Iterator[None]:
    """The reports switch matplotlib to Agg; a notebook's inline backend comes back after."""
    import matplotlib

    backend = matplotlib.get_backend()
    try:
        yield
    finally:
        if matplotlib.get_backend() != backend:
            matplotlib.use(backend)
