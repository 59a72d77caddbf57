"""Decoding settings shared by the language-model families (``gpt``, ``hf``, ``ngram``).

Each control is declared once, here, as an annotated type: the families annotate their keywords of
the same names with these types (so the config schema, its description and its rule come from one
place) and build their :class:`Decoding` from those hyperparameters with :meth:`Decoding.of`. No
torch here: the n-gram family uses it too.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import pydantic

from collapselab.errors import ConfigError


def _control(rule: str, description: str, **constraints: Any) -> Any:
    """A decoding control's constraints and description (the config schema of every family that
    exposes it) and ``rule``, how an invalid value is reported."""
    return pydantic.Field(description=description, json_schema_extra={"rule": rule}, **constraints)


# Each control is declared once, here; the LM families (gpt, hf, ngram) annotate their keywords of
# the same names with these types, so the config schema and Decoding check the same rule.
Temperature = Annotated[float, _control(
    "must be a number > 0", "sampling temperature: logits are divided by it (1: the model itself)",
    gt=0, allow_inf_nan=False)]
TopK = Annotated[int, _control(
    "must be an integer >= 0 (0 = off)", "sample from the k most likely tokens; 0 = off", ge=0)]
TopP = Annotated[float, _control(
    "must be in (0, 1]", "nucleus sampling: the smallest set of most likely tokens holding this "
    "mass; 1 = off", gt=0, le=1, allow_inf_nan=False)]
RepetitionPenalty = Annotated[float, _control(
    "must be a number > 0", "CTRL penalty on tokens already in the sequence; 1 = off",
    gt=0, allow_inf_nan=False)]
NumBeams = Annotated[int, _control(
    "must be an integer >= 1", "> 1: deterministic beam search (paper: 5)", ge=1)]
DoSample = Annotated[bool, _control("must be a bool", "False with num_beams=1: greedy")]
MinNewTokens = Annotated[int, _control(
    "must be an integer >= 0", "suppress eos_id until this many new tokens", ge=0)]
EosId = Annotated[int | None, _control(
    "must be None or an integer >= 0",
    "end-of-text id (a sequence that emits it is padded with it); None: no eos", ge=0)]
BatchSize = Annotated[int, _control(
    "must be an integer >= 1", "sequences decoded together", ge=1)]


class Decoding(pydantic.BaseModel):
    """Decoding settings, validated once, together (every problem reported at once as a
    ``ConfigError``), in the spirit of Hugging Face's ``GenerationConfig``.

    ``do_sample=False`` with ``num_beams=1`` is greedy decoding; ``num_beams > 1`` is deterministic
    beam search (Shumailov et al. used 5 beams), where ``temperature``/``top_k``/``top_p`` do not apply
    and ``repetition_penalty``/``min_new_tokens`` do. A family's settings are :meth:`of` its
    hyperparameters of the same names (``batch_size`` from ``sample_batch_size``).
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", strict=True)

    temperature: Temperature = 1.0
    top_k: TopK = 0
    top_p: TopP = 1.0
    repetition_penalty: RepetitionPenalty = 1.0
    num_beams: NumBeams = 1
    do_sample: DoSample = True
    min_new_tokens: MinNewTokens = 0
    eos_id: EosId = None
    batch_size: BatchSize = 256

    def __init__(self, **values: Any) -> None:
        values = {k: v.item() if isinstance(v, np.generic) else v for k, v in values.items()}
        try:
            super().__init__(**values)
        except pydantic.ValidationError as exc:
            raise ConfigError(decoding_problems(exc)) from None

    @classmethod
    def of(cls, model: Any) -> Decoding:
        """The settings a family keeps as hyperparameters of the same names (the controls it does
        not expose keep their defaults)."""
        params = model.get_params()
        values = {k: v for k, v in params.items() if k in cls.model_fields and k != "batch_size"}
        if "sample_batch_size" in params:
            values["batch_size"] = params["sample_batch_size"]
        return cls(**values)

    def replace(self, **changes: Any) -> Decoding:
        return Decoding(**{**self.model_dump(), **changes})


def decoding_problems(exc: pydantic.ValidationError) -> list[str]:
    """``name rule; got value`` once per invalid control (the rule its type declares)."""
    out: dict[str, str] = {}
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "decoding"
        field = Decoding.model_fields.get(name)
        extra = field.json_schema_extra if field is not None else None
        rule = extra.get("rule") if isinstance(extra, dict) else None
        out.setdefault(name, f"{name} {rule}; got {err['input']!r}" if rule
                       else f"{name}: {err['msg']}; got {err['input']!r}")
    return list(out.values())
