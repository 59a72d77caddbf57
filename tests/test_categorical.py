"""The categorical track: every chain is absorbed in one state, state k with probability p_k."""

from __future__ import annotations

import numpy as np
from scipy import stats

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
