"""Metrics for continuous data, against the source's closed-form truth where it has one.

Families that expose ``mixture()`` (gaussian, gmm, kde) are measured on their fitted parameters —
exactly what the theory describes; the synthetic samples are used for tails and W1.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field
from scipy import stats

from collapselab import gaussians
from collapselab.capabilities import IsMixture, provides
from collapselab.metrics.base import GenerationContext
from collapselab.metrics.declare import Plot
from collapselab.protocol import returned
from collapselab.registry import metrics

CONTINUOUS = frozenset({"continuous"})


def model_moments(ctx: GenerationContext) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(C, D)`` and covariance ``(C, D, D)`` of the model (its samples if it has no mixture)."""
    if provides(ctx.model, IsMixture):
        return gaussians.moments(ctx.model.mixture())
    return gaussians.sample_moments(ctx.synthetic)


def true_moments(ctx: GenerationContext) -> tuple[np.ndarray, np.ndarray]:
    truth = getattr(ctx.source, "truth", None)
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
        sq = gaussians.w2_squared(mean, cov, np.broadcast_to(mean_true, mean.shape),
                                  np.broadcast_to(cov_true, cov.shape))
        return {"w2_sq": sq, "w2": np.sqrt(sq)}


@metrics.register("w1")
class W1:
    """1-D Wasserstein-1 between the synthetic samples and the real held-out data (per chain)."""

    kinds = CONTINUOUS
    describe = {"w1": "Wasserstein-1 distance of the samples from the real held-out data"}
    worse = {"w1": "higher"}
    bounds = {"w1": (0, None)}
    plots = (Plot.curve("w1", "distance to the real data (W1)", headline=True),)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        if ctx.synthetic.shape[-1] != 1:
            return {}  # defined for 1-D data only
        real = ctx.heldout[0, :, 0]
        synth = ctx.synthetic[..., 0]
        # W1 = ∫|F^-1 - G^-1|: compare sorted samples against real quantiles at the same levels
        levels = (np.arange(synth.shape[1]) + 0.5) / synth.shape[1]
        real_q = np.quantile(real, levels)
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
        kl = gaussians.kl_gaussian(np.broadcast_to(mean_true, mean.shape),
                                   np.broadcast_to(cov_true, cov.shape), mean, cov)
        return {"kl": kl}


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
        mean_true, cov_true = true_moments(ctx)
        diff = ctx.synthetic - mean_true[:, None, :]
        d2 = (diff * np.linalg.solve(cov_true[:, None], diff[..., None])[..., 0]).sum(-1)
        dim = ctx.synthetic.shape[-1]
        out: dict[str, Any] = {}
        for k in self.sigmas:
            name = f"tail_mass_{k:g}sigma"
            out[name] = (d2 > k**2).mean(axis=1)
            out[f"{name}_real"] = float(stats.chi2.sf(k**2, dim))  # true share, for reference
        return out


@metrics.register("l2_distance")
class L2Distance:
    """Closed-form L2 distance between the model's mixture density and the true density."""

    kinds = CONTINUOUS
    describe = {"l2_distance": "L2 distance between model and true densities"}
    worse = {"l2_distance": "higher"}
    bounds = {"l2_distance": (0, None)}
    plots = (Plot.curve("l2_distance", "distance to the true density (L2)", headline=True),)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        truth = getattr(ctx.source, "truth", None)
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
        score = ctx.model.score(ctx.heldout_chains())  # (C,)
        return {"heldout_nll": -returned(score, (ctx.chains,), "one score per chain", ctx.model,
                                         "score")}


@metrics.register("marginal_variance")
class MarginalVariance:
    """Mean squared deviation of synthetic samples from the *true* mean, per coordinate: averaged
    over chains it estimates Var(X^n) = σ²(1 + n/M), which counts the mean's random walk too."""

    kinds = CONTINUOUS
    describe = {"marginal_variance": "variance of the samples around the true mean"}

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        mean_true, _ = true_moments(ctx)
        return {"marginal_variance": ((ctx.synthetic - mean_true[:, None, :]) ** 2).mean(axis=(1, 2))}
