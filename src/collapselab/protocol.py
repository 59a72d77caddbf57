"""The one protocol every generative model family follows.

Data everywhere is an array with a leading *chains* axis: ``(chains, n, *event_shape)``. Chains are
independent replicates of the whole experiment; vectorised families run them in one NumPy call,
neural families loop over them. A family:

- takes its hyperparameters only as ``__init__`` keywords (typed: they are its config fields),
- keeps fitted state in trailing-underscore attributes,
- ``fit(data, rng=...) -> self``; ``sample(n, rng) -> (chains, n, ...)``;
  ``score_samples(data) -> (chains, n)`` log-likelihood per sample (per token for text);
  ``score(data) -> (chains,)`` its mean; ``clone()``: a fresh unfitted copy.

Randomness is always passed in as a ``numpy.random.Generator``; nothing stores a seed.

:class:`GenerativeModel` is that protocol as a ``typing.Protocol``; :class:`Model` the base class
that supplies ``get_params``, ``clone``, ``score`` and the optional declarations' defaults
(``kinds``, ``check_setup``, ``working_bytes``). ``collapselab.testing.check_component`` checks a
family against all of it.
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from collapselab import registry
from collapselab.errors import RunError

NUMBERS = "biuf"  # dtype kinds of samples, scores and metric values: bool, integers, floats


class NotFittedError(RuntimeError):
    """``sample`` or ``score`` called before ``fit``."""


@runtime_checkable
class GenerativeModel(Protocol):
    """A model family (``registry.PROTOCOLS["family"]`` asks a registered class for the same)."""

    def fit(self, data: np.ndarray, *, rng: np.random.Generator) -> GenerativeModel: ...

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def score_samples(self, data: np.ndarray) -> np.ndarray: ...

    def score(self, data: np.ndarray) -> np.ndarray: ...

    def clone(self) -> GenerativeModel: ...


@functools.cache
def _param_names(cls: type) -> tuple[str, ...]:
    """A family's hyperparameters: its ``__init__`` keywords (read once per class)."""
    return tuple(p for p in inspect.signature(cls.__init__).parameters  # type: ignore[misc]
                 if p != "self")  # (mypy: __init__ read, not called, on the class itself)


_IMMUTABLE = frozenset({int, float, str, bool, type(None)})  # hyperparameters a clone may share


class Model:
    """Base class of families: params, clone, fitted checks, ``score`` from ``score_samples``, and
    the defaults of what a family may declare (config validation and the resource check read
    them; a family that does not subclass Model gets the same defaults)."""

    kinds: ClassVar[frozenset[str] | None] = None  # data kinds it models; None: any kind

    @classmethod
    def check_setup(cls, params: dict[str, Any], setup: Any) -> list[str]:
        """Config time: problems with ``params`` (the config's model section) on the data that
        ``setup`` (``config.Setup``: the built source, the sizes) describes, each ``field: rule;
        got value``. None by default."""
        return []

    @classmethod
    def working_bytes(cls, params: dict[str, Any], *, chains: int, rows: int, sample_bytes: int,
                      heldout: int) -> int:
        """Bytes the family holds besides the data while fitting ``rows`` samples per chain
        (e.g. a covariance per chain); the resource check adds them. 0 by default."""
        return 0

    def get_params(self) -> dict[str, Any]:
        # a family's own hyperparameters, kept under their __init__ names (scikit-learn's rule)
        return {name: getattr(self, name)  # (mypy: a class is hashable)
                for name in _param_names(type(self))}  # type: ignore[arg-type]

    def clone(self) -> Model:
        """A fresh, unfitted copy with the same hyperparameters (containers copied, not shared)."""
        params = self.get_params()
        if not all(type(v) in _IMMUTABLE for v in params.values()):
            params = copy.deepcopy(params)
        return type(self)(**params)

    def is_fitted(self) -> bool:
        return any(k.endswith("_") and not k.startswith("_") for k in vars(self))

    def check_fitted(self) -> None:
        if not self.is_fitted():
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(data) first")

    def score(self, data: np.ndarray) -> np.ndarray:
        """Mean log-likelihood per sample, one value per chain: ``(chains,)``."""
        # score_samples is each family's own (GenerativeModel), not the base class's
        return np.asarray(self.score_samples(data)).mean(axis=1)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class NetworkCache:
    """For neural families: fitted weights live in ``state_dicts_`` (one per chain, on CPU, what is
    pickled); the networks built from them are a cache, built on first use by the family's
    ``_build_net(chain)`` and left out of pickles."""

    state_dicts_: list[Any]

    def _build_net(self, chain: int) -> Any:
        raise NotImplementedError

    def _net(self, chain: int) -> Any:
        self.check_fitted()  # type: ignore[attr-defined]
        if not 0 <= chain < len(self.state_dicts_):
            raise ValueError(f"chain must be in [0, {len(self.state_dicts_)}); got {chain}")
        nets = self.__dict__.setdefault("_nets", {})
        if chain not in nets:
            nets[chain] = self._build_net(chain)
        return nets[chain]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_nets", None)
        return state


def clone(model: Any) -> Any:
    """A fresh copy of ``model`` with its hyperparameters and none of its fitted state."""
    return model.clone()


def check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer number of samples; got {n!r}")
    return int(n)


def check_data(
    data: Any, *, name: str = "data", min_samples: int = 1, shape: str | None = None
) -> np.ndarray:
    """Validate a ``(chains, n, ...)`` array: finite, at least ``min_samples`` per chain; with
    ``shape`` (e.g. ``"(chains, n, dim)"``), exactly that many axes."""
    arr = np.asarray(data)
    want = shape or "(chains, n, ...)"
    ndim = want.count(",") + 1 if shape else None
    if arr.ndim < 2 or (ndim is not None and arr.ndim != ndim):
        raise ValueError(f"{name} must have shape {want}; got shape {arr.shape}")
    if arr.shape[1] < min_samples:
        raise ValueError(f"{name} needs at least {min_samples} samples per chain; got {arr.shape[1]}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


# --- what the loop takes from a family, checked (shapes and dtypes: no pass over the values) ---


def checked_samples(model: Any, samples: Any, chains: int, n: int,
                    event: tuple[int, ...]) -> np.ndarray:
    """What ``model.sample(n, ...)`` returned, checked to be numbers of shape ``(chains, n,
    *event)`` (``event``: the training data's); else a ``RunError`` naming the family, the method
    and the rule. Non-finite values pass: a degenerate generation is a result of the run."""
    x = np.asarray(samples)
    if x.dtype.kind not in NUMBERS:
        problem = f"values of dtype {x.dtype}; samples are numbers"
    elif x.ndim < 2 or x.shape[0] != chains:
        problem = f"shape {x.shape}; samples have shape (chains, n, ...) with chains={chains}"
    elif x.shape[1] != n:
        problem = f"{x.shape[1]} rows per chain; asked for {n}"
    elif x.shape[2:] != event:
        problem = f"samples of shape {x.shape[2:]}; the training data's have shape {event}"
    else:
        return x
    raise RunError(f"{registry.name_of(model)}.sample returned {problem}")


def returned(value: Any, shape: tuple[int, ...], rule: str, by: Any,
             method: str = "") -> np.ndarray:
    """``value``, what ``by.method`` returned, as float64 numbers of ``shape``; else a ``RunError``
    naming them and the ``rule`` ("one score per sample"). ``by``: a component (named as the config
    names it) or a name; ``method`` may be empty (``by`` a function). Non-finite values pass."""
    x = np.asarray(value)
    if x.dtype.kind not in NUMBERS:
        problem = f"values of dtype {x.dtype}; {rule} is a number"
    elif x.shape != shape:
        problem = f"shape {x.shape}; {rule} is shape {shape}"
    else:
        return x.astype(np.float64, copy=False)
    name = by if isinstance(by, str) else registry.name_of(by)
    raise RunError(f"{name}{'.' * bool(method)}{method} returned {problem}")


def scores(model: Any, data: np.ndarray) -> np.ndarray:
    """``model.score_samples(data)``, checked: float64 ``(chains, n)`` for ``data`` ``(chains, n,
    ...)``."""
    return returned(model.score_samples(data), np.shape(data)[:2], "one score per sample", model,
                    "score_samples")
