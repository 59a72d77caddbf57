"""Categorical under ``accumulate``, ``real_fraction`` and ``fresh``, and when a state is forgotten.

A categorical refitted by counts gives a state mass exactly when it is in the training set, and its
samples never contain a state of count 0. So whether state s (probability p) is present at
generation t depends on its count alone:

- accumulate: the real rows stay in every training set, so s is present for ever iff it is in the
  M_0 real rows: P(present) = 1 - (1 - p)^{M_0} at every generation (no forgetting).
- fresh: count_t = H_t + B_t with H_t ~ Binomial(k, p) from the k new real rows and
  B_t ~ Binomial(n, count_{t-1} / N_{t-1}) from the n synthetic rows (a random n of the previous
  model's m samples: n draws from its counts), count_0 ~ Binomial(M_0, p). A Wright-Fisher chain
  with immigration; P(count_t = 0) by pushing its distribution through the transitions.
- real_fraction: the k real rows are a random subset of the fixed real sample, in which s has count
  c ~ Binomial(M, p): given c, H_t ~ Hypergeometric(M, c, k), and the chain runs on (c, count),
  count_0 = c (generation 0 fits the real sample).

Merging states merges their chains (the same law with p_k + p_l; for real_fraction the union's
count), which gives the support size's exact sd as under replace. All exact.

Forgetting time under replace (the report's chart): a state with real count c is first missing
from the generated data at generation T - 1, T its Wright-Fisher absorption time at 0; E[min(T - 1,
G)] = Σ_{t=1..G} (1 - P_c(count_t = 0)) from the chain's transition matrix
(:func:`expected_loss_generation`). For a large training set (tokens) a count c ≪ N is a critical
Galton-Watson process (Poisson(1) offspring): P(lost by t) = q_t^c, q_t = exp(q_{t-1} - 1), q_0 = 0
(:func:`branching_loss_generation`, an approximation for c ≪ N; Suresh et al. 2025: the time to
forget grows about linearly with the count).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.theory.base import Prediction, register
from collapselab.theory.categorical import (
    WF_MAX_PAIRS,
    WF_MAX_SIZE,
    binomial_pmf,
    presence_predictions,
)

REAL_FRACTION_MAX_SIZE = 200  # the (c, count) chain is (M+1)²-sized per state: beyond, no prediction
REAL_FRACTION_MAX_WORK = 2e9  # multiply-adds of the (state, c, count) chain: beyond, no prediction


def _thin(dist: np.ndarray, size: int, n: int) -> np.ndarray:
    """Counts after n draws from count / size: ``dist`` ``(..., size + 1)`` -> ``(..., n + 1)``."""
    return dist @ binomial_pmf(n, np.arange(size + 1) / size)


def _add(dist: np.ndarray, immigrants: np.ndarray) -> np.ndarray:
    """The law of count + H: ``dist`` ``(..., n + 1)``, ``immigrants`` the pmf of H ``(..., k + 1)``
    (broadcast against ``dist``'s leading axes) -> ``(..., n + k + 1)``."""
    n, k = dist.shape[-1] - 1, immigrants.shape[-1] - 1
    out = np.zeros(dist.shape[:-1] + (n + k + 1,))
    for h in range(k + 1):
        out[..., h:h + n + 1] += dist * immigrants[..., h:h + 1]
    return out


def immigration_absent(policy: str, p: np.ndarray, m0: int, k: int, n: int,
                       generations: int) -> np.ndarray:
    """P(count = 0 at generation t) ``(G, S)`` for states of probability ``p`` under ``fresh`` or
    ``real_fraction``: k real rows and n of the previous model's rows a generation, M_0 = ``m0``
    real rows at generation 0."""
    p = np.asarray(p, dtype=float)
    out = np.empty((generations, len(p)))
    if policy == "fresh":
        dist, size = binomial_pmf(m0, p), m0  # (S, count)
        immigrants = binomial_pmf(k, p)
        out[0] = dist[:, 0]
        for t in range(1, generations):
            dist, size = _add(_thin(dist, size, n), immigrants), k + n
            out[t] = dist[:, 0]
        return np.clip(out, 0.0, 1.0)
    from scipy.stats import hypergeom  # scipy.stats is slow to import: only here

    # real_fraction: (S, c, count), c the state's count in the real sample
    c = np.arange(m0 + 1)
    prior = binomial_pmf(m0, p)  # (S, c)
    dist = prior[:, :, None] * np.eye(m0 + 1)[None]  # count_0 = c
    immigrants = hypergeom.pmf(np.arange(k + 1)[None], m0, c[:, None], k)  # (c, h)
    out[0] = prior[:, 0]
    size = m0
    for t in range(1, generations):
        dist, size = _add(_thin(dist, size, n), immigrants[None]), k + n
        out[t] = dist[:, :, 0].sum(axis=1)
    return np.clip(out, 0.0, 1.0)


def categorical_policy(policy: str, p: np.ndarray, m0: int, generations: int,
                       real_fraction: float = 0.1, m: int | None = None) -> dict[str, Prediction]:
    """Support size, lost states and presence under ``accumulate``, ``fresh`` or ``real_fraction``
    (training sets of M_0 = ``m0`` rows after generation 0: k = round(f M_0) real, n = min(M_0 - k,
    m) synthetic); empty where the chain is too large to run."""
    p = np.asarray(p, dtype=float)
    if policy == "accumulate":
        return presence_predictions(
            p, lambda q: np.broadcast_to((1 - q) ** m0, (generations, len(q))),
            "P(state k present) = 1 - (1 - p_k)^{M_0} at every generation (accumulate keeps the "
            "real rows: a state seen once is never lost)")
    k = int(round(real_fraction * m0))
    n = min(m0 - k, m or m0)
    if k == 0 or n == 0 or m0 > (WF_MAX_SIZE if policy == "fresh" else REAL_FRACTION_MAX_SIZE):
        return {}
    states = np.count_nonzero(p)
    pairs = states * (states - 1) // 2
    states += pairs if pairs <= WF_MAX_PAIRS else 0  # the pairs' chains run too (the sd)
    if policy == "real_fraction" and (
            states * (m0 + 1) * (k + n + 1) * (n + 1) * generations > REAL_FRACTION_MAX_WORK):
        return {}  # seconds to minutes of matrix products: left out
    how = ("Hypergeometric(M, c_k, k) real rows from the fixed sample, c_k ~ Binomial(M, p_k)"
           if policy == "real_fraction" else "Binomial(k, p_k) new real rows")
    return presence_predictions(
        p, lambda q: immigration_absent(policy, q, m0, k, n, generations),
        f"P(state k present at t) from its count's chain: {how} plus Binomial(n, count/N) "
        f"synthetic rows a generation (k = {k}, n = {n}), exact")


def _categorical_policy(config: Any, source: Any) -> dict[str, Prediction]:
    return categorical_policy(
        config.policy.name, source.p, config.data.size, config.generations,
        float(config.policy.params.get("real_fraction", 0.1)),
        config.synthetic_size or config.data.size)


for _policy in ("accumulate", "real_fraction", "fresh"):
    register("categorical", "categorical", _policy)(_categorical_policy)


def expected_loss_generation(counts: np.ndarray, m0: int, m: int, generations: int) -> np.ndarray:
    """E[min(first generation missing from the generated data, G)] under ``replace`` for states
    with real counts ``counts`` in M_0 = ``m0`` rows, m rows a generation after (exact: the
    Wright-Fisher chain started at the count). A state never lost counts as G."""
    counts = np.asarray(counts, dtype=int)
    # P(count_t = 0 | count_0 = c) for t = 1..G: the first transition from M_0, then m to m
    first = binomial_pmf(m, np.arange(m0 + 1) / m0)  # (M_0 + 1, m + 1)
    step = binomial_pmf(m, np.arange(m + 1) / m)
    col, lost = np.eye(m + 1)[:, 0], np.empty((generations, m0 + 1))
    for t in range(generations):
        lost[t] = first @ col  # P(count_{t+1} = 0 | count_0)
        col = step @ col
    return (1 - lost[:, counts]).sum(axis=0)


def branching_loss_generation(counts: np.ndarray, generations: int) -> np.ndarray:
    """E[min(first generation missing from the generated data, G)] for a type of count c in a
    large training set under ``replace``, a critical Poisson(1) branching process (c ≪ N)."""
    q, lost = 0.0, np.empty(generations)
    for t in range(generations):
        q = np.exp(q - 1.0)  # P(one copy's line is extinct after t + 1 resamplings)
        lost[t] = q
    counts = np.asarray(counts, dtype=float)
    return (1 - lost[:, None] ** counts[None]).sum(axis=0)



def categorical_accumulate_risk(p: np.ndarray, m0: int, m: int, generations: int) -> np.ndarray:
    """E‖p̂_t - p‖² under ``accumulate`` (N_t = M_0 + t m rows), exact: the pooled frequencies are
    a martingale, and adding m draws from p̂_t moves them by E‖Δ‖² = (m / N_{t+1})² (1 - ‖p‖² -
    E‖p̂_t - p‖²) / m. With m = M_0 it stays below (π²/6) E‖p̂_0 - p‖² (Dey & Donoho 2024)."""
    p = np.asarray(p, dtype=float)
    spread = 1.0 - float(p @ p)  # E‖one-hot - p‖²
    risk, out = spread / m0, np.empty(generations)
    for t in range(generations):
        out[t] = risk
        pool = m0 + (t + 1) * m
        risk += m * (spread - risk) / pool**2
    return out
