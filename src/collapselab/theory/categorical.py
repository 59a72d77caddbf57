"""Categorical, replace: every state's count is marginally a two-allele Wright-Fisher chain
(Binomial(M_t, c/M_{t-1}) each generation), started at Binomial(M_0, p_k); its (M+1)-state Markov
chain gives P(state k present at generation t) exactly. The sum of two states' counts is again such
a chain (with p_k + p_l), which gives the pairwise terms of the support size's variance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import gammaln, xlog1py, xlogy

from collapselab.theory.base import Prediction, fit_sizes, register

WF_MAX_SIZE = 2000  # the Wright-Fisher transition matrix is (M+1)²: beyond this, no prediction
WF_MAX_PAIRS = 1000  # pairwise chains for the support size's sd: beyond this, sd is left unknown
PRESENCE_STATES = 10  # present_k for the first this many states (the state_presence default)


def binomial_pmf(n: int, p: np.ndarray) -> np.ndarray:
    """``P(K = k)`` for ``K ~ Binomial(n, p_i)``, ``k = 0..n``: ``(len(p), n + 1)``, in log space
    (``scipy.stats.binom.pmf`` to 1e-11, 8x faster on these grids; p = 0 and 1 exact)."""
    k = np.arange(n + 1)
    log_choose = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
    p = np.asarray(p, dtype=float)[:, None]
    return np.exp(log_choose + xlogy(k, p) + xlog1py(n - k, -p))


def wright_fisher_absent(p: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """P(count = 0 at generation t) for two-allele Wright-Fisher chains with initial frequencies
    ``p`` ``(S,)``: count_0 ~ Binomial(M_0, p), count_t ~ Binomial(M_t, count_{t-1}/M_{t-1}).
    Returns ``(G, S)``."""
    p = np.asarray(p, dtype=float)
    dist = binomial_pmf(int(sizes[0]), p)  # (S, M_0 + 1)
    out = np.empty((len(sizes), len(p)))
    out[0] = dist[:, 0]
    t = 1
    while t < len(sizes):
        key = (int(sizes[t - 1]), int(sizes[t]))
        freq = np.arange(key[0] + 1) / key[0]  # T[i, j] = Binomial(j; M_t, i / M_{t-1})
        step = binomial_pmf(key[1], freq)
        run = 1  # generations t .. t + run - 1 share this transition (all of them, usually)
        while t + run < len(sizes) and (sizes[t + run - 1], sizes[t + run]) == key:
            run += 1
        # P(count = 0 at t + k) = dist T^(k+1) e_0: the columns T^(k+1) e_0 by matrix-vector
        # products, not a matrix product per generation
        cols = np.empty((key[0] + 1, run))
        cols[:, 0] = step[:, 0]
        for k in range(1, run):
            cols[:, k] = step @ cols[:, k - 1]
        out[t:t + run] = (dist @ cols).T
        t += run
        if t < len(sizes):  # another transition follows: carry the distribution over
            dist = dist @ (step if run == 1 else np.linalg.matrix_power(step, run))
    return np.clip(out, 0.0, 1.0)


def presence_predictions(p: np.ndarray, absent_of: Callable[[np.ndarray], np.ndarray], source: str,
                         limit: Callable[[int], str] | None = None) -> dict[str, Prediction]:
    """Support size, lost states and each state's presence from ``absent_of(q) -> (G, len(q))``,
    the chance that a state of probability q is missing from the training set. A set of states is
    missing together exactly when their merged state (probability Σ q) is: the pairs give the
    support size's exact sd. ``limit(state)``: text on where present_k settles."""
    p = np.asarray(p, dtype=float)
    live = np.flatnonzero(p > 0)  # states with p = 0 are never present
    i, j = np.triu_indices(len(live), k=1)
    paired = len(i) <= WF_MAX_PAIRS
    # the states' chains and, for the sd, the merged pairs' (p_k + p_l), run as one batch
    chains = absent_of(np.concatenate([p[live], p[live][i] + p[live][j]]) if paired else p[live])
    absent, both = chains[:, :len(live)], chains[:, len(live):]  # (G, K'), (G, pairs)
    present = 1 - absent
    sd = None
    if paired:
        # Var Σ_k 1[k absent] = Σ_k a_k(1 - a_k) + 2 Σ_{k<l} (P(k, l absent) - a_k a_l), and
        # "k and l both absent" is "the merged state {k, l} absent": a chain with p_k + p_l
        var = (absent * (1 - absent)).sum(axis=1) + 2 * (both - absent[:, i] * absent[:, j]).sum(axis=1)
        sd = np.sqrt(np.maximum(var, 0))
        source += "; sd from the merged pairs' chains (p_k + p_l)"
    out = {
        "support_size": Prediction(present.sum(axis=1), sd, "E support = Σ_k " + source),
        "lost_states": Prediction(absent.sum(axis=1), sd, "E lost = Σ_k 1 - " + source),
    }
    for k, state in enumerate(live[:PRESENCE_STATES]):
        out[f"present_{state}"] = Prediction(
            present[:, k], np.sqrt(present[:, k] * absent[:, k]),
            source + (limit(state) if limit else ""))
    return out


def categorical_replace(p: np.ndarray, sizes: np.ndarray) -> dict[str, Prediction]:
    """Expected support size and lost states of a categorical refitted by counts (``replace``)."""
    p = np.asarray(p, dtype=float)
    return presence_predictions(
        p, lambda q: wright_fisher_absent(q, sizes),
        "P(state k present at t) from the two-allele Wright-Fisher chain started at Binomial(M_0, p_k)",
        lambda state: f"; → p_{state} = {p[state]:.4g}, its absorption probability")


@register("categorical", "categorical", "replace")
def _categorical_replace(config: Any, source: Any) -> dict[str, Prediction]:
    sizes = fit_sizes(config)
    if sizes.max() > WF_MAX_SIZE:
        return {}
    return categorical_replace(source.p, sizes)
