"""Least-squares linear regression as a generative model (Dohmatob, Feng & Kempe 2024; Gerstgrasser
et al. 2024).

Data is continuous ``(chains, n, d + 1)``: d inputs, then the label. ``fit`` solves least squares
for ŵ (no intercept) and keeps the noise level; ``sample`` relabels inputs: y = x ŵ + fresh noise.
Which inputs is the design: ``fixed`` reuses the first n training inputs (one X per chain for the
whole run, the setting in which accumulate's Σ 1/i² is exact), ``isotropic`` draws x ~ N(0, I_d)
afresh (the linear source's design).
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from collapselab.protocol import Model, check_data, check_n
from collapselab.registry import families


@families.register("linreg")
class LinearRegression(Model):
    """Least-squares linear regression that relabels inputs with its fit plus noise (data:
    inputs, then the label)."""

    kinds = frozenset({"continuous"})

    def __init__(
        self,
        design: Annotated[Literal["fixed", "isotropic"], Field(description=(
            "inputs of the samples: 'fixed' reuses the first n training inputs, 'isotropic' "
            "draws x ~ N(0, I)"))] = "fixed",
        noise: Annotated[float | None, Field(gt=0, description=(
            "sd of the label noise added when sampling; default: estimated from the residuals, "
            "RSS / (n - d)"))] = None,
    ) -> None:
        self.design, self.noise = design, noise

    def fit(self, data: np.ndarray, *, rng: np.random.Generator | None = None) -> LinearRegression:
        z = check_data(data, min_samples=2, shape="(chains, n, dim)")  # (C, n, d + 1)
        chains, n, width = z.shape
        if width < 2:
            raise ValueError(f"linreg needs at least 2 coordinates (inputs, then the label); got {width}")
        d = width - 1
        if n <= d:
            raise ValueError(f"linreg needs more samples than inputs: n must exceed d = {d}; got {n}")
        x, y = z[..., :d].astype(float), z[..., d].astype(float)  # (C, n, d), (C, n)
        gram = np.einsum("cni,cnj->cij", x, x)  # (C, d, d)
        self.coef_ = np.linalg.solve(gram, np.einsum("cni,cn->ci", x, y)[..., None])[..., 0]  # (C, d)
        resid = y - np.einsum("cni,ci->cn", x, self.coef_)
        self.noise_ = (np.full(chains, float(self.noise)) if self.noise is not None
                       else np.sqrt((resid**2).sum(axis=1) / (n - d)))  # (C,)
        self.inputs_ = x if self.design == "fixed" else None
        return self

    def _inputs(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.inputs_ is None:
            return rng.standard_normal((*self.coef_.shape[:1], n, self.coef_.shape[1]))
        if n > self.inputs_.shape[1]:
            raise ValueError(f"design='fixed' reuses the training inputs: n must be at most "
                             f"{self.inputs_.shape[1]}; got {n}")
        return self.inputs_[:, :n]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        n = check_n(n)
        self.check_fitted()
        x = self._inputs(n, rng)  # (C, n, d)
        y = np.einsum("cni,ci->cn", x, self.coef_) + self.noise_[:, None] * rng.standard_normal(x.shape[:2])
        return np.concatenate([x, y[..., None]], axis=-1)

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        """log N(y; x ŵ, noise²) per sample: the conditional likelihood of the label, ``(C, n)``."""
        self.check_fitted()
        z = np.asarray(data, dtype=float)
        resid = z[..., -1] - np.einsum("cni,ci->cn", z[..., :-1], self.coef_)
        var = self.noise_[:, None] ** 2
        return -0.5 * (resid**2 / var + np.log(2 * np.pi * var))
