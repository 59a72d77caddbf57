"""A discrete distribution fitted by counts.

Each chain is a Wright-Fisher process: the fitted probabilities are a martingale, so every chain is
eventually absorbed in a single state, state k with probability p_k; states with p_k < 1/M are
usually lost in the first generation.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from collapselab.protocol import Model, check_data, check_n
from collapselab.registry import families


@families.register("categorical")
class Categorical(Model):
    """Categorical distribution over ``n_states`` states, fitted by counts (a Wright-Fisher
    process: each chain is absorbed in one state)."""

    kinds = frozenset({"categorical"})

    def __init__(
        self,
        n_states: Annotated[int | None, Field(ge=2, description=(
            "number of states; default: the source's"))] = None,
    ) -> None:
        self.n_states = n_states

    def fit(self, data: np.ndarray, *, rng: np.random.Generator | None = None) -> Categorical:
        x = check_data(data)  # (C, M) state indices
        if x.dtype.kind not in "iu" or (x.dtype.kind == "i" and x.min() < 0):
            raise ValueError(f"categorical data must be non-negative integers; got dtype {x.dtype}")
        top = int(x.max())
        k = self.n_states or top + 1
        if top >= k:
            raise ValueError(f"state {top} is out of range for n_states={k}")
        chains = x.shape[0]
        # chain c's state j is bin c * k + j: one bincount counts every chain. Built in place, in
        # the index dtype bincount reads (any other is copied first): one temporary, not three
        flat = x.reshape(chains, -1).astype(np.intp)
        flat += np.arange(0, chains * k, k, dtype=np.intp)[:, None]
        counts = np.bincount(flat.ravel(), minlength=chains * k).reshape(chains, k)
        m = x[0].size  # every chain counts the same number of samples
        # (C, K) in the smallest dtype that holds m: the MLE is counts / m, drawn from exactly
        self.counts_ = counts.astype(np.min_scalar_type(m))
        self.probs_ = counts / m
        return self

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state.pop("probs_", None)  # counts_ / m: a pickled model is a tenth the size
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        if "counts_" in state:
            self.probs_ = self.counts_ / self.counts_[0].sum()

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        n = check_n(n)
        self.check_fitted()
        # inverse CDF in integers: a uniform draw r in [0, m) falls in state j where the counts'
        # running sum first exceeds it, so P(j) = counts_j / m exactly and a lost state (count 0,
        # two equal edges) never comes back
        edges = np.cumsum(self.counts_, axis=1)  # (C, K)
        total = int(edges[0, -1])
        small = np.int16 if total < 2**15 else np.int64  # NumPy draws bytes slowly; int16 fastest
        r = rng.integers(0, total, size=(edges.shape[0], n), dtype=small)
        edges = edges.astype(small)  # compared in r's dtype: no conversion of r per state
        dtype = np.min_scalar_type(edges.shape[1] - 1)
        if edges.shape[1] <= 64:  # few states: count the edges at or below each draw, all chains
            states = np.zeros(r.shape, dtype=dtype)
            above = np.empty(r.shape, dtype=bool)  # one temporary for every edge
            for j in range(edges.shape[1] - 1):
                states += np.greater_equal(r, edges[:, j:j + 1], out=above)
            return states
        return np.stack([np.searchsorted(e[:-1], row, side="right")
                         for e, row in zip(edges, r, strict=True)]).astype(dtype)  # (C, n)

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        self.check_fitted()
        x = np.asarray(data)
        x = np.broadcast_to(x, (self.probs_.shape[0], *x.shape[1:]))
        with np.errstate(divide="ignore"):
            return np.log(np.take_along_axis(self.probs_, x, axis=1))
