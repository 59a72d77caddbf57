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
