"""Workload: what the shipped configs' metrics cost a generation, for every continuous and
categorical family, against the family's fit+sample and the notebook's per-chain NumPy loop.

Every shipped config (``configs/``, the package's ``configs/``, inline sweep bases) whose source is
continuous or categorical is built as ``loop.run`` builds it (``Experiment.build``, same sizes,
metrics and parameters) and given generation 1's context: generation 0 fitted to the real pool,
generation 1 fitted to its samples, the real held-out set. Curation is left out (it changes which
samples are measured, not what measuring costs). Configs that differ only in what the metrics do
not see (name, policy, generations, curation) are measured once. Times, under
``threadpool_limits(1)`` as the loop runs these families:

- a config's metrics: ``loop.measure`` of all its metrics (what a generation pays, the loop's
  checks of their values included), against one generation of the per-chain loop (each chain
  fitted and sampled on its own with NumPy; scikit-learn's ``GaussianMixture`` for gmm);
- each metric alone, against the family's vectorised ``fit`` + ``sample`` on the same arrays;
  one row per (family, metric): the config where the metric is most expensive relative to the
  family.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from threadpoolctl import threadpool_limits

from benchmarks.harness import Row, alternate, fmt_seconds
from collapselab import components, loop  # noqa: F401  (components: registers every component)
from collapselab.config import ExperimentConfig, validate
from collapselab.metrics.base import GenerationContext
from collapselab.protocol import clone

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = (ROOT / "configs", ROOT / "src" / "collapselab" / "configs")
FAMILIES = ("gaussian", "gmm", "kde", "linreg", "categorical")  # the vectorised NumPy families


def shipped() -> list[tuple[str, ExperimentConfig]]:
    """``(label, config)`` of every shipped config of a continuous or categorical family; a sweep
    contributes its inline base (a base given by path is measured as that file)."""
    out = []
    for path in sorted(p for folder in FOLDERS for p in folder.rglob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "base" in raw:  # a sweep
            raw = raw["base"]
            if not isinstance(raw, dict):
                continue
        if raw.get("model", {}).get("family") not in FAMILIES or not raw.get("metrics"):
            continue
        out.append((str(path.relative_to(ROOT)), validate(raw)))
    return out


def signature(cfg: ExperimentConfig) -> str:
    """What the metrics' cost depends on: family, source, sizes, metrics and their parameters."""
    return json.dumps([cfg.model.model_dump(), cfg.data.model_dump(), cfg.chains,
                       cfg.synthetic_size, [m.model_dump() for m in cfg.metrics or []]],
                      sort_keys=True, default=str)


# ---------------------------------------------------------------- the notebook's way


def per_chain(family: str, model: Any, data: np.ndarray, m: int, rng: np.random.Generator) -> None:
    """One generation of the notebook's loop: every chain fitted and sampled on its own."""
    for x in data:  # (n, ...) one chain's training data
        if family == "gaussian":
            ddof = 0 if model.variance == "mle" else 1
            if x.shape[1] == 1:
                rng.normal(x.mean(), x.std(ddof=ddof), m)
            else:
                rng.multivariate_normal(x.mean(axis=0), np.cov(x, rowvar=False, ddof=ddof), m)
        elif family == "categorical":
            p = np.bincount(x, minlength=model.n_states) / len(x)
            rng.choice(model.n_states, size=m, p=p)
        elif family == "kde":
            n, dim = x.shape
            cov = (model.kernel_std**2 * np.eye(dim) if model.kernel_std is not None
                   else model.factor(n, dim) ** 2 * np.atleast_2d(np.cov(x, rowvar=False)))
            x[rng.integers(n, size=m)] + rng.multivariate_normal(np.zeros(dim), cov, m)
        elif family == "linreg":
            inputs, y = x[:, :-1], x[:, -1]
            w = np.linalg.lstsq(inputs, y, rcond=None)[0]
            inputs[:m] @ w + model.noise * rng.standard_normal(min(m, len(x)))
        elif family == "gmm":
            from sklearn.mixture import GaussianMixture

            GaussianMixture(model.n_components, covariance_type=model.covariance_type,
                            random_state=int(rng.integers(2**31))).fit(x).sample(m)
        else:
            raise ValueError(f"no per-chain loop for family {family!r}")


# ---------------------------------------------------------------- ours


def context(cfg: ExperimentConfig) -> tuple[loop.Experiment, GenerationContext]:
    """Generation 1 of ``cfg``: generation 0 fitted to the real pool, generation 1 to its samples."""
    exp = loop.Experiment.build(cfg)
    real_rng, heldout_rng = loop.setup_rngs(cfg.seed)
    size = cfg.data.size
    m = cfg.synthetic_size or size
    real = exp.source.real(size, cfg.chains, real_rng)
    heldout = exp.source.heldout(heldout_rng)
    rng = np.random.default_rng(cfg.seed)
    reference = clone(exp.producers[0].prototype).fit(real, rng=rng)
    train = reference.sample(size, rng)
    model = clone(exp.producers[0].prototype).fit(train, rng=rng)
    synthetic = model.sample(m, rng)
    return exp, GenerationContext(gen=1, model=model, reference=reference, train=train,
                                  synthetic=synthetic, real=real, heldout=heldout,
                                  source=exp.source, rng=rng)


def per_call(fn: Callable[[], Any], min_s: float) -> Callable[[], float]:
    """A timer of ``fn``: seconds a call, over enough calls to last ``min_s`` (calibrated once)."""
    tic = time.perf_counter()
    fn()
    calls = max(1, int(min_s / max(time.perf_counter() - tic, 1e-7)))

    def timer() -> float:
        tic = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - tic) / calls

    return timer


def run(sizes: dict[str, Any], reps: int) -> tuple[list[Row], dict[str, Any]]:
    min_s = sizes.get("min_s", 0.02)  # each timed call repeated to last this long
    only = sizes.get("configs")  # config paths to measure (default: every shipped one)
    configs: dict[str, list[tuple[str, ExperimentConfig]]] = {}
    for label, cfg in shipped():
        if only is None or label in only:
            configs.setdefault(signature(cfg), []).append((label, cfg))
    rows: list[Row] = []
    worst: dict[tuple[str, str], Row] = {}  # (family, metric) -> its costliest config's row
    with threadpool_limits(1):
        for group in configs.values():
            whole, each = measure([label for label, _ in group], group[0][1], reps, min_s)
            rows.append(whole)
            for key, row in each.items():
                if key not in worst or row.ratio < worst[key].ratio:  # type: ignore[operator]
                    worst[key] = row
    return rows + [worst[key] for key in sorted(worst)], {}


def measure(labels: list[str], cfg: ExperimentConfig, reps: int,
            min_s: float) -> tuple[Row, dict[tuple[str, str], Row]]:
    """The row of the config's metrics against the per-chain loop, and a row per metric against
    the family's fit+sample, keyed ``(family, metric)``."""
    exp, ctx = context(cfg)
    family, proto = cfg.model.family, exp.producers[0].prototype
    size, m = cfg.data.size, cfg.synthetic_size or cfg.data.size
    dim = ctx.synthetic.shape[-1] if ctx.synthetic.ndim == 3 else 1
    shape = f"{cfg.chains} chains x M={size}, {dim}-D"
    rng = np.random.default_rng(1)
    engine = per_call(lambda: clone(proto).fit(ctx.train, rng=rng).sample(m, rng), min_s)
    peer = per_call(lambda: per_chain(family, proto, ctx.train, m, rng), min_s)
    ours = per_call(lambda: loop.measure(exp.metrics, ctx), min_s)
    pairs = alternate(ours, peer, reps, warmup=False)
    engine_s = min(engine() for _ in range(reps))
    names = [name for name, _ in exp.metrics]
    whole = Row(
        f"metrics {family}: {', '.join(names)} ({shape}) vs per-chain NumPy loop",
        fmt_seconds(min(pairs.ours)), fmt_seconds(min(pairs.peer)), pairs.ratio, goal=5,
        goal_text=">= 5x the per-chain loop",
        note=f"{', '.join(labels)}; fit+sample {fmt_seconds(engine_s)}",
        data={"configs": labels, "metrics": names, "chains": cfg.chains, "size": size,
              "metrics_s": pairs.ours, "per_chain_s": pairs.peer, "engine_s": engine_s})
    each = {}
    for name, metric in exp.metrics:
        one = per_call(functools.partial(loop.measure, [(name, metric)], ctx), min_s)
        pairs = alternate(one, engine, reps, warmup=False)
        each[family, name] = Row(
            f"metric {name} on {family} ({shape}) vs fit+sample",
            fmt_seconds(min(pairs.ours)), fmt_seconds(min(pairs.peer)), pairs.ratio, goal=1,
            goal_text="<= the family's fit+sample",
            note=f"the costliest {family} config for it: {labels[0]}",
            data={"configs": labels, "metric_s": pairs.ours, "engine_s": pairs.peer})
    return whole, each
