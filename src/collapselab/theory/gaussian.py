"""Gaussian, replace (Shumailov et al., Nature 2024, §4.2 and Supplementary). Write D_t = μ_t - μ and
s_t for the fitted mean error and standard deviation of generation t. Given generation t - 1, a fit
on M_t normal samples gives D_t = D_{t-1} + s_{t-1} Z / sqrt(M_t) and s_t² = s_{t-1}² R_t, with
Z ~ N(0, 1) independent of R_t ~ χ²_{M_t-1} / (M_t - ddof) (sample mean and variance of normal data
are independent), both independent of the past. So every joint moment E[D_t^a s_t^b] follows from
those of generation t - 1 by a finite recursion (:func:`drift_scale_moments`), and the 1-D W2 risk
E[(μ_t - μ)² + (s_t - σ)²], its per-chain sd, the KL and the marginal variance are exact. In D > 1
dimensions (isotropic source) the covariance is a product of Wishart matrices: its trace moments
and the KL are exact; W2 needs E tr Σ_t^{1/2}, which has no closed form, so none is drawn.
"""

from __future__ import annotations

from math import comb
from typing import Any

import numpy as np
from scipy.special import digamma, gammaln, polygamma

from collapselab.theory.base import Prediction, fit_sizes, register


def chi2_moment(k: np.ndarray | float, c: np.ndarray | float, s: float) -> np.ndarray:
    """E[(χ²_k / c)^s] = (2/c)^s Γ(k/2 + s) / Γ(k/2); inf where k/2 + s <= 0."""
    k, c = np.asarray(k, dtype=float), np.asarray(c, dtype=float)
    with np.errstate(invalid="ignore"):
        out = np.exp(s * np.log(2.0 / c) + gammaln(k / 2 + s) - gammaln(k / 2))
    return np.where(k / 2 + s > 0, out, np.inf)


def drift_scale_moments(
    sizes: np.ndarray, ddof: int, sigma: float, wanted: list[tuple[int, int]]
) -> dict[tuple[int, int], np.ndarray]:
    """E[D_t^a s_t^b] per generation (``(G,)`` each) for the 1-D Gaussian refitted to its own
    samples: D_t = μ_t - μ, s_t the fitted sd; ``a`` even, ``b`` any integer (negative too).

    D_t^a s_t^b = Σ_j C(a, j) D_{t-1}^{a-j} s_{t-1}^{b+j} (Z/sqrt(M_t))^j R_t^{b/2}, so the moment
    (a, b) needs (a - j, b + j) of the previous generation, j even: a finite closure."""
    need: set[tuple[int, int]] = set()
    stack = list(wanted)
    while stack:
        a, b = stack.pop()
        if (a, b) not in need:
            need.add((a, b))
            stack.extend((a - j, b + j) for j in range(2, a + 1, 2))
    prev = {(a, b): (sigma**b if a == 0 else 0.0) for a, b in need}  # before any fit: D = 0, s = σ
    out = {key: np.empty(len(sizes)) for key in need}
    steps: dict[tuple[int, int], float] = {}  # E R^{b/2} of a fit of size m: few distinct sizes
    for t, m in enumerate(sizes):
        cur = {}
        for a, b in need:
            acc = sum(comb(a, j) * _normal_moment(j) * m ** (-j / 2) * prev[(a - j, b + j)]
                      for j in range(0, a + 1, 2))
            if (m, b) not in steps:
                steps[m, b] = float(chi2_moment(m - 1, m - ddof, b / 2))
            cur[(a, b)] = steps[m, b] * acc
        prev = cur
        for key in need:
            out[key][t] = cur[key]
    return {key: out[key] for key in wanted}


def _normal_moment(j: int) -> float:
    """E Z^j for even j: (j - 1)!!."""
    return float(np.prod(np.arange(j - 1, 0, -2))) if j else 1.0


def gaussian_replace(
    generations: int, m0: int, m: int, dim: int, variance: str, sigma2: float = 1.0
) -> dict[str, Prediction]:
    """Single Gaussian refitted to its own samples (``replace``), MLE or unbiased covariance."""
    sizes = np.concatenate([[m0], np.full(max(generations - 1, 0), m)]).astype(int)  # M_0, M_1, ...
    ddof = 0 if variance == "mle" else 1
    k, c = sizes - 1.0, sizes - float(ddof)  # each fit: Σ_t = Σ_{t-1}^{1/2} W Σ_{t-1}^{1/2} / c
    shrink = k / c  # E[σ²_{i+1} / σ²_i]
    ratio = np.cumprod(shrink)
    # E[(tr Σ)²] and E[tr Σ²] (in units of σ⁴) evolve linearly: for W ~ Wishart(I, k),
    # E (tr AW)² = k² (tr A)² + 2k tr A², E tr (AW)² = k (tr A)² + k(k+1) tr A²
    u, v, second = float(dim) ** 2, float(dim), np.empty(len(sizes))
    for t in range(len(sizes)):
        u, v = (k[t] ** 2 * u + 2 * k[t] * v) / c[t] ** 2, (k[t] * u + k[t] * (k[t] + 1) * v) / c[t] ** 2
        second[t] = u / dim**2
    out = {
        "variance_ratio": Prediction(
            ratio, np.sqrt(np.maximum(second - ratio**2, 0)),
            "E[tr Σ_t]/tr Σ = Π (M_i-1)/(M_i-ddof); sd from the Wishart moments of (tr Σ_t)²"),
    }
    # mean squared drift per coordinate: E D_t² = σ²/M_0 + Σ_{i>=1} E σ²_{i-1} / M_i
    drift2 = sigma2 * np.cumsum(np.concatenate([[1.0], ratio[:-1]]) / sizes)
    spread = drift2 + sigma2 * ratio  # E (X - μ)² for a generation-t sample, per coordinate
    out["marginal_variance"] = Prediction(
        spread, None,
        "Var(X^{t}) = σ²/M_0 + Σ E σ²_{i-1}/M_i + E σ²_t  (σ²(1 + Σ 1/M_i) when unbiased)")
    if (sizes > dim + 2).all():  # E Σ_t^{-1} is finite only for M - 1 > D + 1
        # E Σ_t^{-1} = c E[W^{-1}] E Σ_{t-1}^{-1}, E W^{-1} = I/(k - D - 1); with q_t = E D_tᵀ Σ_t^{-1} D_t:
        # q_t = c/(k - D - 1) (q_{t-1} + D/M_t)
        inv = np.cumprod(c / (k - dim - 1))
        q = np.empty(len(sizes))
        prev = 0.0
        for t in range(len(sizes)):
            prev = c[t] / (k[t] - dim - 1) * (prev + dim / sizes[t])
            q[t] = prev
        logdet = np.cumsum(sum(digamma((k - j) / 2) for j in range(dim)) + dim * np.log(2 / c))
        out["kl"] = Prediction(
            0.5 * (dim * inv + q - dim + logdet), None,
            "KL(truth‖model) = ½[σ² tr Σ_t⁻¹ + D_tᵀΣ_t⁻¹D_t - D + log det Σ_t/σ^{2D}]; "
            "expectations from E W⁻¹ = I/(k-D-1) and E log det W")
    if dim == 1:
        half = k / 2.0
        log_step = digamma(half) + np.log(2.0 / c)  # E log(chi2_{M-1}/(M-ddof))
        out["log_variance_ratio"] = Prediction(
            np.cumsum(log_step), np.sqrt(np.cumsum(polygamma(1, half))),
            "E log(σ²_t/σ²) = Σ [ψ((M_i-1)/2) + log(2/(M_i-ddof))]; Var = Σ ψ'((M_i-1)/2)")
        out["w2_sq"] = gaussian_w2_replace(sizes, ddof, np.sqrt(sigma2))
        mom = drift_scale_moments(sizes, ddof, 1.0, [(4, 0), (2, 2), (0, 4)])
        # a chain's value is the mean of m squared deviations (D + s Z_j)²: E V² adds the draws' noise
        sq = (mom[(4, 0)] + mom[(2, 2)] * (2 + 4 / m) + mom[(0, 4)] * (1 + 2 / m)) * sigma2**2
        out["marginal_variance"] = Prediction(
            spread, np.sqrt(np.maximum(sq - spread**2, 0)), out["marginal_variance"].source
            + "; sd from the joint moments E[D_t^a s_t^b] over m samples")
    return out


def gaussian_w2_replace(sizes: np.ndarray, ddof: int, sigma: float) -> Prediction:
    """Exact E W2² between N(μ_t, s_t²) and N(μ, σ²) and its per-chain sd, 1-D.

    W2² = D_t² + (s_t - σ)², so E W2² = E D_t² + E s_t² - 2σ E s_t + σ², with
    E s_t = σ Π sqrt(2/(M_i - ddof)) Γ(M_i/2)/Γ((M_i - 1)/2); its square expands into the joint
    moments E[D^a s^b], a <= 4."""
    mom = drift_scale_moments(sizes, ddof, sigma, [(2, 0), (0, 1), (0, 2), (4, 0), (2, 2), (2, 1),
                                                   (0, 3), (0, 4)])
    s1, s2, s3, s4 = (mom[(0, b)] for b in (1, 2, 3, 4))
    mean = mom[(2, 0)] + s2 - 2 * sigma * s1 + sigma**2
    dev2 = s2 - 2 * sigma * s1 + sigma**2  # E (s - σ)²
    dev4 = s4 - 4 * sigma * s3 + 6 * sigma**2 * s2 - 4 * sigma**3 * s1 + sigma**4
    cross = mom[(2, 2)] - 2 * sigma * mom[(2, 1)] + sigma**2 * mom[(2, 0)]  # E D²(s - σ)²
    second = mom[(4, 0)] + 2 * cross + dev4
    assert dev2.shape == mean.shape
    return Prediction(
        mean, np.sqrt(np.maximum(second - mean**2, 0)),
        "E W2² = E(μ_t-μ)² + E σ_t² - 2σ E σ_t + σ², exact: E(μ_t-μ)² = σ²/M_0 + Σ E σ²_{i-1}/M_i, "
        "E σ_t = σ Π sqrt(2/(M_i-ddof)) Γ(M_i/2)/Γ((M_i-1)/2); the first-order (3/2)σ²Σ1/M_i "
        "(Shumailov et al. §4.2) overstates it (1.50 vs 1.06 at 100 fits of M=100, MLE)")


@register("gaussian", "normal", "replace")
def _gaussian_normal_replace(config: Any, source: Any) -> dict[str, Prediction]:
    sizes = fit_sizes(config)
    return gaussian_replace(
        config.generations, int(sizes[0]), int(sizes[-1]), source.dim,
        config.model.params.get("variance", "mle"), float(np.square(source.std)),
    )
