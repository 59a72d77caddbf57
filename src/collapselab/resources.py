"""What a run will need, estimated from its config before anything runs.

The estimate counts the arrays the loop holds (the real pool, the held-out set, the training set,
the synthetic samples, the history a policy keeps, one int64 provenance label per training row)
with room for one temporary copy of each, and the samples the store writes. Model internals (a
network's weights, a KDE's pairwise distances) come on top, so the numbers are a floor: a config
refused here cannot run, one accepted may still be tight. ``collapselab run --no-resource-check``
runs it anyway.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collapselab import capabilities, registry
from collapselab.config import ExperimentConfig
from collapselab.errors import ConfigError
from collapselab.protocol import Model

LABEL_BYTES = 8  # int64 provenance label per training row
GROWING = ("accumulate",)  # policies whose training set grows by every generation's samples


@dataclass(frozen=True)
class Estimate:
    """Bytes: peak memory and disk, for one generation and for the whole run."""

    sample_bytes: int  # one sample (a vector, a token block, an image)
    memory_per_generation: int
    memory_peak: int
    disk_per_generation: int
    disk_total: int

    def describe(self) -> str:
        return (f"memory {_size(self.memory_per_generation)} per generation, "
                f"{_size(self.memory_peak)} at the peak; disk {_size(self.disk_per_generation)} "
                f"per generation, {_size(self.disk_total)} in total")


def estimate(cfg: ExperimentConfig, source: Any | None = None) -> Estimate:
    """The floor of memory and disk ``cfg`` needs (see the module docstring)."""
    if source is None:
        source = registry.sources.build(cfg.data.source, cfg.data.params)
    per = sample_bytes(source)
    chains, size = cfg.chains, cfg.data.size
    m = cfg.synthetic_size or size
    producers = max(1, len(cfg.producers or []))
    heldout = capabilities.heldout_rows(source)
    grows = cfg.policy.name.startswith(GROWING)
    train_last = size + (cfg.generations - 1) * m if grows else max(size, m)
    first = chains * (size * per + size * LABEL_BYTES) + heldout * per
    one = first + producers * chains * (2 * max(size, m) * (per + LABEL_BYTES) + m * per)
    peak = first + producers * chains * (2 * train_last * (per + LABEL_BYTES) + m * per)
    disk_one = producers * chains * (m * per + max(size, m) * LABEL_BYTES)
    keep = cfg.keep_samples  # all, every k-th, or the newest (and generation 0) only
    kept = (cfg.generations if keep == "all" or grows
            else cfg.generations // keep + 1 if isinstance(keep, int) else 2)
    kept = min(cfg.generations, kept)
    models = [p.model for p in cfg.producers] if cfg.producers else [cfg.model]
    work = sum(_working_bytes(spec, cfg, source, per, train_last) for spec in models)
    return Estimate(per, 2 * one + work, 2 * peak + work, disk_one, disk_one * kept)


def _working_bytes(spec: Any, cfg: ExperimentConfig, source: Any, per: int, rows: int) -> int:
    """What the family holds besides the data, if it declares it: ``working_bytes(params,
    chains=, rows=, sample_bytes=, heldout=)`` (e.g. a covariance per chain, D x D)."""
    hook = capabilities.declared(registry.families.get(spec.family), "working_bytes", Model)
    return int(hook(spec.params, chains=cfg.chains, rows=rows, sample_bytes=per,
                    heldout=capabilities.heldout_rows(source)))


def sample_bytes(source: Any) -> int:
    """Bytes of one sample of ``source``: int32 token blocks, float32 images, int64 states;
    otherwise (vectors) measured on one real sample."""
    block_len = capabilities.block_len(source)
    if source.kind == "tokens" and block_len is not None:
        return 4 * block_len
    if source.kind == "images" and capabilities.provides(source, capabilities.HasImageSplit):
        h, w = source.image_shape
        return 4 * int(h) * int(w)
    if source.kind == "categorical":
        return 8
    import numpy as np

    one = np.asarray(source.real(1, 1, np.random.default_rng(0)))
    return max(1, int(one.nbytes))


def available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def free_disk(path: str | Path) -> int:
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent  # the run directory does not exist yet: the disk it will be on
    return int(shutil.disk_usage(p).free)


def check(cfg: ExperimentConfig, source: Any | None = None) -> Estimate:
    """Refuse ``cfg`` (a ``ConfigError`` with the numbers) when its estimate exceeds the memory
    available now or the free disk under ``out_dir``."""
    est = estimate(cfg, source)
    problems = []
    memory, disk = available_memory(), free_disk(cfg.out_dir)
    if est.memory_peak > memory:
        problems.append(
            f"resources: the run needs at least {_size(est.memory_peak)} of memory "
            f"({_size(est.memory_per_generation)} per generation; chains={cfg.chains:,}, "
            f"data.size={cfg.data.size:,}, synthetic_size={cfg.synthetic_size or cfg.data.size:,}"
            f", {_size(est.sample_bytes)} per sample); {_size(memory)} is available")
    if est.disk_total > disk:
        problems.append(
            f"resources: the run writes at least {_size(est.disk_total)} "
            f"({_size(est.disk_per_generation)} per generation; keep_samples="
            f"{cfg.keep_samples!r}, generations={cfg.generations:,}); {_size(disk)} is free "
            f"under {cfg.out_dir!r}")
    if problems:
        problems.append("resources: lower chains, data.size, synthetic_size or generations, "
                        "or pass --no-resource-check to run anyway")
        raise ConfigError(problems)
    return est


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # unreachable

