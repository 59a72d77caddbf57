"""Closed-form predictions of the theory, per generation, where one exists.

Each prediction is the expected value of a metric's chain mean at generations ``0..G-1`` and the
standard deviation of one chain around it (so the Monte-Carlo band of a mean over C chains is
``mean ± z sd / sqrt(C)``). Generation t's model has been fitted t + 1 times: once on the M_0 real
samples, then t times on m synthetic samples.

Predictions are registered per ``(family, source, policy)`` by the module that owns them
(``@theory.register("gaussian", "normal", "replace")``); :func:`predict` looks the triple up. Every
formula here is exact unless its ``source`` text says it is an approximation.

One module per model family or policy group, each with its derivation:
:mod:`~collapselab.theory.gaussian` (replace), :mod:`~collapselab.theory.accumulate` (accumulate,
accumulate_subsample), :mod:`~collapselab.theory.categorical` (Wright-Fisher),
:mod:`~collapselab.theory.categorical_policies` (accumulate, real_fraction, fresh; forgetting times),
:mod:`~collapselab.theory.mixing` (real_fraction, fresh), :mod:`~collapselab.theory.kde`,
:mod:`~collapselab.theory.linreg`.
:func:`agreement` turns a run's rows into the measured-vs-theory table (z against the standard
error; ``collapselab theory RUN`` prints it).
"""

from collapselab.theory.accumulate import (
    accumulate_sizes,
    gaussian_accumulate,
    gaussian_accumulate_kl,
    gaussian_accumulate_subsample,
)
from collapselab.theory.agreement import PASS_Z, Agreement, agreement, run_agreement
from collapselab.theory.base import Prediction, Predictor, fit_sizes, predict, register
from collapselab.theory.categorical import (
    PRESENCE_STATES,
    WF_MAX_PAIRS,
    WF_MAX_SIZE,
    binomial_pmf,
    categorical_replace,
    wright_fisher_absent,
)
from collapselab.theory.categorical_policies import (
    branching_loss_generation,
    categorical_accumulate_risk,
    categorical_policy,
    expected_loss_generation,
    immigration_absent,
)
from collapselab.theory.gaussian import (
    chi2_moment,
    drift_scale_moments,
    gaussian_replace,
    gaussian_w2_replace,
)
from collapselab.theory.kde import kde_replace
from collapselab.theory.linreg import inverse_wishart_trace_moments, linreg_prediction
from collapselab.theory.mixing import gaussian_mixing, mixing_fixed_point, mixing_moments

__all__ = [
    "PASS_Z", "PRESENCE_STATES", "WF_MAX_PAIRS", "WF_MAX_SIZE", "Agreement", "Prediction",
    "Predictor", "accumulate_sizes", "agreement", "binomial_pmf", "branching_loss_generation",
    "categorical_accumulate_risk", "categorical_policy", "categorical_replace", "expected_loss_generation", "immigration_absent",
    "chi2_moment", "drift_scale_moments", "fit_sizes", "gaussian_accumulate",
    "gaussian_accumulate_kl", "gaussian_accumulate_subsample", "gaussian_replace",
    "gaussian_w2_replace", "inverse_wishart_trace_moments", "kde_replace", "linreg_prediction",
    "gaussian_mixing", "mixing_fixed_point", "mixing_moments", "predict", "register",
    "run_agreement", "wright_fisher_absent",
]
