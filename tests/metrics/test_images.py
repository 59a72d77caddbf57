"""Image-track metrics on hand-made sample sets whose answer is known."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from collapselab.metrics.base import GenerationContext
from collapselab.metrics.images import (
    ClassCoverage,
    FeatureSpace,
    Frechet,
    Gen0Quality,
    LatentSpread,
    PrecisionRecall,
    source_features,
)
from collapselab.sources.images import Digits, Moons


def context(source, synthetic, real, heldout, reference=None, gen=0) -> GenerationContext:
    return GenerationContext(gen=gen, model=None, reference=reference, train=real,
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


def test_prdc_by_hand_on_four_points_with_a_tie_counted_inside():
    # 1-D features, k = 1. Real 0, 1, 2, 10: squared 1-NN radii 1, 1, 1, 64. Fake 1.5, 4, 20, 30:
    # radii 6.25, 6.25, 100, 100. Inside real balls: 1.5 (balls of 1 and 2), 4 (ball of 10).
    real = np.array([[0.0], [1.0], [2.0], [10.0]])
    fake = np.array([[1.5], [4.0], [20.0], [30.0]])
    p, r, d, c = PrecisionRecall(k=1).prdc(real, fake)
    assert p == 0.5  # 1.5 and 4 lie in a real ball; 20 and 30 do not
    assert d == 3 / 4  # three (real ball, fake) pairs over k * 4 fakes
    assert c == 3 / 4  # the balls of 1, 2 and 10 hold a fake; that of 0 does not
    # real 10 lies exactly on the ball of fake 20 (distance^2 100 = its radius^2): inside
    assert r == 1.0
    assert PrecisionRecall(k=1).precision_recall(real, fake) == (0.5, 1.0)


def test_density_and_coverage_of_the_same_distribution_and_a_collapse():
    src, rng = Moons(), np.random.default_rng(0)
    held = src.heldout(rng)[:, :500]
    same = src.real(500, 1, rng)
    collapsed = same[:, :1] + 0.01 * rng.standard_normal((1, 500, 2))
    pr = PrecisionRecall()(context(src, np.concatenate([same, collapsed]), same, held))
    # same distribution: density ~1 (Naeem et al.: its expectation is 1), coverage ~0.95 for k=3
    assert 0.8 < pr["density"][0] < 1.2 and pr["coverage"][0] > 0.9
    assert pr["coverage"][1] < 0.05  # one point covers a handful of real balls
    assert 0.8 < pr["density_real"] < 1.2 and pr["coverage_real"] > 0.9


def test_gen0_quality_passes_real_images_and_warns_on_a_collapsed_generation_0(caplog):
    src = Digits()
    real = src.real(800, 1, np.random.default_rng(0))
    ones = src.train_images[src.train_labels == 1][None, :100]
    check = Gen0Quality()
    good = check(context(src, src.real(800, 1, np.random.default_rng(1)), real, src.heldout()))
    assert good["gen0_ok"][0] == 1.0 and good["gen0_classes"][0] == 10
    assert good["gen0_recall_ratio"][0] > 0.9 and abs(good["gen0_entropy_ratio"][0] - 1) < 0.02
    with caplog.at_level(logging.WARNING, logger="collapselab.metrics.images"):
        bad = check(context(src, ones, real, src.heldout()))
    assert bad["gen0_ok"][0] == 0.0 and bad["gen0_classes"][0] <= 3  # a few 1s read as 7s
    assert bad["gen0_recall_ratio"][0] < 0.2
    assert "generation 0 falls short of the real data (1 of 1 chains): recall" in caplog.text
    assert "(bar 0.5)" in caplog.text and "classes" in caplog.text
    assert check(context(src, ones, real, src.heldout(), gen=1)) == {}  # generation 0 only


def test_feature_space_is_fixed_and_stored_with_the_run():
    src = Digits()
    feats = source_features(src)
    assert feats.accuracy > 0.93  # the instrument labels held-out digits correctly
    ctx = context(src, src.heldout(), src.heldout(), src.heldout())
    out = FeatureSpace()(ctx)
    weights = {k: v for k, v in ctx.artifacts.items() if k.startswith("feature_net.")}
    assert len(weights) >= 10 and out["feature_accuracy"] == feats.accuracy
    assert out["feature_digest"] == int(feats.digest()[:12], 16)
    assert FeatureSpace()(context(src, src.heldout(), src.heldout(), src.heldout(), gen=3)) == {}


@pytest.mark.slow  # trains the instrument a second time (15-50 s on 2 busy cores)
def test_feature_space_retrained_from_scratch_is_the_same():
    from collapselab.metrics.images import _train_features

    src = Digits()
    again = _train_features(src.train_images, src.train_labels)
    assert again.digest() == source_features(src).digest()


@pytest.mark.parametrize("name", ["precision_recall", "frechet", "class_coverage", "gen0_quality",
                                  "feature_space", "sample_grid", "latent_spread"])
def test_image_metrics_declare_what_they_plot(name):
    from collapselab import registry
    from collapselab.metrics.declare import Plot

    plots = [Plot.of(p) for p in registry.metrics.get(name).plots]
    assert plots and None not in plots
