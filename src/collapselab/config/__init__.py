"""Experiment configuration: typed, layered (defaults < YAML file < ``key=value`` overrides) and
validated once, before anything runs. Every problem is reported at once as
``field: rule; got value``.

Component sections (``model``, ``data``, ``policy``, ``curation[i]``, ``metrics[i]``) name a
registered component (``family``, ``source``, ``name``) and carry its parameters beside that name;
the parameters are checked against the component's typed ``__init__`` signature, and the resolved
config (all defaults filled in) is what the run directory records.
"""

from pathlib import Path
from typing import Any

from collapselab.config.reading import (
    MAX_CONFIG_BYTES,
    MAX_YAML_NODES,
    RefusedYAML,
    StrictLoader,
    apply_override,
    parse_yaml,
    read_yaml,
)
from collapselab.config.schema import (
    DataSpec,
    ExperimentConfig,
    ModelSpec,
    NamedSpec,
    PolicySpec,
    ProducerSpec,
    Spec,
    TrackingSpec,
)
from collapselab.config.validation import COMPONENTS, SECTION_FIELDS, Setup, validate
from collapselab.errors import ConfigError

__all__ = [
    "COMPONENTS", "MAX_CONFIG_BYTES", "MAX_YAML_NODES", "SECTION_FIELDS", "ConfigError",
    "DataSpec", "ExperimentConfig", "ModelSpec", "NamedSpec", "PolicySpec", "ProducerSpec",
    "RefusedYAML", "Setup", "Spec", "StrictLoader", "TrackingSpec", "apply_override",
    "load_config", "parse_yaml", "read_yaml", "validate",
]


def load_config(path: str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Defaults, then the YAML file at ``path``, then ``key.sub=value`` overrides; validated."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(path)
    for item in overrides:
        apply_override(raw, item)
    return validate(raw)
