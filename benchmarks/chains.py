"""Workload 1: Gaussian and categorical chains, collapselab's vectorised families against the
per-chain NumPy loop of the study's notebook.

Three figures per family: the engine (the family's ``fit`` + ``sample`` on ``(chains, M, ...)``
arrays, once per generation), the full ``loop.run`` (run directory, seeds, one cheap metric,
samples written and pruned: the loop's overhead is in this figure, not hidden), and a scaling
curve of the engine in chains and in generations, each point paired with the loop.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.harness import Row, alternate, fmt_seconds, timed
from collapselab import components, loop  # noqa: F401  (components: registers sources)
from collapselab.config import ExperimentConfig
from collapselab.models.categorical import Categorical
from collapselab.models.gaussian import Gaussian
from collapselab.protocol import clone

K_STATES = 10  # categorical: a Zipf(1) distribution over 10 states


def zipf(k: int) -> np.ndarray:
    p = 1.0 / np.arange(1, k + 1)
    return p / p.sum()


# ---------------------------------------------------------------- ours


def engine(family: str, chains: int, gens: int, m: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    if family == "gaussian":
        proto: Any = Gaussian()
        x = rng.standard_normal((chains, m, 1))
    else:
        proto = Categorical(n_states=K_STATES)
        x = rng.choice(K_STATES, size=(chains, m), p=zipf(K_STATES))
    for _ in range(gens):
        x = clone(proto).fit(x, rng=rng).sample(m, rng)


def full_loop(family: str, chains: int, gens: int, m: int, seed: int = 0) -> None:
    if family == "gaussian":
        spec: dict[str, Any] = {"model": {"family": "gaussian"},
                                "data": {"source": "normal", "size": m},
                                "metrics": ["variance_ratio"]}  # fmt: skip
    else:
        spec = {"model": {"family": "categorical"},
                "data": {"source": "categorical", "size": m, "k": K_STATES},
                "metrics": ["support"]}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExperimentConfig.model_validate({
            "name": f"bench-{family}", "generations": gens, "seed": seed, "chains": chains,
            "policy": {"name": "replace"}, "out_dir": tmp, **spec})  # fmt: skip
        loop.run(cfg)


# ---------------------------------------------------------------- the notebook's way


def per_chain_loop(family: str, chains: int, gens: int, m: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    p0 = zipf(K_STATES)
    for _ in range(chains):
        if family == "gaussian":
            x = rng.normal(0.0, 1.0, m)
            for _ in range(gens):
                x = rng.normal(x.mean(), x.std(), m)  # MLE fit, then sample
        else:
            x = rng.choice(K_STATES, size=m, p=p0)
            for _ in range(gens):
                p = np.bincount(x, minlength=K_STATES) / m
                x = rng.choice(K_STATES, size=m, p=p)


# ---------------------------------------------------------------- the workload


def run(sizes: dict[str, Any], reps: int) -> tuple[list[Row], dict[str, Any]]:
    chains, gens, m = sizes["chains"], sizes["gens"], sizes["m"]
    rows, curves = [], {}
    shape = f"{chains} chains x {gens} gens x M={m}"
    with threadpool_limits(1):  # what loop.run does for these families
        for family in ("gaussian", "categorical"):
            pairs = alternate(lambda f=family: timed(lambda: engine(f, chains, gens, m)),
                              lambda f=family: timed(lambda: per_chain_loop(f, chains, gens, m)),
                              reps)  # fmt: skip
            rows.append(Row(
                f"1 {family} chains, engine ({shape})",
                fmt_seconds(min(pairs.ours)), fmt_seconds(min(pairs.peer)), pairs.ratio,
                goal=100 if family == "gaussian" else None,
                goal_text=">= 100x the per-chain loop" if family == "gaussian" else "",
                note="fit+sample per generation vs per-chain NumPy loop",
                data={"ours_s": pairs.ours, "peer_s": pairs.peer, "ratios": pairs.ratios,
                      "chains": chains, "gens": gens, "m": m}))  # fmt: skip
            loop_pairs = alternate(lambda f=family: timed(lambda: full_loop(f, chains, gens, m)),
                                   lambda f=family: timed(lambda: per_chain_loop(f, chains, gens, m)),
                                   reps, warmup=False)  # fmt: skip
            rows.append(Row(
                f"1 {family} chains, full loop.run ({shape})",
                fmt_seconds(min(loop_pairs.ours)), fmt_seconds(min(loop_pairs.peer)),
                loop_pairs.ratio,
                goal=100 if family == "gaussian" else None,
                goal_text=">= 100x the per-chain loop" if family == "gaussian" else "",
                note="includes run store, seeds, one metric, sample writes",
                data={"ours_s": loop_pairs.ours, "peer_s": loop_pairs.peer,
                      "ratios": loop_pairs.ratios, "loop_overhead_x_engine":
                      min(loop_pairs.ours) / min(pairs.ours)}))  # fmt: skip
        curves["gaussian"] = scaling("gaussian", sizes, reps)
    for point in curves["gaussian"]:
        rows.append(Row(
            f"1 gaussian scaling: {point['chains']} chains x {point['gens']} gens",
            f"{point['ours_us_per_chain_gen']:.3g} µs/chain-gen",
            f"{point['peer_us_per_chain_gen']:.3g} µs/chain-gen", point["ratio"],
            note="engine vs per-chain loop", data=point))  # fmt: skip
    return rows, {"scaling": curves}


def scaling(family: str, sizes: dict[str, Any], reps: int) -> list[dict[str, Any]]:
    m = sizes["m"]
    points = [(c, sizes["curve_gens"]) for c in sizes["curve_chains"]]
    points += [(sizes["curve_fixed_chains"], g) for g in sizes["curve_gen_steps"]]
    points = list(dict.fromkeys(points))  # the two curves may share a point
    out = []
    for chains, gens in points:
        pairs = alternate(lambda c=chains, g=gens: timed(lambda: engine(family, c, g, m)),
                          lambda c=chains, g=gens: timed(lambda: per_chain_loop(family, c, g, m)),
                          reps)  # fmt: skip
        work = chains * gens
        out.append({"family": family, "chains": chains, "gens": gens, "m": m,
                    "ours_s": pairs.ours, "peer_s": pairs.peer, "ratios": pairs.ratios,
                    "ratio": pairs.ratio,
                    "ours_us_per_chain_gen": 1e6 * min(pairs.ours) / work,
                    "peer_us_per_chain_gen": 1e6 * min(pairs.peer) / work})  # fmt: skip
    return out
