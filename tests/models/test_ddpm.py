"""The ddpm family: its variational bound, learning on 2-D data and images, sampling, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from collapselab.models.ddpm import DDPM, beta_schedule
from collapselab.sources.images import Digits, Moons

TINY = {"hidden": 32, "layers": 2, "timesteps": 40, "sample_steps": 20, "schedule": "linear",
        "lr": 3e-3}


def test_schedules_are_valid_betas():
    for kind in ("linear", "cosine"):
        beta = beta_schedule(kind, 50)
        assert beta.shape == (50,) and (beta > 0).all() and (beta < 1).all()
        assert np.cumprod(1 - beta)[-1] < 0.05  # x_T is close to pure noise


def test_bound_is_below_the_true_log_likelihood_of_a_gaussian():
    # data N(3, 2^2) in 1-D: log-likelihood per sample is -0.5 log(2 pi e 4) = -2.112; a learnt
    # bound must lie below it (up to Monte-Carlo noise: se ~ 0.05 on 2000 samples) but not far
    rng = np.random.default_rng(0)
    x = 3 + 2 * rng.standard_normal((1, 500, 1))
    model = DDPM(**TINY, epochs=60).fit(x, rng=rng)
    bound = model.score(3 + 2 * rng.standard_normal((1, 2000, 1)))[0]
    assert -2.112 - 0.5 < bound < -2.112 + 0.1


def test_ddpm_learns_moons():
    src = Moons()
    rng = np.random.default_rng(0)
    model = DDPM(**TINY, epochs=60).fit(src.real(500, 2, rng), rng=rng)
    assert type(model._net(0)).__name__ == "EpsNet"  # 2-D data keep the MLP
    s = model.sample(500, np.random.default_rng(1))
    assert s.shape == (2, 500, 2)
    np.testing.assert_allclose(s.mean(axis=1), np.broadcast_to([0.5, 0.25], (2, 2)), atol=0.15)
    held = src.heldout(rng)
    assert (model.score(held) > model.score(held + [0.0, 1.0]) + 1).all()  # a shifted copy is unlikely
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.score(held), model.score(held))


def test_ddpm_samples_images_in_range():
    x = Digits().real(64, 1, np.random.default_rng(0))
    model = DDPM(**TINY, epochs=2, unet_channels=[8, 16]).fit(x, rng=np.random.default_rng(0))
    s = model.sample(8, np.random.default_rng(0))
    assert s.shape == (1, 8, 8, 8) and s.dtype == np.float32 and 0 <= s.min() and s.max() <= 1
    assert np.isfinite(model.score(x)).all()


def test_images_use_a_diffusers_unet_and_ddim_sampling():
    pytest.importorskip("diffusers")
    from diffusers import UNet2DModel

    x = Digits().real(64, 2, np.random.default_rng(0))
    model = DDPM(**TINY | {"sampler": "ddim", "sample_steps": 10}, epochs=3, batch_size=32,
                 max_steps=4, unet_channels=[8, 16]).fit(x, rng=np.random.default_rng(0))
    assert isinstance(model._net(0), UNet2DModel)  # images: the U-Net; 2-D data: the MLP
    assert model._net(0).config.block_out_channels == (8, 16)
    s = model.sample(6, np.random.default_rng(0))
    assert s.shape == (2, 6, 8, 8) and 0 <= s.min() and s.max() <= 1
    # DDIM (eta 0) is deterministic given the starting noise: same generator state, same images
    np.testing.assert_array_equal(s, model.sample(6, np.random.default_rng(0)))
    assert not np.array_equal(s[0], s[1])  # chains have their own networks
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.sample(6, np.random.default_rng(0)), s)


def test_ddpm_errors_name_the_value():
    with pytest.raises(ValueError, match=r"sample_steps must be <= timesteps=10; got 20"):
        DDPM(timesteps=10, sample_steps=20)
    model = DDPM(**TINY, epochs=1).fit(np.zeros((2, 8, 3)) + np.arange(8)[:, None],
                                       rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"data must have shape \(1 or 2, n, 3\); got \(2, 4, 2\)"):
        model.score(np.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match=r"images must lie in \[0, 1\]; got \[0, 3\]"):
        DDPM(**TINY).fit(np.full((1, 4, 4, 4), 3.0) * np.eye(4), rng=np.random.default_rng(0))
