"""The regression track against Dohmatob, Feng & Kempe (2024) and Gerstgrasser et al. (2024).

d = 10 inputs, T = 50 samples, σ = 1: each generation adds σ_i² d/(T - d - 1) = 0.256 to the
excess risk under replace; accumulating with one design X adds σ² d/(T - d - 1)/(n + 1)². Tolerances
are z = 4 standard errors of the chain mean (two-sided false-alarm rate 6e-5 per assertion).
"""

from __future__ import annotations

import numpy as np
import pytest

from collapselab import theory
from collapselab.models.linreg import LinearRegression
from tests.conftest import ROOT

Z = 4.0
D, T = 10, 50
UNIT = D / (T - D - 1)  # E tr (XᵀX)^{-1} for T isotropic rows
REPLACE = ROOT / "configs" / "theory" / "linreg_replace.yaml"
ACCUMULATE = ROOT / "configs" / "theory" / "linreg_accumulate.yaml"


def check_against_theory(rows, expected, se_key="excess_risk.theory_se"):
    for row, want in zip(rows, expected, strict=True):
        assert row["excess_risk.theory"] == pytest.approx(want)
        assert abs(row["excess_risk"] - want) < Z * row[se_key], row


@pytest.mark.parametrize("design", ["fixed", "isotropic"])
@pytest.mark.parametrize("model_noise", [1.0, 0.5])
def test_replace_grows_linearly(run_config, design, model_noise):
    store = run_config(REPLACE, "generations=8", f"model.design={design}",
                       f"model.noise={model_noise}")
    rows = store.metrics()
    n = np.arange(len(rows))
    check_against_theory(rows, UNIT * (1 + n * model_noise**2))
    for row in rows:  # the exact per-chain sd is the chains' own spread
        assert row["excess_risk.theory_se"] == pytest.approx(row["excess_risk.sem"], rel=0.15)


def test_replace_with_an_estimated_noise_keeps_the_mean(run_config):
    """σ̂² = RSS/(T - d) is a martingale: the mean is unchanged, the sd is not claimed."""
    store = run_config(REPLACE, "generations=8", "model.noise=null")
    rows = store.metrics()
    check_against_theory(rows, UNIT * (1 + np.arange(len(rows))), se_key="excess_risk.sem")
    assert "excess_risk.theory_se" not in rows[-1]


def test_accumulate_is_bounded_by_pi_squared_over_six(run_config):
    gens = 12
    store = run_config(ACCUMULATE, f"generations={gens}")
    rows = store.metrics()
    expected = UNIT * np.cumsum(1 / np.arange(1, gens + 1) ** 2)
    check_against_theory(rows, expected)
    assert rows[-1]["excess_risk.theory"] < UNIT * np.pi**2 / 6
    replace = UNIT * gens  # what replace would reach: far outside accumulate's band
    assert replace - rows[-1]["excess_risk"] > Z * rows[-1]["excess_risk.theory_se"]


def test_no_prediction_where_no_closed_form_holds(run_config):
    """A fresh design under accumulate, or a pooled noise estimate: no theory column is written."""
    for override in ("model.design=isotropic", "model.noise=null"):
        store = run_config(ACCUMULATE, "name=" + override.split("=")[0].replace(".", "-"),
                           "generations=2", "chains=4", override)
        assert "excess_risk.theory" not in store.metrics()[-1]
    assert theory.linreg_prediction(3, D, D + 1, D + 1, 1.0, 1.0, "fixed", "replace") == {}


def test_inverse_wishart_moments_match_a_simulation():
    rng = np.random.default_rng(0)
    d, t, chains = 4, 12, 200_000
    x = rng.standard_normal((chains, t, d))
    inv = np.linalg.inv(np.einsum("cni,cnj->cij", x, x))
    a = np.einsum("cij,cj->ci", inv, np.einsum("cni,cn->ci", x, rng.standard_normal((chains, t))))
    q = (a**2).sum(axis=1)  # ‖(XᵀX)^{-1}Xᵀε‖², σ = 1
    mean, var = theory.inverse_wishart_trace_moments(d, t)
    assert abs(q.mean() - mean) < Z * q.std() / np.sqrt(chains)
    assert q.var() == pytest.approx(var, rel=0.05)


def test_linreg_rejects_what_it_cannot_fit():
    model = LinearRegression()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"^linreg needs at least 2 coordinates \(inputs, then the "
                                         r"label\); got 1$"):
        model.fit(rng.normal(size=(2, 10, 1)))
    with pytest.raises(ValueError, match=r"^linreg needs more samples than inputs: n must exceed "
                                         r"d = 3; got 3$"):
        model.fit(rng.normal(size=(2, 3, 4)))
    model.fit(rng.normal(size=(2, 10, 4)))
    with pytest.raises(ValueError, match=r"^design='fixed' reuses the training inputs: n must be at "
                                         r"most 10; got 11$"):
        model.sample(11, rng)
    assert model.sample(10, rng)[..., :3] == pytest.approx(model.inputs_)
