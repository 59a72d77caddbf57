"""The vae family: learning, sampling, encoding, ELBO scores, errors; collapse on digits (slow)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from collapselab.models.vae import VAE
from collapselab.sources.images import Digits

TINY = {"latent_dim": 4, "channels": [8, 16], "epochs": 15, "batch_size": 64}


@pytest.fixture(scope="module")
def fitted():
    src = Digits()
    x = src.real(400, 1, np.random.default_rng(0))
    return src, VAE(**TINY).fit(x, rng=np.random.default_rng(1))


def test_vae_learns_samples_encodes_and_scores(fitted):
    src, model = fitted
    for loss in model.train_loss_:  # negative ELBO per image falls while training
        assert loss[-1] < loss[0] - 5
    s = model.sample(50, np.random.default_rng(0))
    assert s.shape == (1, 50, 8, 8) and s.dtype == np.float32 and 0 <= s.min() and s.max() <= 1
    mu = model.encode(src.heldout())
    assert mu.shape == (1, len(src.test_images), 4)
    real = model.score(src.heldout())
    inverted = model.score(1 - src.heldout())
    assert real.shape == (1,) and (real > inverted + 10).all()  # real digits are far more likely
    np.testing.assert_array_equal(model.score(src.heldout()), real)  # deterministic estimator


def test_vae_bernoulli_samples_and_pickle(fitted):
    _, model = fitted
    model_b = pickle.loads(pickle.dumps(model))
    model_b.sample_mode = "bernoulli"
    s = model_b.sample(20, np.random.default_rng(0))
    assert set(np.unique(s)) <= {0.0, 1.0}
    np.testing.assert_array_equal(model_b.encode(s), model.encode(s))


def test_vae_errors_name_the_value():
    model = VAE(**TINY | {"epochs": 1}).fit(np.zeros((2, 20, 8, 8)), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"image height and width must be divisible by 4; got 6x6"):
        VAE(**TINY).fit(np.zeros((1, 10, 6, 6)), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"data must be float images in \[0, 1\]; got float64 in \[0, 2\]"):
        VAE(**TINY).fit(np.full((1, 10, 8, 8), 2.0) * np.eye(8), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"data must have 1 or 2 chains; got 3"):
        model.encode(np.zeros((3, 5, 8, 8)))
    with pytest.raises(ValueError, match=r"images must be 8x8; got 4x4"):
        model.score(np.zeros((1, 5, 4, 4)))


def test_vae_warms_up_stops_early_on_validation_and_keeps_the_best_weights():
    x = Digits().real(40, 1, np.random.default_rng(0))  # 30 training images: overfit quickly
    model = VAE(**TINY | {"epochs": 200, "kl_warmup": 3, "val_fraction": 0.25, "patience": 3,
                          "likelihood": "gaussian", "batch_size": 8, "lr": 3e-3}).fit(
        x, rng=np.random.default_rng(1))
    train, val, best = model.train_loss_[0], model.val_loss_[0], model.best_epoch_[0]
    assert len(val) == len(train) < 200  # stopped early
    assert best >= 3 and len(train) - 1 - best == 3  # patience epochs after the best (warmed-up) one
    assert val[best] == min(val[3:])
    assert np.isfinite(model.score(x)).all()


def test_vae_gaussian_likelihood_is_a_density_and_max_steps_bounds_training():
    src = Digits()
    x = src.real(256, 1, np.random.default_rng(0))
    model = VAE(**TINY | {"likelihood": "gaussian", "epochs": 30}).fit(x, rng=np.random.default_rng(1))
    real, inverted = model.score(src.heldout()), model.score(1 - src.heldout())
    assert (real > inverted + 10).all()
    short = VAE(**TINY | {"epochs": 100, "max_steps": 6}).fit(x, rng=np.random.default_rng(1))
    assert len(short.train_loss_[0]) == 2  # 4 steps an epoch (256 / 64): 6 steps end in epoch 2
