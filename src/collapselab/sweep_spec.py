"""A sweep: its file (``SweepSpec``), its points, each named and validated before anything
runs, and its directory (``sweep.json``, the manifest). See ``collapselab.sweep``."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from collapselab.config import ExperimentConfig, apply_override, read_yaml, validate
from collapselab.errors import ConfigError, RunError

MANIFEST = "sweep.json"
MAX_POINTS = 10_000  # points one sweep may hold (each is validated, named and tracked up front)
COMPONENT_KEYS = ("name", "family", "source")  # `policy.name` is named `policy` in run names
RESOURCES = "resources"  # a point's own entry: what its Ray task asks for, not an override
Resources = dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]]
_ONE_CPU: dict[str, float] = {"num_cpus": 1}  # what a point's Ray task asks for by default


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
    resources: Resources = Field(default_factory=lambda: _ONE_CPU.copy(), description=(
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


# --- the sweep directory -----------------------------------------------------------------------


def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise RunError(f"{root} is not a sweep directory (no {MANIFEST})")
    return json.loads(path.read_text())
