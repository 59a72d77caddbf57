"""Metrics of the image track (``images``), and of its 2-D toy data (``continuous``) where noted.

Images are compared in a fixed feature space learned once per source from real data: the 64-unit
ReLU layer of a small CNN classifier (``FeatureNet``) trained with a fixed seed on the labelled
train split (PCA to 32 dimensions for unlabelled corpora), cached per source content; the
``feature_space`` metric stores its weights with the run (generation 0's artifacts) with a digest,
so distances can be checked to compare across runs. The same classifier labels generated images
for class coverage (held-out accuracy: 0.97 on digits). A raw-pixel MLP was the instrument before
issue 18; its features scored a VAE's blurred reconstructions of the training images at recall 0.02:
they measured contrast more than digits. Continuous data are compared in their raw coordinates.

- ``latent_spread``: generation 0's encoder (``ctx.reference.encode``) over each generation's
  samples: spread (RMS standard deviation over latent dimensions) and centre of the latent means;
  per-sample norms of the latent means go to ``artifacts["latent_spread"]``.
- ``frechet``: Fréchet distance between Gaussians fitted to synthetic and held-out real features.
- ``precision_recall``: k-NN precision and recall (Kynkäänniemi et al. 2019), density and coverage
  (Naeem et al. 2020); a point on a ball's boundary is inside.
- ``class_coverage``: the classifier's class histogram of the samples and its entropy.
- ``sample_grid``: the first samples of chain 0, stored for the report's per-generation grid.
- ``gen0_quality``: whether generation 0 reaches the quality bar (recall and precision as shares
  of the real data's, classes, class entropy); a warning in the log (the CLI shows it) when not.
- ``feature_space``: the instrument stored with the run.

Metrics with a ``*_real`` value compute the same number for the real pool (chain 0, as many samples
as were generated) against the held-out data: the floor that finite samples alone give.

What each metric plots is declared on its class (``describe``, ``worse``, ``plots``:
``collapselab.metrics.declare``); the report draws only that.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field
from threadpoolctl import threadpool_limits

from collapselab import gaussians
from collapselab.capabilities import Encodes, HasFingerprint, HasImageSplit, provides
from collapselab.metrics.base import GenerationContext
from collapselab.metrics.declare import Plot
from collapselab.registry import metrics
from collapselab.sources import images as image_sources  # noqa: F401  (registers the sources)

log = logging.getLogger(__name__)

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
FEATURE_EPOCHS = 30  # passes of the instrument's training over the train split ...
FEATURE_STEPS = 700  # ... or this many steps of 64 images if fewer (digits: 690; MNIST-5k: 700)


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

        flat = np.array(images, dtype=np.float32).reshape(-1, *images.shape[-2:])  # writable
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
    if provides(src, HasImageSplit):
        images, labels = src.train_images, src.train_labels
        test_images, test_labels = src.test_images, src.test_labels
    else:  # a source without a split: its real pool stands in
        images, labels = np.asarray(real[0]), None  # type: ignore[index]
        test_images = test_labels = None
    key = src.fingerprint if provides(src, HasFingerprint) else hashlib.sha1(
        np.ascontiguousarray(images).tobytes()).hexdigest()
    if key not in _CACHE:
        # one BLAS thread: small matrices run several times slower with 2 busy cores (measured)
        with threadpool_limits(limits=1):
            _CACHE[key] = _train_features(np.asarray(images), labels, test_images, test_labels)
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
        steps = min(FEATURE_EPOCHS * math.ceil(len(x) / 64), FEATURE_STEPS)
        for step in range(steps):
            s = step % math.ceil(len(x) / 64) * 64
            if s == 0:
                order = torch.randperm(len(x), generator=gen)
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
        if not provides(ctx.reference, Encodes):
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
    """k-NN precision and recall, density and coverage of the samples against real held-out data.
    Precision (share of samples inside the real data's k-NN balls: fidelity) and recall (share of
    real held-out data inside the samples' k-NN balls: coverage), Kynkäänniemi et al. 2019; density
    (mean count of real balls holding a sample, / k) and coverage (share of real balls holding a
    sample), Naeem et al. 2020. A point on a ball's boundary counts as inside.
    Collapse keeps samples plausible while losing coverage: recall falls first."""

    kinds = IMAGES_AND_CONTINUOUS
    describe = {"precision": "share of samples inside the real data's k-NN balls (fidelity)",
                "recall": "share of real data inside the samples' k-NN balls (coverage)",
                "density": "real k-NN balls holding each sample, over k (fidelity, Naeem et al.)",
                "coverage": "share of real k-NN balls holding a sample (Naeem et al.)"}
    worse = {"precision": "lower", "recall": "lower", "density": "lower", "coverage": "lower"}
    plots = (Plot.group("precision", "recall", title="fidelity and coverage (k-NN)",
                        headline=True),
             Plot.group("density", "coverage", title="density and coverage (Naeem et al.)"))

    def __init__(
        self,
        k: Annotated[int, Field(ge=1, description="neighbours defining each ball (paper: 3)")] = 3,
        max_samples: Annotated[int, Field(ge=2, description=(
            "samples per side (random subsets): cost grows with its square"))] = 1000,
        max_chains: Annotated[int | None, Field(ge=1, description=(
            "measure only the first chains (None: all); fewer than the run's: the row holds their "
            "mean and standard error, no per-chain values"))] = 32,
    ) -> None:
        self.k, self.max_samples, self.max_chains = k, max_samples, max_chains

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        chains = ctx.chains if self.max_chains is None else min(ctx.chains, self.max_chains)
        held = _subsample(embed(ctx, ctx.heldout)[0], self.max_samples, ctx.rng)
        if min(len(held), ctx.synthetic.shape[1]) <= self.k:
            return {}
        synth = embed(ctx, ctx.synthetic[:chains])
        from scipy.spatial.distance import cdist  # scipy.spatial: imported by this metric only

        radii = _kth_nn(cdist(held, held, "sqeuclidean"), self.k)  # (R,) the real balls, once
        out = np.empty((4, chains))
        for c in range(chains):
            out[:, c] = self.prdc(held, _subsample(synth[c], self.max_samples, ctx.rng), radii)
        real = _subsample(embed(ctx, ctx.real[:1])[0], min(self.max_samples, synth.shape[1]),
                          ctx.rng)
        on_real = self.prdc(held, real, radii)
        names = ("precision", "recall", "density", "coverage")
        if chains == ctx.chains:
            measured = dict(zip(names, out, strict=True))  # per chain: the row's mean and sem
        else:  # the first chains only: their mean and its standard error, as the row would hold
            measured = {n: float(v) for n, v in zip(names, out.mean(axis=1), strict=True)}
            if chains > 1:
                sem = out.std(axis=1, ddof=1) / np.sqrt(chains)
                measured |= {f"{n}.sem": float(v) for n, v in zip(names, sem, strict=True)}
        return {**measured, **{f"{n}_real": v for n, v in zip(names, on_real, strict=True)}}

    def prdc(self, real: np.ndarray, fake: np.ndarray,
             r_real: np.ndarray | None = None) -> tuple[float, float, float, float]:
        """Precision, recall, density, coverage of ``fake`` (S, F) against ``real`` (R, F);
        ``r_real``: squared k-NN radii of ``real`` (computed if not given)."""
        from scipy.spatial.distance import cdist

        d = cdist(real, fake, "sqeuclidean")  # (R, S)
        if r_real is None:
            r_real = _kth_nn(cdist(real, real, "sqeuclidean"), self.k)
        r_fake = _kth_nn(cdist(fake, fake, "sqeuclidean"), self.k)
        inside = d <= r_real[:, None]  # (R, S): sample s lies in real ball r
        precision = inside.any(axis=0).mean()
        recall = (d <= r_fake[None, :]).any(axis=1).mean()
        density = inside.sum() / (self.k * fake.shape[0])
        coverage = inside.any(axis=1).mean()
        return float(precision), float(recall), float(density), float(coverage)

    def precision_recall(self, real: np.ndarray, fake: np.ndarray,
                         r_real: np.ndarray | None = None) -> tuple[float, float]:
        return self.prdc(real, fake, r_real)[:2]


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


@metrics.register("feature_space")
class FeatureSpace:
    """Stores the image metrics' feature extractor with the run: at generation 0 the feature
    classifier's weights go into the artifacts (``feature_net.<parameter>``; PCA for unlabelled
    corpora), with its accuracy on the held-out split and a digest of the weights, so any two runs
    can be checked to have measured distances in the same space."""

    kinds = IMAGES
    describe = {"feature_accuracy": "the feature classifier's accuracy on held-out real images",
                "feature_digest": "first 48 bits of a hash of its weights (equal: same space)"}
    plots = (Plot.table("feature_accuracy", "feature_digest", generations=(0,),
                        title="the fixed feature space"),)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        if ctx.gen != 0:
            return {}
        feats = real_features(ctx)
        ctx.artifacts.update(feats.weights())
        out = {"feature_digest": float(int(feats.digest()[:12], 16))}  # 48 bits: exact as a float
        if feats.accuracy is not None:
            out["feature_accuracy"] = feats.accuracy
        return out


@metrics.register("gen0_quality")
class Gen0Quality:
    """Is generation 0 a good model? Collapse is measured from generation 0, so a generation 0 that
    never learned the data shows a broken model, not collapse. At generation 0 only: the samples'
    precision and recall as shares of the real data's own values (the real pool against the same
    held-out set, same sample size), the classes covered and the class entropy against the real
    data's. ``gen0_ok`` is 1 where a chain clears every bar (its mean: the share of chains that do);
    a run whose generation 0 falls short logs a warning naming each shortfall."""

    kinds = IMAGES_AND_CONTINUOUS
    describe = {"gen0_ok": "1 where generation 0 clears every bar of gen0_quality (mean: share "
                           "of chains)",
                "gen0_recall_ratio": "generation 0's recall over the real data's",
                "gen0_precision_ratio": "generation 0's precision over the real data's",
                "gen0_classes": "classes holding at least min_share of generation 0's samples",
                "gen0_entropy_ratio": "generation 0's class entropy over the real data's"}
    plots = (Plot.table("gen0_ok", "gen0_recall_ratio", "gen0_precision_ratio", "gen0_classes",
                        "gen0_entropy_ratio", generations=(0,), flag="gen0_ok",
                        title="generation 0 against the real data (gen0_ok 0: falls short)"),)

    def __init__(
        self,
        min_recall: Annotated[float, Field(gt=0, le=1, description=(
            "recall of generation 0 must reach this share of the real data's"))] = 0.5,
        min_precision: Annotated[float, Field(gt=0, le=1, description=(
            "precision of generation 0 must reach this share of the real data's"))] = 0.6,
        entropy_tolerance: Annotated[float, Field(ge=0, lt=1, description=(
            "class entropy must lie within this relative distance of the real data's"))] = 0.1,
        min_share: Annotated[float, Field(gt=0, lt=1, description=(
            "a class counts as covered from this share of the samples"))] = 0.01,
        k: Annotated[int, Field(ge=1, description="neighbours of the precision/recall balls")] = 3,
        max_samples: Annotated[int, Field(ge=4, description="samples per side")] = 1000,
    ) -> None:
        self.min_recall, self.min_precision, self.min_share = min_recall, min_precision, min_share
        self.entropy_tolerance, self.k, self.max_samples = entropy_tolerance, k, max_samples

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        if ctx.gen != 0:
            return {}
        pr = PrecisionRecall(k=self.k, max_samples=self.max_samples, max_chains=None)(ctx)
        if not pr:
            return {}
        rec = pr["recall"] / max(pr["recall_real"], 1e-12)
        prec = pr["precision"] / max(pr["precision_real"], 1e-12)
        ok = (rec >= self.min_recall) & (prec >= self.min_precision)
        out: dict[str, Any] = {"gen0_recall_ratio": rec, "gen0_precision_ratio": prec}
        problems = []
        if (rec < self.min_recall).any():
            problems.append(f"recall {pr['recall'].mean():.3f} is {rec.mean():.2f} of the real "
                            f"data's {pr['recall_real']:.3f} (bar {self.min_recall})")
        if (prec < self.min_precision).any():
            problems.append(f"precision {pr['precision'].mean():.3f} is {prec.mean():.2f} of the "
                            f"real data's {pr['precision_real']:.3f} (bar {self.min_precision})")
        feats = real_features(ctx) if ctx.synthetic.ndim == 4 else None
        if feats is not None and feats.classifier is not None:
            pred = feats.predict(np.asarray(ctx.synthetic))  # (C, m)
            hist = np.stack([np.bincount(p, minlength=feats.n_classes) for p in pred])
            classes = (hist / hist.sum(1, keepdims=True) >= self.min_share).sum(1)
            h_ratio = entropy(hist) / feats.class_entropy_real  # type: ignore[operator]
            ok &= (classes == feats.n_classes) & (np.abs(h_ratio - 1) <= self.entropy_tolerance)
            out |= {"gen0_classes": classes, "gen0_entropy_ratio": h_ratio}
            if (classes < feats.n_classes).any():
                problems.append(f"samples cover {classes.min()} of {feats.n_classes} classes")
            if (np.abs(h_ratio - 1) > self.entropy_tolerance).any():
                problems.append(f"class entropy is {h_ratio.mean():.2f} of the real data's "
                                f"(tolerance {self.entropy_tolerance})")
        if problems:
            log.warning("generation 0 falls short of the real data (%d of %d chains): %s; what "
                        "later generations lose is measured from a poor start",
                        int((~ok).sum()), len(ok), "; ".join(problems))
        return out | {"gen0_ok": ok.astype(float)}
