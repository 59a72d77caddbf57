"""Closed-form predictions of the theory, per generation, where one exists.

Each prediction is the expected value of a metric's chain mean at generations ``0..G-1`` and the
standard deviation of one chain around it (so the Monte-Carlo band of a mean over C chains is
``mean ± z sd / sqrt(C)``). Generation t's model has been fitted t + 1 times: once on the M_0 real
samples, then t times on m synthetic samples.

Predictions are registered per ``(family, source, policy)`` by the module that owns them
(``@theory.register("gaussian", "normal", "replace")``); :func:`predict` looks the triple up. Every
formula here is exact unless its ``source`` text says it is an approximation.

Gaussian, replace (Shumailov et al., Nature 2024, §4.2 and Supplementary). Write D_t = μ_t - μ and
s_t for the fitted mean error and standard deviation of generation t. Given generation t - 1, a fit
on M_t normal samples gives D_t = D_{t-1} + s_{t-1} Z / sqrt(M_t) and s_t² = s_{t-1}² R_t, with
Z ~ N(0, 1) independent of R_t ~ χ²_{M_t-1} / (M_t - ddof) (sample mean and variance of normal data
are independent), both independent of the past. So every joint moment E[D_t^a s_t^b] follows from
those of generation t - 1 by a finite recursion (:func:`drift_scale_moments`), and the 1-D W2 risk
E[(μ_t - μ)² + (s_t - σ)²], its per-chain sd, the KL and the marginal variance are exact. In D > 1
dimensions (isotropic source) the covariance is a product of Wishart matrices: its trace moments
and the KL are exact; W2 needs E tr Σ_t^{1/2}, which has no closed form, so none is drawn.

Categorical, replace: every state's count is marginally a two-allele Wright-Fisher chain
(Binomial(M_t, c/M_{t-1}) each generation), started at Binomial(M_0, p_k); its (M+1)-state Markov
chain gives P(state k present at generation t) exactly. The sum of two states' counts is again such
a chain (with p_k + p_l), which gives the pairwise terms of the support size's variance.

Gaussian, accumulate (the pool of M_0 + t m rows) and accumulate_subsample (B rows of it without
replacement): the pool's scatter and mean error follow exact recursions (derivation above
:func:`gaussian_accumulate`). KDE, replace: the model variance is the points' scatter plus the
kernel, exact in expectation, with its sd in 1-D from the sample's fourth moments (above
:func:`kde_replace`). Linear regression: see its section.

:func:`agreement` turns a run's rows into the measured-vs-theory table (z against the standard
error; ``collapselab theory RUN`` prints it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import comb
from typing import Any

import numpy as np
from scipy.special import digamma, gammaln, polygamma, xlog1py, xlogy


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


Predictor = Callable[[Any, Any], dict[str, Prediction]]  # (config, source) -> predictions
_PREDICTORS: dict[tuple[str, str, str], Predictor] = {}


def register(family: str, source: str, policy: str) -> Callable[[Predictor], Predictor]:
    """``@register("gaussian", "normal", "replace")`` on a ``(config, source) -> dict`` function."""

    def decorator(fn: Predictor) -> Predictor:
        _PREDICTORS[(family, source, policy)] = fn
        return fn

    return decorator


def registered() -> list[tuple[str, str, str]]:
    """The ``(family, source, policy)`` triples that have a theory."""
    return sorted(_PREDICTORS)


def predict(config: Any, source: Any) -> dict[str, Prediction]:
    """Predictions for this experiment, keyed by metric value name; empty where no theory applies."""
    if config.curation or config.producers:
        return {}  # filtering or mixing producers changes what is fitted: the formulas no longer apply
    key = (config.model.family, config.data.source, config.policy.name)
    fn = _PREDICTORS.get(key)
    return fn(config, source) if fn is not None else {}


def fit_sizes(config: Any) -> np.ndarray:
    """Training-set size of every generation under ``replace``: M_0 real, then m synthetic."""
    m = config.synthetic_size or config.data.size
    return np.concatenate([[config.data.size], np.full(max(config.generations - 1, 0), m)]).astype(int)


# --- Gaussian ------------------------------------------------------------------------------------


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


# --- Categorical ---------------------------------------------------------------------------------

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


def categorical_replace(p: np.ndarray, sizes: np.ndarray) -> dict[str, Prediction]:
    """Expected support size and lost states of a categorical refitted by counts (``replace``)."""
    p = np.asarray(p, dtype=float)
    live = np.flatnonzero(p > 0)  # states with p = 0 are never present
    source = ("P(state k present at t) from the two-allele Wright-Fisher chain started at "
              "Binomial(M_0, p_k)")
    i, j = np.triu_indices(len(live), k=1)
    paired = len(i) <= WF_MAX_PAIRS
    # the states' chains and, for the sd, the merged pairs' (p_k + p_l), run as one batch
    chains = wright_fisher_absent(
        np.concatenate([p[live], p[live][i] + p[live][j]]) if paired else p[live], sizes)
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
            f"{source}; → p_{state} = {p[state]:.4g}, its absorption probability")
    return out


@register("categorical", "categorical", "replace")
def _categorical_replace(config: Any, source: Any) -> dict[str, Prediction]:
    sizes = fit_sizes(config)
    if sizes.max() > WF_MAX_SIZE:
        return {}
    return categorical_replace(source.p, sizes)


# --- Linear regression ---------------------------------------------------------------------------
#
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
    design: str, policy: str,
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
    return {}


def _linreg(config: Any, source: Any) -> dict[str, Prediction]:
    params = config.model.params
    sizes = fit_sizes(config)
    return linreg_prediction(
        config.generations, source.features, int(sizes[0]), int(sizes[-1]), float(source.noise),
        params.get("noise"), params.get("design", "fixed"), config.policy.name)


register("linreg", "linear", "replace")(_linreg)
register("linreg", "linear", "accumulate")(_linreg)


# --- Gaussian, accumulate and accumulate_subsample -----------------------------------------------
#
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
# linear recursion, and with them the mean variance ratio and marginal variance, exactly. Their
# per-chain sd and E σ_t (W2) depend on the subset's law and are not drawn.


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
        # E σ_t = E sqrt(Q_t / c_t), Q_t = Q_0 Π (1 + R_i) with independent factors
        root = np.sqrt(sigma2 * 2.0) * np.exp(gammaln(m0 / 2) - gammaln((m0 - 1) / 2))  # E sqrt(Q_0)
        roots = np.empty(generations)
        for t in range(generations):
            roots[t] = root
            ct, at = c[t], a[t]
            root *= _laplace_sqrt(lambda s, ct=ct, at=at: np.exp(
                -s - (m - 1) / 2 * np.log1p(2 * s / ct) - 0.5 * np.log1p(2 * at * s / ct)))
        sd_mean = roots / np.sqrt(c)
        sigma = np.sqrt(sigma2)
        if m0 > 3:
            out["kl"] = gaussian_accumulate_kl(pool, m, ddof, m0)
        out["w2_sq"] = Prediction(
            drift2 + sigma2 * ratio - 2 * sigma * sd_mean + sigma2, None,
            "accumulate: E W2² = E(μ_t-μ)² + E σ_t² - 2σ E σ_t + σ², exact; E σ_t = "
            "E sqrt(Q_0/c_t) Π E sqrt(1 + (χ²_{m-1} + (N_i/N_{i+1}) χ²_1)/(N_i-ddof)), each factor "
            "one quadrature of its Laplace transform")
    return out


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

        e_inv = integral(lambda s, c=c, a=a: np.exp(-s) * lu(s) / np.sqrt(1 + 2 * a * s / c))
        e_log = integral(lambda s, c=c, a=a: np.exp(-s) * (1 - lu(s) / np.sqrt(1 + 2 * a * s / c)) / s
                         if s > 0 else 0.0)
        e_z2 = integral(lambda s, c=c, a=a: np.exp(-s) * lu(s) * (1 + 2 * a * s / c) ** -1.5)
        inv, log = inv * e_inv, log + e_log
        ratio = ratio * e_inv + m / ((n + m) ** 2 * c) * e_z2
    return Prediction(out, None, "accumulate: E KL = ½[E log σ_t²/σ² + σ² E σ_t⁻² + E(μ_t-μ)²/σ_t² - 1], "
                      "exact: each factor's moment one integral of its Laplace transform")


def gaussian_accumulate_subsample(
    generations: int, m0: int, m: int, budget: int, variance: str, sigma2: float = 1.0
) -> dict[str, Prediction]:
    """Accumulate, then fit on B rows drawn without replacement from the pool; means only."""
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
    return {
        "variance_ratio": Prediction(
            ratio, None, text + "E σ_t² = (B-1)/(B-ddof) E Q_P/(N_t-1)"),
        "marginal_variance": Prediction(
            spread, None, text + "Var(X^{t}) = E(μ_P-μ)² + (1-B/N_t) E S²_P/B + E σ_t²"),
    }


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


# --- Kernel density estimate ---------------------------------------------------------------------
#
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


# --- Agreement of a run with its theory ----------------------------------------------------------

PASS_Z = 4.0  # |z| below this passes: a two-sided false alarm of 6e-5 per row when the theory holds


@dataclass(frozen=True)
class Agreement:
    """One predicted metric of one run at one generation, measured against its theory."""

    metric: str
    generation: int
    measured: float  # the chain mean the run recorded
    theory: float  # the predicted expectation of that chain mean
    se: float  # standard error of the chain mean: the theory's sd / sqrt(chains), else the chains'
    se_from: str  # "theory" or "chains"
    z: float  # (measured - theory) / se

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.z) and abs(self.z) < PASS_Z)


def agreement(rows: list[dict[str, Any]], generations: list[int] | None = None) -> list[Agreement]:
    """Measured against predicted, per metric with a theory, at ``generations`` (default: the last
    recorded one; negative counts from the end) of a run's metric rows (``RunStore.metrics()``).
    Metrics are in the rows' order; a generation with no measured value (degenerate) is left out."""
    if not rows:
        return []
    by_gen = {int(r["generation"]): r for r in rows}
    last = max(by_gen)
    wanted = [last] if not generations else [g if g >= 0 else last + 1 + g for g in generations]
    out = []
    for gen in wanted:
        row = by_gen.get(gen)
        if row is None:
            continue
        for key in row:
            if not key.endswith(".theory") or not isinstance(row.get(key[:-7]), (int, float)):
                continue
            metric = key[:-7]
            se, se_from = row.get(f"{metric}.theory_se"), "theory"
            if se is None:
                se, se_from = row.get(f"{metric}.sem", float("nan")), "chains"
            measured, predicted = float(row[metric]), float(row[key])
            z = (measured - predicted) / se if se and np.isfinite(se) and se > 0 else float("nan")
            out.append(Agreement(metric, gen, measured, predicted, float(se), se_from, float(z)))
    return out


def run_agreement(run_dir: Any, generations: list[int] | None = None) -> list[Agreement]:
    """:func:`agreement` of a run directory (what a report calls; it reads only the directory)."""
    from collapselab.store import RunStore

    store = RunStore(run_dir)
    store.manifest()  # a folder that is not a run: a RunError naming it
    return agreement(store.metrics(), generations)
