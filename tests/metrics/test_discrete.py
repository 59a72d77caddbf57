"""The categorical metrics on hand-made distributions."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from collapselab.metrics.discrete import Support


def test_support_counts_kept_and_lost_true_states_per_chain():
    truth = np.array([0.5, 0.3, 0.2, 0.0])  # state 3 never exists: it cannot be lost
    probs = np.array([[0.5, 0.3, 0.2, 0.0],   # everything kept
                      [0.6, 0.0, 0.0, 0.4],   # two true states lost; mass on a state the truth lacks
                      [0.0, 0.0, 1.0, 0.0]])  # absorbed
    ctx = SimpleNamespace(model=SimpleNamespace(probs_=probs),
                          source=SimpleNamespace(truth={"probs": truth}))
    out = Support()(ctx)
    assert out["support_size"].tolist() == [3, 2, 1]
    assert out["lost_states"].tolist() == [0, 2, 2]
    assert out["absorbed"].tolist() == [False, False, True]


def test_support_counts_more_states_than_a_byte_holds():
    probs = np.full((2, 300), 1 / 300)
    probs[1, :299] = 0.0
    probs[1, 299] = 1.0
    ctx = SimpleNamespace(model=SimpleNamespace(probs_=probs),
                          source=SimpleNamespace(truth={"probs": np.full(300, 1 / 300)}))
    out = Support()(ctx)
    assert out["support_size"].tolist() == [300, 1]
    assert out["lost_states"].tolist() == [0, 299]
