"""Linear regression under replace and accumulate (derivation below)."""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.theory.base import Prediction, fit_sizes, register

# Least squares on labels y_i = X_i ŵ_{i-1} + ε_i (ŵ_{-1} = w*, ε_i ~ N(0, σ_i² I)) gives
# ŵ_i - w* = (ŵ_{i-1} - w*) + A_i ε_i with A_i = (X_iᵀX_i)^{-1} X_iᵀ. Given the design,
# E ||A_i ε_i||² = σ_i² tr (X_iᵀX_i)^{-1}, and for T isotropic Gaussian rows X_iᵀX_i ~ Wishart(I, T),
# E tr W^{-1} = d / (T - d - 1). The terms are uncorrelated, so under replace
#     E ||ŵ_n - w*||² = d Σ_{i=0..n} σ_i² / (T_i - d - 1)  = (n + 1) σ² d / (T - d - 1),
# whether X is drawn afresh each generation or one X is reused (then T_i = T and the sum is over one
# tr W^{-1}); an estimated noise level is a martingale (E σ̂_i² = σ_{i-1}²), so the mean holds then too.
# Accumulate with one X reused: training on n + 1 copies of X with all labels gives
# ŵ_n = mean of (ŵ_{i-1} + A ε_i), i.e. ŵ_n - w* = ŵ_{n-1} - w* + A ε_n / (n + 1), so
#     E ||ŵ_n - w*||² = d/(T - d - 1) Σ_{i=0..n} σ_i² / (i + 1)²  <= (π²/6) σ² d/(T - d - 1).
# A fresh X per generation under accumulate has no such closed form (the pooled Gram matrix does not
# factor), and neither does a pooled noise estimate; no prediction is made for either.
# Fresh with an isotropic design and a fixed model noise σ_m: each set after generation 0 has k new
# real rows (labels x·w* + σε) and n synthetic ones (x·ŵ + σ_m ε), all x ~ N(0, I), N = k + n. With
# W = XᵀX and A the synthetic rows' Gram matrix, ŵ_t - w* = W⁻¹A(ŵ_{t-1} - w*) + W⁻¹Xᵀη. The noise
# term: Σ_i E x_iᵀW⁻²x_i = E tr W⁻¹ = d/(N-d-1), the rows exchangeable. The contraction: with
# X = U S Vᵀ (U Haar, independent of S), tr AW⁻²A = Σ_ab (s_a²/s_b²) P_ab², P = U_Sᵀ U_S over the
# synthetic rows; Haar moments give E P_aa² = n(n+2)/(N(N+2)), E P_ab² = n(N-n)/((N-1)N(N+2)), and
# Stein's identity (tr W⁻¹ homogeneous of degree -2) E tr W tr W⁻¹ = (Nd-2) d/(N-d-1). So
#     E‖ŵ_t - w*‖² = α E‖ŵ_{t-1} - w*‖² + (kσ² + nσ_m²)/N · d/(N-d-1),
#     α = n(n+2)/(N(N+2)) + (N+1)(d-1) n(N-n) / ((N-d-1)(N-1)N(N+2)),
# exact (α = 1 at k = 0, 0 at k = N; in 1-D the Beta(n/2, k/2) moment): it settles at the noise
# term / (1 - α) instead of growing.
# real_fraction reuses the real rows and their noise, and a fixed design reuses inputs the previous
# fit saw: the generations are correlated and no closed form is derived for either.


def inverse_wishart_trace_moments(d: int, t: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """E tr W^{-1} and the variance of ‖A ε‖² / σ⁴ = Σ λ_j χ²_1 (λ: eigenvalues of W^{-1}), i.e.
    2 E tr W^{-2} + Var tr W^{-1}, for W ~ Wishart_d(I, t) (t > d + 3)."""
    t = np.asarray(t, dtype=float)
    a = t - d - 1
    den = (t - d) * a**2 * (t - d - 3)
    var_tr = (2 * d * d + 2 * a * d) / den
    e_tr2 = d / a**2 + (2 * d + a * (d * d + d)) / den
    return d / a, 2 * e_tr2 + var_tr


def linreg_prediction(
    generations: int, d: int, t0: int, m: int, noise: float, model_noise: float | None,
    design: str, policy: str, real_fraction: float = 0.1,
) -> dict[str, Prediction]:
    """E ||ŵ_t - w*||² per generation (and its per-chain sd where exact) for linreg on a linear
    source; empty where no exact form holds (see the derivation above)."""
    sizes = np.concatenate([[t0], np.full(max(generations - 1, 0), m)]).astype(int)
    if (sizes <= d + 1).any():
        return {}  # E tr W^{-1} is infinite for T <= d + 1
    level = np.full(len(sizes), (model_noise if model_noise is not None else noise) ** 2)
    level[0] = noise**2  # σ_i²: real labels, then the model's noise
    tr_inv, var_unit = inverse_wishart_trace_moments(d, sizes)
    exact_sd = model_noise is not None and (sizes > d + 3).all()
    if policy == "replace":
        mean = np.cumsum(level * tr_inv)
        sd = None
        if exact_sd and design == "fixed" and (sizes == t0).all():
            s2 = np.cumsum(level)  # one X: ŵ_n - w* = A Σ ε_i, Σ ε_i ~ N(0, s² I)
            sd = np.sqrt(s2**2 * var_unit[0])
        elif exact_sd and design == "isotropic":
            # independent terms a_i: Var ‖Σ a_i‖² = Σ Var ‖a_i‖² + 4 Σ_{i<j} tr(Cov a_i Cov a_j)
            cov = level * tr_inv / d  # Cov a_i = σ_i² I / (T_i - d - 1)
            cross = (np.cumsum(cov) ** 2 - np.cumsum(cov**2)) / 2  # Σ_{i<j} c_i c_j
            sd = np.sqrt(np.cumsum(level**2 * var_unit) + 4 * d * cross)
        return {"excess_risk": Prediction(
            mean, sd, "E‖ŵ_n-w*‖² = d Σ σ_i²/(T_i-d-1) = (n+1)σ²d/(T-d-1) (Dohmatob, Feng & Kempe "
            f"2024), design {design}")}
    if policy == "accumulate" and design == "fixed" and model_noise is not None and (sizes == t0).all():
        s2 = np.cumsum(level / np.arange(1, len(sizes) + 1) ** 2)
        sd = np.sqrt(s2**2 * var_unit[0]) if exact_sd else None
        return {"excess_risk": Prediction(
            s2 * tr_inv[0], sd, "E‖ŵ_n-w*‖² = d/(T-d-1) Σ_{i=1..n+1} σ_i²/i² ≤ (π²/6)σ²d/(T-d-1) "
            "(Gerstgrasser et al. 2024), one X reused")}
    if policy == "fresh" and design == "isotropic" and model_noise is not None:
        return linreg_fresh(generations, d, t0, m, noise, model_noise, real_fraction)
    return {}


def linreg_fresh(generations: int, d: int, t0: int, m: int, noise: float, model_noise: float,
                 real_fraction: float) -> dict[str, Prediction]:
    """E ‖ŵ_t - w*‖² under ``fresh`` with an isotropic design and a fixed model noise (above)."""
    k = int(round(real_fraction * t0))
    n = min(t0 - k, m)
    big = k + n
    if t0 <= d + 1 or big <= d + 1:
        return {}
    alpha = (n * (n + 2) / (big * (big + 2))
             + (big + 1) * (d - 1) * n * (big - n) / ((big - d - 1) * (big - 1) * big * (big + 2)))
    step = (k * noise**2 + n * model_noise**2) / big * d / (big - d - 1)
    mean = np.empty(generations)
    risk = noise**2 * d / (t0 - d - 1)
    for t in range(generations):
        mean[t] = risk
        risk = alpha * risk + step
    settles = f"; settles at {step / (1 - alpha):.4g}" if alpha < 1 else ""
    return {"excess_risk": Prediction(
        mean, None, f"fresh (k = {k} new real rows, n = {n} synthetic, isotropic design): "
        f"E‖ŵ_t-w*‖² = α E‖ŵ_(t-1)-w*‖² + (kσ² + nσ_m²)/N · d/(N-d-1), α = {alpha:.4g}{settles}")}


def _linreg(config: Any, source: Any) -> dict[str, Prediction]:
    params = config.model.params
    sizes = fit_sizes(config)
    return linreg_prediction(
        config.generations, source.features, int(sizes[0]), int(sizes[-1]), float(source.noise),
        params.get("noise"), params.get("design", "fixed"), config.policy.name,
        float(config.policy.params.get("real_fraction", 0.1)))


for _policy in ("replace", "accumulate", "fresh"):
    register("linreg", "linear", _policy)(_linreg)
