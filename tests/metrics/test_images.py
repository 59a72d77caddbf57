"""Image-track metrics on hand-made sample sets whose answer is known."""

from __future__ import annotations

import numpy as np

from collapselab.metrics.base import GenerationContext
from collapselab.metrics.images import ClassCoverage, Frechet, LatentSpread, PrecisionRecall
from collapselab.sources.images import Digits, Moons


def context(source, synthetic, real, heldout, reference=None) -> GenerationContext:
    return GenerationContext(gen=0, model=None, reference=reference, train=real,
                             synthetic=synthetic, real=real, heldout=heldout, source=source,
                             rng=np.random.default_rng(0))


def test_precision_recall_and_frechet_in_raw_2d_space():
    src, rng = Moons(), np.random.default_rng(0)
    real, held = src.real(500, 1, rng), src.heldout(rng)[:, :500]
    same = src.real(500, 1, rng)
    collapsed = same[:, :1] + 0.01 * rng.standard_normal((1, 500, 2))  # one point: no coverage
    shifted = same + [0.0, 3.0]  # right shape, wrong place: no fidelity
    synth = np.concatenate([same, collapsed, shifted])
    ctx = context(src, synth, real, held)
    pr = PrecisionRecall()(ctx)
    # the same distribution: both ~0.97 for k=3 at this n (k-NN balls slightly undercover)
    assert pr["precision"][0] > 0.9 and pr["recall"][0] > 0.9
    assert pr["precision"][1] > 0.9 and pr["recall"][1] < 0.05  # collapsed: plausible, no coverage
    assert pr["precision"][2] < 0.05 and pr["recall"][2] < 0.05
    assert pr["precision_real"] > 0.9
    fd = Frechet()(ctx)
    assert fd["frechet_distance"][0] < 0.02 and fd["frechet_distance_real"] < 0.02
    np.testing.assert_allclose(fd["frechet_distance"][2], 9.0, rtol=0.02)  # shift of 3: 3^2
    # collapsed onto one point p: the covariance is gone, FD = |p - mean|^2 + tr(Σ)
    expected = ((same[0, 0] - held[0].mean(0)) ** 2).sum() + np.trace(np.cov(held[0].T))
    np.testing.assert_allclose(fd["frechet_distance"][1], expected, rtol=0.05)


def test_class_coverage_entropy_falls_when_samples_collapse_on_one_class():
    src = Digits()
    held = src.heldout()
    ones = src.test_images[src.test_labels == 1][None]  # (1, n1, 8, 8): a single class
    ctx = context(src, np.concatenate([held[:, : ones.shape[1]], ones]), held, held)
    out = ClassCoverage()(ctx)
    np.testing.assert_allclose(out["class_entropy_real"], np.log(10), atol=0.01)  # balanced classes
    assert out["class_entropy"][0] > np.log(10) - 0.15
    assert out["class_entropy"][1] < 0.3 and out["classes_covered"][1] <= 2
    assert ctx.artifacts["class_histogram"].shape == (2, 10)
    # fidelity of the instrument: the classifier labels real held-out digits correctly
    feats = Frechet()(context(src, held, held, held))
    assert feats["frechet_distance"][0] < 1e-9


class Encoder:
    """A fixed linear 'encoder': latent means are the first two pixels' values."""

    def encode(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(*x.shape[:2], -1)[..., :2] * 10


def test_latent_spread_of_the_reference_encoder():
    src, rng = Digits(), np.random.default_rng(0)
    real = rng.random((2, 200, 8, 8))
    synth = np.concatenate([real[:1], 0.5 + 0.1 * (real[1:] - 0.5)])  # chain 1: spread / 10
    ctx = context(src, synth, real, src.heldout(), reference=Encoder())
    out = LatentSpread()(ctx)
    np.testing.assert_allclose(out["latent_spread"][1], out["latent_spread"][0] / 10, rtol=0.15)
    np.testing.assert_allclose(out["latent_spread_real"], 10 / np.sqrt(12), rtol=0.1)  # U(0, 10)
    assert ctx.artifacts["latent_spread"].shape == (2, 200)
    assert LatentSpread()(context(src, synth, real, src.heldout(), reference=object())) == {}
