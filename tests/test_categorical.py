"""The categorical track: every chain is absorbed in one state, state k with probability p_k."""

from __future__ import annotations

import pickle

import numpy as np
from scipy import stats

from collapselab.models.categorical import Categorical
from tests.conftest import ROOT

CONFIG = ROOT / "configs" / "categorical" / "absorption.yaml"
ALPHA = 1e-3  # chi-square test level


def test_absorption_frequencies_match_initial_probabilities(run_config):
    store = run_config(CONFIG)  # the shipped experiment at full scale: 10,000 chains
    cfg = store.config()
    p = np.asarray(cfg.data.params["probs"])
    last = store.metrics()[-1]
    assert last["absorbed"] == 1.0, "every chain must be absorbed by the last generation"
    final = store.samples(cfg.generations - 1)  # (chains, M): all M samples of a chain agree
    assert (final == final[:, :1]).all()
    counts = np.bincount(final[:, 0], minlength=len(p))
    result = stats.chisquare(counts, cfg.chains * p)
    assert result.pvalue > ALPHA, (counts, result)


def test_rare_states_vanish_first(run_config):
    """A state with p < 1/M is usually lost in the first resampling; a common one is not."""
    store = run_config(None, "model.family=categorical", "data.source=categorical",
                       "data.size=20", "data.probs=[0.6, 0.37, 0.03]", "chains=4000",
                       "generations=3", "metrics=[support]")
    rows = store.metrics()
    # generation 0 was fitted on M = 20 real draws: it lost state 2 with probability (1 - p)^M;
    # the common states survive (0.63^20 = 1e-4)
    lost = (1 - 0.03) ** 20
    assert abs(rows[0]["lost_states"] - lost) < 4 * np.sqrt(lost * (1 - lost) / 4000)
    assert rows[-1]["lost_states"] > rows[0]["lost_states"]  # and losses only accumulate


def test_a_pickled_model_keeps_its_counts_compact_and_samples_the_same():
    x = np.random.default_rng(0).integers(0, 10, (1000, 100))
    model = Categorical(n_states=10).fit(x)
    assert model.counts_.dtype == np.uint8  # counts up to m = 100
    data = pickle.dumps(model)
    assert len(data) < 12_000  # 10,000 counts, one byte each; the probabilities are derived
    back = pickle.loads(data)
    np.testing.assert_array_equal(back.probs_, model.probs_)
    np.testing.assert_array_equal(back.sample(50, np.random.default_rng(1)),
                                  model.sample(50, np.random.default_rng(1)))
