"""Reading a config: YAML read strictly (duplicate keys, runaway aliases and oversized files are
refused; ``1e10`` is a float) and ``key.sub=value`` overrides."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from collapselab.errors import ConfigError

MAX_CONFIG_BYTES = 1_000_000  # a config is a page of text; anything larger is not one
MAX_YAML_NODES = 100_000  # values a document may expand to once anchors/aliases are followed
_FLOAT_1_2 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class RefusedYAML(yaml.YAMLError):
    """Well-formed YAML that a config must not hold (a duplicate key, runaway aliases)."""


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys, bounds what anchors and aliases expand to
    (a 400-byte "billion laughs" must not become a billion values) and reads ``1e10`` as a float
    (YAML 1.2; YAML 1.1 reads it as a string)."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node)
        if size > MAX_YAML_NODES:
            raise RefusedYAML(f"anchors and aliases expand to more than {MAX_YAML_NODES:,} "
                                 "values (a 'billion laughs'?); a config needs far fewer")
        return self.construct_document(node)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:
                    continue  # an unhashable key: construct_mapping reports it
                if first != key_node.start_mark.line + 1:
                    raise RefusedYAML(f"duplicate key {key!r} on line "
                                      f"{key_node.start_mark.line + 1} (first on line {first})")
        return super().construct_mapping(node, deep)


StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789"))


def _expanded_size(root: Any) -> int:
    """How many values ``root`` holds with every alias expanded (capped past the limit)."""
    sizes: dict[int, int] = {}
    stack = [(root, False)]
    while stack:  # post-order without recursion: deep nesting must not overflow the stack
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children = ([c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        if done:
            sizes[id(node)] = min(1 + sum(sizes.get(id(c), MAX_YAML_NODES + 1) for c in children),
                                  MAX_YAML_NODES + 1)
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def parse_yaml(text: str, where: str, *, not_yaml_as_text: bool = False) -> Any:
    """``text`` read with :class:`StrictLoader`; any problem is a ``ConfigError`` naming ``where``
    (with ``not_yaml_as_text``, text that does not parse is returned as the string itself)."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        if not_yaml_as_text and not isinstance(exc, RefusedYAML):
            return text
        raise ConfigError([f"{where}: {exc}" if isinstance(exc, RefusedYAML)
                           else f"{where} is not valid YAML: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{where} is nested too deeply to be a config"]) from None



def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping a config file holds, read strictly (see :class:`StrictLoader`)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError([f"config file {str(p)!r} does not exist"])
    size = p.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError([f"config file {str(p)!r} is {size:,} bytes; a config is at most "
                           f"{MAX_CONFIG_BYTES:,}"])
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"config file {str(p)!r} is not valid YAML: not UTF-8 text ({exc})"]) from None
    data = parse_yaml(text, f"config file {str(p)!r}")
    if data is None:
        raise ConfigError([f"config file {str(p)!r} is empty; write the experiment's fields "
                           "(e.g. name: ..., model: ..., data: ...) or start from a shipped config"])
    if not isinstance(data, dict):
        raise ConfigError([f"config file {str(p)!r} must hold a mapping; got {type(data).__name__}"])
    return data


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in ``raw``; the value is parsed as YAML (``0.1``, ``[w2, kl]``, ``null``)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError([f"override {item!r} must look like key=value (e.g. policy.real_fraction=0.1)"])
    value = parse_yaml(text, f"override {item!r}", not_yaml_as_text=True)  # name=a:b stays text
    node = raw
    parts = key.strip().split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError([f"override {item!r}: {where} is not a section; got {child!r}"])
        node = child
    node[parts[-1]] = value
