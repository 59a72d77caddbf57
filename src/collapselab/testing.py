"""Check a component the way collapselab checks its own (scikit-learn's ``check_estimator``).

    from collapselab.testing import check_component
    check_component(Laplace())          # every rule of its kind; a broken one raises

A broken rule raises :class:`ComponentCheckError` (an ``AssertionError``, so pytest shows it as a
failure) whose message names the component, the rule and what was seen::

    FirstChainOnly breaks the rule 'sample returns (chains, n, *event) numbers of the data's
    dtype kind': shape (5, 2) on continuous data; want (2, 5, 2) (chains 2, n 5, event (2,))

In a pytest suite, one test per rule (each its own test id)::

    from collapselab.testing import parametrize_with_checks

    @parametrize_with_checks([Laplace(), Window(window=3), Kurtosis()])
    def test_conforms(component, check):
        check(component)

A component is a class (built with its default parameters) or an instance; its kind (family,
source, policy, filter, metric) is what it defines (``registry.PROTOCOLS``). Families are fitted on
small data of each kind they declare (``kinds``); policies plan over several pool sizes; metrics and
filters run on a small generation of each data kind (chains 3) whose source and model family meet
what they ``need``. Nothing but the component is random: every check seeds its own generators.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import pickle
import random
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from collapselab import capabilities, registry
from collapselab.curation import CurationContext, FilterBase, Weights
from collapselab.metrics.base import GenerationContext, MetricBase
from collapselab.metrics.declare import Plot
from collapselab.protocol import NUMBERS, Model, NotFittedError
from collapselab.provenance import FRESH_POOL, Plan
from collapselab.sources.base import KINDS

__all__ = ["Check", "ComponentCheckError", "check_component", "checks", "kind_of",
           "parametrize_with_checks"]

CHAINS = 2  # of the data a family is fitted on
SIZES = {"n_states": 4, "vocab_size": 30}  # a family's sizes the loop would fill from the source
ORDER = ("family", "source", "policy", "metric", "filter")  # a metric is also a callable


class ComponentCheckError(AssertionError):
    """A component breaks a rule of its kind; the message names the component and the rule."""


@dataclass(frozen=True)
class Check:
    """One rule of a kind: ``check(component)`` raises :class:`ComponentCheckError` if it is
    broken. ``rule`` says it in words; ``id`` is its name in test ids."""

    id: str
    rule: str
    run: Callable[[Any], None]

    def __call__(self, component: Any) -> None:
        self.run(_instance(component, self.rule))

    def __repr__(self) -> str:
        return self.id


def kind_of(component: Any) -> str:
    """``family``, ``source``, ``policy``, ``metric`` or ``filter``: the first kind whose protocol
    the class implements; else a :class:`ComponentCheckError` naming the protocols."""
    cls = component if inspect.isclass(component) else type(component)
    for key in ORDER:
        try:
            registry.REGISTRIES[key].check(cls, cls.__name__)
        except registry.ComponentError:
            continue
        return key
    raise ComponentCheckError(f"{cls.__name__} implements no component protocol: "
                              + "; ".join(_protocol(k) for k in ORDER))


def checks(component: Any, kind: str | None = None) -> list[Check]:
    """The checks of ``component``'s kind (``kind`` given: that kind's, the protocol first)."""
    kind = kind or kind_of(component)
    return [_protocol_check(kind), *KIT[kind]]


def check_component(component: Any, kind: str | None = None) -> None:
    """Run every check of ``component``'s kind; the first broken rule raises
    :class:`ComponentCheckError` naming it."""
    for check in checks(component, kind):
        check(component)


def parametrize_with_checks(components: Iterable[Any]) -> Any:
    """A ``pytest.mark.parametrize("component, check", ...)``: one test per component and rule,
    with ids like ``Laplace-fit_returns_self``."""
    import pytest

    params = [pytest.param(c, check, id=f"{_name(c)}-{check.id}")
              for c in components for check in checks(c)]
    return pytest.mark.parametrize("component, check", params)


# ---------------------------------------------------------------- plumbing


def _name(component: Any) -> str:
    cls = component if inspect.isclass(component) else type(component)
    return cls.__name__


def _protocol(key: str) -> str:
    methods, attributes = registry.PROTOCOLS[key]
    return f"a {key} defines {', '.join(methods + attributes)}"


def _instance(component: Any, rule: str) -> Any:
    if not inspect.isclass(component):
        return component
    try:
        return component()
    except Exception as exc:
        raise ComponentCheckError(f"{component.__name__} breaks the rule '{rule}': it cannot be "
                                  f"built with its default parameters ({type(exc).__name__}: "
                                  f"{exc}); check an instance") from exc


def _fail(component: Any, rule: str, problem: str) -> ComponentCheckError:
    return ComponentCheckError(f"{_name(component)} breaks the rule '{rule}': {problem}")


def _rule(id: str, rule: str) -> Callable[[Callable[[Any, str], None]], Check]:
    """A check function ``fn(component, rule)`` as a :class:`Check`."""
    def wrap(fn: Callable[[Any, str], None]) -> Check:
        return Check(id, rule, functools.partial(_guarded, fn, rule))
    return wrap


def _guarded(fn: Callable[[Any, str], None], rule: str, component: Any) -> None:
    """Run a check; an exception the component raises where the rule expects none is a broken
    rule too, named as such."""
    try:
        fn(component, rule)
    except ComponentCheckError:
        raise
    except Exception as exc:
        raise _fail(component, rule, f"it raised {type(exc).__name__}: {exc}") from exc


def _protocol_check(kind: str) -> Check:
    def run(component: Any, rule: str) -> None:
        try:
            registry.REGISTRIES[kind].check(type(component), _name(component))
        except registry.ComponentError as exc:
            raise _fail(component, rule, str(exc)) from None
    return _rule("protocol", _protocol(kind))(run)


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _seed_globals(seed: int) -> None:
    """Seed every global generator a component might read instead of the one passed in."""
    np.random.seed(seed)  # noqa: NPY002  (the legacy global generator is what is tested)
    random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


@contextlib.contextmanager
def _globals_kept() -> Iterator[None]:
    """The global generators' states as they were, after a check that seeds them."""
    torch = sys.modules.get("torch")
    states = (np.random.get_state(), random.getstate(),  # noqa: NPY002
              torch.get_rng_state() if torch is not None else None)
    try:
        yield
    finally:
        np.random.set_state(states[0])  # noqa: NPY002
        random.setstate(states[1])
        if torch is not None:
            torch.set_rng_state(states[2])


# ---------------------------------------------------------------- data and families


def tiny_data(kind: str, rng: np.random.Generator, chains: int = CHAINS) -> np.ndarray:
    """Small data of ``kind``, ``(chains, n, ...)``: what a family is fitted on."""
    if kind == "continuous":
        return rng.normal(size=(chains, 60, 2))
    if kind == "categorical":
        return rng.integers(0, SIZES["n_states"], size=(chains, 60))
    if kind == "tokens":
        return rng.integers(0, SIZES["vocab_size"], size=(chains, 24, 12)).astype(np.int32)
    return rng.random((chains, 24, 8, 8))  # images


def _kinds(family: Any) -> list[str]:
    declared = capabilities.declared(family, "kinds", Model)
    return sorted(declared) if declared is not None else ["continuous"]


def _sized(family: Any) -> Any:
    """``family`` with the sizes it leaves unset filled in (the loop does it from the source)."""
    if not isinstance(family, Model):
        return family.clone()
    params = family.get_params()
    unset = {k: v for k, v in SIZES.items() if k in params and params[k] is None}
    return type(family)(**{**params, **unset})


def _fit(family: Any, kind: str, seed: int = 1) -> tuple[Any, np.ndarray]:
    data = tiny_data(kind, np.random.default_rng(0))
    model = _sized(family)
    model.fit(data, rng=np.random.default_rng(seed))
    return model, data


_FITTED: dict[tuple[int, str], tuple[Any, Any, np.ndarray]] = {}


def _fitted(family: Any, kind: str) -> tuple[Any, np.ndarray]:
    """One fit per family instance and kind, shared by the checks that only read it."""
    key = (id(family), kind)
    if key not in _FITTED or _FITTED[key][0] is not family:
        _FITTED[key] = (family, *_fit(family, kind))
    return _FITTED[key][1], _FITTED[key][2]


def _fitted_state(model: Any) -> list[str]:
    return sorted(k for k in vars(model) if k.endswith("_") and not k.startswith("_"))


def _for_kinds(fn: Callable[[Any, str, str], None]) -> Callable[[Any, str], None]:
    """A family check run on data of every kind the family declares."""
    def run(family: Any, rule: str) -> None:
        for kind in _kinds(family):
            fn(family, rule, kind)
    return run


def _family_checks() -> Iterator[Check]:
    @_rule("kinds", "kinds names data kinds (continuous, categorical, tokens, images)")
    def kinds(family: Any, rule: str) -> None:
        declared = capabilities.declared(family, "kinds", Model)
        if declared is not None and (not declared or not set(declared) <= set(KINDS)):
            raise _fail(family, rule, f"got {declared!r}")
    yield kinds

    @_rule("not_fitted", "sample before fit raises NotFittedError")
    @_for_kinds
    def not_fitted(family: Any, rule: str, kind: str) -> None:
        try:
            _sized(family).sample(3, np.random.default_rng(0))
        except NotFittedError:
            return
        raise _fail(family, rule, "sample returned without a fit")
    yield not_fitted

    @_rule("fit_returns_self", "fit returns self")
    @_for_kinds
    def fit_returns_self(family: Any, rule: str, kind: str) -> None:
        model = _sized(family)
        out = model.fit(tiny_data(kind, np.random.default_rng(0)), rng=np.random.default_rng(1))
        if out is not model:
            raise _fail(family, rule, f"fit returned {type(out).__name__}, not the model")
    yield fit_returns_self

    @_rule("sample_n", "sample(0) raises a ValueError naming n")
    @_for_kinds
    def sample_n(family: Any, rule: str, kind: str) -> None:
        model, _ = _fitted(family, kind)
        try:
            model.sample(0, np.random.default_rng(0))
        except ValueError as exc:
            if re.search(r"\bn\b", str(exc)):
                return
            raise _fail(family, rule, f"the ValueError does not name n: {exc}") from None
        raise _fail(family, rule, "sample(0) returned")
    yield sample_n

    @_rule("sample_shape", "sample returns (chains, n, *event) numbers of the data's dtype kind")
    @_for_kinds
    def sample_shape(family: Any, rule: str, kind: str) -> None:
        model, data = _fitted(family, kind)
        x = np.asarray(model.sample(5, np.random.default_rng(7)))
        want = (data.shape[0], 5, *data.shape[2:])
        if x.shape != want:
            raise _fail(family, rule, f"shape {x.shape} on {kind} data; want {want} (chains "
                                      f"{data.shape[0]}, n 5, event {data.shape[2:]})")
        if x.dtype.kind not in NUMBERS or (x.dtype.kind == "f") != (data.dtype.kind == "f"):
            raise _fail(family, rule, f"dtype {x.dtype} on {kind} data of dtype {data.dtype}")
    yield sample_shape

    @_rule("same_seed", "same rng seed, same samples")
    @_for_kinds
    def same_seed(family: Any, rule: str, kind: str) -> None:
        model, _ = _fitted(family, kind)
        a, b = (model.sample(5, np.random.default_rng(7)) for _ in range(2))
        if not _same(a, b):
            raise _fail(family, rule, "two generators seeded 7 gave different samples")
    yield same_seed

    @_rule("rng_only", "randomness only from the rng passed in")
    @_for_kinds
    def rng_only(family: Any, rule: str, kind: str) -> None:
        model, _ = _fitted(family, kind)
        rng = np.random.default_rng(7)
        if _same(model.sample(5, rng), model.sample(5, rng)):
            raise _fail(family, rule, "two calls on one generator gave the same samples")
        if _same(model.sample(5, np.random.default_rng(7)), model.sample(5, np.random.default_rng(8))):
            raise _fail(family, rule, "generators seeded 7 and 8 gave the same samples")
        draws = []
        with _globals_kept():
            for seed in (0, 1):  # the global generators seeded differently: no difference
                _seed_globals(seed)
                draws.append(model.sample(5, np.random.default_rng(7)))
        if not _same(*draws):
            raise _fail(family, rule, "the samples depend on a global generator (numpy.random, "
                                      "random or torch), not only on the rng passed in")
    yield rng_only

    @_rule("refit", "fit depends only on its data and rng; a refit replaces every fitted attribute")
    @_for_kinds
    def refit(family: Any, rule: str, kind: str) -> None:
        model, data = _fitted(family, kind)
        want = model.sample(5, np.random.default_rng(7))
        other, _ = _fit(family, kind)
        if not _same(other.sample(5, np.random.default_rng(7)), want):
            raise _fail(family, rule, "two fits on the same data and seed sample differently")
        other.fit(data[:, ::2], rng=np.random.default_rng(2))  # other data, another stream
        other.fit(data, rng=np.random.default_rng(1))
        if _fitted_state(other) != _fitted_state(model):
            raise _fail(family, rule, f"fitted attributes {_fitted_state(other)} after a refit; "
                                      f"{_fitted_state(model)} after one fit")
        if not _same(other.sample(5, np.random.default_rng(7)), want):
            raise _fail(family, rule, "a refit samples differently from a first fit")
    yield refit

    @_rule("scores", "score_samples returns (chains, n) and score (chains,) numbers, finite on "
                     "the model's own samples")
    @_for_kinds
    def scores(family: Any, rule: str, kind: str) -> None:
        model, data = _fitted(family, kind)
        x = model.sample(5, np.random.default_rng(7))
        per = np.asarray(model.score_samples(x))
        if per.shape != (data.shape[0], 5) or per.dtype.kind not in NUMBERS:
            raise _fail(family, rule, f"score_samples returned shape {per.shape} and dtype "
                                      f"{per.dtype}; want ({data.shape[0]}, 5) numbers")
        mean = np.asarray(model.score(x))
        if mean.shape != (data.shape[0],) or not np.isfinite(mean).all():
            raise _fail(family, rule, f"score returned {mean!r}; want {data.shape[0]} finite "
                                      f"numbers")
    yield scores

    @_rule("clone", "clone is a fresh unfitted copy with the same parameters, independent of "
                    "the original")
    @_for_kinds
    def clone(family: Any, rule: str, kind: str) -> None:
        model, data = _fitted(family, kind)
        want = model.sample(5, np.random.default_rng(7))
        fresh = model.clone()
        if type(fresh) is not type(model) or _fitted_state(fresh):
            raise _fail(family, rule, f"the clone is a {type(fresh).__name__} with fitted "
                                      f"attributes {_fitted_state(fresh)}")
        if isinstance(model, Model) and fresh.get_params() != model.get_params():
            raise _fail(family, rule, f"parameters {fresh.get_params()} != {model.get_params()}")
        fresh.fit(data[:, ::2], rng=np.random.default_rng(3))
        if not _same(model.sample(5, np.random.default_rng(7)), want):
            raise _fail(family, rule, "fitting the clone changed the original's samples")
    yield clone

    @_rule("pickle", "a fitted model pickles: the copy scores and samples as the original")
    @_for_kinds
    def pickles(family: Any, rule: str, kind: str) -> None:
        model, _ = _fitted(family, kind)
        x = model.sample(5, np.random.default_rng(7))
        copy = pickle.loads(pickle.dumps(model))
        if not np.allclose(copy.score(x), model.score(x), rtol=1e-6, equal_nan=True):
            raise _fail(family, rule, "the unpickled copy scores differently")
        if not _same(copy.sample(5, np.random.default_rng(7)), x):
            raise _fail(family, rule, "the unpickled copy samples differently")
    yield pickles


# ---------------------------------------------------------------- sources


def _dtype_fits(x: np.ndarray, kind: str) -> bool:
    return x.dtype.kind == "f" if kind in ("continuous", "images") else x.dtype.kind in "iu"


def _source_checks() -> Iterator[Check]:
    @_rule("kind", f"kind is one of {', '.join(KINDS)}")
    def kind(source: Any, rule: str) -> None:
        if source.kind not in KINDS:
            raise _fail(source, rule, f"got {source.kind!r}")
    yield kind

    def shaped(source: Any, rule: str, method: str, x: Any, n: int | None) -> np.ndarray:
        x = np.asarray(x)
        if (x.ndim < 2 or x.shape[0] not in (1, 3) or n not in (None, x.shape[1])
                or not _dtype_fits(x, source.kind)):
            raise _fail(source, rule, f"{method} returned shape {x.shape} and dtype {x.dtype}; "
                                      f"want (1 or 3 chains, {n or 'm'}, ...) {source.kind} data")
        return x

    @_rule("data", "real, fresh and heldout return (chains or 1, n, *event) data of the source's "
                   "kind, one event shape")
    def data(source: Any, rule: str) -> None:
        real = shaped(source, rule, "real(8, 3, rng)", source.real(8, 3, np.random.default_rng(0)), 8)
        fresh = shaped(source, rule, "fresh(8, 3, rng)",
                       source.fresh(8, 3, np.random.default_rng(1)), 8)
        held = shaped(source, rule, "heldout(rng)", source.heldout(np.random.default_rng(2)), None)
        if held.shape[0] != 1 or not real.shape[2:] == fresh.shape[2:] == held.shape[2:]:
            raise _fail(source, rule, f"shapes real {real.shape}, fresh {fresh.shape}, heldout "
                                      f"{held.shape}; heldout has one chain, all one event shape")
    yield data

    @_rule("same_seed", "same rng seed, same data")
    def same_seed(source: Any, rule: str) -> None:
        a, b = (source.real(8, 3, np.random.default_rng(5)) for _ in range(2))
        if not _same(a, b):
            raise _fail(source, rule, "real with two generators seeded 5 differed")
    yield same_seed


# ---------------------------------------------------------------- policies

POOLS = ([20, 12], [20, 30], [20, 12, 30, 7])  # rows per chain: real, then synthetic, oldest first


def _plan_problem(plan: Any, sizes: list[int], chains: int) -> str | None:
    """Why ``plan`` is not an index plan over pools of ``sizes`` (None if it is)."""
    if not isinstance(plan, Plan):
        return f"plan returned a {type(plan).__name__}, not a collapselab.provenance.Plan"
    if not plan.parts:
        return "the plan has no parts (an empty training set)"
    for i, part in enumerate(plan.parts):
        pools = [sizes[p] if 0 <= p < len(sizes) else plan.fresh if p == FRESH_POOL else None
                 for p in part.pools]
        if None in pools or (FRESH_POOL in part.pools and plan.fresh < 1):
            return (f"part {i} reads pools {part.pools}; pools are 0..{len(sizes) - 1} (and "
                    f"{FRESH_POOL}, fresh, when plan.fresh > 0) with sizes {sizes}")
        if part.rows is None:
            continue
        rows, total = np.asarray(part.rows), sum(pools)  # type: ignore[arg-type]
        if rows.ndim != 2 or rows.shape[0] != chains or rows.dtype.kind not in "iu":
            return f"part {i} has rows of shape {rows.shape} and dtype {rows.dtype}; want " \
                   f"({chains}, k) integers"
        if rows.size and (rows.min() < 0 or rows.max() >= total):
            return (f"part {i} draws row {rows.max() if rows.max() >= total else rows.min()} of "
                    f"pools {part.pools}, which hold {total} rows per chain (sizes {sizes})")
    return None


def _policy_checks() -> Iterator[Check]:
    @_rule("history", "history is 'last' or 'all'")
    def history(policy: Any, rule: str) -> None:
        if policy.history not in ("last", "all"):
            raise _fail(policy, rule, f"got {policy.history!r}")
    yield history

    def pools(policy: Any) -> Iterator[list[int]]:
        for sizes in POOLS:
            if policy.history == "all" or len(sizes) == 2:
                yield sizes

    @_rule("plan_within_pools", "plans draw rows within the pools' sizes")
    def within(policy: Any, rule: str) -> None:
        for sizes in pools(policy):
            plan = policy.plan(list(sizes), 20, 3, np.random.default_rng(0))
            problem = _plan_problem(plan, sizes, 3)
            if problem is not None:
                raise _fail(policy, rule, problem)
    yield within

    @_rule("same_seed", "same rng seed, same plan")
    def same_seed(policy: Any, rule: str) -> None:
        for sizes in pools(policy):
            a, b = (policy.plan(list(sizes), 20, 3, np.random.default_rng(4)) for _ in range(2))
            rows = [(p.pools, None if p.rows is None else np.asarray(p.rows)) for p in a.parts]
            again = [(p.pools, None if p.rows is None else np.asarray(p.rows)) for p in b.parts]
            if a.fresh != b.fresh or len(rows) != len(again) or not all(
                    x[0] == y[0] and (x[1] is y[1] is None or _same(x[1], y[1]))
                    for x, y in zip(rows, again, strict=True)):
                raise _fail(policy, rule, f"two generators seeded 4 planned differently on "
                                          f"sizes {sizes}")
    yield same_seed


# ---------------------------------------------------------------- metrics and filters

METRIC_CHAINS = 3
SCENARIOS = {  # data kind -> (source, params; family, params) of the generation metrics see
    "continuous": ("normal", {"dim": 2, "heldout_size": 100}, "gaussian", {}),
    "categorical": ("categorical", {"k": 4, "heldout_size": 100}, "categorical", {"n_states": 4}),
    "tokens": ("builtin", {"vocab_size": 40, "block_len": 12, "train_blocks": 60,
                           "valid_blocks": 20, "test_blocks": 20}, "ngram", {"vocab_size": 40}),
    "images": ("digits", {}, "vae", {"latent_dim": 4, "epochs": 1, "max_steps": 2}),
}


@functools.cache
def _scenario(kind: str) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """A small generation 1 on ``kind`` data: the source, generation 0's model (the reference)
    and generation 1's, and the arrays a metric sees (chains 3, 40 samples each)."""
    source_name, source_params, family_name, family_params = SCENARIOS[kind]
    source = registry.sources.build(source_name, source_params)
    family = registry.families.build(family_name, family_params)
    rng = np.random.default_rng(0)
    real = source.real(40, METRIC_CHAINS, rng)  # (chains or 1, 40, ...)
    real = np.ascontiguousarray(np.broadcast_to(real, (METRIC_CHAINS, *real.shape[1:])))
    reference = family.clone().fit(real, rng=rng)
    train = reference.sample(40, rng)
    model = family.clone().fit(train, rng=rng)
    arrays = {"real": real, "train": train, "synthetic": model.sample(40, rng),
              "heldout": source.heldout(rng)}
    return source, (reference, model), arrays


def _context(kind: str, seed: int) -> GenerationContext:
    source, (reference, model), data = _scenario(kind)
    return GenerationContext(gen=1, model=model, reference=reference, train=data["train"],
                             synthetic=data["synthetic"], real=data["real"],
                             heldout=data["heldout"], source=source,
                             rng=np.random.default_rng(seed))


def _runs_on(component: Any, base: type, kinds: Iterable[str]) -> list[str]:
    """The scenario kinds whose source and model family meet what ``component`` needs."""
    out = []
    for kind in kinds:
        if kind not in SCENARIOS:
            continue
        source_name, _, family_name, _ = SCENARIOS[kind]
        source, family = registry.sources.get(source_name), registry.families.get(family_name)
        needs = capabilities.declared(component, "needs", base)
        if all(capabilities.provides(source if cap in capabilities.OF_SOURCE else family, cap)
               for cap in needs):
            out.append(kind)
    return out


def _needs_check(base: type) -> Check:
    @_rule("needs", "needs lists capability Protocols of collapselab.capabilities")
    def needs(component: Any, rule: str) -> None:
        declared = capabilities.declared(component, "needs", base)
        known = {v for v in vars(capabilities).values() if inspect.isclass(v)}
        if not isinstance(declared, tuple) or not all(cap in known for cap in declared):
            raise _fail(component, rule, f"got needs={declared!r}")
    return needs


_MEASURED: dict[tuple[int, str], tuple[Any, Any]] = {}


def _measured(metric: Any, kind: str, ctx: GenerationContext) -> Any:
    """``metric(ctx)`` on the ``kind`` scenario, once per metric instance: what a later check
    compares against (a metric of a few seconds is measured twice, not three times)."""
    key = (id(metric), kind)
    if key not in _MEASURED or _MEASURED[key][0] is not metric:
        _MEASURED[key] = (metric, metric(ctx))
    return _MEASURED[key][1]


def _metric_checks() -> Iterator[Check]:
    @_rule("kinds", "kinds names source kinds (continuous, categorical, tokens, images), "
                    "default_kinds some of them")
    def kinds(metric: Any, rule: str) -> None:
        default = capabilities.declared(metric, "default_kinds", MetricBase)
        if not metric.kinds or not set(metric.kinds) <= set(KINDS):
            raise _fail(metric, rule, f"got kinds={metric.kinds!r}")
        if default is not None and not set(default) <= set(metric.kinds):
            raise _fail(metric, rule, f"default_kinds={default!r} are not among kinds="
                                      f"{metric.kinds!r}")
    yield kinds
    yield _needs_check(MetricBase)

    @_rule("declarations", "describe and worse map keys to words ('higher'/'lower' for worse), "
                           "plots are Plots, bounds (low, high) pairs")
    def declarations(metric: Any, rule: str) -> None:
        describe = capabilities.declared(metric, "describe", MetricBase)
        worse = capabilities.declared(metric, "worse", MetricBase)
        plots = capabilities.declared(metric, "plots", MetricBase)
        if not isinstance(describe, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in describe.items()):
            raise _fail(metric, rule, f"got describe={describe!r}")
        if not isinstance(worse, dict) or not set(worse.values()) <= {"higher", "lower"}:
            raise _fail(metric, rule, f"got worse={worse!r}")
        bad = [p for p in plots if Plot.of(p) is None]
        if bad:
            raise _fail(metric, rule, f"plots the report cannot draw: {bad!r}")
        bounds = capabilities.declared(metric, "bounds", MetricBase)
        if not isinstance(bounds, dict) or not all(
                isinstance(b, tuple) and len(b) == 2
                and all(v is None or isinstance(v, (int, float)) for v in b)
                for b in bounds.values()):
            raise _fail(metric, rule, f"got bounds={bounds!r}")
    yield declarations

    @_rule("values", "returns a dict of numbers, each a scalar or one per chain (chains, ...)")
    def values(metric: Any, rule: str) -> None:
        for kind in _runs_on(metric, MetricBase, sorted(metric.kinds)):
            ctx = _context(kind, 5)
            out = _measured(metric, kind, ctx)
            if not isinstance(out, dict):
                raise _fail(metric, rule, f"returned a {type(out).__name__} on {kind} data")
            for key, value in out.items():
                arr = np.asarray(value)
                if arr.dtype.kind not in NUMBERS or (arr.ndim and arr.shape[0] != ctx.chains):
                    raise _fail(metric, rule, f"{key!r} is shape {arr.shape} and dtype "
                                              f"{arr.dtype} on {kind} data of {ctx.chains} "
                                              f"chains; want a number or shape ({ctx.chains}, ...)")
    yield values

    @_rule("same_seed", "same ctx.rng seed, same values")
    def same_seed(metric: Any, rule: str) -> None:
        for kind in _runs_on(metric, MetricBase, sorted(metric.kinds)):
            a, b = _measured(metric, kind, _context(kind, 5)), metric(_context(kind, 5))
            differ = [k for k in a if k not in b or not _same(a[k], b[k])]
            if differ or set(a) != set(b):
                raise _fail(metric, rule, f"values {differ or sorted(set(a) ^ set(b))} differ "
                                          f"between two contexts seeded 5 ({kind} data)")
    yield same_seed


def _filter_checks() -> Iterator[Check]:
    yield _needs_check(FilterBase)

    @_rule("mask", "returns a keep-mask of booleans (chains, m), (mask, scores (chains, m)"
                   "[, measurements]) or Weights (chains, m)")
    def mask(fn: Any, rule: str) -> None:
        refused: list[str] = []
        kinds = _runs_on(fn, FilterBase, ("continuous", "categorical", "tokens"))
        for kind in kinds:
            source, (reference, model), arrays = _scenario(kind)
            data = arrays["synthetic"]
            ctx = CurationContext(gen=1, model=model, reference=reference,
                                  rng=np.random.default_rng(5), source=source)
            try:
                out = fn(data, ctx)
            except (ValueError, TypeError) as exc:  # a filter for other data refuses it
                refused.append(f"{kind}: {exc}")
                continue
            want = data.shape[:2]
            arrays_out = [out.log_w] if isinstance(out, Weights) else (
                list(out[:2]) if isinstance(out, tuple) else [out])
            first = np.asarray(arrays_out[0])
            if not isinstance(out, Weights) and first.dtype.kind != "b":
                raise _fail(fn, rule, f"the mask has dtype {first.dtype} on {kind} data")
            for arr in map(np.asarray, arrays_out):
                if arr.shape != want:
                    raise _fail(fn, rule, f"returned shape {arr.shape} on {kind} data; want "
                                          f"{want}")
        if kinds and len(refused) == len(kinds):
            raise _fail(fn, rule, f"it refused every kind of data: {'; '.join(refused)}")
    yield mask


KIT: dict[str, list[Check]] = {
    "family": list(_family_checks()),
    "source": list(_source_checks()),
    "policy": list(_policy_checks()),
    "metric": list(_metric_checks()),
    "filter": list(_filter_checks()),
}
