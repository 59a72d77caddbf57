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
from collapselab.metrics.declare import Plot
from collapselab.registry import metrics
from collapselab.sources import images as image_sources  # noqa: F401  (registers the sources)

IMAGES = frozenset({"images"})
IMAGES_AND_CONTINUOUS = frozenset({"images", "continuous"})


# ------------------------------------------------------------------ the fixed feature space


class FeatureNet:
    """The instrument: a small CNN classifier (three 3x3 convolutions, the last two of stride 2,
    2x2 average pooling, a 64-unit ReLU layer, then the class logits), trained once on a source's
    labelled train split with a fixed seed. Its 64-unit layer is the feature space."""

    def __init__(self, n_classes: int) -> None:
        from torch import nn

        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(256, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, n_classes)
        self.net = nn.Sequential(self.body, self.head)


FEATURES = 64  # dimensions of the feature space
FEATURE_EPOCHS = 30  # passes of the instrument's training over the train split


@dataclass
class RealFeatures:
    """A feature map and classifier learned once from a source's real train split."""

    classifier: Any | None  # FeatureNet, or None for unlabelled data
    pca: Any | None
    n_classes: int | None
    class_entropy_real: float | None
    accuracy: float | None = None  # the classifier's accuracy on the held-out split

    def _apply(self, images: np.ndarray, head: bool) -> np.ndarray:
        import torch

        from collapselab.models.vae import torch_threads

        flat = np.ascontiguousarray(images, dtype=np.float32).reshape(-1, *images.shape[-2:])
        out = []
        with torch.no_grad(), torch_threads(1):
            for s in range(0, len(flat), 2048):
                h = self.classifier.body(torch.from_numpy(flat[s:s + 2048])[:, None])
                out.append((self.classifier.head(h).argmax(-1) if head else h).numpy())
        res = np.concatenate(out) if out else np.empty((0,) if head else (0, FEATURES))
        return res.reshape(*images.shape[:-2], *res.shape[1:])

    def features(self, images: np.ndarray) -> np.ndarray:
        """``(..., H, W)`` -> ``(..., F)``: the classifier's 64 ReLU features (or PCA coordinates)."""
        if self.classifier is not None:
            return self._apply(images, head=False).astype(np.float64)
        flat = images.reshape(-1, images.shape[-2] * images.shape[-1]).astype(np.float64)
        h = self.pca.transform(flat)
        return h.reshape(*images.shape[:-2], h.shape[-1])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._apply(images, head=True).astype(np.int64)

    def weights(self) -> dict[str, np.ndarray]:
        """The instrument's parameters, to store with a run (``feature_net.<name>``)."""
        if self.classifier is None:
            return {"feature_pca.components": self.pca.components_.astype(np.float32),
                    "feature_pca.mean": self.pca.mean_.astype(np.float32)}
        return {f"feature_net.{k}": v.numpy() for k, v in self.classifier.net.state_dict().items()}

    def digest(self) -> str:
        h = hashlib.sha1()
        for k, v in sorted(self.weights().items()):
            h.update(k.encode())
            h.update(np.ascontiguousarray(v).tobytes())
        return h.hexdigest()[:16]


_CACHE: dict[str, RealFeatures] = {}


def real_features(ctx: GenerationContext) -> RealFeatures:
    """The source's feature space, trained on first use and cached by the train split's content."""
    return source_features(ctx.source, ctx.real)


def source_features(src: Any, real: np.ndarray | None = None) -> RealFeatures:
    images = getattr(src, "train_images", None)
    labels = getattr(src, "train_labels", None)
    if images is None:  # a source without a split: its real pool stands in
        images, labels = np.asarray(real[0]), None  # type: ignore[index]
    key = getattr(src, "fingerprint", None) or hashlib.sha1(
        np.ascontiguousarray(images).tobytes()).hexdigest()
    if key not in _CACHE:
        # one BLAS thread: small matrices run several times slower with 2 busy cores (measured)
        with threadpool_limits(limits=1):
            _CACHE[key] = _train_features(np.asarray(images), labels,
                                          getattr(src, "test_images", None),
                                          getattr(src, "test_labels", None))
    return _CACHE[key]


def _train_features(images: np.ndarray, labels: np.ndarray | None,
                    test_images: np.ndarray | None = None,
                    test_labels: np.ndarray | None = None) -> RealFeatures:
    flat = images.reshape(len(images), -1).astype(np.float64)
    if labels is None or len(np.unique(labels)) < 2:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=min(32, *flat.shape), random_state=0).fit(flat)
        return RealFeatures(None, pca, None, None)
    import torch
    import torch.nn.functional as F

    from collapselab.models.vae import torch_threads

    k = int(labels.max()) + 1
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    gen = torch.Generator().manual_seed(0)  # a fixed instrument: the same weights every run
    with torch.random.fork_rng(devices=[]), torch_threads(1):
        torch.manual_seed(0)
        clf = FeatureNet(k)
        opt = torch.optim.Adam(clf.net.parameters(), lr=1e-3, weight_decay=1e-4)
        for _ in range(FEATURE_EPOCHS):
            order = torch.randperm(len(x), generator=gen)
            for s in range(0, len(x), 64):
                b = order[s:s + 64]
                # shifted by up to a pixel: features of a digit, not of its exact placement
                dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
                xb = torch.roll(x[b], (dx, dy), (1, 2))
                loss = F.cross_entropy(clf.net(xb[:, None]), y[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    clf.net.eval()
    feats = RealFeatures(clf, None, k, float(entropy(np.bincount(labels, minlength=k)[None])[0]))
    if test_images is not None and test_labels is not None and len(test_labels):
        feats.accuracy = float((feats.predict(test_images) == test_labels).mean())
    return feats


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
    describe = {"latent_spread": "spread of generation 0's latent means over the samples",
                "latent_center": "distance of the samples' mean latent from the origin"}
    worse = {"latent_spread": "lower"}
    plots = (Plot.curve("latent_spread", "latent spread (variety of the samples)",
                        headline=True),
             Plot.histogram("latent_spread", "norm of latent means under generation 0's encoder"))

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
    describe = {"frechet_distance": "Fréchet distance from the real held-out data (features)"}
    worse = {"frechet_distance": "higher"}
    plots = (Plot.curve("frechet_distance", "distance to the real data (Fréchet)",
                        headline=True),)

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
    describe = {"precision": "share of samples inside the real data's k-NN balls (fidelity)",
                "recall": "share of real data inside the samples' k-NN balls (coverage)"}
    worse = {"precision": "lower", "recall": "lower"}
    plots = (Plot.group("precision", "recall", title="fidelity and coverage (k-NN)",
                        headline=True),)

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
    describe = {"class_entropy": "entropy of the samples' class histogram, nats",
                "classes_covered": "classes holding at least min_share of the samples"}
    worse = {"class_entropy": "lower", "classes_covered": "lower"}
    plots = (Plot.curve("class_entropy", "class entropy of the samples", headline=True),)

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
    plots = (Plot.grid("sample_grid", "samples by generation"),)

    def __init__(
        self, count: Annotated[int, Field(ge=1, le=256, description="images kept")] = 16,
    ) -> None:
        self.count = count

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        ctx.artifacts["sample_grid"] = np.asarray(ctx.synthetic[0, : self.count], dtype=np.float32)
        return {}
