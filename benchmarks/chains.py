"""Workload 1: Gaussian and categorical chains, collapselab's vectorised families against the
per-chain NumPy loop of the study's notebook, and against the floor.

Per family, measured side by side: the floor (the random draws and sufficient statistics a
generation cannot avoid: ``chains x M`` normals and their moments, or uniforms and their counts),
the engine (the family's ``fit`` + ``sample`` on ``(chains, M, ...)`` arrays, once per generation),
the full ``loop.run`` (run directory, seeds, one metric, composition, commit, samples written and
pruned: the loop's overhead is in this figure, not hidden; the run directories are removed after
the workload, untimed) and the per-chain loop. Then a scaling curve of the engine in chains and
in generations, each point paired with the loop.
"""

from __future__ import annotations

import functools
import itertools
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


RUNS = itertools.count()  # each full_loop call writes a new run directory


def full_loop(family: str, chains: int, gens: int, m: int, seed: int = 0,
              out_dir: str | None = None) -> None:
    """``loop.run`` on a new run directory in ``out_dir`` (a temporary folder by default). The
    workload passes one folder for all its runs and removes it at the end, untimed: deleting a
    run is not part of running it."""
    if out_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return full_loop(family, chains, gens, m, seed, tmp)
    if family == "gaussian":
        spec: dict[str, Any] = {"model": {"family": "gaussian"},
                                "data": {"source": "normal", "size": m},
                                "metrics": ["variance_ratio"]}  # fmt: skip
    else:
        spec = {"model": {"family": "categorical"},
                "data": {"source": "categorical", "size": m, "k": K_STATES},
                "metrics": ["support"]}  # fmt: skip
    cfg = ExperimentConfig.model_validate({
        "name": f"bench-{family}-{next(RUNS)}", "generations": gens, "seed": seed,
        "chains": chains, "policy": {"name": "replace"}, "out_dir": out_dir, **spec})  # fmt: skip
    loop.run(cfg)


def floor(family: str, chains: int, gens: int, m: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(gens):
        if family == "gaussian":
            x = rng.standard_normal((chains, m))
            x.mean(axis=1), x.var(axis=1)
        else:
            u = rng.random((chains, m))
            np.bincount((np.arange(chains)[:, None] * K_STATES
                         + (u * K_STATES).astype(np.int64)).ravel(), minlength=chains * K_STATES)


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
    with threadpool_limits(1), tempfile.TemporaryDirectory() as runs_dir:  # as loop.run limits
        for family in ("gaussian", "categorical"):
            times: dict[str, list[float]] = {"floor": [], "engine": [], "loop": [], "peer": []}
            runs = {"floor": floor, "engine": engine,
                    "loop": functools.partial(full_loop, out_dir=runs_dir), "peer": per_chain_loop}
            for rep in range(reps + 1):  # side by side, in turn; the first round warms up
                for name, fn in runs.items():
                    t = timed(lambda fn=fn, f=family: fn(f, chains, gens, m))
                    if rep:
                        times[name].append(t)
            best = {k: min(v) for k, v in times.items()}
            data = {"seconds": times, "chains": chains, "gens": gens, "m": m}
            rows.append(Row(
                f"1 {family} chains, engine vs floor ({shape})",
                fmt_seconds(best["engine"]), fmt_seconds(best["floor"]),
                best["floor"] / best["engine"], goal=0.7, goal_text=">= 0.7 of the floor's speed",
                note="fit+sample vs the draws and statistics alone", data=data))
            rows.append(Row(
                f"1 {family} chains, full loop.run vs engine ({shape})",
                fmt_seconds(best["loop"]), fmt_seconds(best["engine"]),
                best["engine"] / best["loop"], goal=1 / 1.5, goal_text="within 1.5x of the engine",
                note="run store, seeds, one metric, commit vs fit+sample alone", data=data))
            rows.append(Row(
                f"1 {family} chains, full loop.run vs per-chain NumPy loop ({shape})",
                fmt_seconds(best["loop"]), fmt_seconds(best["peer"]),
                best["peer"] / best["loop"], goal=5, goal_text=">= 5x the per-chain loop",
                note="the whole run against the notebook's loop", data=data))
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
