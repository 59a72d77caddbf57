"""Validating a config once, before anything runs: the structure (pydantic), then each
component's parameters against its typed ``__init__``, then what the parts cannot do together.
Every problem is reported at once as ``field: rule; got value``."""

from __future__ import annotations

import difflib
import math
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic import BaseModel

from collapselab import capabilities, registry
from collapselab.config.schema import (
    DataSpec,
    ExperimentConfig,
    ModelSpec,
    NamedSpec,
    PolicySpec,
    ProducerSpec,
    Spec,
)
from collapselab.errors import CollapselabError, ConfigError
from collapselab.metrics.base import MetricBase
from collapselab.policies import RealFraction
from collapselab.protocol import Model

COMPONENTS: dict[str, tuple[registry.Registry[Any], str]] = {  # section -> (registry, its key)
    "model": (registry.families, "family"),
    "data": (registry.sources, "source"),
    "policy": (registry.policies, "name"),
    "curation": (registry.filters, "name"),
    "metrics": (registry.metrics, "name"),
}
SECTION_FIELDS = {"data": {"source", "size"}}  # keys of a section that are not component params


def validate(raw: dict[str, Any]) -> ExperimentConfig:
    """Check everything, report every problem at once, and return the resolved config."""
    problems = _non_finite(raw)  # NaN / inf anywhere: said once, not again by each field's rule
    said = {p.partition(":")[0] for p in problems}
    try:
        cfg: ExperimentConfig | None = ExperimentConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems += [_describe(err) for err in exc.errors()]
        cfg = None
    if cfg is not None:
        problems += _bools_as_numbers(raw, cfg.model_dump(), "")
    resolved, more = _check_components(raw)
    problems += more + _check_mix(raw)
    problems = [p for i, p in enumerate(problems) if i < len(said) or p.partition(":")[0] not in said]
    if problems or cfg is None:
        raise ConfigError(problems)
    cfg = cfg.model_copy(update=resolved)
    problems = _check_setup(cfg)  # what the parts, each valid, cannot do together
    if problems:
        raise ConfigError(problems)
    return cfg


def _non_finite(raw: Any, where: str = "") -> list[str]:
    """``field: must be a finite number; got nan`` for every NaN or infinity in ``raw``."""
    if isinstance(raw, float) and not math.isfinite(raw):
        return [f"{where or 'config'}: must be a finite number; got {raw!r}"]
    if isinstance(raw, dict):
        return [p for k, v in raw.items() for p in _non_finite(v, f"{where}.{k}" if where else str(k))]
    if isinstance(raw, list):
        return [p for i, v in enumerate(raw) for p in _non_finite(v, f"{where}[{i}]")]
    return []


def _bools_as_numbers(raw: Any, checked: Any, where: str) -> list[str]:
    """pydantic reads ``true`` as 1 for an int field; a config that says ``generations: true``
    means something else, so a boolean given for a number is an error."""
    if isinstance(raw, bool):
        return [] if isinstance(checked, bool) or checked is None else [
            f"{where}: must be a number, not a boolean; got {raw!r}"]
    if isinstance(raw, dict) and isinstance(checked, dict):
        return [p for k, v in raw.items() if k in checked
                for p in _bools_as_numbers(v, checked[k], f"{where}.{k}" if where else str(k))]
    return []


@dataclass(frozen=True)
class Setup:
    """What a family's ``check_setup(params, setup) -> list[str]`` sees: the built data source and
    the sizes it will train on. It returns problems as ``field: rule; got value``, naming its own
    fields under ``where`` (``model`` or ``producers[i].model``)."""

    where: str
    source: Any
    data_size: int  # real samples (blocks) per chain in generation 0
    synthetic_size: int | None  # samples per chain a later generation trains on; None: data.size
    chains: int
    watermark: Any = None  # the config's watermark: section (None: none)

    @property
    def block_len(self) -> int | None:
        """Tokens per block of a token source (``data.block_len``); ``None`` for other data."""
        return capabilities.block_len(self.source)

    def prompt_problems(self, prompt_tokens: int) -> list[str]:
        """The LM families' rule: a sampled block continues its prompt by at least one token."""
        t = self.block_len
        return [] if t is None or prompt_tokens < t else [
            f"{self.where}.prompt_tokens: must be < data.block_len={t} (a sampled block "
            f"continues its prompt by at least one token); got {prompt_tokens}"]

    def too_few(self, need: int, why: str) -> list[str]:
        """``data.size`` / ``synthetic_size`` problems when a chain would train on fewer than
        ``need`` samples (``why``: what the family estimates from them)."""
        sizes = [("data.size", self.data_size), ("synthetic_size", self.synthetic_size)]
        return [f"{field}: {why}, so it needs at least {need} samples per chain; got {n}"
                for field, n in sizes if n is not None and n < need]


def _check_setup(cfg: ExperimentConfig) -> list[str]:
    """Rules across sections that only the built parts can answer: a family's limits on the data
    (block lengths, image sizes, minimum sample sizes), device availability, a watermark on data
    without tokens. A source that cannot be built is reported by the loop, naming its file."""
    try:
        source = registry.sources.build(cfg.data.source, cfg.data.params)
    except CollapselabError:
        source = None  # a missing or broken file: the source says so when the run builds it
    problems = []
    kind = (source if source is not None else registry.sources.get(cfg.data.source)).kind
    if cfg.watermark is not None and kind != "tokens":
        problems.append(f"watermark: needs token data (it biases the LM families' sampling); "
                        f"data.source {cfg.data.source!r} gives {kind} data; got "
                        f"{cfg.watermark.model_dump(exclude_unset=True)}")
    policy = registry.policies.build(cfg.policy.name, cfg.policy.params)
    if isinstance(policy, RealFraction) and 0 < policy.real_fraction < 1:
        k_real, k_synth = policy.split(cfg.data.size)
        if not (k_real and k_synth):  # the fraction rounds one part away: another policy
            problems.append(
                f"policy.real_fraction: {policy.real_fraction:g} of data.size {cfg.data.size} is "
                f"{k_real} real and {k_synth} synthetic rows a generation, so the run would train "
                f"on {'synthetic' if k_synth else 'real'} data only; use a larger data.size or "
                f"another real_fraction; got {policy.real_fraction:g}")
    models = ([(f"producers[{i}].model", p.model) for i, p in enumerate(cfg.producers)]
              if cfg.producers else [("model", cfg.model)])
    for where, spec in models:
        params = spec.params
        if params.get("device") == "cuda" and not _cuda_available():
            problems.append(f"{where}.device: 'cuda' but CUDA is not available on this machine; "
                            f"use 'auto' or 'cpu'; got 'cuda'")
        hook = capabilities.declared(registry.families.get(spec.family), "check_setup", Model)
        if source is not None:
            problems += hook(params, Setup(where, source, cfg.data.size, cfg.synthetic_size,
                                           cfg.chains, cfg.watermark))
    return problems


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _check_components(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    resolved: dict[str, Any] = {}
    defaults = ExperimentConfig()
    source = None  # the source's class, once the data section checks out
    for section, (reg, key) in COMPONENTS.items():
        value = raw.get(section, getattr(defaults, section))
        if section == "metrics" and value is None:
            continue  # filled from the source kind below
        if isinstance(value, BaseModel):
            value = value.model_dump()
        listed = section in ("curation", "metrics")
        items = value if listed else [value]
        if not isinstance(items, list):
            continue  # structural validation already reported it
        out = []
        for i, spec in enumerate(items):
            where = f"{section}[{i}]" if listed else section
            if isinstance(spec, str):
                spec = {key: spec}
            if not isinstance(spec, dict):
                continue
            spec = {key: getattr(defaults, section).model_dump()[key], **spec} if not listed else spec
            checked, issues = _check_one(reg, where, key, spec, SECTION_FIELDS.get(section, set()))
            problems += issues
            if checked is not None:
                out.append(checked)
                if section == "data":
                    source = reg.get(checked[key])
        if len(out) == len(items):
            try:
                resolved[section] = ([NamedSpec(**s) for s in out] if listed
                                     else _spec_type(section)(**out[0]))
            except pydantic.ValidationError:
                pass  # e.g. data.size=0: the structural validation has reported it
    producers = raw.get("producers")
    if isinstance(producers, list) and all(isinstance(p, dict) for p in producers):
        models: list[dict[str, Any]] = []  # each producer, its model checked
        for i, p in enumerate(producers):
            spec = p.get("model")
            if isinstance(spec, dict):
                spec = {"family": defaults.model.family, **spec}
                one, issues = _check_one(registry.families, f"producers[{i}].model", "family",
                                         spec, set())
                problems += issues
                models.append({**p, "model": one})
        if len(models) == len(producers) and all(c["model"] for c in models):
            try:
                resolved["producers"] = [ProducerSpec(name=c["name"], model=ModelSpec(**c["model"]),
                                                      trains_on=c.get("trains_on"))
                                         for c in models]
            except (pydantic.ValidationError, KeyError):
                pass  # the structural validation has reported it
    if source is not None:
        problems += _check_kinds(raw, resolved, source)
        if raw.get("metrics") is None:
            # built-ins only: installing a plugin must not change what an existing config measures
            families = _families(raw, resolved)
            resolved["metrics"] = [NamedSpec(name=n) for n in registry.metrics.names(registry.BUILTIN)
                                   if _why_not(registry.metrics.get(n), source, families) is None
                                   and _by_default(registry.metrics.get(n), source.kind)]
    return resolved, problems


def _by_default(metric: Any, kind: str) -> bool:
    """Whether a config that lists no metrics gets ``metric`` on ``kind`` data: a metric that
    costs seconds a generation declares ``default_kinds``, the kinds it is a default on (empty:
    none; absent: all it accepts)."""
    kinds = capabilities.declared(metric, "default_kinds", MetricBase)
    return kinds is None or kind in kinds


def _check_mix(raw: dict[str, Any]) -> list[str]:
    """Producers' names are unique; each ``trains_on`` names producers and sums to 1."""
    producers = raw.get("producers")
    if not isinstance(producers, list) or not all(isinstance(p, dict) for p in producers):
        return []
    names = [p.get("name") for p in producers]
    problems = []
    if len(set(map(str, names))) < len(names):
        problems.append(f"producers: names must be unique; got {names}")
    for i, p in enumerate(producers):
        mix = p.get("trains_on") or {}
        if not isinstance(mix, dict):
            continue
        unknown = sorted(set(mix) - set(names))
        if unknown:
            problems.append(f"producers[{i}].trains_on: unknown producer(s) {unknown}; "
                            f"producers: {names}")
        total = sum(v for v in mix.values() if isinstance(v, (int, float)))
        if mix and abs(total - 1) > 1e-9:
            problems.append(f"producers[{i}].trains_on: shares must sum to 1; got {total:g}")
    return problems


def _spec_type(section: str) -> type[Spec]:
    types: dict[str, type[Spec]] = {"model": ModelSpec, "data": DataSpec, "policy": PolicySpec}
    return types[section]


def _check_one(
    reg: registry.Registry[Any], where: str, key: str, spec: dict[str, Any], own: set[str]
) -> tuple[dict[str, Any] | None, list[str]]:
    name = spec.get(key)
    if not isinstance(name, str):
        return None, [f"{where}.{key}: must name a registered {reg.kind}; got {name!r}"]
    if name not in reg:
        return None, [f"{where}.{key}: {reg.unknown_message(name)}"]
    params = {k: v for k, v in spec.items() if k != key and k not in own}
    try:
        target = reg.get(name)
        fields = registry.params_model(target).model_validate(params)
    except pydantic.ValidationError as exc:
        return None, [_describe(err, prefix=where, target=reg.get(name), own=own)
                      + _elsewhere(reg, name, err) for err in exc.errors()]
    except registry.ComponentError as exc:  # an import path or plugin that does not load
        return None, [f"{where}.{key}: {exc}"]
    except ImportError as exc:
        return None, [f"{where}.{key}: {name!r} needs an optional dependency: {exc}"]
    values = fields.model_dump()
    bools = _bools_as_numbers(params, values, where)
    if bools:
        return None, bools
    try:  # the component's own checks: cross-field rules, a missing file (constructors are cheap;
        target(**values)  # sources load their data later, on first use)
    except ConfigError as exc:  # the component names its own fields
        return None, [f"{where}.{p}" for p in exc.problems]
    except (ValueError, TypeError) as exc:
        return None, [f"{where}: {exc}"]
    return {key: name, **{k: spec[k] for k in own if k in spec}, **values}, []


def _why_not(component: Any, source: Any, families: list[Any] | None = None) -> str | None:
    """Why a metric cannot measure runs on ``source`` (a class) with the model ``families``
    (classes), or ``None`` if it can: the kind of data, and the capabilities it ``needs``."""
    if source.kind not in component.kinds:
        return f"does not apply to {source.kind} data"
    return _unmet(component, source, families or [])


def _unmet(component: Any, source: Any, families: list[Any]) -> str | None:
    """The first capability in a metric's or filter's ``needs`` (``collapselab.capabilities``
    Protocols) that the source or a model family lacks, said with what it is, or ``None``."""
    for cap in capabilities.declared(component, "needs", MetricBase):  # a filter's: the same
        if not isinstance(cap, type):
            return (f"declares needs={cap!r}; each need must be a capability Protocol from "
                    f"collapselab.capabilities (e.g. HasTrueDensity, ScoresTokens)")
        targets = [source] if cap in capabilities.OF_SOURCE else families
        for target in targets:
            if not capabilities.provides(target, cap):
                owner = "source" if cap in capabilities.OF_SOURCE else "model family"
                return (f"needs a {owner} with capability {capabilities.describe(cap)}, which "
                        f"{target.__name__} lacks")
    return None


def _families(raw: dict[str, Any], resolved: dict[str, Any]) -> list[Any]:
    """The classes of the model families the config trains (every producer's), where they load."""
    specs = ([p.model for p in resolved.get("producers") or []] if raw.get("producers")
             else [resolved["model"]] if resolved.get("model") is not None else [])
    out = []
    for spec in specs:
        try:
            out.append(registry.families.get(spec.family))
        except (KeyError, ImportError):
            continue  # reported where the model section is checked
    return out


def _check_kinds(raw: dict[str, Any], resolved: dict[str, Any], source: Any) -> list[str]:
    kind = source.kind
    problems = []
    producers = resolved.get("producers") or []
    models = ([(f"producers[{i}].model", p.model) for i, p in enumerate(producers)]
              if raw.get("producers") else [("model", resolved.get("model"))])
    for where, model in models:
        if model is None:
            continue
        kinds = capabilities.declared(registry.families.get(model.family), "kinds", Model)
        if kinds is not None and kind not in kinds:
            problems.append(f"{where}.family: {model.family!r} cannot model {kind} data; "
                            f"families for {kind}: {', '.join(_accepting(registry.families, kind))}")
    families = _families(raw, resolved)
    for i, spec in enumerate(resolved.get("curation", [])):
        why = _unmet(registry.filters.get(spec.name), source, families)
        if why is not None:
            problems.append(f"curation[{i}]: {spec.name!r} {why}")
    if raw.get("metrics") is not None:
        for i, spec in enumerate(resolved.get("metrics", [])):
            why = _why_not(registry.metrics.get(spec.name), source, families)
            if why is not None:
                fits = [n for n in registry.metrics.names()
                        if _why_not(registry.metrics.get(n), source, families) is None]
                problems.append(f"metrics[{i}]: {spec.name!r} {why}; "
                                f"metrics for {source.__name__}: {', '.join(fits)}")
    return problems


def _elsewhere(reg: registry.Registry[Any], name: str, err: Any) -> str:
    """For a field unknown to ``name``: the other components that take it (``real_fraction``
    under ``policy: replace`` is a parameter of the real_fraction policy)."""
    if err["type"] != "extra_forbidden":
        return ""
    field, others = str(err["loc"][-1]), []
    for other in reg.names():
        try:
            if other != name and field in registry.params_model(reg.get(other)).model_fields:
                others.append(other)
        except (ImportError, registry.ComponentError):
            continue
    return f" ({field} is a parameter of {reg.kind} {', '.join(others)})" if others else ""


def _accepting(reg: registry.Registry[Any], kind: str) -> list[str]:
    out = []
    for n in reg.names():
        try:
            kinds = capabilities.declared(reg.get(n), "kinds", Model)
        except ImportError:
            continue
        if kinds is None or kind in kinds:
            out.append(n)
    return out


def _describe(err: Any, prefix: str = "", target: Any = None,
              own: AbstractSet[str] = frozenset()) -> str:
    """One problem as a line; ``own``: the section's own fields beside the component's
    (``data.size`` beside a source's parameters), offered for an unknown field too."""
    parts = [p for p in err["loc"]  # a union's branch ("literal['a']", "constrained-int") is no field
             if not (isinstance(p, str) and p.startswith(("literal[", "constrained-", "function-")))]
    loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in parts).replace(".[", "[")
    loc = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        field = str(err["loc"][-1])
        known = list(ExperimentConfig.model_fields) if target is None and not prefix else [
            *sorted(own), *registry.params_model(target).model_fields] if target is not None else []
        close = difflib.get_close_matches(field, known, n=1)
        hint = f" Did you mean: {close[0]}?" if close else ""
        return f"{loc}: unknown field.{hint} Allowed: {', '.join(known) or '(none)'}"
    if kind == "missing":
        return f"{loc}: required field is missing"
    if isinstance(err.get("input"), bool) and kind.startswith(("int", "float", "greater", "less")):
        return f"{loc}: must be a number, not a boolean; got {err['input']!r}"
    return f"{loc}: {err['msg']}; got {err['input']!r}"
