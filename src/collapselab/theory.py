"""Closed-form predictions of the theory, per generation, where one exists.

Each prediction is the expected value of a metric's chain mean at generations ``0..G-1`` and the
standard deviation of one chain around it (so the Monte-Carlo band of a mean over C chains is
``mean ± z sd / sqrt(C)``). Generation t's model has been fitted t + 1 times: once on the M_0 real
samples, then t times on m synthetic samples.

Sources: Shumailov et al., Nature 2024, §4.2 and Supplementary; the variance recursion is that of a
scaled chi-square product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import digamma, polygamma


@dataclass(frozen=True)
class Prediction:
    mean: np.ndarray  # (G,) expected chain mean
    sd: np.ndarray | None  # (G,) sd of a single chain, None where unknown
    source: str  # where the formula comes from, shown in the report

    def band(self, chains: int, z: float = 1.96) -> tuple[np.ndarray, np.ndarray] | None:
        if self.sd is None:
            return None
        half = z * self.sd / np.sqrt(chains)
        return self.mean - half, self.mean + half


def gaussian_replace(
    generations: int, m0: int, m: int, dim: int, variance: str, sigma2: float = 1.0
) -> dict[str, Prediction]:
    """Single Gaussian refitted to its own samples (``replace``), MLE or unbiased covariance."""
    sizes = np.concatenate([[m0], np.full(max(generations - 1, 0), m)])  # M_0, M_1, ...
    ddof = 0 if variance == "mle" else 1
    shrink = (sizes - 1) / (sizes - ddof)  # E[sigma^2_{i+1} / sigma^2_i]
    out = {
        "variance_ratio": Prediction(
            np.cumprod(shrink), None, "E[σ²_t]/σ² = Π (M_i - 1)/(M_i - ddof)"),
    }
    if dim == 1:
        # per fit the ratio is chi2_{M-1} / (M - ddof): its moments multiply across generations
        second = ((sizes - 1) ** 2 + 2 * (sizes - 1)) / (sizes - ddof) ** 2
        mean = np.cumprod(shrink)
        out["variance_ratio"] = Prediction(
            mean, np.sqrt(np.maximum(np.cumprod(second) - mean**2, 0)),
            "E[σ²_t]/σ² = Π (M_i-1)/(M_i-ddof); sd from E[r²] = Π E[(χ²/(M-ddof))²]")
        half = (sizes - 1) / 2.0
        log_step = digamma(half) + np.log(2.0 / (sizes - ddof))  # E log(chi2_{M-1}/(M-ddof))
        out["log_variance_ratio"] = Prediction(
            np.cumsum(log_step), np.sqrt(np.cumsum(polygamma(1, half))),
            "E log(σ²_t/σ²) = Σ [ψ((M_i-1)/2) + log(2/(M_i-ddof))]; Var = Σ ψ'((M_i-1)/2)")
        a = sigma2 * np.cumsum(1.0 / sizes)  # σ² Σ 1/M_i
        out["w2_sq"] = Prediction(
            1.5 * a, a * np.sqrt(2.5),
            "E[R_W2] ≈ (3/2) σ² Σ 1/M_i to first order (Shumailov et al. §4.2)")
    if variance == "unbiased":
        out["marginal_variance"] = Prediction(
            sigma2 * (1 + np.cumsum(1.0 / sizes)), None,
            "Var(X^{t+1}) = σ² (1 + Σ 1/M_i)  (σ²(1 + n/M) for equal sizes)")
    return out


def predict(config: Any, source: Any) -> dict[str, Prediction]:
    """Predictions for this experiment, keyed by metric value name; empty where no theory applies."""
    model, policy, data = config.model, config.policy, config.data
    if (model.family, data.source, policy.name) != ("gaussian", "normal", "replace"):
        return {}
    if config.curation:
        return {}  # filtering changes the sampling distribution: the formulas no longer apply
    return gaussian_replace(
        config.generations, data.size, config.synthetic_size or data.size,
        source.dim, model.params.get("variance", "mle"), float(np.square(source.std)),
    )
