"""One registry per kind of component: model families, data sources, policies, filters, metrics.

A component is a class whose typed ``__init__`` keywords are its config fields: the
config schema is derived from the signature, so each field is declared and documented once.

A config names a component in one of three ways:

- a registered name (``gmm``): built-ins register with ``@families.register("gmm")``; heavy ones
  lazily as ``"package.module:Name"``, imported on first use;
- an import path (``my_package.models:Laplace``): imported on first use, validated like a built-in;
- a name an installed distribution declares in the entry-point group ``collapselab.components``,
  one entry per component, named ``<kind>.<name>`` with kind one of ``family``, ``source``,
  ``policy``, ``filter``, ``metric``::

      [project.entry-points."collapselab.components"]
      "family.laplace" = "collapselab_laplace.family:Laplace"

A component is checked when it is registered or first resolved, before anything calls it: it must
be a class defining what its kind's protocol asks (``PROTOCOLS``: ``fit``, ``sample``, ... for a
family), and its signature must be readable (an annotation naming a type that does not exist is an
error, never a component without parameters). ``os:system`` or ``collections:OrderedDict`` is
refused naming the rule; nothing of it is called. A name is registered once: a second class under
it is refused, naming both.

The registries fill themselves: the first lookup (``get``, ``names``, ``in``, ...) registers the
built-ins (``collapselab.components``) and the installed plugins' entry points, so no caller
imports anything for its side effects.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pydantic

from collapselab.errors import CollapselabError

if TYPE_CHECKING:
    from collapselab.curation import Filter
    from collapselab.metrics.base import Metric
    from collapselab.policies import Policy
    from collapselab.protocol import GenerativeModel
    from collapselab.sources.base import Source

T = TypeVar("T")

ENTRY_POINT_GROUP = "collapselab.components"
BUILTIN = "collapselab"  # the origin of components registered by collapselab itself
IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")

# what a component class of each kind defines: (methods, attributes); the typing.Protocols
# GenerativeModel (protocol.py), Source (sources/base.py), Policy (policies.py), Filter
# (curation.py) and Metric (metrics/base.py) ask the same (tests/test_testing_kit.py holds them
# together); their base classes supply the optional declarations' defaults
PROTOCOLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "family": (("fit", "sample", "score_samples", "score", "clone"), ()),
    "source": (("real", "fresh", "heldout"), ("kind",)),
    "policy": (("plan",), ("history",)),
    "filter": (("__call__",), ()),
    "metric": (("__call__",), ("kinds",)),
}


class UnknownNameError(KeyError):
    """A config named a component that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class ComponentError(CollapselabError, ImportError):
    """A component cannot be loaded: its import path or entry point names a module or attribute
    that cannot be imported, or something that is not a class implementing its kind's protocol, or
    its signature cannot be read. (An ``ImportError``, so listings that skip unimportable
    components skip it too.)"""


def is_import_path(name: object) -> bool:
    """``package.module:Name`` (the attribute may be dotted: ``module:Outer.Inner``)."""
    return isinstance(name, str) and IMPORT_PATH.fullmatch(name) is not None


class Registry(Generic[T]):
    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind  # "model family": how messages name it
        self.key = key  # "family": the kind in entry-point names (family.laplace)
        self._entries: dict[str, type[T] | str] = {}  # a class, or a lazy "module:Class"
        self._origins: dict[str, str] = {}  # name -> distribution that provides it

    def register(self, name: str, target: type[T] | str | None = None, *,
                 origin: str = BUILTIN) -> Any:
        """``@registry.register("gmm")`` on a class, or ``registry.register("gpt", "pkg.mod:GPT")``."""
        if ":" in name or not name:
            raise ValueError(f"{self.kind} name must be non-empty and without ':' (that marks an "
                             f"import path); got {name!r}")

        def add(obj: type[T] | str) -> type[T] | str:
            if not isinstance(obj, str):
                self.check(obj, f"{self.kind} {name!r}")
            taken = self._entries.get(name)
            # the same class again is no clash: a lazy entry's module registering it, a reload
            if taken is not None and path_of(taken) != path_of(obj):
                raise ComponentError(
                    f"{self.kind} name {name!r} is taken: {path_of(taken)} is registered under "
                    f"it; cannot register {path_of(obj)} too (choose another name)")
            self._entries[name] = obj
            self._origins.setdefault(name, origin)  # a lazy entry keeps its distribution
            return obj

        if target is not None:
            return add(target)
        return add

    def names(self, origin: str | None = None) -> list[str]:
        """Registered names (import paths are not registered); with ``origin``, only those that
        distribution provides (``"collapselab"``: the built-ins)."""
        load_components()
        return sorted(n for n in self._entries if origin is None or self._origins[n] == origin)

    def origin(self, name: str) -> str:
        """The distribution that provides ``name``: ``collapselab``, or a plugin's."""
        load_components()
        return self._origins[name]

    def __contains__(self, name: object) -> bool:
        """Registered, or an import path (whether it imports is for ``get`` to say)."""
        load_components()
        return name in self._entries or is_import_path(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> type[T]:
        """The component: registered (imported now if lazy) or loaded from an import path."""
        load_components()
        if name in self._entries:
            entry = self._entries[name]
            if isinstance(entry, str):  # lazy "module:attr"
                origin = self._origins[name]
                what = f"{self.kind} {name!r}" + (f" (from {origin})" if origin != BUILTIN else "")
                # a built-in's missing torch: a plain ImportError
                entry = self.check(_import(entry) if origin == BUILTIN else load(entry, what), what)
                self._entries[name] = entry
            return entry  # type: ignore[return-value]
        if is_import_path(name):  # not cached: a module reloaded in a notebook is seen
            what = f"{self.kind} {name!r}"
            return self.check(load(name, what), what)  # type: ignore[no-any-return]
        raise UnknownNameError(self.unknown_message(name))

    def check(self, target: Any, what: str) -> Any:
        """``target`` if it is a component of this kind: a class defining what ``PROTOCOLS``
        asks, with a readable signature; else a ``ComponentError`` naming ``what`` and the rule.
        Nothing of ``target`` is called."""
        methods, attributes = PROTOCOLS[self.key]
        rule = f"a {self.kind} is a class defining {_listed(methods + attributes)}"
        if not inspect.isclass(target):
            raise ComponentError(f"{what} is not a component: {rule}; got a "
                                 f"{type(target).__name__}")
        lacks = [n for n in methods if not _callable(_defined(target, n))]
        lacks += [n for n in attributes
                  if _defined(target, n) is _MISSING and n not in _declared(target)]
        if lacks:
            raise ComponentError(f"{what} is not a component: {rule}; got a class without "
                                 f"{_listed(lacks)}")
        check_signature(target, what)
        return target

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f" Did you mean: {close[0]}?" if close else ""
        return f"Unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.names())}"

    def params_model(self, name: str) -> type[pydantic.BaseModel]:
        """A pydantic model of the component's keyword parameters (its config fields)."""
        return params_model(self.get(name))  # type: ignore[arg-type]

    def build(self, name: str, params: dict[str, Any] | None = None) -> T:
        """Validate ``params`` against the component's signature and construct it."""
        target = self.get(name)
        fields = params_model(target).model_validate(params or {})  # type: ignore[arg-type]
        return target(**fields.model_dump())  # type: ignore[operator,no-any-return]


def _import(path: str) -> Any:
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load(path: str, what: str) -> Any:
    """Import ``package.module:Name`` (nothing of it is called: ``Registry.check`` says whether
    it is a component); any failure is a ``ComponentError`` naming ``what``."""
    try:
        return _import(path)
    except Exception as exc:  # the plugin's own import errors too: name the component
        raise ComponentError(f"cannot import {what}: {type(exc).__name__}: {exc}") from exc


_MISSING = object()


def path_of(target: Any) -> str:
    """``module:Class`` of a class, or the import path a lazy entry already is."""
    return target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"


def _callable(member: Any) -> bool:
    """A method as a class dictionary holds it: a function, a class- or static method."""
    return callable(member) or isinstance(member, (classmethod, staticmethod))


def _defined(cls: type, name: str) -> Any:
    """What the class (or a base) defines as ``name``, looked up in the class dictionaries only:
    every class has a ``__call__`` through ``type``, which does not make its instances callable."""
    return next((vars(c)[name] for c in cls.__mro__ if name in vars(c)), _MISSING)


def _declared(cls: type) -> set[str]:
    """Attributes a class declares without a class-level value: annotated, or ``__init__``
    keywords (set on the instance)."""
    names = {n for c in cls.__mro__ for n in vars(c).get("__annotations__", {})}
    try:
        return names | set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return names


def _listed(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


def check_signature(target: Any, what: str) -> None:
    """Read the typed parameters now, so a bad signature fails here, naming the component."""
    params_model(target, what)


_PARAMS: dict[Any, type[pydantic.BaseModel]] = {}  # per class or function, read once


def params_model(target: Callable[..., Any], what: str | None = None) -> type[pydantic.BaseModel]:
    """Build (and cache) a strict pydantic model from the typed keyword parameters of ``target``.
    A signature that cannot be read is a ``ComponentError``, never a model without fields."""
    if target in _PARAMS:
        return _PARAMS[target]
    what = what or repr(target)
    func = target.__init__ if inspect.isclass(target) else target  # type: ignore[misc]
    try:
        hints = _type_hints(func)
        params = inspect.signature(func).parameters
    except Exception as exc:  # unresolvable annotations, a builtin without a signature
        raise ComponentError(f"cannot read the parameters of {what}: "
                             f"{type(exc).__name__}: {exc}") from exc
    fields: dict[str, Any] = {}
    for pname, param in params.items():
        if pname in {"self", "rng"} or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.kind is param.POSITIONAL_ONLY:
            continue
        default = ... if param.default is param.empty else param.default
        fields[pname] = (hints.get(pname, Any), default)
    try:
        model = pydantic.create_model(  # type: ignore[call-overload]
            f"{target.__name__}Params",
            __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True),
            **fields,
        )
    except Exception as exc:  # a type pydantic cannot turn into a schema
        raise ComponentError(f"cannot read the parameters of {what}: {exc}") from exc
    _PARAMS[target] = model
    return model  # type: ignore[no-any-return]


def _type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    import typing

    if func is object.__init__:  # a class without its own __init__: no parameters
        return {}
    return typing.get_type_hints(func, include_extras=True)


# each holds classes implementing its protocol: get(name) -> the class, build(name) -> an instance
families: Registry[GenerativeModel] = Registry("model family", "family")
sources: Registry[Source] = Registry("data source", "source")
policies: Registry[Policy] = Registry("policy", "policy")
filters: Registry[Filter] = Registry("filter", "filter")
metrics: Registry[Metric] = Registry("metric", "metric")
REGISTRIES: dict[str, Registry[Any]] = {
    reg.key: reg for reg in (families, sources, policies, filters, metrics)}

_loaded = False


def load_components() -> None:
    """Register the built-in components (``collapselab.components``) and the installed
    distributions' entry points, once: every lookup calls it, so nobody imports for the side
    effect. Registering needs no loading (the built-in modules register while it runs)."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: the modules it imports register (and may look up) components
    try:
        importlib.import_module("collapselab.components")
    except BaseException:
        _loaded = False
        raise


def name_of(component: Any) -> str:
    """How a config names ``component`` (an instance or a class), for messages: its registered
    name, else its import path."""
    cls = component if inspect.isclass(component) else type(component)
    load_components()
    for reg in REGISTRIES.values():
        for name, entry in reg._entries.items():
            if entry is cls:
                return name
    return f"{cls.__module__}:{cls.__qualname__}"


def load_entry_points() -> None:
    """Register (lazily: nothing is imported) every component installed distributions declare in
    the ``collapselab.components`` entry-point group. A malformed entry, or one that would shadow
    a name already registered, is skipped with a warning naming its distribution."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        key, _, name = ep.name.partition(".")
        reg = REGISTRIES.get(key)
        problem = None
        if reg is not None and reg._origins.get(name) == dist:
            continue  # loaded already
        if reg is None or not name or ":" in name:
            problem = (f"its name must be <kind>.<name> with kind one of "
                       f"{', '.join(REGISTRIES)}; got {ep.name!r}")
        elif not is_import_path(ep.value):
            problem = f"its value must be package.module:Name; got {ep.value!r}"
        elif name in reg._entries and reg._entries[name] != ep.value:
            problem = f"{reg.kind} {name!r} is already provided by {reg.origin(name)}"
        if problem is not None or reg is None:
            warnings.warn(f"entry point {ep.name!r} of {dist} ignored: {problem}", stacklevel=2)
            continue
        reg.register(name, ep.value, origin=dist)
