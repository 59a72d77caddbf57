"""Gaussian under ``real_fraction`` and ``fresh``: every training set after generation 0 mixes k real
rows with n rows of the previous model's output (k = round(f M), n = min(M - k, m)).

``real_fraction`` draws its k rows without replacement from the fixed real sample X of M rows
(generation 0's training set); ``fresh`` draws k new rows from the source. Write the mixed set's
real block as (mean r̄, scatter S_R) and its synthetic block as (ȳ, S_Y), N = k + n, c = N - ddof,
and measure the fitted mean against a centre: x̄ for real_fraction, μ for fresh, e_t = μ_t - centre.
With s² = σ²_{t-1}, u = r̄ - centre, ȳ - centre = e + s Z/√n and S_Y = s² χ²_{n-1}:

    e_t = (k u + n (e + s Z/√n)) / N,
    σ_t² c = S_R + S_Y + (k n / N) (u - e - s Z/√n)².

Given X the real block is independent of the past, E[u | X] = 0 and E[e_t | X] = 0, so every odd
term vanishes, and the moments (E σ², E e²) and (E σ⁴, E σ² e², E e⁴) follow linear recursions
whose constants are the real block's moments. For fresh those are the normal ones (u ~ N(0, σ²/k),
S_R ~ σ² χ²_{k-1}); for real_fraction they are the moments of a simple random sample of k of M
finite-population values d_i = X_i - x̄ (with m2 = Σd²/M, m4 = Σd⁴/M and the inclusion
probabilities π_j = k(k-1)...(k-j+1) / (M(M-1)...(M-j+1))): E u² = (M-k)/(k(M-1)) m2 is the
finite-population correction, and the fourth-order terms combine m2² and m4. Conditional on X the
first moments are proportional to m2 and the second ones to a combination of m2² and m4, so the
recursion carries coefficients and takes the normal sample's E m2, E m2², E m4 at the end; x̄ - μ
~ N(0, σ²/M) is independent of all of it. Exact: the mean variance ratio (any D: each coordinate's
fit is the 1-D chain), its per-chain sd (1-D), the marginal variance with its sd (1-D), and the
fixed point of the first-moment recursion. E σ_t has no closed form here (σ_t² is a sum, not a
product), so E W2² is drawn as an upper bound: E σ ≥ (E σ²)^{3/2} / (E σ⁴)^{1/2} (Hölder).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.theory.base import Prediction, register
from collapselab.theory.gaussian import gaussian_replace

M2SQ = np.array([1.0, 0.0])  # a product of two first moments (each ∝ m2): the m2² coordinate


def inclusion(k: int, m: int, j: int) -> float:
    """π_j: the chance that j given rows are all in a random k of m (without replacement)."""
    return float(np.prod([(k - i) / (m - i) for i in range(j)])) if j <= k else 0.0


def real_block_moments(policy: str, k: int, m0: int) -> tuple[float, float, np.ndarray, np.ndarray,
                                                              np.ndarray]:
    """The real block's moments about its centre, in the basis of the recursion: E u², E S_R (∝ m2)
    and E u⁴, E S_R², E S_R u² (over (m2², m4)). ``fresh``: normal, m2 ≡ σ² = 1."""
    if policy == "fresh":
        return 1 / k, k - 1.0, M2SQ * 3 / k**2, M2SQ * (k - 1.0) * (k + 1), M2SQ * (k - 1.0) / k
    p1, p2, p3, p4 = (inclusion(k, m0, j) for j in (1, 2, 3, 4))
    # sums over the k chosen rows: A = Σ d², B = Σ d (= k u); power sums P2 = M m2, P4 = M m4
    b2 = (p1 - p2) * m0
    a1 = p1 * m0
    a2 = np.array([p2 * m0**2, (p1 - p2) * m0])
    ab2 = np.array([(p2 - p3) * m0**2, (p1 - 3 * p2 + 2 * p3) * m0])
    b4 = np.array([(3 * p2 - 6 * p3 + 3 * p4) * m0**2, (p1 - 7 * p2 + 12 * p3 - 6 * p4) * m0])
    return (b2 / k**2, a1 - b2 / k, b4 / k**4, a2 - 2 * ab2 / k + b4 / k**2,
            ab2 / k**2 - b4 / k**3)


def mixing_moments(policy: str, generations: int, m0: int, k: int, n: int, ddof: int
                   ) -> dict[str, np.ndarray]:
    """Per generation, in units of σ: E σ², E σ⁴, E D², E D⁴ and E D² σ² of the 1-D fit (D = μ_t - μ)."""
    big = k + n
    c, kappa = big - ddof, k * n / big
    g1, a1, u4, sr2, su = real_block_moments(policy, k, m0)
    if policy == "fresh":  # generation 0: M real normal rows
        phi, psi = (m0 - 1) / (m0 - ddof), 1 / m0
        f2, h2, j2 = M2SQ * (m0 * m0 - 1) / (m0 - ddof) ** 2, M2SQ * phi / m0, M2SQ * 3 / m0**2
        em2, basis, off2 = 1.0, np.array([1.0, 0.0]), 0.0
    else:  # generation 0 fits X itself: e_0 = 0, σ_0² = M m2 / (M - ddof)
        phi, psi = m0 / (m0 - ddof), 0.0
        f2, h2, j2 = M2SQ * phi**2, M2SQ * 0.0, M2SQ * 0.0
        # the normal sample's E m2, E m2², E m4; x̄ - μ adds σ²/M to the mean's error
        em2 = (m0 - 1) / m0
        basis, off2 = np.array([(m0 * m0 - 1) / m0**2, 3 * (m0 - 1) ** 2 / m0**2]), 1 / m0
    out = {key: np.empty(generations) for key in ("s2", "s4", "d2", "d4", "d2s2")}
    for t in range(generations):
        out["s2"][t], out["s4"][t] = phi * em2, f2 @ basis
        out["d2"][t] = psi * em2 + off2
        out["d4"][t] = j2 @ basis + 6 * psi * em2 * off2 + 3 * off2**2
        out["d2s2"][t] = h2 @ basis + phi * em2 * off2
        v2, v4 = psi + phi / n, j2 + 6 * h2 / n + 3 * f2 / n**2  # v = e + s Z/√n
        q = a1 + (n - 1) * phi + kappa * (g1 + v2)
        delta4 = u4 + 6 * g1 * v2 * M2SQ + v4  # E (u - v)⁴
        q2 = (sr2 + (n * n - 1) * f2 + kappa**2 * delta4 + 2 * (n - 1) * a1 * phi * M2SQ
              + 2 * kappa * (su + a1 * v2 * M2SQ) + 2 * kappa * (n - 1) * (g1 * phi * M2SQ + h2 + f2 / n))
        qe2 = (k * k * su + n * n * a1 * v2 * M2SQ + (n - 1) * (k * k * g1 * phi * M2SQ + n * n * (h2 + f2 / n))
               + kappa * (k * k * u4 + (k * k - 4 * k * n + n * n) * g1 * v2 * M2SQ + n * n * v4)) / big**2
        e4 = (k**4 * u4 + 6 * k * k * n * n * g1 * v2 * M2SQ + n**4 * v4) / big**4
        phi, psi = q / c, (k * k * g1 + n * n * v2) / big**2
        f2, h2, j2 = q2 / c**2, qe2 / c, e4
    return out


def mixing_fixed_point(policy: str, m0: int, k: int, n: int, ddof: int) -> tuple[float, float]:
    """Where the policy settles: (E σ²/σ², E(μ - μ*)²/σ²) as t → ∞, the fixed point of the
    first-moment recursion (φ, ψ) ↦ ((E S_R + (n-1)φ + kn/N (E u² + ψ + φ/n))/c, (k² E u² + n²ψ + nφ)/N²)."""
    big = k + n
    c, kappa = big - ddof, k * n / big
    g1, a1 = real_block_moments(policy, k, m0)[:2]
    lhs = np.array([[c - (n - 1) - kappa / n, -kappa], [-n / big**2, 1 - n * n / big**2]])
    phi, psi = np.linalg.solve(lhs, [a1 + kappa * g1, k * k * g1 / big**2])
    em2, off = (1.0, 0.0) if policy == "fresh" else ((m0 - 1) / m0, 1 / m0)
    return float(phi * em2), float(psi * em2 + off)


def gaussian_mixing(
    policy: str, generations: int, m0: int, real_fraction: float, m: int, dim: int, variance: str,
    sigma2: float = 1.0,
) -> dict[str, Prediction]:
    """Single Gaussian under ``real_fraction`` or ``fresh`` (a training set of M = ``m0`` rows after
    generation 0: k = round(f M) real, n = min(M - k, m) synthetic)."""
    ddof = 0 if variance == "mle" else 1
    k = int(round(real_fraction * m0))
    n = min(m0 - k, m)
    if k == 0:  # no real rows: replace with a training set of n rows
        return gaussian_replace(generations, m0, n, dim, variance, sigma2)
    if n == 0 or k + n - ddof <= 0:
        return {}  # every set is real rows only: nothing to predict about the loop
    mom = mixing_moments(policy, generations, m0, k, n, ddof)
    ratio, spread = mom["s2"], mom["d2"] + mom["s2"]
    fixed, drift = mixing_fixed_point(policy, m0, k, n, ddof)
    how = ("a random k of the M real rows (without replacement: finite-population terms)"
           if policy == "real_fraction" else "k new real rows")
    text = (f"{policy} (k = {k} real rows each generation: {how}; n = {n} synthetic): exact linear "
            f"recursion of the fitted moments; settles at E σ²/σ² = {fixed:.4g}, "
            f"E(μ-μ*)²/σ² = {drift:.4g}")
    one = dim == 1
    out = {
        "variance_ratio": Prediction(
            ratio, np.sqrt(np.maximum(mom["s4"] - ratio**2, 0)) if one else None,
            text + ("; sd from the recursion of E σ⁴, E σ²e², E e⁴" if one else "")),
        "marginal_variance": Prediction(
            sigma2 * spread, None, text + "; Var(X^{t}) = E(μ_t-μ)² + E σ_t²"),
    }
    if one:
        # a chain's value is the mean of m squared deviations (D + s Z_j)²
        sq = mom["d4"] + mom["d2s2"] * (2 + 4 / m) + mom["s4"] * (1 + 2 / m)
        out["marginal_variance"] = Prediction(
            sigma2 * spread, sigma2 * np.sqrt(np.maximum(sq - spread**2, 0)),
            out["marginal_variance"].source + ", sd over m samples")
        root = ratio**1.5 / np.sqrt(mom["s4"])  # E σ/σ >= (E σ²)^{3/2} / (E σ⁴)^{1/2}
        out["w2_sq"] = Prediction(
            sigma2 * (mom["d2"] + ratio - 2 * root + 1), None,
            f"{policy}: upper bound E W2² <= E(μ_t-μ)² + E σ_t² - 2σ (E σ_t²)^{{3/2}}/(E σ_t⁴)^{{1/2}} "
            "+ σ² (Hölder; E σ_t has no closed form)", bound="upper")
    return out


def _gaussian_normal_mixing(config: Any, source: Any) -> dict[str, Prediction]:
    m = config.synthetic_size or config.data.size
    return gaussian_mixing(
        config.policy.name, config.generations, config.data.size,
        float(config.policy.params.get("real_fraction", 0.1)), m, source.dim,
        config.model.params.get("variance", "mle"), float(np.square(source.std)))


register("gaussian", "normal", "real_fraction")(_gaussian_normal_mixing)
register("gaussian", "normal", "fresh")(_gaussian_normal_mixing)
