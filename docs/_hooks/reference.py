"""MkDocs hook: the reference pages generated from the code at build time, never copied by hand.

- ``reference/cli.md``: the typer app's commands, arguments and options (typer's own Markdown
  writer, ``typer.cli.get_docs_for_click``, the one behind ``typer ... utils docs``);
- ``reference/config.md``: every field of ``ExperimentConfig`` and its sections (pydantic);
- ``reference/components.md``: every registered family, source, policy, filter and metric with
  its config fields (``Registry.params_model``: the schema the config is validated against).
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from typing import Any

import click
import pydantic
import typer
import typer.cli
from mkdocs.structure.files import File, Files
from pydantic.fields import FieldInfo

GENERATED = ("reference/cli.md", "reference/config.md", "reference/components.md")
HEADINGS = {"family": "Model families", "source": "Data sources", "policy": "Policies",
            "filter": "Filters", "metric": "Metrics"}


def on_files(files: Files, config: Any) -> Files:
    for path, write in zip(GENERATED, (cli_page, config_page, components_page), strict=True):
        files.append(File.generated(config, path, content=write()))
    return files


# --- helpers -------------------------------------------------------------------------------------

def escape(text: str) -> str:
    """Markdown-safe prose: ``<out_dir>`` is shown, not taken for an HTML tag; ``|`` kept in
    table cells; code spans left as they are."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else
                   p.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
                   for p in parts)


def type_name(annotation: Any) -> str:
    """``int``, ``float | None``, ``'full' | 'diag'``, ``list[NamedSpec]`` ..."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    if annotation is type(None):
        return "None"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


RULES = {"ge": "≥ {}", "gt": "> {}", "le": "≤ {}", "lt": "< {}", "min_length": "length ≥ {}",
         "max_length": "length ≤ {}", "pattern": "matches `{}`"}


def rules(field: FieldInfo) -> list[str]:
    found = []
    for item in field.metadata:
        for name, text in RULES.items():
            value = getattr(item, name, None)
            if value is not None:
                found.append(text.format(value))
    return found


def default_of(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, pydantic.BaseModel):
        value = value.model_dump(mode="json")
    return f"`{value!r}`" if not isinstance(value, str) else f"`{value}`"


def fields_table(model: type[pydantic.BaseModel], prefix: str = "") -> str:
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        words = escape(field.description or "")
        extra = rules(field)
        if extra:
            words += (" " if words else "") + "(" + ", ".join(escape(e) for e in extra) + ")"
        rows.append(f"| `{prefix}{name}` | {escape(type_name(field.annotation))} | "
                    f"{escape(default_of(field))} | {words} |")
    return "\n".join(rows)


def first_paragraph(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


# --- the pages -----------------------------------------------------------------------------------

def cli_page() -> str:
    from collapselab.cli import app

    command = typer.main.get_command(app)
    text = typer.cli.get_docs_for_click(obj=command, ctx=click.Context(command),
                                        name="collapselab", title="Command line")
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            line = "```text" if line == "```console" else line
        elif not fenced:
            line = escape(line).replace("\\|", "|")
        out.append(line)
    intro = ("Generated from the typer app (`collapselab.cli:app`) when the site is built: "
             "what `collapselab COMMAND --help` prints. Every command exits 2 with one line "
             "naming the problem on bad input (`--debug` for a traceback).\n")
    head, _, rest = "\n".join(out).partition("\n")
    return f"{head}\n\n{intro}{rest}\n"


def config_page() -> str:
    from collapselab.config import schema

    parts = ["# Config fields", "",
             "Generated from the pydantic models in `collapselab.config.schema` when the site is "
             "built. A config is built from these defaults, then a YAML file, then `key=value` "
             "overrides on the command line (dotted keys: `policy.real_fraction=0.1`), and "
             "validated before anything runs. The fields of `model`, `data`, `policy`, each "
             "`curation` filter and each metric are the chosen component's: see "
             "[Components](components.md).", "",
             "## The experiment", "", fields_table(schema.ExperimentConfig)]
    seen: set[type] = {schema.ExperimentConfig}
    for name, field in schema.ExperimentConfig.model_fields.items():
        for model in models_in(field.annotation):
            if model in seen:
                continue
            seen.add(model)
            parts += ["", f"## `{name}`: {model.__name__}", "", first_paragraph(model), "",
                      fields_table(model, f"{name}.")]
    return "\n".join(parts) + "\n"


def models_in(annotation: Any) -> list[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in models_in(a)]


def components_page() -> str:
    from collapselab import components, registry  # noqa: F401  (components registers them)

    parts = ["# Components", "",
             "Generated from the registries when the site is built (`collapselab list` prints "
             "the names). Each component's config fields are its typed `__init__` keywords "
             "(`Registry.params_model`): the schema a config is validated against. Name a "
             "component in a config (`model: {family: gmm, n_components: 3}`) or by import "
             "path (`package.module:Name`, see [your own model](../tutorials/plugin.md))."]
    where = {"family": "model", "source": "data", "policy": "policy", "filter": "curation",
             "metric": "metrics"}
    for key, reg in registry.REGISTRIES.items():
        parts += ["", f"## {HEADINGS[key]}", "", f"Chosen by `{where[key]}:` in a config.", ""]
        for name in reg.names(origin=registry.BUILTIN):
            target = reg.get(name)
            parts += [f"### `{name}`", "", escape(first_paragraph(target)), ""]
            kinds = getattr(target, "kinds", None)
            if kinds:
                parts += [f"Data kinds: {', '.join(f'`{k}`' for k in sorted(kinds))}.", ""]
            model = reg.params_model(name)
            parts += [fields_table(model, "") if model.model_fields else "No config fields.", ""]
    return "\n".join(parts) + "\n"
