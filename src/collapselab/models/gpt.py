"""A small decoder-only transformer (nanoGPT-like), the ``gpt`` family.

Token + learned position embeddings, pre-LayerNorm blocks with ``F.scaled_dot_product_attention``,
embeddings tied to the output layer, no dropout by default. Data are int token blocks
``(chains, n_blocks, block_len)``; each chain is an independent replicate with its own network.

Every block is read as ``[BOS] + block``: the embedding table has one extra row, ``BOS = vocab_size``,
that is never predicted. So the network learns the first token too and can write a block from nothing
(``prompt_tokens=0``) or continue the first ``k`` tokens of a random training block, the paper's
protocol (Shumailov et al. 2024: 64-token blocks, OPT-125m fine-tuned from one base each generation,
5-way beam search). ``init_from`` points at such a base, written once by :func:`pretrain_base` on a
separate slice of the corpus.

The training loss multiplies by the tied output layer and takes the cross-entropy in row chunks
(:class:`LinearCrossEntropy`), so a batch's ``(tokens, vocab)`` logits are never held; decoding
multiplies by a transposed copy of that layer kept in the KV cache.

Training, scoring and decoding are the torch LM base's (:mod:`collapselab.models.torch_lm`, shared with
``hf``); this module holds the network, its KV cache, its initialisation and its checkpoints.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from collapselab.errors import ConfigError, DataError
from collapselab.models import decoding, distributed, sampling
from collapselab.models.distributed import DistributedOption
from collapselab.models.torch_lm import Device, NeonOption, TorchLM, Training, resolve_device

CHECKPOINT_FORMAT = "collapselab.gpt/1"
LOSS_CHUNK = 2**23  # logits per chunk of the training loss (32 MB; 524 rows of a 16k vocabulary)

# ---------------------------------------------------------------- the network


class LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of the logits ``x @ w.T`` against ``targets``, ``rows`` rows at a time, so
    the ``(N, vocab)`` logits are never held: at batch 32 x 128 and vocab 16k they are 262 MB, and
    ``F.cross_entropy`` adds their log-softmax, its gradient and the logits' gradient, ~1 GB of fresh
    pages a step, each streamed through memory. Here each chunk's gradient (``softmax - onehot``, one
    ``exp`` pass in place) becomes those of ``x`` and ``w`` in the forward pass; the backward pass
    scales them by the incoming gradient. The same three matmuls as the plain loss."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, targets: torch.Tensor,
                rows: int) -> torch.Tensor:  # fmt: skip
        n = x.shape[0]
        grads = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        gx = torch.empty_like(x) if grads else None
        gw = torch.zeros_like(w) if grads else None
        buf = x.new_empty(min(rows, n), w.shape[0])
        total = x.new_zeros(())
        for s in range(0, n, rows):
            xc, t = x[s : s + rows], targets[s : s + rows, None]
            logits = torch.mm(xc, w.t(), out=buf[: len(xc)])
            picked = logits.gather(1, t)
            top = logits.amax(dim=1, keepdim=True)
            exp = logits.sub_(top).exp_()  # in place: one pass, one exp
            norm = exp.sum(dim=1, keepdim=True)
            total += (norm.log() + top - picked).sum()  # logsumexp - target logit
            if grads:
                probs = exp.div_(norm)  # d loss_i / d logits_i = softmax - onehot
                probs.scatter_add_(1, t, probs.new_full(t.shape, -1.0))
                torch.mm(probs, w, out=gx[s : s + rows])  # type: ignore[index]
                gw.addmm_(probs.t(), xc)  # type: ignore[union-attr]
        ctx.save_for_backward(gx, gw)
        ctx.n = n
        return total / n

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        gx, gw = ctx.saved_tensors
        scale = grad / ctx.n
        return gx * scale, gw * scale, None, None


class KVCache:
    """What decoding keeps between tokens: static key/value buffers ``(n_layer, B, H, max_len,
    head_dim)`` filled up to ``pos``, and the output layer transposed, ``(d_model, vocab)``: decoding
    multiplies a few rows by it every token, which MKL does ~1.4x faster with this layout than with the
    ``(vocab, d_model)`` embedding (one 16 MB copy per call at vocab 16k, against one a token saved)."""

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int,
                 head: torch.Tensor) -> None:  # fmt: skip
        shape = (n_layer, batch, n_head, max_len, head_dim)
        self.k = head.new_empty(shape)
        self.v = head.new_empty(shape)
        self.head = head.t().contiguous()
        self.pos = 0

    def reorder_cache(self, index: torch.Tensor) -> KVCache:
        """Keep batch rows ``index`` (beam search; more rows than before spread a prompt over its
        beams); only the filled positions are copied."""
        filled = slice(0, self.pos)
        k, v = self.k, self.v
        if len(index) != k.shape[1]:
            self.k = k.new_empty((k.shape[0], len(index), *k.shape[2:]))
            self.v = v.new_empty(self.k.shape)
        self.k[:, :, :, filled] = k[:, index, :, filled]
        self.v[:, :, :, filled] = v[:, index, :, filled]
        return self


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.fc_out = nn.Linear(4 * d_model, d_model)
        self.dropout = dropout

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        b, t, d = x.shape
        h = self.n_head
        q, k, v = (
            self.qkv(self.ln1(x)).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        )  # (B,H,t,hd)
        mask = None
        causal = True
        if cache is not None:
            pos = cache.pos
            cache.k[layer, :, :, pos : pos + t] = k
            cache.v[layer, :, :, pos : pos + t] = v
            k = cache.k[layer, :, :, : pos + t]
            v = cache.v[layer, :, :, : pos + t]
            if t == 1:  # one new query sees every cached key
                causal = False
            elif pos > 0:  # several new queries after a prefix: bottom-right causal mask
                mask = torch.ones(t, pos + t, dtype=torch.bool, device=x.device).tril(pos)
                causal = False
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=p)
        y = self.proj(y.transpose(1, 2).reshape(b, t, d))
        if p:
            y = F.dropout(y, p, training=True)
        x = x + y
        y = self.fc_out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        if p:
            y = F.dropout(y, p, training=True)
        return x + y


class GPTNet(nn.Module):
    """The transformer. ``vocab_size + 1`` embedding rows (the last is BOS); ``vocab_size`` logits."""

    def __init__(self, vocab_size: int, context_len: int, n_layer: int, n_head: int, d_model: int,
                 dropout: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        self.vocab_size, self.context_len = vocab_size, context_len
        self.n_layer, self.n_head, self.d_model = n_layer, n_head, d_model
        self.wte = nn.Embedding(vocab_size + 1, d_model)
        self.wpe = nn.Embedding(context_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.dropout = dropout

    def init_weights(self, gen: torch.Generator) -> None:
        """GPT-2 initialisation from ``gen``: N(0, 0.02), residual projections scaled by
        1/sqrt(2 n_layer), zero biases, unit LayerNorms."""
        resid_std = 0.02 / math.sqrt(2 * self.n_layer)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif ".ln" in name or name.startswith("ln_"):
                    p.fill_(1.0)
                else:
                    std = resid_std if name.endswith(("proj.weight", "fc_out.weight")) else 0.02
                    nn.init.normal_(p, 0.0, std, generator=gen)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False,
                targets: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """``idx`` (B, t) -> logits (B, t, vocab) (or (B, 1, vocab) with ``last_only``); with
        ``targets`` (B, t), the mean next-token cross-entropy instead (by :class:`LinearCrossEntropy`:
        the logits are never held)."""
        t = idx.shape[1]
        start = cache.pos if cache is not None else 0
        if start + t > self.context_len:
            raise ValueError(
                f"sequence of {start + t} positions exceeds context_len={self.context_len}"
            )
        pos = torch.arange(start, start + t, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        if self.dropout and self.training:
            x = F.dropout(x, self.dropout, training=True)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.pos += t
        if last_only:
            x = x[:, -1:]
        x = self.ln_f(x)
        if cache is not None:  # decoding: the output layer as the cache holds it
            return x @ cache.head
        head = self.wte.weight[: self.vocab_size]  # tied embeddings, BOS never predicted
        if targets is not None:
            rows = max(1, LOSS_CHUNK // self.vocab_size)
            return LinearCrossEntropy.apply(x.flatten(0, 1), head, targets.flatten(), rows)  # type: ignore[no-any-return]
        return F.linear(x, head)

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        hd = self.d_model // self.n_head
        return KVCache(self.n_layer, batch, self.n_head, max_len or self.context_len, hd,
                       self.wte.weight[: self.vocab_size].detach())  # fmt: skip


def make_step(net: GPTNet, *, use_cache: bool = True) -> sampling.StepFn:
    """A :mod:`sampling` step function for ``net``. Without the cache every step recomputes the whole
    sequence (the cache is then the sequence so far): slow, for checking the cache."""
    if use_cache:

        def step(ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
            if cache is None:
                cache = net.new_cache(ids.shape[0])
            return net(ids, cache, last_only=True)[:, -1], cache

        return step

    def full_step(ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        seq = ids if cache is None else torch.cat([cache, ids], dim=1)
        return net(seq, last_only=True)[:, -1], seq

    return full_step


# ---------------------------------------------------------------- the family


class GPT(TorchLM):
    """A nanoGPT-like language model over int token blocks; one network per chain."""

    def __init__(
        self,
        *,
        n_layer: Annotated[int, pydantic.Field(ge=1, description="transformer blocks")] = 4,
        n_head: Annotated[int, pydantic.Field(ge=1, description="attention heads; divides d_model")] = 4,
        d_model: Annotated[int, pydantic.Field(ge=1, description="embedding width")] = 256,
        vocab_size: Annotated[
            int | None, pydantic.Field(ge=1, description="token ids are < vocab_size; None: the loop fills it from the source (else max id + 1)")
        ] = None,
        context_len: Annotated[
            int | None, pydantic.Field(ge=1, description="positions the model can see; None: the training block length")
        ] = None,
        dropout: Annotated[float, pydantic.Field(ge=0, lt=1, description="dropout rate in training")] = 0.0,
        epochs: Annotated[int, pydantic.Field(ge=1, description="passes over the training blocks")] = 1,
        batch_size: Annotated[int, pydantic.Field(ge=1, description="training blocks per step")] = 32,
        lr: Annotated[float, pydantic.Field(gt=0, description="peak AdamW learning rate")] = 3e-4,
        weight_decay: Annotated[float, pydantic.Field(ge=0, description="AdamW decay on matrices")] = 0.1,
        lr_schedule: Annotated[
            Literal["cosine", "constant"], pydantic.Field(description="cosine: 5% linear warmup, decay to lr/10")
        ] = "cosine",
        grad_clip: Annotated[float, pydantic.Field(ge=0, description="max gradient norm; 0 = off")] = 1.0,
        device: Annotated[Device, pydantic.Field(description="where to train and sample")] = "auto",
        init_from: Annotated[
            str | None, pydantic.Field(description="base checkpoint (pretrain_base) every generation fine-tunes from; None: random init")
        ] = None,
        prompt_tokens: Annotated[
            int, pydantic.Field(ge=0, description="sampled blocks start with the first k tokens of a random training block; 0: from BOS")
        ] = 0,
        neon: NeonOption = None,
        distributed: DistributedOption = None,
        # decoding: one control each, declared once in collapselab.models.decoding
        temperature: decoding.Temperature = 1.0, top_k: decoding.TopK = 0, top_p: decoding.TopP = 1.0,
        repetition_penalty: decoding.RepetitionPenalty = 1.0, num_beams: decoding.NumBeams = 1,
        do_sample: decoding.DoSample = True, min_new_tokens: decoding.MinNewTokens = 0,
        eos_id: decoding.EosId = None, sample_batch_size: decoding.BatchSize = 256,
    ) -> None:  # fmt: skip
        self.n_layer, self.n_head, self.d_model, self.dropout = n_layer, n_head, d_model, dropout
        self.vocab_size, self.context_len, self.init_from = vocab_size, context_len, init_from
        self.epochs, self.batch_size, self.lr, self.lr_schedule = epochs, batch_size, lr, lr_schedule
        self.weight_decay, self.grad_clip = weight_decay, grad_clip
        self.device, self.prompt_tokens, self.neon = device, prompt_tokens, neon
        self.distributed = distributed
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.repetition_penalty, self.num_beams, self.do_sample = repetition_penalty, num_beams, do_sample
        self.min_new_tokens, self.eos_id = min_new_tokens, eos_id
        self.sample_batch_size = sample_batch_size

    @classmethod
    def check_setup(cls, params: dict[str, Any], setup: Any) -> list[str]:
        """Config time: the prompt leaves room for a new token; the context holds a block; a fit
        across processes can share the batch."""
        problems: list[str] = setup.prompt_problems(params["prompt_tokens"])
        problems += distributed.problems(params.get("distributed"), params.get("batch_size"),
                                         params.get("device"), setup.where)
        t, ctx = setup.block_len, params["context_len"]
        if t is not None and ctx is not None and ctx < t:
            problems.append(f"{setup.where}.context_len: must be >= data.block_len={t} (the "
                            f"model reads whole blocks); got {ctx}")
        return problems

    # ------------------------------------------------------------ TorchLM hooks

    def _extra_problems(self) -> list[str]:
        if self.d_model % self.n_head:
            return [f"d_model must be divisible by n_head={self.n_head}; got {self.d_model}"]
        return []

    def _training(self) -> Training:
        cosine = self.lr_schedule == "cosine"
        return Training(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                        weight_decay=self.weight_decay, schedule=self.lr_schedule,
                        warmup_fraction=0.05 if cosine else 0.0, min_warmup=int(cosine),
                        floor=0.1, grad_clip=self.grad_clip, betas=(0.9, 0.95), fused=True)

    def _prepare(self, data: np.ndarray) -> dict[str, Any] | None:
        """Sizes from the data, the base checkpoint and the hyperparameters; the checkpoint (or
        ``None``) is what every chain's network starts from."""
        _, _, block_len = data.shape
        base = self._load_base() if self.init_from is not None else None
        vocab = self.vocab_size
        if base is not None:
            vocab = vocab or base["arch"]["vocab_size"]
        vocab = vocab or int(data.max()) + 1
        if int(data.max()) >= vocab:
            raise DataError(
                f"token ids must be < vocab_size={vocab}; got max id {int(data.max())}"
            )
        ctx = self.context_len or (base["arch"]["context_len"] if base else block_len)
        if block_len > ctx:  # config validation says this earlier, naming the fields
            raise DataError(f"block_len must be <= context_len={ctx}; got {block_len}")
        if self.prompt_tokens >= block_len:
            raise DataError(
                f"prompt_tokens must be < block_len={block_len}; got {self.prompt_tokens}"
            )
        if base is not None:
            want = {"n_layer": self.n_layer, "n_head": self.n_head, "d_model": self.d_model,
                    "vocab_size": vocab, "context_len": ctx}  # fmt: skip
            diff = [f"{k}: model {v}, checkpoint {base['arch'][k]}"
                    for k, v in want.items() if base["arch"][k] != v]  # fmt: skip
            if diff:
                raise ConfigError([f"init_from={self.init_from!r} does not match: "
                                   + "; ".join(diff)])
        self.vocab_size_ = int(vocab)
        self.bos_id_ = self.vocab_size_  # the extra embedding row
        self.context_len_ = int(ctx)
        self.block_len_ = int(block_len)
        self.new_tokens_ = self.block_len_ - self.prompt_tokens
        return base

    def _new_net(self, gen: torch.Generator, context: dict[str, Any] | None) -> GPTNet:
        net = self._arch()
        if context is not None:
            net.load_state_dict(context["state_dict"])
        else:
            net.init_weights(gen)
        return net

    def _arch(self) -> GPTNet:
        return GPTNet(self.vocab_size_, self.context_len_, self.n_layer, self.n_head, self.d_model,
                      self.dropout)  # fmt: skip

    def _build_net(self, chain: int) -> GPTNet:
        net = self._arch()
        net.load_state_dict(self.state_dicts_[chain])
        return net.to(resolve_device(self.device)).eval()

    def _forward(self, net: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return net(ids)  # type: ignore[no-any-return]

    def _loss(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of ``x`` (B, L), the logits never held (through the net's
        call, so DDP and FSDP see it)."""
        return net(x[:, :-1], targets=x[:, 1:])  # type: ignore[no-any-return]

    def _make_step(self, net: torch.nn.Module, *, use_cache: bool = True) -> sampling.StepFn:
        return make_step(net, use_cache=use_cache)  # type: ignore[arg-type]

    def _max_len(self) -> int:
        return self.context_len_

    def step_fn(self, chain: int = 0, *, use_cache: bool = True) -> sampling.StepFn:
        """The decoding step of chain ``chain``'s network; without the cache every step recomputes
        the whole sequence (for checking the cache)."""
        return self._make_step(self._net(chain), use_cache=use_cache)

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path: str | Path, chain: int = 0) -> Path:
        """Write chain ``chain``'s network as a base checkpoint for ``init_from``."""
        self.check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arch = {"n_layer": self.n_layer, "n_head": self.n_head, "d_model": self.d_model,
                "vocab_size": self.vocab_size_, "context_len": self.context_len_}  # fmt: skip
        torch.save({"format": CHECKPOINT_FORMAT, "arch": arch,
                    "state_dict": self.state_dicts_[chain]}, path)  # fmt: skip
        return path

    def _load_base(self) -> dict[str, Any]:
        path = Path(str(self.init_from)).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"init_from checkpoint not found; got {str(path)!r}")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle, zip and torch errors alike: not a checkpoint we wrote
            raise DataError(f"{str(path)!r} is not a {CHECKPOINT_FORMAT} checkpoint: {exc}") from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise DataError(
                f"init_from is not a {CHECKPOINT_FORMAT} checkpoint; got {str(path)!r}"
            )
        return ckpt  # type: ignore[no-any-return]


def pretrain_base(
    model: GPT, data: np.ndarray, path: str | Path, *, rng: np.random.Generator
) -> Path:
    """Train ``model``'s architecture from scratch on ``data`` (use a slice of the corpus that the
    experiment never trains on; only chain 0 is used) and save it for ``GPT(init_from=path)``."""
    base = cast(GPT, copy.copy(model.clone()))
    base.init_from = None
    data = np.asarray(data)
    base.fit(data[:1], rng=rng)
    return base.save_checkpoint(path)
