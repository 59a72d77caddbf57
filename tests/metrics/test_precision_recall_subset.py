"""precision_recall on the first chains of a larger run: the row holds their mean and sem."""

import numpy as np

from collapselab.metrics.base import GenerationContext
from collapselab.metrics.images import PrecisionRecall


def context(chains: int) -> GenerationContext:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(1, 200, 2))
    synthetic = rng.normal(size=(chains, 60, 2)) * np.linspace(0.2, 1.0, chains)[:, None, None]
    return GenerationContext(gen=1, model=None, reference=None, train=synthetic,
                             synthetic=synthetic, real=real, heldout=real[:, :150],
                             source=None, rng=np.random.default_rng(1))


def test_a_subset_of_chains_gives_their_mean_and_its_standard_error():
    full = PrecisionRecall(max_chains=None)(context(6))
    sub = PrecisionRecall(max_chains=4)(context(6))
    first = full["recall"][:4]  # the same chains, measured alone
    assert np.ndim(sub["recall"]) == 0
    np.testing.assert_allclose(sub["recall"], first.mean())
    np.testing.assert_allclose(sub["recall.sem"], first.std(ddof=1) / 2)
    assert np.shape(full["recall"]) == (6,)
