"""The ``collapselab`` command: a thin layer over config, loop, store and report."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from collapselab.errors import CollapselabError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Run, measure and prevent model collapse.")
console = Console(stderr=True)
state = {"debug": False}

ResourceHelp = ("refuse a config whose estimated memory or disk (from chains, sizes, sample "
                "shapes, keep_samples) exceeds what is free; --no-resource-check runs it anyway")
Overrides = Annotated[list[str] | None, typer.Argument(
    help="key=value overrides, e.g. generations=20 policy.real_fraction=0.1")]


def _version(value: bool) -> None:
    if value:
        from collapselab import __version__

        typer.echo(f"collapselab {__version__}")
        raise typer.Exit()


@app.callback()
def main(debug: Annotated[bool, typer.Option(help="show Python tracebacks")] = False,
         version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="print the version and exit")] = False,
         ) -> None:
    state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@contextmanager
def user_errors() -> Iterator[None]:
    """Input problems end in one clear message and exit code 2 (a traceback only with --debug)."""
    try:
        yield
    except (CollapselabError, OSError, MemoryError) as exc:
        if state["debug"]:
            raise
        # soft_wrap: the message as one line per line of it (a terminal wraps it; a log or a
        # grep keeps it whole)
        console.print(f"[bold red]error:[/] {_escape(_message(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt as exc:
        console.print(f"[yellow]{_escape(str(exc) or 'interrupted')}")
        raise typer.Exit(130) from None


def _message(exc: BaseException) -> str:
    """What the user reads: an OSError as its path and its cause in words ("runs/x: Read-only
    file system", not "[Errno 30] Read-only file system: 'runs/x'"); a MemoryError as what ran
    out and what to lower."""
    if isinstance(exc, MemoryError):
        what = str(exc) or "an allocation failed"
        return (f"out of memory: {what[0].lower()}{what[1:]}; lower chains, data.size or "
                "synthetic_size (the resource check, on unless --no-resource-check, estimates "
                "a run's memory before it starts)")
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        return f"{where}: {exc.strerror}"
    return str(exc)


def _config_file(path: Path) -> Path:
    """``path`` if it can be a config file; a directory is refused as one, by name."""
    from collapselab.errors import ConfigError

    if path.expanduser().is_dir():
        raise ConfigError([f"config file {str(path)!r} is a directory, not a config file "
                           "(give the experiment's YAML file)"])
    return path


def _check_run_dir(cfg) -> None:  # type: ignore[no-untyped-def]
    """Refuse, before anything is written, a run directory ``<out_dir>/<name>`` that cannot be one
    because it, out_dir or a folder above them is an existing file."""
    from collapselab.errors import ConfigError

    run_dir, out_dir = Path(cfg.run_dir), Path(cfg.out_dir)
    for p in [run_dir, *run_dir.parents]:
        if not (p.exists() or p.is_symlink()):
            continue
        if p.is_dir():
            return
        kind = "a file" if p.is_file() else "not a directory"
        if p == run_dir:
            problem = (f"name: the run directory {str(p)!r} (<out_dir>/<name>) is {kind}, "
                       "not a directory")
        elif p == out_dir:
            problem = f"out_dir: {str(p)!r} is {kind}, not a directory"
        else:
            problem = f"out_dir: {str(out_dir)!r} cannot be a directory: {str(p)!r} is {kind}"
        raise ConfigError([problem])


def _generations(store, wanted: list[int]) -> list[int]:  # type: ignore[no-untyped-def]
    """``wanted`` as generations of the run (``RunStore.generation``: negative counts from the
    end; one outside the run is refused, naming its range)."""
    return [store.generation(g) for g in wanted]


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@contextmanager
def progress_bar(label: str) -> Iterator[callable]:  # type: ignore[valid-type]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False,
                  disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _run_one(cfg, resume: bool, takeover: bool, *, check_resources: bool = False,  # type: ignore[no-untyped-def]
             report: bool | None = None) -> tuple[Path, Path | None]:
    """The run recipe (``collapselab.recipe``) under a progress bar; says how the run ended."""
    from collapselab.recipe import run_experiment

    with progress_bar(cfg.name) as update:
        store, report_path = run_experiment(cfg, resume=resume, takeover=takeover,
                                            progress=update, check_resources=check_resources,
                                            report=report)
    status = store.manifest()["status"]
    console.print(f"{cfg.name}: {status}, {store.completed()} generations in {store.root}")
    return store.root, report_path


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="experiment YAML")],
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run")] = False,
    takeover: Annotated[bool, typer.Option(help="take over a stale lock of a dead writer")] = False,
    report: Annotated[bool, typer.Option(help="write report.html in the run directory")] = True,
    resource_check: Annotated[bool, typer.Option(help=ResourceHelp)] = True,
) -> None:
    """Run one experiment into <out_dir>/<name>."""
    from collapselab.config import load_config

    with user_errors():
        cfg = load_config(_config_file(config), overrides or [])
        _check_run_dir(cfg)
        _, path = _run_one(cfg, resume, takeover, check_resources=resource_check, report=report)
        if path is not None:
            console.print(f"report: {path}")


def demo_configs() -> list[Path]:
    folder = resources.files("collapselab") / "configs" / "demo"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml"))


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option(help="where the demo runs go")] = Path("runs/demo"),
    resume: Annotated[bool, typer.Option(help="continue an interrupted demo")] = False,
    overrides: Overrides = None,
) -> None:
    """The embedded demo (no download), 5 runs: a ground-truth language under replace / keep 10%
    real / accumulate, and a Gaussian under replace / accumulate; ends in out_dir/report.html."""
    from collapselab.config import load_config
    from collapselab.report import write_report
    from collapselab.store import RunStore

    with user_errors():
        roots = []
        configs = [load_config(path, [f"out_dir={out_dir}", *(overrides or [])])
                   for path in demo_configs()]
        for cfg in configs:
            _check_run_dir(cfg)
        for cfg in configs:
            store = RunStore(cfg.run_dir)
            if store.exists and store.manifest().get("status") == "complete" \
                    and store.config() == cfg:
                console.print(f"{cfg.name}: already complete in {store.root}")
                roots.append(store.root)
                continue
            # a killed demo leaves its lock behind: --resume takes it over (only if its process
            # is gone; a live writer is always refused); tracking.backend=...: a tracker run each
            roots.append(_run_one(cfg, resume, resume)[0])
        console.print(f"report: {write_report(roots, out_dir / 'report.html')}")


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="one or more run directories")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file to write")] = None,
    figures: Annotated[Path | None, typer.Option("--figures", help=(
        "also write each headline figure into this folder as PNG (300 dpi), SVG and PDF at a "
        "paper's size (made if missing; files it did not write are never replaced)"))] = None,
) -> None:
    """Write an HTML report of one run, or compare several; of a sweep directory: the sweep
    report (bands across seeds, tidy.csv, costs)."""
    from collapselab.report import check_folder, write_figures, write_report
    from collapselab.sweep import is_sweep_dir

    with user_errors():
        if figures is not None:
            check_folder(figures)  # before any work: a file given as the folder
        if len(run_dirs) == 1 and is_sweep_dir(run_dirs[0]):
            from collapselab.aggregate import sweep_runs, write_sweep_figures, write_sweep_report

            for _, store in sweep_runs(run_dirs[0]):
                store.check()
            written = write_sweep_figures(run_dirs[0], figures) if figures is not None else None
            page = write_sweep_report(run_dirs[0], out)
        else:
            written = write_figures(list(run_dirs), figures) if figures is not None else None
            page = write_report(list(run_dirs), out)
        console.print(f"report: {page}")
        if written is not None:
            console.print(f"figures: {len(written)} files in {figures} "
                          f"({', '.join(sorted({p.suffix[1:] for p in written}))})")


@app.command()
def samples(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    generation: Annotated[list[int] | None, typer.Option("--generation", "-g", help=(
        "generations to print (repeat the option; -1 is the last); default: every completed "
        "one"))] = None,
    producer: Annotated[str | None, typer.Option("--producer", "-p", help=(
        "in a multi-producer run: whose continuations"))] = None,
) -> None:
    """Print the fixed prompts every generation continued (language runs), prompt by prompt."""
    from collapselab.report import continuations
    from collapselab.store import RunStore

    with user_errors():
        store = RunStore(run_dir)
        store.check()  # a clear error for a folder that is not a run, or a damaged run
        if generation is not None:
            generation = _generations(store, generation)
        tables = [(t, rows) for t, rows in continuations(store, generation, producer) if rows]
        if not tables:
            from collapselab.errors import RunError

            raise RunError(f"{run_dir} recorded no continuations (a language run with the "
                           "'continuations' metric records them)")
        for title, rows in tables:
            typer.echo(f"# {store.root.name}: {title}")
            for i in range(max(len(texts) for _, _, texts in rows)):
                prompt = next((p[i] for _, p, t in rows if i < len(p)), "")
                typer.echo(f"\n## prompt {i + 1}: [{prompt}]")
                for g, _, texts in rows:
                    if i < len(texts):
                        typer.echo(f"gen {g:>3}: [{prompt}] {texts[i]}")


@app.command()
def provenance(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    generation: Annotated[int, typer.Option("--generation", "-g", help=(
        "the generation whose training set is listed (-1 is the last)"))],
    csv: Annotated[Path | None, typer.Option(help=(
        "also write one row per training sample (chain, origin, producer, seed, filter scores)"))] = None,
    producer: Annotated[str | None, typer.Option("--producer", "-p", help=(
        "in a multi-producer run: whose training set"))] = None,
) -> None:
    """Where generation k's training samples came from: counts per origin (real, gen_XXX) beside
    the composition the run recorded; --csv lists every sample."""
    from collapselab import provenance as prov
    from collapselab.store import RunStore

    with user_errors():
        store = RunStore(run_dir)
        store.check()  # a clear error for a folder that is not a run, or a damaged run
        generation = _generations(store, [generation])[0]
        rows = prov.listing(store, generation, producer)
        recorded = next((r for r in store.metrics() if r["generation"] == generation), {})
        prefix = f"{producer}/composition." if producer else "composition."
        origins: dict[str, int] = {}
        for r in rows:
            origins[r["origin"]] = origins.get(r["origin"], 0) + 1
        whose = f" of {producer}" if producer else ""
        table = Table("origin", "samples", "share", "recorded share",
                      title=f"{run_dir.name}: training set{whose} in generation {generation}")
        for key, count in sorted(origins.items()):
            share = recorded.get(prefix + key)
            table.add_row(key, str(count), f"{count / len(rows):.4f}",
                          "–" if share is None else f"{share:.4f}")
        table.add_row("total", str(len(rows)), "1.0000",
                      f"{sum(v for k, v in recorded.items() if k.startswith(prefix)):.4f}")
        Console().print(table)
        if csv is not None:
            import pandas as pd

            pd.DataFrame(rows).to_csv(csv, index=False)
            console.print(f"provenance: {csv}")


@app.command()
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="sweep YAML (base + grid/points + backend)")],
    overrides: Annotated[list[str] | None, typer.Argument(help=(
        "key=value: sweep fields (backend=ray address=auto workers=4 out_dir=...) or, for "
        "any other key, the base experiment (generations=20)"))] = None,
    report: Annotated[bool, typer.Option(help="write the sweep report when done")] = True,
    resource_check: Annotated[bool, typer.Option(help=ResourceHelp)] = True,
) -> None:
    """Run every point of a sweep (skipping finished ones, resuming interrupted ones)."""
    from collapselab.sweep import load_sweep, run_sweep

    with user_errors():
        sw = load_sweep(_config_file(sweep_file), overrides or [])
        if resource_check:  # each point alone; points running side by side need more
            from collapselab.errors import ConfigError
            from collapselab.resources import check

            problems = []
            for p in sw.points:
                try:
                    check(p.config)
                except ConfigError as exc:
                    problems += [f"point {p.name}: {q}" for q in exc.problems]
            if problems:
                raise ConfigError(problems)
        console.print(f"sweep: {len(sw.points)} points into {sw.root} ({sw.spec.backend})")
        with progress_bar("points") as update:
            result = run_sweep(sw, progress=update)
        console.print(f"ran {len(result.ran)}, skipped {len(result.skipped)} finished, "
                      f"failed {len(result.failed)}")
        for name, error in result.failed.items():
            console.print(f"[red]{_escape(name)}[/]: {_escape(error)}")
        if report:
            from collapselab.aggregate import write_sweep_report

            console.print(f"report: {write_sweep_report(sw.root)}")
        if result.failed:
            raise typer.Exit(1)


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="run directory A")],
    run_b: Annotated[Path, typer.Argument(help="run directory B")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help=(
        "HTML file (a PNG is written beside it); default: ./compare_<A>_vs_<B>.html"))] = None,
) -> None:
    """Per-generation differences (B - A) of the metrics two runs share."""
    from collapselab.aggregate import compare_runs, write_compare
    from collapselab.errors import RunError
    from collapselab.store import RunStore

    with user_errors():
        RunStore(run_a).check(), RunStore(run_b).check()  # folders that are not runs, damage
        if compare_runs(run_a, run_b).dropna(subset=["diff"]).empty:
            raise RunError(f"no metric in common between {run_a} and {run_b} (no metric both "
                           "recorded in a generation both completed); nothing written")
        table, page, png = write_compare(run_a, run_b, out)
        shown = Table(Column("metric", no_wrap=True), "A final", "B final", "B - A final", "mean B - A",
                      "max |B - A| (gen)", title=f"{run_b.name} - {run_a.name}")
        for metric, t in table.groupby("metric", sort=False):
            t = t.dropna(subset=["diff"])
            if t.empty:
                continue
            last, worst = t.iloc[-1], t.loc[t["diff"].abs().idxmax()]
            shown.add_row(metric, f"{last['a']:.4g}", f"{last['b']:.4g}", f"{last['diff']:+.4g}",
                          f"{t['diff'].mean():+.4g}",
                          f"{abs(worst['diff']):.4g} ({int(worst['generation'])})")
        Console().print(shown)
        console.print(f"compare: {page} and {png}")


@app.command()
def theory(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    generation: Annotated[list[int] | None, typer.Option("--generation", "-g", help=(
        "generations to check (repeat the option; -1 is the last); default: the last"))] = None,
) -> None:
    """Theory against simulation: per predicted metric, the measured chain mean, the prediction,
    the standard error (the theory's per-chain sd / sqrt(chains), else the chains') and z;
    |z| < 4 passes. Exits 0 either way (a table to read, not a gate)."""
    from collapselab import theory as th
    from collapselab.store import RunStore

    with user_errors():
        store = RunStore(run_dir)
        store.check()  # a clear error for a folder that is not a run, or a damaged run
        if generation:
            generation = _generations(store, generation)
        found = th.run_agreement(run_dir, generation)
        if not found:
            console.print(f"{run_dir.name}: no theory applies to this run (or no generation "
                          "was recorded)")
            return
        table = Table(Column("metric", no_wrap=True), "generation", "measured", "theory", "se",
                      "z", f"|z| < {th.PASS_Z:g}", title=f"{run_dir.name}: theory vs simulation")
        for a in found:
            table.add_row(a.metric, str(a.generation), f"{a.measured:.5g}", a.theory_text,
                          f"{a.se:.3g}" + (" (chains)" if a.se_from == "chains" else ""),
                          f"{a.z:+.2f}", "pass" if a.passed else "FAIL")
        out = Console(width=max(Console().width, 100))
        out.print(table)
        failed = sum(not a.passed for a in found)
        out.print(f"{len(found) - failed} of {len(found)} within {th.PASS_Z:g} standard errors",
                  markup=False, highlight=False)


@app.command()
def verify(
    paths: Annotated[list[Path], typer.Argument(help="run directories or sweep directories")],
) -> None:
    """Check that each run's files hold what its manifest committed (rows, sizes, checksums,
    generations); of a sweep directory, every point's run. Exits 2 naming each problem."""
    from collapselab.errors import RunError
    from collapselab.store import RunStore, damaged
    from collapselab.sweep import is_sweep_dir

    with user_errors():
        stores = []
        for path in paths:
            if is_sweep_dir(path):
                from collapselab.aggregate import sweep_runs

                stores += [store for _, store in sweep_runs(path)]
            else:
                stores.append(RunStore(path))
        bad = 0
        for store in stores:
            try:
                problems = store.verify()
                if not problems:
                    listed = "files" in store.manifest()
                    typer.echo(f"{store.root}: ok" + ("" if listed else (
                        " (no integrity record: an earlier collapselab wrote it; its rows and "
                        "generations were checked, not its files)")))
                    continue
                message = damaged(store.root, problems)
            except RunError as exc:
                message = str(exc)
            bad += 1
            console.print(f"[bold red]error:[/] {_escape(message)}", soft_wrap=True)
        if bad:
            raise typer.Exit(2)


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="experiment YAML")],
             overrides: Overrides = None) -> None:
    """Check a config and print it resolved (every default filled in)."""
    from collapselab.config import load_config

    with user_errors():
        cfg = load_config(_config_file(config), overrides or [])
        typer.echo(cfg.to_yaml())


@app.command("list")
def list_components(
    name: Annotated[str | None, typer.Argument(
        help="a component's name: its description and parameters (types, defaults)")] = None,
) -> None:
    """Registered model families, data sources, policies, filters and metrics, each with its kind
    and one-line description: collapselab's own, and those installed distributions provide (entry
    points), with the distribution. With NAME: that component's parameters."""
    from rich.text import Text

    from collapselab import components, registry

    known = components.catalogue()
    out = Console()
    if name is None:
        table = Table("kind", "name", Column("description", ratio=1))
        for c in known:
            label = c.name if c.origin == registry.BUILTIN else f"{c.name} ({c.origin})"
            table.add_row(c.kind, Text(label), Text(c.summary))
        out.print(table)
        return
    with user_errors():
        found = [c for c in known if c.name == name]
        if not found:
            raise CollapselabError(components.unknown(name, known))
        for c in found:
            origin = "" if c.origin == registry.BUILTIN else f", from {c.origin}"
            out.print(Text(f"{c.name}: {c.kind} ({c.path}{origin})", style="bold"))
            out.print(Text(c.text))
            try:
                kinds, fields = components.data_kinds(c), components.parameters(c)
            except ImportError as exc:  # a heavy family without its extra installed
                out.print(Text(f"parameters: cannot import it ({exc})"))
                continue
            if kinds:
                out.print(Text(f"data: {', '.join(kinds)}"))
            if not fields:
                out.print("parameters: none")
                continue
            table = Table("parameter", "type", "default", Column("description", ratio=1))
            for row in fields:
                table.add_row(*map(Text, row))
            out.print(table)
