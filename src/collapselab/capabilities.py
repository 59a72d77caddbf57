"""What a component can do, declared, not probed (scikit-learn's tags, in ``typing.Protocol`` form).

A family or a source declares a capability by subclassing its Protocol (``class TorchLM(...,
ScoresTokens, CompletesPrompts)``) or simply by implementing it (a plugin need not import us):
:func:`provides` accepts either, on a class (config time) or an instance (run time). Metrics and
filters state what they need in ``needs``, a tuple of these Protocols; config validation refuses one
whose needs the model family or data source does not meet, naming the missing capability::

    @metrics.register("true_kl")
    class TrueKL:
        needs = (HasTrueDensity,)   # of the source: config validation checks it

The loop, the theory, the aggregate and the report ask through the helpers here
(:func:`prompt_tokens`, :func:`threaded`, :func:`source_sizes`, :func:`is_neural`,
:func:`parameter_count`, :func:`truth`, :func:`block_len`, :func:`heldout_rows`), never
``getattr`` on a model or a source. What a component declares with a default (a metric's
``needs``, a family's ``check_setup``) is read with :func:`declared`.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

# ---------------------------------------------------------------- of a model family


@runtime_checkable
class ScoresTokens(Protocol):
    """per-token log-likelihoods (``score_tokens``)"""

    def score_tokens(self, data: np.ndarray) -> np.ndarray:
        """``log p`` in nats of each token given its block prefix: ``(chains, n, k)``, ``k`` the last
        ``k <= block_len`` positions (a model may leave out the first)."""
        ...


@runtime_checkable
class CompletesPrompts(Protocol):
    """continues given prompts (``complete``; sampled blocks start with ``prompt_tokens`` copied
    tokens)"""

    prompt_tokens: int  # sampled blocks start with this many tokens copied from training blocks

    def complete(self, prompts: np.ndarray, new_tokens: int, rng: np.random.Generator,
                 chain: int = 0) -> np.ndarray:  # fmt: skip
        """``(b, p)`` int prompts -> ``(b, p + new_tokens)``, continued by chain ``chain``'s model."""
        ...


@runtime_checkable
class IsMixture(Protocol):
    """a Gaussian mixture per chain (``mixture``: weights, means, covariances)"""

    def mixture(self) -> Any:
        """``(weights (C, K), means (C, K, D), covs (C, K, D, D))``."""
        ...


@runtime_checkable
class Encodes(Protocol):
    """a latent space (``encode``: latent means of samples)"""

    def encode(self, data: np.ndarray) -> np.ndarray:
        """``(chains, m, ...)`` samples -> ``(chains, m, latent)`` latent means."""
        ...


@runtime_checkable
class HasCoefficients(Protocol):
    """fitted linear weights (``coef_``, ``(chains, features)``)"""

    coef_: np.ndarray


@runtime_checkable
class HasWeights(Protocol):
    """network weights (``state_dicts_``, one per chain: a neural family)"""

    state_dicts_: list[dict[str, Any]]


@runtime_checkable
class RunsThreads(Protocol):
    """runs its own threads (``threaded``: not to be held to one BLAS/OpenMP thread)"""

    threaded: ClassVar[bool]


# ---------------------------------------------------------------- of a data source


@runtime_checkable
class HasVocabulary(Protocol):
    """a vocabulary (``vocab``, ``vocab_size``)"""

    vocab: list[str]
    vocab_size: int


@runtime_checkable
class HasTrueDensity(Protocol):
    """exact token probabilities (``log_prob_tokens``)"""

    def log_prob_tokens(self, blocks: np.ndarray) -> np.ndarray:
        """The true ``log p`` of every token of ``blocks`` given its prefix: ``(chains, n, T)``."""
        ...


@runtime_checkable
class HasStates(Protocol):
    """a finite set of states (``n_states``)"""

    n_states: int


@runtime_checkable
class HasTruth(Protocol):
    """closed-form parameters of the real distribution (``truth``: a dict, e.g. a mixture's
    weights, means and covs, or a linear model's weights)"""

    truth: dict[str, Any]


@runtime_checkable
class HasBlocks(Protocol):
    """token blocks of one length (``block_len``)"""

    block_len: int


@runtime_checkable
class HasHeldoutSize(Protocol):
    """a held-out set of a stated size (``heldout_size`` samples)"""

    heldout_size: int


@runtime_checkable
class HasImageSplit(Protocol):
    """a fixed train/test split of images (``train_images`` / ``test_images`` ``(N, H, W)``, their
    ``train_labels`` / ``test_labels`` or None, ``image_shape``, a ``name``)"""

    name: str
    train_images: np.ndarray
    test_images: np.ndarray
    train_labels: np.ndarray | None
    test_labels: np.ndarray | None
    image_shape: tuple[int, int]


@runtime_checkable
class HasFingerprint(Protocol):
    """a content hash of its data (``fingerprint``: what is learnt from it is cached under it)"""

    fingerprint: str


@runtime_checkable
class HasTrainCounts(Protocol):
    """token frequencies of its whole train split (``train_counts``, ``(vocab_size,)``)"""

    train_counts: np.ndarray


@runtime_checkable
class HasValidSplit(Protocol):
    """a validation split (``valid(rng)``)"""

    def valid(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """The validation split, ``(1, m, ...)``; a ``DataError`` where the data has none."""
        ...


OF_SOURCE = frozenset({HasVocabulary, HasTrueDensity, HasStates, HasTruth, HasBlocks,
                       HasHeldoutSize, HasImageSplit, HasFingerprint, HasTrainCounts,
                       HasValidSplit})
# the rest are a model family's


def members(capability: type) -> list[str]:
    """The names a capability asks for: its methods and annotated attributes."""
    names = {n for n in vars(capability) if not n.startswith("_")}
    names |= set(vars(capability).get("__annotations__", {}))
    return sorted(names)


def provides(target: Any, capability: type) -> bool:
    """Whether ``target`` (a class or an instance) has ``capability``: it subclasses the Protocol,
    or declares every member (defined, annotated, or an ``__init__`` keyword of a class)."""
    cls = target if inspect.isclass(target) else type(target)
    if capability in cls.__mro__:
        return True
    if not inspect.isclass(target):
        return isinstance(target, capability)
    declared = {n for c in cls.__mro__ for n in vars(c).get("__annotations__", {})}
    try:
        declared |= set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        pass
    # the structural check itself: a class that has each member (typing.Protocol's rule)
    return all(hasattr(cls, n) or n in declared for n in members(capability))


def declared(component: Any, name: str, base: type) -> Any:
    """What ``component`` (a class or an instance) declares as ``name``, else the default its
    kind's ``base`` class declares (``declared(metric, "needs", MetricBase)``): a plugin need not
    subclass our bases, as scikit-learn's ``get_tags`` reads an estimator without tags."""
    # the one read of an optional declaration: defined on the component or on its kind's base
    return getattr(component, name, getattr(base, name))


def missing(target: Any, needs: tuple[type, ...]) -> list[type]:
    """The capabilities in ``needs`` that ``target`` lacks."""
    return [cap for cap in needs if not provides(target, cap)]


def describe(capability: type) -> str:
    """``HasTrueDensity (exact token probabilities (log_prob_tokens))``, for messages."""
    doc = " ".join((capability.__doc__ or "").replace("``", "").split())
    return f"{capability.__name__} ({doc})" if doc else capability.__name__


# ---------------------------------------------------------------- what the loop and reports ask


def prompt_tokens(model: Any) -> int:
    """How many leading tokens of each sampled block are copied from a training block rather than
    generated (0 for a model that does not complete prompts): the watermark test skips them."""
    return int(model.prompt_tokens) if provides(model, CompletesPrompts) else 0


def source_sizes(source: Any) -> dict[str, int]:
    """Sizes a family can learn from ``source`` when its config leaves them unset: ``vocab_size``
    (a source that :class:`HasVocabulary`) and ``n_states`` (one that :class:`HasStates`)."""
    out = {}
    if provides(source, HasVocabulary):
        out["vocab_size"] = int(source.vocab_size)
    if provides(source, HasStates):
        out["n_states"] = int(source.n_states)
    return out


def truth(source: Any) -> dict[str, Any]:
    """The closed-form parameters of ``source``'s distribution (empty without :class:`HasTruth`)."""
    return dict(source.truth) if provides(source, HasTruth) else {}


def block_len(source: Any) -> int | None:
    """Tokens per block of a token source (:class:`HasBlocks`); ``None`` for other data."""
    return int(source.block_len) if provides(source, HasBlocks) else None


def heldout_rows(source: Any) -> int:
    """Held-out samples ``source`` will give, known without loading it: its ``heldout_size``,
    an image split's test images, else 0 (unknown)."""
    if provides(source, HasHeldoutSize):
        return int(source.heldout_size)
    return len(source.test_images) if provides(source, HasImageSplit) else 0


def threaded(model: Any) -> bool:
    """Whether ``model`` (or its class) runs its own threads (torch): the loop then leaves the
    thread pools alone instead of holding them to one thread."""
    return provides(model, RunsThreads) and bool(model.threaded)


def is_neural(family: Any) -> bool:
    """Whether a family (class or instance) keeps network weights."""
    return provides(family, HasWeights)


def parameter_count(model: Any) -> int | None:
    """Parameters per chain of a fitted neural family (``None`` for any other model)."""
    if not isinstance(model, HasWeights) or not model.state_dicts_:
        return None
    return sum(int(v.numel()) for v in model.state_dicts_[0].values())
