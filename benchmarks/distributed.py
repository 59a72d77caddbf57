"""Workload 8: a ``gpt`` fit across 2 processes (``distributed: {nproc_per_node: 2}``, DDP over
gloo on this CPU) against the same fit in one process: the training step time.

Same small gpt (2 layers, 4 heads, d=128, vocab 4096), same global batch 32 x 128, same seed and
number of steps on both sides. The step time is the trainer's own (tokens of the global batch over
its tokens/s, first step to last; rank 0's for the workers), so torchrun's start (the agent and
the workers import torch: seconds) is left out of it and reported apart, as the whole fit's wall
time. Threads: one process uses torch's default threads; torchrun gives each worker one
(``OMP_NUM_THREADS=1``): both sides have the machine's cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from benchmarks.harness import Row, alternate, fmt_seconds, timed
from collapselab.models.gpt import GPT

ARCH = {"n_layer": 2, "n_head": 4, "d_model": 128}
VOCAB, BATCH, BLOCK = 4096, 32, 128
PROCESSES = 2


def fit(data: np.ndarray, processes: int, walls: list[float]) -> float:
    """One fit; its mean step time (the trainer's), the whole fit's wall time into ``walls``."""
    across = {"distributed": {"nproc_per_node": processes}} if processes > 1 else {}
    model = GPT(**ARCH, vocab_size=VOCAB, batch_size=BATCH, device="cpu", **across)
    walls.append(timed(lambda: model.fit(data, rng=np.random.default_rng(0))))
    return BATCH * BLOCK / model.train_tokens_per_s_[0]


def run(sizes: dict[str, Any], reps: int) -> tuple[list[Row], dict[str, Any]]:
    steps = sizes["steps"]
    data = np.random.default_rng(0).integers(0, VOCAB, (1, steps * BATCH, BLOCK), dtype=np.int32)
    walls: dict[int, list[float]] = {1: [], PROCESSES: []}
    pairs = alternate(lambda: fit(data, PROCESSES, walls[PROCESSES]),
                      lambda: fit(data, 1, walls[1]), reps)  # fmt: skip
    info = {"steps": steps, "global_batch": BATCH, "block": BLOCK, "processes": PROCESSES,
            "step_s_ddp": pairs.ours, "step_s_one": pairs.peer, "ratios": pairs.ratios,
            "fit_wall_s_ddp": walls[PROCESSES], "fit_wall_s_one": walls[1],
            "torch_threads_one": torch.get_num_threads()}  # fmt: skip
    launch = float(np.median(walls[PROCESSES])) - steps * float(np.median(pairs.ours))
    row = Row(f"8 gpt fit, DDP {PROCESSES} processes vs 1: step time, batch {BATCH}x{BLOCK}, "
              f"{steps} steps", fmt_seconds(float(np.median(pairs.ours))) + "/step",
              fmt_seconds(float(np.median(pairs.peer))) + "/step (1 process)", pairs.ratio,
              note=f"gloo on CPU, {BATCH // PROCESSES} blocks per process; torchrun start "
                   f"~{launch:.0f} s a fit, not in the step time",
              data=info)  # fmt: skip
    return [row], {"ddp": info}
