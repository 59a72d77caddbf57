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
    kinds = frozenset({"categorical"})

    def __init__(
        self,
        n_states: Annotated[int | None, Field(ge=2, description=(
            "number of states; default: the source's"))] = None,
    ) -> None:
        self.n_states = n_states

    def fit(self, data: np.ndarray, *, rng: np.random.Generator | None = None) -> Categorical:
        x = check_data(data)  # (C, M) state indices
        if x.dtype.kind not in "iu" or x.min() < 0:
            raise ValueError(f"categorical data must be non-negative integers; got dtype {x.dtype}")
        k = self.n_states or int(x.max()) + 1
        if x.max() >= k:
            raise ValueError(f"state {int(x.max())} is out of range for n_states={k}")
        chains, m = x.shape[:2]
        flat = (x.reshape(chains, -1) + k * np.arange(chains)[:, None]).ravel()
        counts = np.bincount(flat, minlength=chains * k).reshape(chains, k)  # one bincount, all chains
        self.probs_ = counts / counts.sum(axis=1, keepdims=True)
        return self

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        n = check_n(n)
        self.check_fitted()
        cdf = np.cumsum(self.probs_, axis=1)
        # exact edges: a state of probability 0 has two equal edges (never drawn), also at the end
        cdf = (cdf / cdf[:, -1:])[:, :-1]  # (C, K-1)
        u = rng.random((cdf.shape[0], n))  # inverse CDF: one uniform per draw, i.i.d.
        dtype = np.min_scalar_type(self.probs_.shape[1] - 1)
        if cdf.shape[1] <= 64:  # few states: count the edges below each draw, all chains at once
            states = np.zeros(u.shape, dtype=dtype)
            for j in range(cdf.shape[1]):
                states += u >= cdf[:, j:j + 1]
            return states
        return np.stack([np.searchsorted(c, row, side="right") for c, row in zip(cdf, u, strict=True)]
                        ).astype(dtype)  # (C, n)

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        self.check_fitted()
        x = np.asarray(data)
        x = np.broadcast_to(x, (self.probs_.shape[0], *x.shape[1:]))
        with np.errstate(divide="ignore"):
            return np.log(np.take_along_axis(self.probs_, x, axis=1))
