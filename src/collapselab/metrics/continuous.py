"""Metrics for continuous data, against the source's closed-form truth where it has one.

Families that expose ``mixture()`` (gaussian, gmm, kde) are measured on their fitted parameters —
exactly what the theory describes; the synthetic samples are used for tails and W1.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from collapselab import capabilities, gaussians
from collapselab.capabilities import IsMixture, provides
from collapselab.metrics.base import GenerationContext
from collapselab.metrics.declare import Plot
from collapselab.metrics.regression import linreg_loglik
from collapselab.models.gaussian import Gaussian
from collapselab.protocol import returned
from collapselab.registry import metrics

CONTINUOUS = frozenset({"continuous"})


def model_moments(ctx: GenerationContext) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(C, D)`` and covariance ``(C, D, D)`` of the model (its samples if it has no mixture)."""
    if provides(ctx.model, IsMixture):
        return gaussians.moments(ctx.model.mixture())
    return gaussians.sample_moments(ctx.synthetic)


def true_moments(ctx: GenerationContext) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(1, D)`` and covariance ``(1, D, D)`` of the source's truth (shared by every chain),
    or ``(C, D)`` and ``(C, D, D)`` of each chain's real pool where the source has no closed form."""
    truth = capabilities.truth(ctx.source)
    if truth and "means" in truth:
        mean, cov = gaussians.moments(
            (truth["weights"][None], truth["means"][None], truth["covs"][None])
        )
        return mean, cov
    return gaussians.sample_moments(ctx.real)  # no closed form: the real pool's moments stand in


@metrics.register("variance_ratio")
class VarianceRatio:
    """Total model variance over total true variance: tr(Σ_t) / tr(Σ). Collapse drives it to 0."""

    kinds = CONTINUOUS
    describe = {"variance_ratio": "model variance over the true variance (1: no loss)",
                "log_variance_ratio": "log of the variance ratio"}
    worse = {"variance_ratio": "lower", "log_variance_ratio": "lower"}
    bounds = {"variance_ratio": (0, None)}
    plots = (Plot.curve("variance_ratio", "variance ratio (the spread that is left)",
                        headline=True),)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        _, cov = model_moments(ctx)
        _, cov_true = true_moments(ctx)
        ratio = np.trace(cov, axis1=-2, axis2=-1) / np.trace(cov_true, axis1=-2, axis2=-1)
        return {"variance_ratio": ratio, "log_variance_ratio": np.log(ratio)}


@metrics.register("mean_drift")
class MeanDrift:
    """Euclidean distance between the model mean and the true mean."""

    kinds = CONTINUOUS
    describe = {"mean_drift": "distance of the model's mean from the true mean"}
    worse = {"mean_drift": "higher"}

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        mean, _ = model_moments(ctx)
        mean_true, _ = true_moments(ctx)
        return {"mean_drift": np.linalg.norm(mean - mean_true, axis=-1)}


@metrics.register("w2")
class W2:
    """Squared 2-Wasserstein distance between the Gaussians with the model's and the true moments
    (exact for the gaussian family; the paper's risk R_W2 = W2^2), and W2 itself."""

    kinds = CONTINUOUS
    describe = {"w2": "Wasserstein-2 distance from the true distribution",
                "w2_sq": "squared Wasserstein-2 distance from the true distribution (risk)"}
    worse = {"w2*": "higher"}
    bounds = {"w2*": (0, None)}
    plots = (Plot.curve("w2_sq", "distance to the truth (squared W2)", headline=True),)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        mean, cov = model_moments(ctx)
        mean_true, cov_true = true_moments(ctx)
        sq = w2_squared(mean, cov, mean_true, cov_true)
        return {"w2_sq": sq, "w2": np.sqrt(sq)}


def w2_squared(mean: np.ndarray, cov: np.ndarray, mean_true: np.ndarray,
               cov_true: np.ndarray) -> np.ndarray:
    """``gaussians.w2_squared`` of the model ``(C, D), (C, D, D)`` against the truth, whose
    moments may be shared ``(1, D), (1, D, D)``: the truth's square root is taken once, and
    tr sqrt(M) as the sum of the roots of M's eigenvalues (no eigenvectors); in one dimension,
    (mu - mu*)^2 + (sigma - sigma*)^2."""
    if mean.shape[-1] == 1:
        spread = np.sqrt(cov[:, 0, 0]) - np.sqrt(cov_true[:, 0, 0])
        return (mean - mean_true)[:, 0] ** 2 + spread**2
    root = gaussians._sqrtm_psd(cov_true)  # (1 or C, D, D)
    cross = np.linalg.eigvalsh(root @ cov @ root)  # (C, D)
    trace = (np.trace(cov, axis1=-2, axis2=-1) + np.trace(cov_true, axis1=-2, axis2=-1)
             - 2 * np.sqrt(np.clip(cross, 0, None)).sum(-1))
    return ((mean - mean_true) ** 2).sum(-1) + np.maximum(trace, 0.0)


@metrics.register("w1")
class W1:
    """1-D Wasserstein-1 between the synthetic samples and the real held-out data (per chain)."""

    kinds = CONTINUOUS
    describe = {"w1": "Wasserstein-1 distance of the samples from the real held-out data"}
    worse = {"w1": "higher"}
    bounds = {"w1": (0, None)}
    plots = (Plot.curve("w1", "distance to the real data (W1)", headline=True),)

    def __init__(self) -> None:
        self._quantiles: tuple[np.ndarray, int, np.ndarray] | None = None

    def _real_quantiles(self, heldout: np.ndarray, m: int) -> np.ndarray:
        """The held-out data's quantiles at ``m`` levels: the same every generation, taken once
        (for this held-out array, held so that it is never another one at the same address)."""
        cached = self._quantiles
        if cached is None or cached[0] is not heldout or cached[1] != m:
            levels = (np.arange(m) + 0.5) / m
            cached = self._quantiles = (heldout, m, np.quantile(heldout[0, :, 0], levels))
        return cached[2]

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        if ctx.synthetic.shape[-1] != 1:
            return {}  # defined for 1-D data only
        synth = ctx.synthetic[..., 0]
        # W1 = ∫|F^-1 - G^-1|: compare sorted samples against real quantiles at the same levels
        real_q = self._real_quantiles(ctx.heldout, synth.shape[1])
        return {"w1": np.abs(np.sort(synth, axis=1) - real_q).mean(axis=1)}


@metrics.register("kl")
class KL:
    """KL(true || model) between Gaussians with the true and the model's moments (exact for the
    gaussian family on a normal source)."""

    kinds = CONTINUOUS
    describe = {"kl": "KL(truth || model)"}
    worse = {"kl": "higher"}
    bounds = {"kl": (0, None)}
    plots = (Plot.curve("kl", "KL to the truth", headline=True),)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        mean, cov = model_moments(ctx)
        mean_true, cov_true = true_moments(ctx)
        return {"kl": kl_true_model(mean_true, cov_true, mean, cov)}


def kl_true_model(mean_true: np.ndarray, cov_true: np.ndarray, mean: np.ndarray,
                  cov: np.ndarray) -> np.ndarray:
    """``gaussians.kl_gaussian`` KL(truth || model), the truth's moments possibly shared
    ``(1, D), (1, D, D)``: one solve per chain for both the trace and the quadratic term, the
    truth's log-determinant once; in one dimension, scalars (where every variance is positive:
    a zero one is the solve's error, as in ``gaussians.kl_gaussian``)."""
    dim = mean.shape[-1]
    diff = mean - mean_true  # (C, D)
    if dim == 1 and (cov > 0).all():
        var, var_true = cov[:, 0, 0], cov_true[:, 0, 0]
        return 0.5 * ((var_true + diff[:, 0] ** 2) / var - 1 + np.log(var / var_true))
    rhs = np.concatenate([np.broadcast_to(cov_true, cov.shape), diff[..., None]], axis=-1)
    solved = np.linalg.solve(cov, rhs)  # (C, D, D + 1): [cov^-1 cov_true | cov^-1 diff]
    trace = np.trace(solved[..., :dim], axis1=-2, axis2=-1)
    quad = (diff * solved[..., dim]).sum(-1)
    logdet = np.linalg.slogdet(cov)[1] - np.linalg.slogdet(cov_true)[1]
    return 0.5 * (trace + quad - dim + logdet)


@metrics.register("tail_mass")
class TailMass:
    """Share of synthetic samples beyond k sigma of the real distribution (Mahalanobis distance
    under the true moments), next to the real distribution's own share: tails vanish first."""

    kinds = CONTINUOUS
    describe = {"tail_mass_*": "share of samples beyond k sigma of the true mean (real: dotted)"}
    worse = {"tail_mass_*": "lower"}
    bounds = {"tail_mass_*": (0, 1)}
    plots = (Plot.group("tail_mass_*", title="mass in the tails", headline=True),)

    def __init__(
        self,
        sigmas: Annotated[list[float], Field(min_length=1, description=(
            "thresholds in standard deviations"))] = [2.0, 3.0],  # noqa: B006
    ) -> None:
        self.sigmas = sigmas

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        from scipy.special import chdtrc  # here, not at import: listing stays fast

        d2 = mahalanobis_sq(ctx.synthetic, *true_moments(ctx))  # (C, m)
        levels = np.square(self.sigmas)
        real = chdtrc(ctx.synthetic.shape[-1], levels)  # the true shares: chi2(D) survival
        out: dict[str, Any] = {}
        for k, level, share in zip(self.sigmas, levels, real, strict=True):
            name = f"tail_mass_{k:g}sigma"
            out[name] = (d2 > level).mean(axis=1)
            out[f"{name}_real"] = float(share)  # true share, for reference
        return out


def mahalanobis_sq(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of ``x (C, n, D)`` under ``mean (1 or C, D)`` and
    ``cov (1 or C, D, D)``: ``(C, n)``. Whitened by the inverse Cholesky factor, one small
    inverse per covariance, not a solve per point."""
    whiten = np.linalg.inv(np.linalg.cholesky(cov))  # (1 or C, D, D)
    z = (x - mean[:, None, :]) @ np.swapaxes(whiten, -1, -2)  # (C, n, D)
    return np.einsum("cnd,cnd->cn", z, z)


@metrics.register("l2_distance")
class L2Distance:
    """Closed-form L2 distance between the model's mixture density and the true density."""

    kinds = CONTINUOUS
    describe = {"l2_distance": "L2 distance between model and true densities"}
    worse = {"l2_distance": "higher"}
    bounds = {"l2_distance": (0, None)}
    plots = (Plot.curve("l2_distance", "distance to the true density (L2)", headline=True),)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        truth = capabilities.truth(ctx.source)
        if not (truth and "means" in truth and provides(ctx.model, IsMixture)):
            return {}
        model = ctx.model.mixture()
        chains = model[0].shape[0]
        true = tuple(np.broadcast_to(a[None], (chains, *a.shape)) for a in
                     (truth["weights"], truth["means"], truth["covs"]))
        return {"l2_distance": gaussians.l2_distance(model, true)}  # type: ignore[arg-type]


@metrics.register("component_std")
class ComponentStd:
    """Mean standard deviation of the mixture's components (sqrt of mean covariance eigenvalue),
    weighted by component weight: the paper's GMM figure shows it shrinking to ~0."""

    kinds = CONTINUOUS
    describe = {"component_std": "weighted mean standard deviation of the mixture components",
                "min_component_std": "smallest component standard deviation"}
    worse = {"*component_std": "lower"}
    plots = (Plot.group("component_std", "min_component_std", title="component spread"),)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        if not provides(ctx.model, IsMixture):
            return {}
        weights, _, covs = ctx.model.mixture()
        std = np.sqrt(np.trace(covs, axis1=-2, axis2=-1) / covs.shape[-1])  # (C, K)
        return {"component_std": (weights * std).sum(axis=1), "min_component_std": std.min(axis=1)}


@metrics.register("heldout_nll")
class HeldoutNLL:
    """Negative mean log-likelihood of real held-out data under the model (per sample)."""

    kinds = frozenset({"continuous", "images"})
    describe = {"heldout_nll": "negative log-likelihood of real held-out data (risk)"}
    worse = {"heldout_nll": "higher"}
    plots = (Plot.curve("heldout_nll", "real-data risk (held-out NLL)", headline=True),)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        score = gaussian_loglik(ctx.model, ctx.heldout)  # closed forms: gaussian, linreg
        if score is None:
            score = linreg_loglik(ctx.model, ctx.heldout)
        if score is None:
            score = returned(ctx.model.score(ctx.heldout_chains()), (ctx.chains,),
                             "one score per chain", ctx.model, "score")  # (C,)
        return {"heldout_nll": -score}


def gaussian_loglik(model: Any, heldout: np.ndarray) -> np.ndarray | None:
    """Mean log-likelihood ``(C,)`` of the held-out set ``(1, n, D)`` under each chain's fitted
    Gaussian, from the set's moments: the gaussian family (scoring as it does: a subclass that
    scores otherwise is scored) needs no pass over ``chains x n`` points. ``None`` for other
    models, and where the closed form is undefined (a singular covariance): the caller scores the
    samples instead."""
    if not (isinstance(model, Gaussian) and type(model).score_samples is Gaussian.score_samples
            and type(model).score is Gaussian.score) or heldout.ndim != 3 or len(heldout) != 1:
        return None
    _, means, covs = model.mixture()  # what Gaussian.score_samples scores under
    mean, cov = means[:, 0], covs[:, 0]  # (C, D), (C, D, D)
    x = heldout[0]  # (n, D)
    centre = x.mean(axis=0)
    spread = np.cov(x, rowvar=False, ddof=0).reshape(cov.shape[-2:])  # (D, D)
    diff = centre - mean  # (C, D)
    # mean_i (x_i - mu)^T S^-1 (x_i - mu) = tr(cov^-1 spread) + diff^T cov^-1 diff
    rhs = np.concatenate([np.broadcast_to(spread, cov.shape), diff[..., None]], axis=-1)
    try:
        solved = np.linalg.solve(cov, rhs)  # (C, D, D + 1)
    except np.linalg.LinAlgError:
        return None
    dim = mean.shape[-1]
    quad = np.trace(solved[..., :dim], axis1=-2, axis2=-1) + (diff * solved[..., dim]).sum(-1)
    logdet = np.linalg.slogdet(cov)[1]
    out = -0.5 * (quad + logdet + dim * gaussians.LOG_2PI)
    return out if np.isfinite(out).all() else None


@metrics.register("marginal_variance")
class MarginalVariance:
    """Mean squared deviation of synthetic samples from the *true* mean, per coordinate: averaged
    over chains it estimates Var(X^n) = σ²(1 + n/M), which counts the mean's random walk too."""

    kinds = CONTINUOUS
    describe = {"marginal_variance": "variance of the samples around the true mean"}

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        mean_true, _ = true_moments(ctx)
        return {"marginal_variance": ((ctx.synthetic - mean_true[:, None, :]) ** 2).mean(axis=(1, 2))}
