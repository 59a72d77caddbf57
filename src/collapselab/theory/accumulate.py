"""Gaussian, accumulate and accumulate_subsample (derivation below)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import digamma, gammaln

from collapselab.theory.base import Prediction, register

# Accumulate: generation t fits the pool P_t of N_t = M_0 + t m rows (the real data and every earlier
# synthetic set). Write μ_t, Q_t for the pool's mean and scatter Σ(x - μ_t)(x - μ_t)ᵀ; the fit is
# μ_t and Σ_t = Q_t / (N_t - ddof). Adding m draws Y ~ N(μ_t, Σ_t) with mean ȳ:
#     μ_{t+1} - μ_t = (m / N_{t+1}) (ȳ - μ_t),
#     Q_{t+1} = Q_t + SS_Y + (N_t m / N_{t+1}) (ȳ - μ_t)(ȳ - μ_t)ᵀ = Q_t^{1/2} (I + G_t / c_t) Q_t^{1/2},
# c_t = N_t - ddof, G_t = W + a_t z zᵀ (W ~ Wishart(I, m - 1), z ~ N(0, I), a_t = N_t / N_{t+1}),
# independent of the past. So E Q_{t+1} = E Q_t (1 + m (N_{t+1} - 1) / (N_{t+1} c_t)) (the mean
# variance ratio: a product), E (tr Q)² and E tr Q² evolve linearly (its sd), the mean is a martingale
# with E |μ_{t+1} - μ_t|² = m E tr Σ_t / N_{t+1}², and in 1-D E sqrt(Q_t) is a product of
# E sqrt(1 + (χ²_{m-1} + a_t χ²_1) / c_t), one quadrature each (the W2 risk's E σ_t).
#
# Accumulate, then subsample B rows without replacement (B_t = min(B, N_t); generation 0: the real
# data): given the pool, a subset's unbiased variance and mean are unbiased for the pool's, with
# Var(subset mean) = (1 - B_t/N_t) S²_P / B_t, so the pool's E Q and E |μ_P - μ|² again follow a
# linear recursion, and with them the mean variance ratio and marginal variance, exactly. The
# variance ratio's per-chain sd takes the pool's fourth moments too (:func:`subsample_fourth_moment`);
# E σ_t (W2) depends on the subset's whole law and is not drawn.


def _laplace_sqrt(laplace: Callable[[float], float]) -> float:
    """E sqrt(X) = (1 / 2√π) ∫ (1 - E e^{-sX}) s^{-3/2} ds, here with s = u² (a smooth integrand)."""
    from scipy.integrate import quad

    value, _ = quad(lambda u: 2.0 * (1.0 - laplace(u * u)) / (u * u) if u > 0 else 0.0,
                    0.0, np.inf, epsabs=1e-13, epsrel=1e-11, limit=200)
    return value / (2.0 * np.sqrt(np.pi))


def accumulate_sizes(config: Any) -> tuple[int, int]:
    """(M_0, m): real rows and synthetic rows added per generation."""
    return config.data.size, config.synthetic_size or config.data.size


def gaussian_accumulate(
    generations: int, m0: int, m: int, dim: int, variance: str, sigma2: float = 1.0
) -> dict[str, Prediction]:
    """Single Gaussian refitted to the real data plus every earlier synthetic set (``accumulate``)."""
    ddof = 0 if variance == "mle" else 1
    pool = m0 + m * np.arange(generations, dtype=float)  # N_t
    c = pool - ddof
    a = pool / (pool + m)  # N_t / N_{t+1}
    w1, w2 = (m - 1) + a, (m - 1) + a**2  # E tr G / D and the weights' sum of squares
    # E tr Q_t / (D σ²): Q_0 ~ Wishart(σ² I, M_0 - 1), then × (1 + w1 / c) a generation
    scatter = (m0 - 1) * np.concatenate([[1.0], np.cumprod(1 + w1 / c)[:-1]])
    ratio = scatter / c
    k = m0 - 1.0
    u, v = k**2 * dim**2 + 2 * k * dim, k * dim**2 + k * (k + 1) * dim  # E (tr Q)², E tr Q² / σ⁴
    second = np.empty(generations)
    for t in range(generations):
        second[t] = u / (c[t] * dim) ** 2
        u, v = (u * (1 + 2 * w1[t] / c[t] + w1[t] ** 2 / c[t] ** 2) + 2 * w2[t] * v / c[t] ** 2,
                v * (1 + 2 * w1[t] / c[t]) + ((w1[t] ** 2 - w2[t]) * v + w2[t] * (u + 2 * v)) / c[t] ** 2)
    # E D_t² per coordinate: σ²/M_0, then + m E σ_t² / N_{t+1}² a generation
    drift2 = sigma2 * (1.0 / m0 + np.concatenate([[0.0], np.cumsum(m * ratio / (pool + m) ** 2)[:-1]]))
    limit = ("; with m = M_0, E σ_i² <= σ² bounds it for ever: E(μ_t-μ)² <= (π²/6)σ²/M_0"
             if m == m0 else "")
    out = {
        "variance_ratio": Prediction(
            ratio, np.sqrt(np.maximum(second - ratio**2, 0)),
            "accumulate (N_t = M_0 + t m rows): E tr Σ_t / tr Σ = (M_0-1)/(N_t-ddof) "
            "Π_{i<t} (1 + m(N_{i+1}-1)/(N_{i+1}(N_i-ddof))), exact; sd from the linear recursion of "
            "E(tr Q)², E tr Q²"),
        "marginal_variance": Prediction(
            drift2 + sigma2 * ratio, None,
            "accumulate: Var(X^{t}) = E(μ_t-μ)² + E σ_t², E(μ_t-μ)² = σ²/M_0 + Σ_{i<t} m E σ_i² / "
            "N_{i+1}² (the pooled mean is a martingale), exact" + limit),
    }
    if dim == 1:
        if m0 > 3:
            out["kl"] = gaussian_accumulate_kl(pool, m, ddof, m0)
        out["w2_sq"] = gaussian_accumulate_w2(pool, m, ddof, m0, sigma2)
    return out


def gaussian_accumulate_w2(pool: np.ndarray, m: int, ddof: int, m0: int, sigma2: float = 1.0
                           ) -> Prediction:
    """E W2² under accumulate, 1-D, and its per-chain sd. W2² = D² + (s - σ)², s = sqrt(Q/c):
    E W2⁴ needs E D⁴, E D²Q, E D²Q^{1/2} and E Q^{r/2} (r <= 4). Q steps by the factor
    X = 1 + (U + a Z²)/c and D by b sqrt(Q) Z with the same Z, so
    E Q'^r = E Q^r E X^r, E D'² Q'^r = E[D² Q^r] E X^r + b² E Q^{r+1} E Z² X^r,
    E D'⁴ = E D⁴ + 6 b² E D²Q + 3 b⁴ E Q²; the half-integer moments E X^{1/2}, E X^{3/2} = E X ·
    E[X^{1/2}] under the law tilted by X, and E Z² X^{1/2} are quadratures of Laplace transforms."""
    powers = (0.5, 1.0, 1.5, 2.0)
    k = m0 - 1.0
    q = {r: 2**r * np.exp(gammaln(k / 2 + r) - gammaln(k / 2)) for r in powers}  # E Q_0^r, σ = 1
    d2, d4 = 1.0 / m0, 3.0 / m0**2
    d2q = {r: d2 * q[r] for r in (0.5, 1.0)}  # D_0 and Q_0 independent
    names = ("s1", "s2", "s3", "s4", "d2", "d4", "d2s1", "d2s2")
    mom = {key: np.empty(len(pool)) for key in names}
    for t, n in enumerate(pool):
        c, a = n - ddof, n / (n + m)
        for j, r in enumerate(powers):
            mom[f"s{j + 1}"][t] = q[r] / c**r
        mom["d2"][t], mom["d4"][t] = d2, d4
        mom["d2s1"][t], mom["d2s2"][t] = d2q[0.5] / np.sqrt(c), d2q[1.0] / c
        u1 = (m - 1 + a) / c  # E (X - 1)
        u2 = ((m - 1) * (m + 1) + 2 * a * (m - 1) + 3 * a * a) / c**2  # E (X - 1)²
        b2 = m / ((n + m) ** 2 * c)

        def laplace(s: float, c: float = c, a: float = a, z: float = 0.5) -> float:
            """E[Z^{2j} e^{-sX}] / E Z^{2j}: z = 1/2 for j = 0, 3/2 for j = 1."""
            return float(np.exp(-s - (m - 1) / 2 * np.log1p(2 * s / c) - z * np.log1p(2 * a * s / c)))

        def tilted(s: float, c: float = c, a: float = a, u1: float = u1) -> float:  # E[X e^{-sX}]/E X
            return laplace(s) * (1 + (m - 1) / (c + 2 * s) + a / (c + 2 * a * s)) / (1 + u1)

        x = {0.5: _laplace_sqrt(laplace), 1.0: 1 + u1, 2.0: 1 + 2 * u1 + u2}
        x[1.5] = x[1.0] * _laplace_sqrt(tilted)
        zx = {0.5: _laplace_sqrt(lambda s: laplace(s, z=1.5)), 1.0: 1 + (m - 1 + 3 * a) / c}
        d4 += 6 * b2 * d2q[1.0] + 3 * b2**2 * q[2.0]
        d2 += b2 * q[1.0]
        d2q = {r: d2q[r] * x[r] + b2 * q[r + 1] * zx[r] for r in (0.5, 1.0)}
        q = {r: q[r] * x[r] for r in powers}
    s1, s2, s3, s4 = (mom[f"s{j}"] for j in (1, 2, 3, 4))
    mean = mom["d2"] + s2 - 2 * s1 + 1
    second = (mom["d4"] + 2 * (mom["d2s2"] - 2 * mom["d2s1"] + mom["d2"])
              + s4 - 4 * s3 + 6 * s2 - 4 * s1 + 1)
    return Prediction(
        sigma2 * mean, sigma2 * np.sqrt(np.maximum(second - mean**2, 0)),
        "accumulate: E W2² = E(μ_t-μ)² + E σ_t² - 2σ E σ_t + σ², exact; E σ_t = "
        "E sqrt(Q_0/c_t) Π E sqrt(1 + (χ²_{m-1} + (N_i/N_{i+1}) χ²_1)/(N_i-ddof)), each factor "
        "one quadrature of its Laplace transform; sd from E W2⁴ (E D⁴, E D²σ, E D²σ², E σ³, E σ⁴ "
        "by the same recursion)")


def gaussian_accumulate_kl(pool: np.ndarray, m: int, ddof: int, m0: int) -> Prediction:
    """E KL(truth‖model) under accumulate, 1-D: ½[E log Q_t - log c_t - log σ² + c_t (σ² E Q_t⁻¹ +
    E D_t²/Q_t) - 1]. With X_t = 1 + (U + a_t Z²)/c_t (Z the normal that also moves the mean):
    E Q⁻¹ and E log Q step by E X⁻¹ and E log X; D_{t+1} = D_t + b_t sqrt(Q_t) Z with
    b_t² = m/(N_{t+1}² c_t), so E D²/Q steps to E[D²/Q] E X⁻¹ + b_t² E[Z²/X]. Each expectation is one
    integral of X's Laplace transform: E X⁻¹ = ∫ E e^{-sX} ds, E log X = ∫ (e^{-s} - E e^{-sX})/s ds,
    E Z²/X = ∫ e^{-s} L_U(s/c) (1 + 2as/c)^{-3/2} ds. Units of σ² (the KL is scale-free)."""
    from scipy.integrate import quad

    def integral(f: Callable[[float], float]) -> float:
        return float(quad(f, 0.0, np.inf, epsabs=1e-13, epsrel=1e-11, limit=200)[0])

    k = m0 - 1.0
    inv, log, ratio = 1.0 / (k - 2), digamma(k / 2) + np.log(2.0), 1.0 / (m0 * (k - 2))
    out = np.empty(len(pool))
    for t, n in enumerate(pool):
        c, a = n - ddof, n / (n + m)
        out[t] = 0.5 * (log - np.log(c) + c * (inv + ratio) - 1)

        def lu(s: float, c: float = c) -> float:
            return float(np.exp(-(m - 1) / 2 * np.log1p(2 * s / c)))

        def inverse(s: float, c: float = c, a: float = a) -> float:
            return float(np.exp(-s) * lu(s) / np.sqrt(1 + 2 * a * s / c))

        def logarithm(s: float, c: float = c, a: float = a) -> float:
            return float(np.exp(-s) * (1 - lu(s) / np.sqrt(1 + 2 * a * s / c)) / s) if s > 0 else 0.0

        def z_squared(s: float, c: float = c, a: float = a) -> float:
            return float(np.exp(-s) * lu(s) * (1 + 2 * a * s / c) ** -1.5)

        e_inv, e_log, e_z2 = integral(inverse), integral(logarithm), integral(z_squared)
        inv, log = inv * e_inv, log + e_log
        ratio = ratio * e_inv + m / ((n + m) ** 2 * c) * e_z2
    return Prediction(out, None, "accumulate: E KL = ½[E log σ_t²/σ² + σ² E σ_t⁻² + E(μ_t-μ)²/σ_t² - 1], "
                      "exact: each factor's moment one integral of its Laplace transform")


def gaussian_accumulate_subsample(
    generations: int, m0: int, m: int, budget: int, variance: str, sigma2: float = 1.0
) -> dict[str, Prediction]:
    """Accumulate, then fit on B rows drawn without replacement from the pool (1-D sd)."""
    ddof = 0 if variance == "mle" else 1
    scatter, drift = (m0 - 1.0) * sigma2, sigma2 / m0  # E Q_P / D, E (μ_P - μ)² per coordinate
    ratio, spread = np.empty(generations), np.empty(generations)
    for t in range(generations):
        n = m0 + t * m
        b = n if t == 0 else min(budget, n)  # generation 0 fits the real data
        pool_var = scatter / (n - 1)  # E S²_P
        fitted = (b - 1) / (b - ddof) * pool_var  # E σ_t²
        subset = (1 - b / n) * pool_var / b  # E (μ_t - μ_P)²
        ratio[t], spread[t] = fitted / sigma2, drift + subset + fitted
        step = subset + fitted / m  # E (ȳ - μ_P)²
        scatter += (m - 1) * fitted + n * m / (n + m) * step
        drift += (m / (n + m)) ** 2 * step
    text = ("accumulate_subsample (B of N_t = M_0 + t m rows without replacement): the pool's "
            "E Q and E(μ_P-μ)² by an exact linear recursion; ")
    fourth = subsample_fourth_moment(generations, m0, m, budget, ddof)
    return {
        "variance_ratio": Prediction(
            ratio, np.sqrt(np.maximum(fourth - ratio**2, 0)),
            text + "E σ_t² = (B-1)/(B-ddof) E Q_P/(N_t-1); sd from the linear recursion of the "
            "pool's E Q², E Σ(x-μ_P)⁴ (a subset's moments from the pool's, finite population)"),
        "marginal_variance": Prediction(
            spread, None, text + "Var(X^{t}) = E(μ_P-μ)² + (1-B/N_t) E S²_P/B + E σ_t²"),
    }


def subsample_fourth_moment(generations: int, m0: int, m: int, budget: int, ddof: int) -> np.ndarray:
    """E σ_t⁴ / σ⁴ under accumulate_subsample, 1-D. Given the pool (N rows, power sums about its
    mean P2 = Q, P4), a random k = min(B, N) of its rows have E S², E S u², E u⁴ linear in (P2², P4)
    (``mixing.real_block_moments``, u the subset's mean error); the m new rows N(μ_B, σ²) move the
    pool's mean by δ = (m/N') h, h = u + σ Z̄, and
    Q' = Q + σ² χ²_{m-1} + (N m/N') h²,
    P4' = P4 - 4δ P3 + 6δ² Q + N δ⁴ + Σ(y-ȳ)⁴ + 6 g² σ² χ²_{m-1} + m g⁴ (g = (N/N') h),
    where E[δ P3 | pool] = 0: (E Q², E P4) follow a 2×2 linear recursion."""
    from collapselab.theory.mixing import real_block_moments

    state = np.array([(m0 - 1.0) * (m0 + 1), 3 * (m0 - 1.0) ** 2 / m0])  # E Q², E P4 of M_0 normal rows
    out = np.empty(generations)
    first = np.array([1.0, 0.0])  # (P2², P4) coordinates of a product of two P2-linear terms
    for t in range(generations):
        n = m0 + t * m
        k = n if t == 0 else min(budget, n)
        cb = k - ddof
        g1, a1, u4, s2, su = real_block_moments("real_fraction", k, n)
        scale = np.array([1.0 / n**2, 1.0 / n])  # m2² = P2²/N², m4 = P4/N
        g1, a1, u4, s2, su = g1 / n, a1 / n, u4 * scale, s2 * scale, su * scale
        var4 = s2 / cb**2  # E σ⁴
        out[t] = var4 @ state
        h4 = u4 + 6 * su / (cb * m) + 3 * var4 / m**2
        var2h2 = su / cb + var4 / m
        q_h2 = first * (g1 + a1 / (cb * m))  # E[Q h²]
        q_var2 = first * a1 / cb  # E[Q σ²]
        big = n + m
        kappa = n * m / big
        row_q2 = (np.array([1.0, 0.0]) + (m * m - 1) * var4 + kappa**2 * h4 + 2 * (m - 1) * q_var2
                  + 2 * kappa * q_h2 + 2 * kappa * (m - 1) * var2h2)
        row_p4 = (np.array([0.0, 1.0]) + 6 * (m / big) ** 2 * q_h2 + n * (m / big) ** 4 * h4
                  + 3 * (m - 1) ** 2 / m * var4 + 6 * (n / big) ** 2 * (m - 1) * var2h2
                  + m * (n / big) ** 4 * h4)
        state = np.array([row_q2 @ state, row_p4 @ state])
    return out


@register("gaussian", "normal", "accumulate")
def _gaussian_normal_accumulate(config: Any, source: Any) -> dict[str, Prediction]:
    m0, m = accumulate_sizes(config)
    return gaussian_accumulate(config.generations, m0, m, source.dim,
                               config.model.params.get("variance", "mle"), float(source.std) ** 2)


@register("gaussian", "normal", "accumulate_subsample")
def _gaussian_normal_accumulate_subsample(config: Any, source: Any) -> dict[str, Prediction]:
    m0, m = accumulate_sizes(config)
    budget = config.policy.params.get("budget") or config.data.size
    return gaussian_accumulate_subsample(config.generations, m0, m, int(budget),
                                         config.model.params.get("variance", "mle"),
                                         float(source.std) ** 2)
