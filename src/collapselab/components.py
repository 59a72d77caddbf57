"""Imports every light component module (they register themselves) and lists the heavy ones lazily;
describes any registered component without importing the lazy ones (``collapselab list``).

Heavy families (torch, transformers) register as ``"module:Class"`` strings so that importing
collapselab, validating a config or listing components never imports torch. The light modules
import scipy, scikit-learn and the like inside the functions that use them, for the same reason
(``tests/test_startup.py`` holds them to it).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# light modules: NumPy and pydantic at import; importing them registers their components
from collapselab import curation, policies, registry  # noqa: F401
from collapselab.metrics import (  # noqa: F401
    alarm,
    continuous,
    discrete,
    diversity,
    forgetting,
    regression,
    states,
)
from collapselab.metrics import images as image_metrics  # noqa: F401  (+ sources.images)
from collapselab.metrics import text as text_metrics  # noqa: F401
from collapselab.models import categorical, gaussian, gmm, kde, linreg, ngram  # noqa: F401
from collapselab.sources import distributions, linear, text  # noqa: F401

# heavy modules: imported on first use
registry.families.register("gpt", "collapselab.models.gpt:GPT")
registry.families.register("hf", "collapselab.models.hf:HFCausalLM")
registry.families.register("vae", "collapselab.models.vae:VAE")
registry.families.register("ddpm", "collapselab.models.ddpm:DDPM")

# components installed distributions declare (entry-point group "collapselab.components")
registry.load_entry_points()


@dataclass
class Component:
    """A registered component as ``collapselab list`` shows it."""

    key: str  # its registry: family, source, policy, filter, metric
    kind: str  # how messages name that registry: "model family", "data source", ...
    name: str
    origin: str  # the distribution that provides it: collapselab, or a plugin's
    path: str  # module:Class
    doc: str  # its docstring, cleaned ("" without one)

    @property
    def summary(self) -> str:
        return summary(self.doc)

    @property
    def text(self) -> str:
        """The docstring for a terminal: paragraphs reflowed (lists and indented blocks kept)."""
        paragraphs = self.doc.replace("``", "`").split("\n\n")
        return "\n\n".join(p if re.search(r"^\s*[-*]|^\s{2}", p, re.M) else " ".join(p.split())
                           for p in paragraphs)


def catalogue() -> list[Component]:
    """Every registered component, by registry then name. A lazy entry's docstring is read from
    its module's source, so listing imports no torch (nor a plugin's module)."""
    out = []
    for key, reg in registry.REGISTRIES.items():
        for name in reg.names():
            entry = reg._entries[name]  # the class, or the "module:Class" of a lazy entry
            path = entry if isinstance(entry, str) else f"{entry.__module__}:{entry.__qualname__}"
            out.append(Component(key, reg.kind, name, reg.origin(name), path, docstring(entry)))
    return out


def docstring(entry: Any) -> str:
    """The class's own docstring (not a base class's), cleaned; of a lazy ``"module:Class"`` entry
    read from the module's source file without importing it ("" where it cannot be read)."""
    if not isinstance(entry, str):
        return inspect.cleandoc(vars(entry).get("__doc__") or "")
    module, _, attr = entry.partition(":")
    try:
        spec = importlib.util.find_spec(module)
        source = Path(spec.origin).read_text() if spec and spec.origin else ""
    except (ImportError, OSError, ValueError):  # a missing parent package, an unreadable file
        return ""
    body: list[ast.stmt] = ast.parse(source).body if source else []
    for part in attr.split("."):  # module:Outer.Inner
        node = next((n for n in body if isinstance(n, ast.ClassDef | ast.FunctionDef)
                     and n.name == part), None)
        if node is None:
            return ""
        body = node.body
    return ast.get_docstring(node) or ""  # type: ignore[arg-type]


def summary(doc: str) -> str:
    """The one-line description: the docstring's first paragraph, joined, up to its first full
    stop before a capital letter, or a colon or semicolon outside brackets after a few words
    ("KL(model || truth): finite even after ..." whole, "Total model variance over total true
    variance: tr(Σ_t) / tr(Σ)" up to the colon); a question keeps its mark."""
    line = " ".join(doc.split("\n\n")[0].split()).replace("``", "`")
    depth = 0
    for i, ch in enumerate(line):
        depth += (ch in "([{") - (ch in ")]}")
        if depth or ch not in ".:;?!" or line[i + 1 : i + 2] not in ("", " "):
            continue
        after = line[i + 2 : i + 3]
        if ch in ".!" and after and not after.isupper():
            continue  # "e.g. `x`", "et al. 2019": not the end of the sentence
        if ch in ":;" and i < 25:
            continue  # "Importance resampling: weigh each sample ...": the name alone says little
        return line[: i + (ch == "?")]
    return line


def parameters(component: Component) -> list[tuple[str, str, str, str]]:
    """``(name, type, default, description)`` of each of the component's config fields (its typed
    ``__init__`` keywords, ``Registry.params_model``): imports the component."""
    model = registry.REGISTRIES[component.key].params_model(component.name)
    rows = []
    for name, field in model.model_fields.items():
        bounds = [f"{symbol} {getattr(rule, attr)}" for rule in field.metadata
                  for attr, symbol in BOUNDS if hasattr(rule, attr)]
        default = "required" if field.is_required() else json.dumps(field.default, default=str)
        rows.append((name, ", ".join([type_text(field.annotation), *bounds]), default,
                     field.description or ""))
    return rows


BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >="),
          ("max_length", "length <="), ("multiple_of", "multiple of"))


def type_text(tp: Any) -> str:
    """A type as a config author reads it: ``int``, ``float | None``, ``'mle' | 'unbiased'``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is typing.Annotated:
        return type_text(args[0])
    if tp is type(None):
        return "None"
    if args:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(map(type_text, args))}]"
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def data_kinds(component: Component) -> list[str]:
    """The data kinds the component accepts (its ``kinds``, or a source's ``kind``), if declared
    on the class: imports the component."""
    cls = registry.REGISTRIES[component.key].get(component.name)
    # a probe by design: listing reads any kind's class (families/metrics/filters declare
    # ``kinds``, sources ``kind``) and shows nothing where a plugin declares neither
    kinds = getattr(cls, "kinds", None) or getattr(cls, "kind", None)
    if isinstance(kinds, str):
        return [kinds]
    return sorted(kinds) if isinstance(kinds, frozenset | set | tuple | list) else []


def unknown(name: str, known: list[Component]) -> str:
    """The message for a name no registry has: the close matches, else where to look."""
    close = difflib.get_close_matches(name, sorted({c.name for c in known}), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"Unknown component {name!r}.{hint} `collapselab list` names them all."
