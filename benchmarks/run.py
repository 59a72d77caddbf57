"""Run the benchmarks: ``python -m benchmarks.run [--quick] [--only NAME ...]``.

Writes ``benchmarks/results/latest.json`` (every per-rep time and ratio, sizes, machine) and
``benchmarks/results/latest.md`` (the table the README quotes). Ratios are speed-ups of collapselab
over the peer (> 1: faster), medians of alternated pairs (see ``harness.py``).

The full run (no ``--quick``) keeps the sizes a ratio depends on (all of WikiText-2, 10 training
steps, 128 sampled tokens, 1000 chains, a report on 2000 generations x 1000 chains ...) but runs
fewer generations where each costs the same at any depth, so that it takes about half an hour on
2 busy cores rather than about 80 minutes (each workload timed at load 4-10, December 2026; on
idle cores it took 7 minutes):
``chains`` 200 generations, not 1000 (the 1000-generation point stays on the scaling curve; the
curve over chain counts runs 20 generations, not 100) and ``gmm`` 200 generations of 8 seeds, not
the paper's 2000 (the scikit-learn side alone would take ~10 minutes a rep; the paper's scale runs
as the slow test ``test_paper_setup_full_scale``). ``--quick`` keeps every workload and peer but
shrinks sizes and reps (stated in each row) to finish in under 10 minutes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import Row, fmt_ratio

RESULTS = Path(__file__).resolve().parent / "results"

FULL: dict[str, Any] = {
    "reps": 3,
    "chains": {"chains": 1000, "gens": 200, "m": 100, "curve_chains": [10, 100, 1000, 10000],
               "curve_gens": 20, "curve_fixed_chains": 1000, "curve_gen_steps": [10, 100, 1000]},
    "gmm": {"seeds": 8, "gens": 200, "n": 1000, "single_gens": 200},
    "ngram": {"train_tokens": None, "sample_tokens": 100_000, "nltk_train_blocks": 400,
              "nltk_score_tokens": 500, "nltk_sample_train_blocks": 16, "nltk_sample_tokens": 5},
    "gpt_train": {"train_steps": 10},
    "gpt_sample": {"sample_batch": 32, "sample_new_tokens": 128, "beam_batch": 8,
                   "beam_new_tokens": 64},
    "demo": {},
    "metrics": {"min_s": 0.05},
    "report": {"gens": 2000, "chains": 1000},
    "ddp": {"steps": 20},
    "engines": {"prompt_tokens": 64, "sample_blocks": 64, "sample_new_tokens": 64,
                "beam_blocks": 16, "beam_new_tokens": 64},
}  # fmt: skip

QUICK: dict[str, Any] = {
    "reps": 2,
    "chains": {"chains": 1000, "gens": 100, "m": 100, "curve_chains": [10, 100, 1000],
               "curve_gens": 10, "curve_fixed_chains": 100, "curve_gen_steps": [10, 50],
               "reps": 5},  # seconds a rep, on a shared machine: best of 5, not of 2
    "gmm": {"seeds": 8, "gens": 10, "n": 1000, "single_gens": 10},
    "ngram": {"train_tokens": None, "sample_tokens": 100_000, "nltk_train_blocks": 40,
              "nltk_score_tokens": 100, "nltk_sample_train_blocks": 8, "nltk_sample_tokens": 2},
    "gpt_train": {"train_steps": 1},
    "gpt_sample": {"sample_batch": 32, "sample_new_tokens": 16, "beam_batch": 2,
                   "beam_new_tokens": 8},
    "demo": {},
    "metrics": {"min_s": 0.02, "reps": 5},  # tens of µs a call: the median of 5 pairs
    "report": {"gens": 2000, "chains": 100},
    "ddp": {"steps": 6},
    "engines": {"prompt_tokens": 32, "sample_blocks": 16, "sample_new_tokens": 32,
                "beam_blocks": 4, "beam_new_tokens": 16},
}  # fmt: skip


# workload name -> "module:function" (imported only when run: torch is slow to import)
WORKLOADS = {"chains": "chains:run", "gmm": "gmm:run", "ngram": "ngram:run",
             "gpt_train": "gpt:training", "gpt_sample": "gpt:sampling_bench", "demo": "demo:run",
             "metrics": "metrics:run", "report": "report:run", "ddp": "distributed:run",
             "engines": "engines:run"}

Workload = Callable[[dict[str, Any], int], tuple[list[Row], dict[str, Any]]]


def workload(name: str) -> Workload:
    module, func = WORKLOADS[name].split(":")
    return getattr(importlib.import_module(f"benchmarks.{module}"), func)  # type: ignore[no-any-return]


def gpu_row() -> Row:
    return Row("7 GPU: gpt / HF training and sampling", "not measured", "not measured", None,
               goal_text="report where a GPU is lent",
               note="not measured: no GPU lent to this task")  # fmt: skip


def machine() -> dict[str, Any]:
    import numpy

    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
            "numpy": numpy.__version__}  # fmt: skip


def markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    lines = [
        f"Benchmarks ({'quick' if meta['quick'] else 'full'} run, {meta['date']}, "
        f"{meta['machine']['cpus']} CPUs, load average at start "
        f"{meta['machine']['load_avg'][0]:.1f}; {meta['total_s'] / 60:.1f} min). Ratio = "
        "collapselab's speed-up over the peer, median of alternated pairs.",
        "",
        "| workload | ours | peer | ratio | goal | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        note = f" — {r.note}" if r.note else ""
        lines.append(f"| {r.workload}{note} | {r.ours} | {r.peer} | {fmt_ratio(r.ratio)} | "
                     f"{r.goal_text or '—'} | {r.result()} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and fewer reps")
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), help="run only these")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for latest.{json,md}")
    parser.add_argument("--sizes", type=json.loads, default=None,
                        help="JSON overriding per-workload sizes, e.g. '{\"gmm\": {\"gens\": 5}}'")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    for name, sizes in (args.sizes or {}).items():
        plan = {**plan, name: sizes if name == "reps" else {**plan[name], **sizes}}
    tic = time.perf_counter()
    meta: dict[str, Any] = {"quick": args.quick, "machine": machine(), "reps": plan["reps"],
                            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                            "threads": "GMM and chain workloads under threadpool_limits(1); "
                                       "torch workloads with torch's default threads"}  # fmt: skip
    rows: list[Row] = []
    extra: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in WORKLOADS:
        if args.only and name not in args.only:
            continue
        fn = workload(name)
        start = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        got, more = fn(plan[name], plan[name].get("reps", plan["reps"]))  # a workload's own
        seconds[name] = time.perf_counter() - start
        print(f"[bench] {name}: {seconds[name]:.0f} s", file=sys.stderr, flush=True)
        rows += got
        extra.update(more)
    if not args.only:
        rows.append(gpu_row())
    meta.update(total_s=time.perf_counter() - tic, workload_s=seconds,
                sizes={k: plan[k] for k in seconds})  # fmt: skip
    result = {"schema": "collapselab.benchmarks/1", "meta": meta,
              "rows": [r.to_json() for r in rows], "extra": extra}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (args.out / "latest.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))
    return result


if __name__ == "__main__":
    main()
