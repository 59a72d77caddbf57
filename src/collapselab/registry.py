"""One registry per kind of component: model families, data sources, policies, filters, metrics.

A component is a class (or function) whose typed ``__init__`` keywords are its config fields: the
config schema is derived from the signature, so each field is declared and documented once.
Heavy components register lazily as ``"package.module:Name"`` and are imported on first use.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import pydantic

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A config named a component that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, target: T | str | None = None) -> Any:
        """``@registry.register("gmm")`` on a class, or ``registry.register("gpt", "pkg.mod:GPT")``."""
        if target is not None:
            self._entries[name] = target
            return target

        def decorator(obj: T) -> T:
            self._entries[name] = obj
            return obj

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        entry = self._entries[name]
        if isinstance(entry, str):  # lazy "module:attr"
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

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


def params_model(target: Callable[..., Any]) -> type[pydantic.BaseModel]:
    """Build (and cache) a strict pydantic model from the typed keyword parameters of ``target``."""
    cached = getattr(target, "__collapselab_params__", None)
    if cached is not None and cached[0] is target:
        return cached[1]  # type: ignore[no-any-return]
    func = target.__init__ if inspect.isclass(target) else target  # type: ignore[misc]
    hints = _type_hints(func)
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(func).parameters.items():
        if pname in {"self", "rng"} or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.kind is param.POSITIONAL_ONLY:
            continue
        default = ... if param.default is param.empty else param.default
        fields[pname] = (hints.get(pname, Any), default)
    model = pydantic.create_model(  # type: ignore[call-overload]
        f"{getattr(target, '__name__', 'Component')}Params",
        __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True),
        **fields,
    )
    try:
        target.__collapselab_params__ = (target, model)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass
    return model  # type: ignore[no-any-return]


def _type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception:  # unresolvable forward refs: fall back to untyped
        return {}


families: Registry[Any] = Registry("model family")
sources: Registry[Any] = Registry("data source")
policies: Registry[Any] = Registry("policy")
filters: Registry[Any] = Registry("filter")
metrics: Registry[Any] = Registry("metric")
