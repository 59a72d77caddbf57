"""The prediction type and the registry of predictors per ``(family, source, policy)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Prediction:
    mean: np.ndarray  # (G,) expected chain mean
    sd: np.ndarray | None  # (G,) sd of a single chain, None where unknown
    source: str  # where the formula comes from, shown in the report
    bound: str | None = None  # "upper" / "lower": mean bounds the expectation (no sd); None: exact

    def __post_init__(self) -> None:
        if self.bound not in (None, "upper", "lower"):
            raise ValueError(f"Prediction.bound must be 'upper', 'lower' or None; got {self.bound!r}")

    def band(self, chains: int, z: float = 1.96) -> tuple[np.ndarray, np.ndarray] | None:
        if self.sd is None:
            return None
        half = z * self.sd / np.sqrt(chains)
        return self.mean - half, self.mean + half


Predictor = Callable[[Any, Any], dict[str, Prediction]]  # (config, source) -> predictions
_PREDICTORS: dict[tuple[str, str, str], Predictor] = {}


def register(family: str, source: str, policy: str) -> Callable[[Predictor], Predictor]:
    """``@register("gaussian", "normal", "replace")`` on a ``(config, source) -> dict`` function."""

    def decorator(fn: Predictor) -> Predictor:
        _PREDICTORS[(family, source, policy)] = fn
        return fn

    return decorator


def predict(config: Any, source: Any) -> dict[str, Prediction]:
    """Predictions for this experiment, keyed by metric value name; empty where no theory applies."""
    if config.curation or config.producers:
        return {}  # filtering or mixing producers changes what is fitted: the formulas no longer apply
    key = (config.model.family, config.data.source, config.policy.name)
    fn = _PREDICTORS.get(key)
    return fn(config, source) if fn is not None else {}


def fit_sizes(config: Any) -> np.ndarray:
    """Training-set size of every generation under ``replace``: M_0 real, then m synthetic."""
    m = config.synthetic_size or config.data.size
    return np.concatenate([[config.data.size], np.full(max(config.generations - 1, 0), m)]).astype(int)
