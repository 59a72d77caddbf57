"""Workload 2: the paper's GMM chain (2 full-covariance components refitted to N samples of their
own, starting from a standard 2-D Gaussian) — collapselab's batched NumPy EM (``engine=numpy``)
against refitting scikit-learn's ``GaussianMixture`` from scratch every generation (the notebook's
way), one chain per seed. Both run under ``threadpool_limits(1)``: BLAS threads make these small
fits many times slower on 2 cores.

Collapse is stochastic, so "the same statistics" is checked on distributions: the final
weighted component std of every seed, for each side (sorted values, median and a two-sample
Kolmogorov-Smirnov p-value).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from benchmarks.harness import Row, alternate, fmt_seconds, timed
from collapselab.models.gmm import GMM
from collapselab.protocol import clone


def component_std(weights: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """Weighted mean component std per chain (collapselab's ``component_std`` metric)."""
    std = np.sqrt(np.trace(covs, axis1=-2, axis2=-1) / covs.shape[-1])  # (C, K)
    return (weights * std).sum(axis=1)


def ours(seeds: int, gens: int, n: int, out: list[np.ndarray]) -> None:
    """All seeds as chains of one batched run."""
    rng = np.random.default_rng(0)
    proto = GMM(n_components=2, covariance_type="full", engine="numpy")
    x = rng.standard_normal((seeds, n, 2))
    model = proto
    for _ in range(gens):
        model = clone(proto).fit(x, rng=rng)
        x = model.sample(n, rng)
    out.append(component_std(model.weights_, model.covariances_))


def notebook(seeds: int, gens: int, n: int, out: list[np.ndarray]) -> None:
    final = []
    for seed in range(seeds):
        rng = np.random.default_rng(10_000 + seed)
        x = rng.standard_normal((n, 2))
        for _ in range(gens):
            gm = GaussianMixture(2, covariance_type="full",
                                 random_state=int(rng.integers(2**31 - 1))).fit(x)  # fmt: skip
            x, _ = gm.sample(n)
        final.append(component_std(gm.weights_[None], gm.covariances_[None])[0])
    out.append(np.array(final))


def run(sizes: dict[str, Any], reps: int) -> tuple[list[Row], dict[str, Any]]:
    seeds, gens, n = sizes["seeds"], sizes["gens"], sizes["n"]
    ours_std: list[np.ndarray] = []
    peer_std: list[np.ndarray] = []
    with threadpool_limits(1):
        pairs = alternate(lambda: timed(lambda: ours(seeds, gens, n, ours_std)),
                          lambda: timed(lambda: notebook(seeds, gens, n, peer_std)),
                          reps, warmup=False)  # fmt: skip
        one = alternate(lambda: timed(lambda: ours(1, sizes["single_gens"], n, [])),
                        lambda: timed(lambda: notebook(1, sizes["single_gens"], n, [])),
                        reps, warmup=False)  # fmt: skip
    # every rep repeats the same seeds, so one rep's values are the distribution
    a, b = ours_std[0], peer_std[0]
    ks = stats.ks_2samp(a, b) if len(a) > 1 else None
    summary = {
        "ours_final_component_std": sorted(a.tolist()),
        "peer_final_component_std": sorted(b.tolist()),
        "ours_median": float(np.median(a)), "peer_median": float(np.median(b)),
        "ks_pvalue": None if ks is None else float(ks.pvalue),
    }  # fmt: skip
    stat = (f"final component std median {summary['ours_median']:.3g} vs "
            f"{summary['peer_median']:.3g}" + ("" if ks is None else f", KS p={ks.pvalue:.2f}"))
    rows = [
        Row(f"2 GMM, {seeds} seeds x {gens} gens, N={n}", fmt_seconds(min(pairs.ours)),
            fmt_seconds(min(pairs.peer)), pairs.ratio, goal=3,
            goal_text=">= 3x sklearn refit, same statistics",
            note=f"seeds batched as chains; 1 BLAS thread both; {stat}",
            data={"ours_s": pairs.ours, "peer_s": pairs.peer, "ratios": pairs.ratios,
                  "seeds": seeds, "gens": gens, "n": n, **summary}),
        Row(f"2 GMM, 1 chain x {sizes['single_gens']} gens, N={n}", fmt_seconds(min(one.ours)),
            fmt_seconds(min(one.peer)), one.ratio, goal=1,
            goal_text=">= 1x sklearn refit",
            note="one chain: no batching advantage; 1 BLAS thread both",
            data={"ours_s": one.ours, "peer_s": one.peer, "ratios": one.ratios}),
    ]  # fmt: skip
    return rows, {"gmm_statistics": summary}
