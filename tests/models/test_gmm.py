"""GMM: the batched NumPy EM agrees with scikit-learn, and the paper's collapse (Fig. 2) appears."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from collapselab.models.gmm import GMM, em
from tests.conftest import ROOT


def two_clusters(rng: np.random.Generator, chains: int = 3) -> np.ndarray:
    a = rng.normal(-3.0, 1.0, (chains, 400, 2))
    b = rng.normal(3.0, 0.5, (chains, 400, 2))
    return np.concatenate([a, b], axis=1)


def sorted_params(model: GMM, chain: int) -> tuple[np.ndarray, ...]:
    order = np.argsort(model.means_[chain, :, 0])
    return (model.weights_[chain, order], model.means_[chain, order],
            model.covariances_[chain, order])


def test_numpy_engine_matches_sklearn_fit():
    x = two_clusters(np.random.default_rng(0))
    with threadpool_limits(1):
        ours = GMM(engine="numpy").fit(x, rng=np.random.default_rng(1))
        ref = GMM(engine="sklearn").fit(x, rng=np.random.default_rng(1))
    for chain in range(x.shape[0]):
        for a, b in zip(sorted_params(ours, chain), sorted_params(ref, chain), strict=True):
            np.testing.assert_allclose(a, b, atol=2e-3)  # both stop at tol=1e-3 of the bound
    np.testing.assert_allclose(ours.score(x), ref.score(x), rtol=1e-5)


def test_samples_come_from_the_fitted_mixture():
    x = two_clusters(np.random.default_rng(2), chains=1)
    model = GMM().fit(x, rng=np.random.default_rng(3))
    s = model.sample(20_000, np.random.default_rng(4))[0]
    w, mu, cov = sorted_params(model, 0)
    left = s.sum(axis=1) < 0  # clusters at (-3,-3) and (3,3): overlap < 1e-4
    n = len(s)
    assert abs(left.mean() - w[0]) < 4 * np.sqrt(w[0] * w[1] / n)
    np.testing.assert_allclose(s[left].mean(0), mu[0], atol=4 * np.sqrt(cov[0].max() / left.sum()))
    np.testing.assert_allclose(np.cov(s[~left].T), cov[1], atol=0.03)


@pytest.mark.parametrize("engine", ["numpy", "sklearn"])
def test_two_calls_on_one_generator_differ(engine):
    """scikit-learn's own sample() repeats its draws; ours must not."""
    model = GMM(engine=engine).fit(two_clusters(np.random.default_rng(5), 1),
                                   rng=np.random.default_rng(6))
    rng = np.random.default_rng(7)
    assert not np.array_equal(model.sample(10, rng), model.sample(10, rng))


def test_paper_collapse_and_real_data_slows_it(run_config):
    """Shumailov et al. Fig. 2 at 1/10 the data: N=100 per generation (collapse runs ~N times
    faster), 200 generations, 4 chains. The mean component sd shrinks by over an order of
    magnitude under replace, and keeping 10% real data holds it near its start."""
    common = ["data.size=100", "generations=200", "chains=4"]
    replace = run_config(ROOT / "configs/gmm/paper_replace.yaml", *common).metrics()
    real10 = run_config(ROOT / "configs/gmm/paper_real_fraction.yaml", *common).metrics()
    start = replace[0]["component_std"]
    assert replace[-1]["component_std"] < 0.1 * start
    assert real10[-1]["component_std"] > 0.5 * start
    assert real10[-1]["component_std"] > 5 * replace[-1]["component_std"]


@pytest.mark.slow
def test_paper_setup_full_scale(run_config):
    """The paper's own setting: N=1000, 2000 generations (about 10 s)."""
    rows = run_config(ROOT / "configs/gmm/paper_replace.yaml").metrics()
    assert rows[-1]["component_std"] < 0.25 * rows[0]["component_std"]


def start(x: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Initial parameters per chain: equal weights, k random points, the data's covariance."""
    chains, n, dim = x.shape
    weights = np.full((chains, k), 1 / k)
    means = x[np.arange(chains)[:, None], rng.choice(n, size=(chains, k))]
    covs = np.stack([np.cov(c.T).reshape(dim, dim) for c in x])[:, None].repeat(k, axis=1)
    return weights, means, covs


@pytest.mark.parametrize("shape, offset, scale", [((3, 300, 2), 0.0, 1.0), ((2, 200, 3), 0.0, 1.0),
                                                  ((2, 300, 2), 50.0, 1e-3)])  # fmt: skip
def test_em_equals_sklearn_from_the_same_start(shape, offset, scale):
    """The batched moment-form EM takes scikit-learn's steps: from the same initial parameters,
    the same iterations, log-likelihood and parameters (to rounding), also on data far from the
    origin at a small scale (the moment form's cancellation)."""
    rng = np.random.default_rng(8)
    x = offset + scale * two_clusters(rng, shape[0])[:, :: 800 // shape[1], :1].repeat(shape[2], 2)
    x += scale * 0.3 * rng.standard_normal(x.shape)
    k = shape[2]
    weights, means, covs = start(x, k, rng)
    kw = dict(max_iter=100, tol=1e-3, reg_covar=1e-6)
    w, m, c, iters, lower = em(x, weights, means, covs, **kw)
    for chain in range(len(x)):
        with threadpool_limits(1):  # BLAS threads make small fits slow on 2 busy cores
            ref = GaussianMixture(k, weights_init=weights[chain], means_init=means[chain],
                                  precisions_init=np.linalg.inv(covs[chain]), **kw).fit(x[chain])
        assert iters[chain] == ref.n_iter_
        np.testing.assert_allclose(lower[chain], ref.lower_bound_, rtol=1e-9)
        np.testing.assert_allclose(w[chain], ref.weights_, rtol=1e-7)
        np.testing.assert_allclose(m[chain], ref.means_, rtol=1e-9)
        np.testing.assert_allclose(c[chain], ref.covariances_, rtol=1e-6, atol=1e-12 * scale)


def test_batched_chains_equal_chains_alone():
    x = two_clusters(np.random.default_rng(9), chains=4)
    init = start(x, 2, np.random.default_rng(10))
    kw = dict(max_iter=100, tol=1e-6, reg_covar=1e-6)
    batched = em(x, *init, **kw)
    for chain in range(len(x)):
        alone = em(x[chain : chain + 1], *(a[chain : chain + 1] for a in init), **kw)
        for a, b in zip(batched, alone, strict=True):
            np.testing.assert_allclose(a[chain], b[0], rtol=1e-12)
