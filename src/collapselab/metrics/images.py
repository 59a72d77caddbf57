"""Metrics of the image track (``images``), and of its 2-D toy data (``continuous``) where noted.

Images are compared in a fixed feature space learned once per source from real data: the hidden
layer (64 ReLU units) of a small scikit-learn MLP classifier trained on the labelled train split
(PCA to 32 dimensions for unlabelled corpora), cached per source content. The same classifier labels
generated images for class coverage. Continuous data are compared in their raw coordinates.

- ``latent_spread``: generation 0's encoder (``ctx.reference.encode``) over each generation's
  samples: spread (RMS standard deviation over latent dimensions) and centre of the latent means;
  per-sample norms of the latent means go to ``artifacts["latent_spread"]``.
- ``frechet``: Fréchet distance between Gaussians fitted to synthetic and held-out real features.
- ``precision_recall``: k-NN precision and recall (Kynkäänniemi et al. 2019).
- ``class_coverage``: the classifier's class histogram of the samples and its entropy.
- ``sample_grid``: the first samples of chain 0, stored for the report's per-generation grid.

Metrics with a ``*_real`` value compute the same number for the real pool (chain 0, as many samples
as were generated) against the held-out data: the floor that finite samples alone give.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field
from scipy.spatial.distance import cdist
from threadpoolctl import threadpool_limits

from collapselab import gaussians
from collapselab.metrics.base import GenerationContext
from collapselab.registry import metrics
from collapselab.sources import images as image_sources  # noqa: F401  (registers the sources)

IMAGES = frozenset({"images"})
IMAGES_AND_CONTINUOUS = frozenset({"images", "continuous"})


# ------------------------------------------------------------------ the fixed feature space


@dataclass
class RealFeatures:
    """A feature map and classifier learned once from a source's real train split."""

    classifier: Any | None  # sklearn MLPClassifier, or None for unlabelled data
    pca: Any | None
    n_classes: int | None
    class_entropy_real: float | None

    def features(self, images: np.ndarray) -> np.ndarray:
        """``(..., H, W)`` -> ``(..., F)``: hidden ReLU activations (or PCA coordinates)."""
        flat = images.reshape(-1, images.shape[-2] * images.shape[-1]).astype(np.float64)
        if self.classifier is not None:
            h = np.maximum(flat @ self.classifier.coefs_[0] + self.classifier.intercepts_[0], 0)
        else:
            h = self.pca.transform(flat)
        return h.reshape(*images.shape[:-2], h.shape[-1])

    def predict(self, images: np.ndarray) -> np.ndarray:
        flat = images.reshape(-1, images.shape[-2] * images.shape[-1])
        return self.classifier.predict(flat).reshape(images.shape[:-2])  # type: ignore[union-attr]


_CACHE: dict[str, RealFeatures] = {}


def real_features(ctx: GenerationContext) -> RealFeatures:
    """The source's feature space, trained on first use and cached by the train split's content."""
    src = ctx.source
    images = getattr(src, "train_images", None)
    labels = getattr(src, "train_labels", None)
    if images is None:  # a source without a split: its real pool stands in
        images, labels = np.asarray(ctx.real[0]), None
    key = getattr(src, "fingerprint", None) or hashlib.sha1(
        np.ascontiguousarray(images).tobytes()).hexdigest()
    if key not in _CACHE:
        # one BLAS thread: the small matrices of an MLP fit run 5x slower with 2 (measured)
        with threadpool_limits(limits=1):
            _CACHE[key] = _train_features(np.asarray(images), labels)
    return _CACHE[key]


def _train_features(images: np.ndarray, labels: np.ndarray | None) -> RealFeatures:
    flat = images.reshape(len(images), -1).astype(np.float64)
    if labels is None or len(np.unique(labels)) < 2:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=min(32, *flat.shape), random_state=0).fit(flat)
        return RealFeatures(None, pca, None, None)
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=0)  # fixed instrument
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(flat, labels)
    k = int(labels.max()) + 1
    return RealFeatures(clf, None, k, entropy(np.bincount(labels, minlength=k)[None])[0])


def entropy(counts: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats of each row of a count table ``(C, K)``."""
    p = counts / counts.sum(axis=-1, keepdims=True)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1)


def embed(ctx: GenerationContext, data: np.ndarray) -> np.ndarray:
    """Images -> features; continuous data stay in their raw coordinates ``(..., n, D)``."""
    if data.ndim == 4:
        return real_features(ctx).features(np.asarray(data))
    return np.asarray(data, dtype=np.float64)


def _subsample(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``k`` samples of ``(n, F)``, a random subset."""
    return x if len(x) <= k else x[rng.choice(len(x), size=k, replace=False)]


# ------------------------------------------------------------------ metrics


@metrics.register("latent_spread")
class LatentSpread:
    """Spread and centre of generation 0's latent means over each generation's samples (families
    with ``encode``). Collapse: the spread shrinks as samples lose their variety."""

    kinds = IMAGES

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        if not hasattr(ctx.reference, "encode"):
            return {}
        mu = ctx.reference.encode(ctx.synthetic)  # (C, m, L)
        mu_real = ctx.reference.encode(ctx.real[:, : ctx.synthetic.shape[1]])
        ctx.artifacts["latent_spread"] = np.linalg.norm(mu, axis=-1).astype(np.float32)  # (C, m)

        def spread(z: np.ndarray) -> np.ndarray:
            return np.sqrt(z.var(axis=1).mean(axis=-1))

        return {"latent_spread": spread(mu), "latent_spread_real": float(spread(mu_real).mean()),
                "latent_center": np.linalg.norm(mu.mean(axis=1), axis=-1)}


@metrics.register("frechet")
class Frechet:
    """Fréchet distance (squared W2 between fitted Gaussians) from the synthetic samples to the
    held-out real data: image features, or raw coordinates for continuous data."""

    kinds = IMAGES_AND_CONTINUOUS

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        m = ctx.synthetic.shape[1]
        if m < 2:
            return {}
        synth = embed(ctx, ctx.synthetic)  # (C, m, F)
        held = embed(ctx, ctx.heldout)[0]  # (m_held, F)
        real = embed(ctx, ctx.real[:1, :m])  # (1, m, F): same sample size as the synthetic sets

        def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            c = x - x.mean(axis=1, keepdims=True)
            return x.mean(axis=1), np.einsum("cni,cnj->cij", c, c) / (x.shape[1] - 1)

        mh, ch = moments(held[None])

        def fd(x: np.ndarray) -> np.ndarray:
            mx, cx = moments(x)
            return gaussians.w2_squared(mx, cx, np.broadcast_to(mh, mx.shape),
                                        np.broadcast_to(ch, cx.shape))

        return {"frechet_distance": fd(synth), "frechet_distance_real": float(fd(real)[0])}


@metrics.register("precision_recall")
class PrecisionRecall:
    """k-NN precision (share of samples inside the real data's k-NN balls: fidelity) and recall
    (share of real held-out data inside the samples' k-NN balls: coverage), Kynkäänniemi et al.
    Collapse keeps samples plausible while losing coverage: recall falls first."""

    kinds = IMAGES_AND_CONTINUOUS

    def __init__(
        self,
        k: Annotated[int, Field(ge=1, description="neighbours defining each ball (paper: 3)")] = 3,
        max_samples: Annotated[int, Field(ge=2, description=(
            "samples per side (random subsets): cost grows with its square"))] = 1000,
        max_chains: Annotated[int | None, Field(ge=1, description=(
            "measure only the first chains (None: all)"))] = 32,
    ) -> None:
        self.k, self.max_samples, self.max_chains = k, max_samples, max_chains

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        chains = ctx.chains if self.max_chains is None else min(ctx.chains, self.max_chains)
        held = _subsample(embed(ctx, ctx.heldout)[0], self.max_samples, ctx.rng)
        if min(len(held), ctx.synthetic.shape[1]) <= self.k:
            return {}
        synth = embed(ctx, ctx.synthetic[:chains])
        radii = _kth_nn(cdist(held, held, "sqeuclidean"), self.k)  # (R,) the real balls, once
        prec, rec = np.empty(chains), np.empty(chains)
        for c in range(chains):
            prec[c], rec[c] = self.precision_recall(
                held, _subsample(synth[c], self.max_samples, ctx.rng), radii)
        real = _subsample(embed(ctx, ctx.real[:1])[0], min(self.max_samples, synth.shape[1]),
                          ctx.rng)
        p_real, r_real = self.precision_recall(held, real, radii)
        return {"precision": prec, "recall": rec, "precision_real": p_real, "recall_real": r_real}

    def precision_recall(self, real: np.ndarray, fake: np.ndarray,
                         r_real: np.ndarray | None = None) -> tuple[float, float]:
        """``real`` (R, F) and ``fake`` (S, F); ``r_real``: squared k-NN radii of ``real``."""
        d = cdist(real, fake, "sqeuclidean")  # (R, S)
        if r_real is None:
            r_real = _kth_nn(cdist(real, real, "sqeuclidean"), self.k)
        r_fake = _kth_nn(cdist(fake, fake, "sqeuclidean"), self.k)
        precision = (d <= r_real[:, None]).any(axis=0).mean()
        recall = (d <= r_fake[None, :]).any(axis=1).mean()
        return float(precision), float(recall)


def _kth_nn(d: np.ndarray, k: int) -> np.ndarray:
    """Distance to the k-th nearest other point (the diagonal's zero is the 0-th)."""
    return np.partition(d, k, axis=1)[:, k]


@metrics.register("class_coverage")
class ClassCoverage:
    """A classifier trained once on real labelled data labels the samples: the class histogram
    (``artifacts["class_histogram"]``, ``(C, K)``), its entropy in nats and the classes holding at
    least ``min_share`` of the samples. Collapse concentrates samples on fewer classes."""

    kinds = IMAGES

    def __init__(
        self,
        min_share: Annotated[float, Field(gt=0, lt=1, description=(
            "a class counts as covered above this share of samples"))] = 0.01,
    ) -> None:
        self.min_share = min_share

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        feats = real_features(ctx)
        if feats.classifier is None:
            return {}  # unlabelled corpus
        pred = feats.predict(np.asarray(ctx.synthetic))  # (C, m)
        hist = np.stack([np.bincount(p, minlength=feats.n_classes) for p in pred])  # (C, K)
        ctx.artifacts["class_histogram"] = hist
        return {"class_entropy": entropy(hist), "class_entropy_real": feats.class_entropy_real,
                "classes_covered": (hist / hist.sum(1, keepdims=True) >= self.min_share).sum(1)}


@metrics.register("sample_grid")
class SampleGrid:
    """Stores the first ``count`` samples of chain 0 (``artifacts["sample_grid"]``) so the report can
    show every generation, also those whose samples were not kept."""

    kinds = IMAGES

    def __init__(
        self, count: Annotated[int, Field(ge=1, le=256, description="images kept")] = 16,
    ) -> None:
        self.count = count

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        ctx.artifacts["sample_grid"] = np.asarray(ctx.synthetic[0, : self.count], dtype=np.float32)
        return {}
