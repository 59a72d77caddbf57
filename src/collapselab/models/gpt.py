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

Scores: ``score_tokens`` gives ``log p(x_t | BOS, x_0..x_{t-1})`` in nats for ``t = 1..T-1`` (the first
token is not scored, so the numbers compare with a model that has no BOS); ``score_samples`` is their
mean per block.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from collapselab.errors import ConfigError, DataError, NumericalError
from collapselab.models import sampling
from collapselab.protocol import Model, NetworkCache, check_data, check_n

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "collapselab.gpt/1"
ARCH_FIELDS = ("n_layer", "n_head", "d_model", "vocab_size", "context_len")

PosInt = Annotated[int, pydantic.Field(ge=1)]


# ---------------------------------------------------------------- the network


class KVCache:
    """Static key/value buffers ``(n_layer, B, H, max_len, head_dim)`` filled up to ``pos``."""

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int,
                 device: Any, dtype: torch.dtype) -> None:  # fmt: skip
        shape = (n_layer, batch, n_head, max_len, head_dim)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.pos = 0

    def reorder_cache(self, index: torch.Tensor) -> KVCache:
        """Keep batch rows ``index`` (beam search); only the filled positions are copied."""
        filled = slice(0, self.pos)
        self.k[:, :, :, filled] = self.k[:, index, :, filled]
        self.v[:, :, :, filled] = self.v[:, index, :, filled]
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

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None,
                last_only: bool = False) -> torch.Tensor:  # fmt: skip
        """``idx`` (B, t) -> logits (B, t, vocab) (or (B, 1, vocab) with ``last_only``)."""
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
        return F.linear(
            x, self.wte.weight[: self.vocab_size]
        )  # tied embeddings, BOS never predicted

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        w = self.wte.weight
        hd = self.d_model // self.n_head
        return KVCache(self.n_layer, batch, self.n_head, max_len or self.context_len, hd,
                       w.device, w.dtype)  # fmt: skip


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


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(["device: 'cuda' but CUDA is not available on this machine; use 'auto' "
                           "or 'cpu'; got 'cuda'"])
    return torch.device(device)


class GPT(NetworkCache, Model):
    """A nanoGPT-like language model over int token blocks; one network per chain."""

    kinds = frozenset({"tokens"})

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
        device: Annotated[Literal["auto", "cpu", "cuda"], pydantic.Field(description="where to train and sample")] = "auto",
        init_from: Annotated[
            str | None, pydantic.Field(description="base checkpoint (pretrain_base) every generation fine-tunes from; None: random init")
        ] = None,
        prompt_tokens: Annotated[
            int, pydantic.Field(ge=0, description="sampled blocks start with the first k tokens of a random training block; 0: from BOS")
        ] = 0,
        temperature: Annotated[float, pydantic.Field(gt=0, description="sampling temperature")] = 1.0,
        top_k: Annotated[int, pydantic.Field(ge=0, description="sample from the k most likely tokens; 0 = off")] = 0,
        top_p: Annotated[float, pydantic.Field(gt=0, le=1, description="nucleus sampling mass; 1 = off")] = 1.0,
        repetition_penalty: Annotated[float, pydantic.Field(gt=0, description="CTRL penalty; 1 = off")] = 1.0,
        num_beams: Annotated[int, pydantic.Field(ge=1, description="> 1: beam search (paper: 5)")] = 1,
        do_sample: Annotated[bool, pydantic.Field(description="False with num_beams=1: greedy")] = True,
        min_new_tokens: Annotated[int, pydantic.Field(ge=0, description="suppress eos_id until this many new tokens")] = 0,
        eos_id: Annotated[int | None, pydantic.Field(ge=0, description="end-of-text id; None: blocks have no eos")] = None,
        sample_batch_size: Annotated[int, pydantic.Field(ge=1, description="sequences decoded together")] = 256,
    ) -> None:  # fmt: skip
        self.n_layer = n_layer
        self.n_head = n_head
        self.d_model = d_model
        self.vocab_size = vocab_size
        self.context_len = context_len
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.grad_clip = grad_clip
        self.device = device
        self.init_from = init_from
        self.prompt_tokens = prompt_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.repetition_penalty = repetition_penalty
        self.num_beams = num_beams
        self.do_sample = do_sample
        self.min_new_tokens = min_new_tokens
        self.eos_id = eos_id
        self.sample_batch_size = sample_batch_size

    # ------------------------------------------------------------ validation

    @classmethod
    def check_setup(cls, params: dict[str, Any], setup: Any) -> list[str]:
        """Config time: the prompt leaves room for a new token; the context holds a block."""
        problems: list[str] = setup.prompt_problems(params["prompt_tokens"])
        t, ctx = setup.block_len, params["context_len"]
        if t is not None and ctx is not None and ctx < t:
            problems.append(f"{setup.where}.context_len: must be >= data.block_len={t} (the "
                            f"model reads whole blocks); got {ctx}")
        return problems

    def sampler_settings(self) -> sampling.SamplerSettings:
        return sampling.SamplerSettings.of(self)

    def _check_params(self) -> None:
        """Report every invalid hyperparameter at once (a ``ConfigError``)."""
        problems: list[str] = []
        for name in ("n_layer", "n_head", "d_model", "epochs", "batch_size", "sample_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                problems.append(f"{name} must be an integer >= 1; got {v!r}")
        if not problems and self.d_model % self.n_head:
            problems.append(
                f"d_model must be divisible by n_head={self.n_head}; got {self.d_model}"
            )
        for name in ("vocab_size", "context_len"):
            v = getattr(self, name)
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
            ):
                problems.append(f"{name} must be None or an integer >= 1; got {v!r}")
        if not isinstance(self.prompt_tokens, (int, np.integer)) or self.prompt_tokens < 0:
            problems.append(f"prompt_tokens must be an integer >= 0; got {self.prompt_tokens!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            problems.append(f"lr must be a number > 0; got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            problems.append(f"weight_decay must be a number >= 0; got {self.weight_decay!r}")
        if not (isinstance(self.grad_clip, (int, float)) and self.grad_clip >= 0):
            problems.append(f"grad_clip must be a number >= 0; got {self.grad_clip!r}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            problems.append(f"dropout must be in [0, 1); got {self.dropout!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            problems.append(f"lr_schedule must be 'cosine' or 'constant'; got {self.lr_schedule!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be 'auto', 'cpu' or 'cuda'; got {self.device!r}")
        try:
            self.sampler_settings()
        except ConfigError as err:
            problems += err.problems
        if problems:
            raise ConfigError(problems)

    # ------------------------------------------------------------ fitting

    def fit(self, data: np.ndarray, *, rng: np.random.Generator) -> GPT:
        """Train one network per chain on ``data`` ``(chains, n_blocks, block_len)``."""
        self._check_params()
        data = self._check_tokens(check_data(data), fitting=True)
        chains, n, block_len = data.shape
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
        dev = _resolve_device(self.device)
        self.vocab_size_ = int(vocab)
        self.context_len_ = int(ctx)
        self.block_len_ = int(block_len)
        self.dtype_ = data.dtype.str
        self.device_ = str(dev)
        self._nets: dict[int, GPTNet] = {}
        self.state_dicts_: list[dict[str, torch.Tensor]] = []
        self.train_loss_: list[list[float]] = []  # per chain, mean loss per epoch
        seeds = rng.integers(0, 2**63 - 1, size=chains)
        for c in range(chains):
            gen = torch.Generator().manual_seed(int(seeds[c]))
            net = self._new_net(gen, base).to(dev)
            self.train_loss_.append(self._train(net, data[c], gen, dev))
            net.eval()
            self._nets[c] = net
            self.state_dicts_.append({k: v.detach().cpu() for k, v in net.state_dict().items()})
        # the paper's prompts: the first k tokens of each training block
        self.prompts_ = np.ascontiguousarray(data[:, :, : self.prompt_tokens])
        return self

    def _new_net(self, gen: torch.Generator, base: dict[str, Any] | None) -> GPTNet:
        net = GPTNet(self.vocab_size_, self.context_len_, self.n_layer, self.n_head, self.d_model,
                     self.dropout)  # fmt: skip
        if base is not None:
            net.load_state_dict(base["state_dict"])
        else:
            net.init_weights(gen)
        return net

    def _train(
        self, net: GPTNet, blocks: np.ndarray, gen: torch.Generator, dev: torch.device
    ) -> list[float]:
        n = blocks.shape[0]
        inp = torch.from_numpy(self._with_bos(blocks))  # (n, T+1) on CPU; batches move to dev
        steps_per_epoch = math.ceil(n / self.batch_size)
        total = self.epochs * steps_per_epoch
        warmup = max(1, total // 20)
        decay = [p for p in net.parameters() if p.ndim >= 2]
        no_decay = [p for p in net.parameters() if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr, betas=(0.9, 0.95), fused=True,
        )  # fmt: skip
        net.train()
        losses: list[float] = []
        it = 0
        for _epoch in range(self.epochs):
            order = torch.randperm(n, generator=gen)
            total_loss = torch.zeros((), device=dev)
            for s in range(steps_per_epoch):
                for group in opt.param_groups:
                    group["lr"] = self._lr_at(it, total, warmup)
                xb = inp[order[s * self.batch_size : (s + 1) * self.batch_size]].to(dev)
                logits = net(xb[:, :-1])  # (B, T, V): predicts every token of the block
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), xb[:, 1:].reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if self.grad_clip:
                    nn.utils.clip_grad_norm_(net.parameters(), self.grad_clip)
                opt.step()
                total_loss += loss.detach()
                it += 1
            losses.append(float(total_loss) / steps_per_epoch)
            if not math.isfinite(losses[-1]):
                raise NumericalError(f"training diverged: mean loss {losses[-1]} in epoch {_epoch}")
            log.debug("epoch %d loss %.4f", _epoch, losses[-1])
        return losses

    def _lr_at(self, it: int, total: int, warmup: int) -> float:
        if self.lr_schedule == "constant":
            return self.lr
        if it < warmup:
            return self.lr * (it + 1) / warmup
        frac = (it - warmup) / max(1, total - warmup)
        return self.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))

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

    # ------------------------------------------------------------ networks

    def _build_net(self, chain: int) -> GPTNet:
        net = GPTNet(self.vocab_size_, self.context_len_, self.n_layer, self.n_head,
                     self.d_model, self.dropout)  # fmt: skip
        net.load_state_dict(self.state_dicts_[chain])
        return net.to(_resolve_device(self.device)).eval()

    def step_fn(self, chain: int = 0, *, use_cache: bool = True) -> sampling.StepFn:
        """The decoding step of chain ``chain``'s network (see :mod:`collapselab.models.sampling`)."""
        return make_step(self._net(chain), use_cache=use_cache)

    @property
    def n_chains_(self) -> int:
        return len(self.state_dicts_)

    @property
    def bos_id_(self) -> int:
        return self.vocab_size_

    def _with_bos(self, blocks: np.ndarray) -> np.ndarray:
        """``(..., T)`` -> ``(..., T+1)`` int64 with BOS in front."""
        bos = np.full((*blocks.shape[:-1], 1), self.vocab_size_, dtype=np.int64)
        return np.concatenate([bos, blocks.astype(np.int64)], axis=-1)

    def _check_tokens(self, data: np.ndarray, *, fitting: bool = False) -> np.ndarray:
        if fitting:
            return sampling.check_token_blocks(data)
        sampling.check_token_blocks(data, chains=self.n_chains_, vocab_size=self.vocab_size_)
        if data.shape[2] > self.context_len_:
            raise DataError(
                f"block_len must be <= context_len={self.context_len_}; got {data.shape[2]}"
            )
        return data

    # ------------------------------------------------------------ scoring

    def score_tokens(self, data: np.ndarray) -> np.ndarray:
        """``log p(x_t | BOS, x_<t)`` in nats for ``t = 1..T-1``: ``(chains, n, T-1)`` float32.

        ``data`` ``(chains, n, T)`` or ``(1, n, T)`` (scored by every chain)."""
        self.check_fitted()
        data = self._check_tokens(check_data(data))
        chains = self.n_chains_
        _, n, t = data.shape
        out = np.empty((chains, n, max(t - 1, 0)), dtype=np.float32)
        if t < 2:
            return out
        chunk = max(1, 2**24 // (t * self.vocab_size_))  # logits of one chunk: ~64 MB
        for c in range(chains):
            net = self._net(c)
            dev = net.wte.weight.device
            x = torch.from_numpy(self._with_bos(data[c if data.shape[0] > 1 else 0]))
            with torch.no_grad():
                for s in range(0, n, chunk):
                    xb = x[s : s + chunk, :-1].to(dev)  # (b, T): BOS, x_0..x_{T-2}
                    logits = net(xb)[:, 1:].float()  # predictions of x_1..x_{T-1}
                    tgt = x[s : s + chunk, 2:].to(dev)
                    lp = logits.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
                    out[c, s : s + chunk] = lp.cpu().numpy()
        return out

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        """Mean log-likelihood per token of each block (tokens 1..T-1, nats): ``(chains, n)``."""
        return self.score_tokens(data).astype(np.float64).mean(axis=-1)

    # ------------------------------------------------------------ sampling

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` new blocks per chain, ``(chains, n, block_len)``: each starts with the first
        ``prompt_tokens`` tokens of a random training block (or BOS alone) and the model writes the
        rest with the configured decoding."""
        n = check_n(n)
        self.check_fitted()
        settings = self.sampler_settings()
        k = self.prompt_tokens
        out = np.empty((self.n_chains_, n, self.block_len_), dtype=np.dtype(self.dtype_))
        gen = sampling.torch_generator(rng, _resolve_device(self.device))
        for c in range(self.n_chains_):
            pick = rng.integers(0, self.prompts_.shape[1], size=n)
            prompts = torch.from_numpy(self._with_bos(self.prompts_[c, pick]))
            net = self._net(c)
            ids = sampling.generate(make_step(net), prompts.to(net.wte.weight.device),
                                    self.block_len_ - k, rng=gen, settings=settings)  # fmt: skip
            out[c] = ids[:, 1:].cpu().numpy()
        return out

    def complete(self, prompts: np.ndarray, new_tokens: int, rng: np.random.Generator,
                 chain: int = 0) -> np.ndarray:  # fmt: skip
        """Continue fixed prompts ``(b, p)`` by ``new_tokens`` tokens with chain ``chain``'s model and
        the configured decoding: ``(b, p + new_tokens)`` (BOS is prepended, not returned)."""
        self.check_fitted()
        prompts = sampling.check_prompts(prompts, new_tokens)
        self._check_tokens(prompts[None])
        if prompts.shape[1] + new_tokens > self.context_len_:
            raise ValueError(
                f"prompt length + new_tokens must be <= context_len={self.context_len_}; "
                f"got {prompts.shape[1]} + {new_tokens}"
            )
        net = self._net(chain)
        x = torch.from_numpy(self._with_bos(prompts)).to(net.wte.weight.device)
        ids = sampling.generate(make_step(net), x, int(new_tokens), rng=rng,
                                settings=self.sampler_settings())  # fmt: skip
        return ids[:, 1:].cpu().numpy().astype(prompts.dtype)


def pretrain_base(
    model: GPT, data: np.ndarray, path: str | Path, *, rng: np.random.Generator
) -> Path:
    """Train ``model``'s architecture from scratch on ``data`` (use a slice of the corpus that the
    experiment never trains on; only chain 0 is used) and save it for ``GPT(init_from=path)``."""
    base = copy.copy(model.clone())
    base.init_from = None
    data = np.asarray(data)
    base.fit(data[:1], rng=rng)
    return base.save_checkpoint(path)
