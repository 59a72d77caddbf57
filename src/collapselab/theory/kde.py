"""Kernel density estimate under replace (derivation below)."""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.theory.base import Prediction, fit_sizes, register

# A KDE on n points x_i (scatter m2 = Σ(x - x̄)²/n per coordinate) is the mixture (1/n) Σ N(x_i, K):
# mean x̄, variance V = m2 + K. The kde family's kernel is K = f² m2 n/(n - 1) (a factor f on the
# points' unbiased covariance: Scott's n^{-1/(D+4)}, Silverman's, or fixed), so V = m2 (1 + κ),
# κ = f² n/(n - 1); a fixed kernel variance h² gives V = m2 + h². m iid draws from the mixture have
# E m2' = ((m-1)/m) V, hence under replace
#     fixed h:    E S²_{t+1} = ((m-1)/m)(E S²_t + h²)  → fixed point (m-1) h²,
#     K ∝ data:   E V_{t+1} = ((m-1)/m)(1 + κ) E V_t = ((m-1)/m + f²) E V_t  (n = m) → geometric:
# growth when f² > 1/m (Scott in 1-D, f² = m^{-2/5}: ×1.149 a generation at m = 100). In 1-D the sample's fourth moments close the
# recursion too: for n iid draws from a law with central moments μ2, μ4,
#     E m2² = (n-1)²/n³ μ4 + (n-1)(n²-2n+3)/n³ μ2²,   E m4 = (n-1)(n²-3n+3)/n³ μ4 + 3(n-1)(2n-3)/n³ μ2²,
# and the mixture's are V and m4 + 6 m2 K + 3K², which gives the variance ratio's per-chain sd.
# The pooled mean moves by E (x̄_{t+1} - x̄_t)² = E V_t / m, as for the Gaussian.


def kde_replace(
    sizes: np.ndarray, factors: np.ndarray | None, kernel_var: float = 0.0, sigma2: float = 1.0,
    dim: int = 1,
) -> dict[str, Prediction]:
    """KDE refitted to its own samples (``replace``) on a normal source, per coordinate: kernel
    variance ``factors[t]² × (the points' unbiased variance)`` (the kde family) or, with
    ``factors=None``, a fixed ``kernel_var`` = h². ``sizes``: points of each generation's fit."""
    sizes = np.asarray(sizes, dtype=float)
    kappa = (np.zeros(len(sizes)) if factors is None
             else np.asarray(factors, dtype=float) ** 2 * sizes / (sizes - 1))
    h2 = kernel_var / sigma2  # in units of σ²
    n = sizes[0]  # generation 0's points: normal, μ2 = 1, μ4 = 3
    e2, e22, e4 = (n - 1) / n, ((n - 1) ** 2 * 3 + (n - 1) * (n * n - 2 * n + 3)) / n**3, \
        ((n - 1) * (n * n - 3 * n + 3) * 3 + 3 * (n - 1) * (2 * n - 3)) / n**3
    ratio, second, drift = (np.empty(len(sizes)) for _ in range(3))
    d2 = 1.0 / n
    for t in range(len(sizes)):
        k = kappa[t]
        v, vv = (1 + k) * e2 + h2, (1 + k) ** 2 * e22 + 2 * (1 + k) * h2 * e2 + h2**2  # E V, E V²
        v4 = e4 + (6 * k + 3 * k * k) * e22 + 6 * h2 * (1 + k) * e2 + 3 * h2**2  # E mixture μ4
        ratio[t], second[t], drift[t] = v, vv, d2
        if t + 1 < len(sizes):
            n = sizes[t + 1]
            d2 += v / n
            e2 = (n - 1) / n * v
            e22 = (n - 1) ** 2 / n**3 * v4 + (n - 1) * (n * n - 2 * n + 3) / n**3 * vv
            e4 = (n - 1) * (n * n - 3 * n + 3) / n**3 * v4 + 3 * (n - 1) * (2 * n - 3) / n**3 * vv
    kernel = ("a fixed kernel variance h²: E S²_{t+1} = ((n-1)/n)(E S²_t + h²), fixed point (n-1)h²"
              if factors is None else "the kernel f² × the points' covariance: E S²_{t+1} = "
              "((n-1)/n)(1 + f² n/(n-1)) E S²_t, geometric")
    sd = np.sqrt(np.maximum(second - ratio**2, 0)) if dim == 1 else None
    return {
        "variance_ratio": Prediction(
            ratio, sd, f"KDE under replace, {kernel}; model variance S²_t + kernel, exact"
            + ("; sd from the sample's fourth moments" if sd is not None else "")),
        "marginal_variance": Prediction(
            sigma2 * (drift + ratio), None,
            f"KDE under replace: Var(X^{{t}}) = E(x̄_t-μ)² + E V_t, E(x̄_t-μ)² = σ²/M_0 + Σ E V_i/m; "
            f"{kernel}"),
    }


@register("kde", "normal", "replace")
def _kde_normal_replace(config: Any, source: Any) -> dict[str, Prediction]:
    from collapselab.models.kde import KDE

    sizes = fit_sizes(config)
    kde = KDE(**config.model.params)
    if kde.kernel_std is not None:  # a fixed kernel h: the points' variance settles at (n-1)h²
        return kde_replace(sizes, None, kernel_var=kde.kernel_std**2,
                           sigma2=float(source.std) ** 2, dim=source.dim)
    factors = np.array([kde.factor(int(n), source.dim) for n in sizes])
    return kde_replace(sizes, factors, sigma2=float(source.std) ** 2, dim=source.dim)
