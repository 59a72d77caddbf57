"""The torch language-model base that ``gpt`` and ``hf`` share.

A family says how to build a network and read its logits; everything else is here, once:

- **fit**: one network per chain, trained by :func:`train` (AdamW with decay on matrices only, a
  warmup + linear/cosine/constant schedule, gradient clipping, epochs over shuffled blocks, and the
  best epoch by loss on held-out validation blocks when ``valid_fraction > 0``);
- **blocks** are read as ``[BOS] + block`` when the family has a BOS id (``bos_id_``), so every
  token is trained on and a block can be written from nothing (``prompt_tokens=0``);
- **scores**: ``score_tokens`` gives ``log p(x_t | [BOS,] x_<t)`` in nats for ``t = 1..T-1`` (the
  first token is not scored, so the numbers compare with a model without BOS);
- **decoding**: ``sample`` continues the first ``prompt_tokens`` tokens of the training blocks (each
  block used equally often) and ``complete`` fixed prompts, both with the family's
  :class:`~collapselab.models.Decoding` (its hyperparameters of the same names).

**Neon** (Alemohammad et al. 2025, negative extrapolation): with ``neon={weight: w, steps: k,
samples: n}`` a family's fit ends, per chain, by sampling ``n`` blocks from the fitted network (its
own decoding), fine-tuning a copy on them for ``k`` steps (``θ_self``) and keeping
``(1 + w)·θ − w·θ_self``: a step away from what self-training would do. Its randomness comes after
the training's from the fit generator, so ``weight=0`` leaves the trained weights bit for bit.

The hooks a family implements: ``_prepare(data) -> context`` (check the data against the
hyperparameters, set the fitted sizes ``vocab_size_``, ``block_len_``, ``new_tokens_``,
``bos_id_``; the context is what ``_new_net`` needs), ``_new_net(gen, context)``,
``_build_net(chain)`` (from ``state_dicts_``), ``_forward(net, ids) -> logits (B, L, >= V)``,
``_make_step(net)`` and ``_training()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import torch
import torch.nn.functional as F

from collapselab import registry
from collapselab.capabilities import CompletesPrompts, ScoresTokens
from collapselab.errors import ConfigError, NumericalError
from collapselab.models import distributed, sampling
from collapselab.models.decoding import Decoding
from collapselab.models.distributed import Distributed, Ranks
from collapselab.protocol import Model, NetworkCache, check_data, check_n

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(["device: 'cuda' but CUDA is not available on this machine; use 'auto' "
                           "or 'cpu'; got 'cuda'"])
    return torch.device(device)


def device_of(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


def param_problems(model: Model, skip: frozenset[str] = frozenset()) -> list[str]:
    """``name: rule; got value`` for every hyperparameter of ``model`` (but ``skip``) that its typed
    signature refuses: the same check config validation makes, for a family built in code."""
    fields = registry.params_model(type(model))
    params = {k: v for k, v in model.get_params().items() if k not in skip}
    try:
        fields.model_validate(params)
    except pydantic.ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}; got {e['input']!r}"
                for e in exc.errors() if e["loc"] and e["loc"][0] not in skip]
    return []


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class Training:
    """How a family trains: its hyperparameters, plus the choices it makes for them."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float  # AdamW decay on matrices (ndim >= 2); vectors are not decayed
    schedule: Literal["linear", "cosine", "constant"]
    warmup_fraction: float = 0.0  # share of the steps with a linear warmup
    min_warmup: int = 0  # at least this many warmup steps
    floor: float = 0.0  # linear/cosine decay from lr to floor * lr
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    valid_fraction: float = 0.0  # share of blocks held out to pick the best epoch; 0: the last
    eval_batch_size: int = 32
    betas: tuple[float, float] = (0.9, 0.999)
    fused: bool = False

    def lr_at(self, it: int, total: int, warmup: int) -> float:
        if it < warmup:
            return self.lr * (it + 1) / warmup
        if self.schedule == "constant":
            return self.lr
        frac = (it - warmup) / max(1, total - warmup)
        decay = 1.0 - frac if self.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * frac))
        return self.lr * (self.floor + (1 - self.floor) * decay)


@dataclass
class Trained:
    """What :func:`train` reports for one network."""

    train_loss: list[float]  # mean training loss per epoch
    valid_loss: list[float]  # held-out loss after each epoch (empty without validation blocks)
    best_epoch: int  # 1-based; the weights kept
    tokens_per_s: float


def train(net: torch.nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.nn.Module, torch.Tensor],
          torch.Tensor], cfg: Training, gen: torch.Generator, dev: torch.device,
          ranks: Ranks | None = None) -> Trained:  # fmt: skip
    """Train ``net`` on the (BOS-prefixed) blocks ``x`` (n, L) on CPU, batches moved to ``dev``;
    ``loss_fn(net, batch)`` is the mean next-token cross-entropy. With validation blocks, the best
    epoch's weights are kept. With ``ranks`` (a worker of a fit across processes, ``net`` under
    DDP or FSDP), every rank draws the same shuffles and trains on its share of each batch."""
    n_valid = 0
    if cfg.valid_fraction > 0:  # held-out blocks first, from the same generator
        order = torch.randperm(x.shape[0], generator=gen)
        n_valid = min(int(round(cfg.valid_fraction * x.shape[0])), x.shape[0] - 1)
        x, valid = x[order[n_valid:]], x[order[:n_valid]]
    steps_per_epoch = math.ceil(x.shape[0] / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = max(cfg.min_warmup, int(cfg.warmup_fraction * total))
    opt = _optimizer(net, cfg)
    out = Trained([], [], cfg.epochs, 0.0)
    best: tuple[float, dict[str, torch.Tensor] | None] = (math.inf, None)
    it, tokens, tic = 0, 0, time.perf_counter()
    for epoch in range(cfg.epochs):
        net.train()
        perm = torch.randperm(x.shape[0], generator=gen)
        total_loss = torch.zeros((), device=dev)
        for s in range(steps_per_epoch):
            for group in opt.param_groups:
                group["lr"] = cfg.lr_at(it, total, warmup)
            xb = x[perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]]
            tokens += xb.shape[0] * (xb.shape[1] - 1)  # of the global batch
            xb, weight = ranks.share(xb) if ranks is not None else (xb, 1.0)
            total_loss += _step(net, opt, loss_fn, xb.to(dev), cfg.grad_clip, weight)
            it += 1
        if ranks is not None:
            total_loss = ranks.mean(total_loss)
        out.train_loss.append(float(total_loss) / steps_per_epoch)
        if not math.isfinite(out.train_loss[-1]):
            raise NumericalError(f"training diverged: mean loss {out.train_loss[-1]} in epoch {epoch}")
        if n_valid:
            out.valid_loss.append(_mean_loss(net, valid, loss_fn, cfg.eval_batch_size, dev))
            if out.valid_loss[-1] < best[0]:  # keep the best epoch's weights (on CPU)
                sd = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
                best = (out.valid_loss[-1], sd if epoch + 1 < cfg.epochs else None)
                out.best_epoch = epoch + 1
        log.debug("epoch %d train loss %.4f valid %s", epoch + 1, out.train_loss[-1],
                  f"{out.valid_loss[-1]:.4f}" if out.valid_loss else "-")  # fmt: skip
    out.tokens_per_s = tokens / max(time.perf_counter() - tic, 1e-9)
    if best[1] is not None:  # an earlier epoch was better than the last
        net.load_state_dict(best[1])
    return out


def _step(net: torch.nn.Module, opt: torch.optim.Optimizer,
          loss_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor], xb: torch.Tensor,
          grad_clip: float, weight: float = 1.0) -> torch.Tensor:
    """One optimizer step on the batch ``xb`` (its loss scaled by ``weight``: a share of a batch
    split across processes); the scaled loss, detached."""
    loss = loss_fn(net, xb)
    if weight != 1.0:
        loss = loss * weight
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    opt.step()
    return loss.detach()


def _optimizer(net: torch.nn.Module, cfg: Training) -> torch.optim.AdamW:
    """AdamW with decay on matrices (ndim >= 2) only."""
    decay = [p for p in net.parameters() if p.ndim >= 2]
    no_decay = [p for p in net.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=cfg.betas, fused=cfg.fused or None,
    )  # fmt: skip


@torch.no_grad()
def _mean_loss(net: torch.nn.Module, x: torch.Tensor, loss_fn: Callable[..., torch.Tensor],
               batch: int, dev: torch.device) -> float:  # fmt: skip
    net.eval()
    total = 0.0
    for s in range(0, x.shape[0], batch):
        xb = x[s : s + batch].to(dev)
        total += float(loss_fn(net, xb)) * xb.shape[0]
    return total / x.shape[0]


# ---------------------------------------------------------------- Neon


class Neon(pydantic.BaseModel):
    """Neon's settings (Alemohammad et al. 2025): ``θ = (1 + weight)·θ − weight·θ_self``, where
    ``θ_self`` is the fitted network fine-tuned for ``steps`` AdamW steps on ``samples`` blocks it
    wrote itself. A family's ``neon`` keyword; ``None`` there: plain training."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    weight: Annotated[float, pydantic.Field(ge=0, description="w: how far to step away from the self-trained weights; 0 changes nothing")]
    steps: Annotated[int, pydantic.Field(ge=1, description="fine-tuning steps on the model's own blocks")]
    samples: Annotated[int, pydantic.Field(ge=1, description="blocks the fitted model writes to fine-tune on (per chain)")]
    lr: Annotated[float | None, pydantic.Field(gt=0, description="constant fine-tuning learning rate; None: the training's peak lr")] = None
    batch_size: Annotated[int | None, pydantic.Field(ge=1, description="blocks per fine-tuning step; None: the training's")] = None


NeonOption = Annotated[
    Neon | None,
    pydantic.Field(description="Neon negative extrapolation after each fit: {weight: w, steps: k, "
                               "samples: n}; None: plain training"),
]  # fmt: skip


def extrapolate(theta: dict[str, torch.Tensor], theta_self: dict[str, torch.Tensor],
                weight: float) -> dict[str, torch.Tensor]:  # fmt: skip
    """``(1 + w)·θ − w·θ_self`` for every floating-point tensor of a state dict; the rest (integer
    buffers) as in ``θ``. ``w = 0`` returns ``θ``'s values exactly."""
    return {k: (1 + weight) * v - weight * theta_self[k] if v.is_floating_point() else v
            for k, v in theta.items()}  # fmt: skip


def fine_tune(net: torch.nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.nn.Module, torch.Tensor],
              torch.Tensor], cfg: Training, steps: int, gen: torch.Generator,
              dev: torch.device) -> list[float]:  # fmt: skip
    """``steps`` AdamW steps on batches of ``cfg.batch_size`` blocks of ``x`` drawn without
    replacement (reshuffled when used up), at the constant ``cfg.lr``; the losses, per step."""
    opt = _optimizer(net, cfg)
    net.train()
    losses: list[float] = []
    perm, at = torch.randperm(x.shape[0], generator=gen), 0
    for _ in range(steps):
        if at >= x.shape[0]:
            perm, at = torch.randperm(x.shape[0], generator=gen), 0
        xb = x[perm[at : at + cfg.batch_size]].to(dev)
        at += cfg.batch_size
        losses.append(float(_step(net, opt, loss_fn, xb, cfg.grad_clip)))
    if not all(math.isfinite(v) for v in losses):
        raise NumericalError(f"Neon fine-tuning diverged: losses {losses}")
    net.eval()
    return losses


# ---------------------------------------------------------------- the base


class TorchLM(NetworkCache, Model, ScoresTokens, CompletesPrompts):
    """A torch language model over int token blocks ``(chains, n_blocks, block_len)``; one network
    per chain. Declares :class:`ScoresTokens` and :class:`CompletesPrompts`; its weights
    (``state_dicts_``) and ``threaded`` make it ``HasWeights`` and ``RunsThreads``. Subclasses keep the hyperparameters ``device``, ``prompt_tokens`` and the decoding
    controls (``Decoding``'s names, ``sample_batch_size``) and may take ``neon`` (:data:`NeonOption`)
    and ``distributed`` (:data:`~collapselab.models.distributed.DistributedOption`: the fit under
    torchrun, :mod:`collapselab.models.distributed`)."""

    kinds = frozenset({"tokens"})
    threaded = True

    device: str
    prompt_tokens: int
    neon: Neon | dict[str, Any] | None = None  # a family that takes the keyword sets it
    distributed: Distributed | dict[str, Any] | None = None  # likewise: the fit under torchrun
    batch_size: int
    vocab_size_: int
    block_len_: int
    new_tokens_: int  # tokens each sampled block writes after its prompt
    bos_id_: int | None

    # ------------------------------------------------------------ hooks

    def _prepare(self, data: np.ndarray) -> Any:
        raise NotImplementedError

    def _new_net(self, gen: torch.Generator, context: Any) -> torch.nn.Module:
        raise NotImplementedError

    def _forward(self, net: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, L, >= vocab_size_)`` of the next token after each position of ``ids``."""
        raise NotImplementedError

    def _make_step(self, net: torch.nn.Module) -> sampling.StepFn:
        raise NotImplementedError

    def _training(self) -> Training:
        raise NotImplementedError

    def _extra_problems(self) -> list[str]:
        """Cross-field rules the signature cannot state."""
        return []

    def _score_rows(self, t: int) -> int:
        """Blocks of length ``t`` scored per forward pass."""
        return max(1, 2**24 // (t * self.vocab_size_))  # logits of one batch: ~64 MB

    def _max_len(self) -> int | None:
        """Positions the network can read (``None``: no limit is checked)."""
        return None

    def _autocast(self, dev: torch.device) -> Callable[[], Any]:
        """A context factory for the forward passes (mixed precision where a family wants it)."""
        return contextlib.nullcontext

    # ------------------------------------------------------------ validation

    def decoding(self) -> Decoding:
        """The decoding settings of the hyperparameters (a ``ConfigError`` lists what is wrong)."""
        return Decoding.of(self)

    def _check_params(self) -> None:
        """Report every invalid hyperparameter at once (a ``ConfigError``): the signature's rules,
        the cross-field ones, then the decoding controls' (each named with its rule)."""
        controls = frozenset(Decoding.model_fields) | {"sample_batch_size"}
        problems = param_problems(self, skip=controls)
        problems += self._extra_problems() if not problems else []
        if not problems:
            problems += distributed.problems(self.distributed, self.batch_size, self.device)
        try:
            self.decoding()
        except ConfigError as err:
            problems += err.problems
        if problems:
            raise ConfigError(problems)

    # ------------------------------------------------------------ fitting

    def fit(self, data: np.ndarray, *, rng: np.random.Generator) -> TorchLM:
        """Train one network per chain on ``data`` ``(chains, n_blocks, block_len)``."""
        self._check_params()  # before a minute of loading weights
        data = sampling.check_token_blocks(check_data(data))
        context = self._prepare(data)
        dev = resolve_device(self.device)
        self.dtype_ = data.dtype.str
        self.device_ = str(dev)
        self._nets: dict[int, torch.nn.Module] = {}
        self.state_dicts_: list[dict[str, torch.Tensor]] = []
        self.train_loss_: list[list[float]] = []  # per chain, mean training loss per epoch
        self.valid_loss_: list[list[float]] = []  # per chain, held-out loss after each epoch
        self.best_epoch_: list[int] = []  # per chain, the epoch whose weights are kept
        self.train_tokens_per_s_: list[float] = []
        cfg = self._training()
        seeds = np.asarray(rng.integers(0, 2**63 - 1, size=data.shape[0]))
        across = self._distributed()
        fitted = distributed.fit_across(self, data, seeds, across) if across else None
        for c in range(data.shape[0]):
            if fitted is not None:  # trained by torchrun workers; the network is built on use
                state, done = fitted[c]
                self.state_dicts_.append(state)
            else:
                gen = torch.Generator().manual_seed(int(seeds[c]))
                net = self._new_net(gen, context).to(dev)
                x = torch.from_numpy(self._with_bos(data[c]))  # (n, L) on CPU; batches move to dev
                done = train(net, x, self._loss, cfg, gen, dev)
                net.eval()
                self._nets[c] = net
                self.state_dicts_.append({k: v.detach().cpu() for k, v in net.state_dict().items()})
            self.train_loss_.append(done.train_loss)
            self.valid_loss_.append(done.valid_loss)
            self.best_epoch_.append(done.best_epoch)
            self.train_tokens_per_s_.append(done.tokens_per_s)
        # the paper's prompts: the first k tokens of each training block
        self.prompts_ = np.ascontiguousarray(data[:, :, : self.prompt_tokens])
        neon = self._neon()
        if neon is not None:  # after the training, so its draws come after the training's
            self._apply_neon(neon, cfg, rng)
        return self

    def _neon(self) -> Neon | None:
        return None if self.neon is None else Neon.model_validate(self.neon)

    def _distributed(self) -> Distributed | None:
        return None if self.distributed is None else Distributed.model_validate(self.distributed)

    def _apply_neon(self, neon: Neon, cfg: Training, rng: np.random.Generator) -> None:
        """Per chain: ``θ_self`` = the fitted network fine-tuned on ``neon.samples`` blocks it wrote
        (the family's decoding), then ``(1 + w)·θ − w·θ_self`` kept. Records the fine-tuning losses
        (``neon_loss_``) and the step's relative size ``‖θ_self − θ‖ / ‖θ‖`` (``neon_shift_``)."""
        own = self.sample(neon.samples, rng)  # (chains, samples, block_len)
        tune = dataclasses.replace(cfg, lr=neon.lr or cfg.lr,
                                   batch_size=neon.batch_size or cfg.batch_size)  # fmt: skip
        seeds = rng.integers(0, 2**63 - 1, size=self.n_chains_)
        self.neon_loss_: list[list[float]] = []
        self.neon_shift_: list[float] = []
        for c in range(self.n_chains_):
            net = self._net(c)
            theta = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            gen = torch.Generator().manual_seed(int(seeds[c]))
            x = torch.from_numpy(self._with_bos(own[c]))
            self.neon_loss_.append(fine_tune(net, x, self._loss, tune, neon.steps, gen, device_of(net)))
            theta_self = {k: v.detach().cpu() for k, v in net.state_dict().items()}
            new = extrapolate(theta, theta_self, neon.weight)
            num = sum(float((theta_self[k] - v).double().square().sum()) for k, v in theta.items()
                      if v.is_floating_point())  # fmt: skip
            den = sum(float(v.double().square().sum()) for v in theta.values() if v.is_floating_point())
            self.neon_shift_.append(math.sqrt(num / max(den, 1e-300)))
            net.load_state_dict(new)
            net.eval()
            self.state_dicts_[c] = {k: v.detach().cpu() for k, v in net.state_dict().items()}

    def _logits(self, net: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        """float32 logits ``(B, L, vocab_size_)``: ids past the source's vocabulary never appear."""
        with self._autocast(ids.device)():
            logits = self._forward(net, ids)
        return logits[..., : self.vocab_size_].float()

    def _loss(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of ``x`` (B, L)."""
        logits = self._logits(net, x[:, :-1])
        return F.cross_entropy(logits.reshape(-1, self.vocab_size_), x[:, 1:].reshape(-1))

    # ------------------------------------------------------------ networks and tokens

    @property
    def n_chains_(self) -> int:
        return len(self.state_dicts_)

    def step_fn(self, chain: int = 0) -> sampling.StepFn:
        """The decoding step of chain ``chain``'s network (see :mod:`collapselab.models.sampling`)."""
        return self._make_step(self._net(chain))

    def _with_bos(self, blocks: np.ndarray) -> np.ndarray:
        """``(..., T)`` -> ``(..., T+1)`` int64 with BOS in front (unchanged without a BOS)."""
        blocks = blocks.astype(np.int64)
        if self.bos_id_ is None:
            return blocks
        bos = np.full((*blocks.shape[:-1], 1), self.bos_id_, dtype=np.int64)
        return np.concatenate([bos, blocks], axis=-1)

    def _check_tokens(self, data: np.ndarray) -> np.ndarray:
        """Fitted: 1 or ``chains`` chains, ids below ``vocab_size_``, blocks the network can read."""
        sampling.check_token_blocks(data, chains=self.n_chains_, vocab_size=self.vocab_size_)
        limit = self._max_len()
        if limit is not None and data.shape[2] > limit:
            raise ValueError(f"block_len must be <= context_len={limit}; got {data.shape[2]}")
        return data

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
        rows = self._score_rows(t)
        for c in range(self.n_chains_):
            net = self._net(c)
            dev = device_of(net)
            x = torch.from_numpy(self._with_bos(data[c if data.shape[0] > 1 else 0]))
            with torch.no_grad():
                for s in range(0, n, rows):
                    xb = x[s : s + rows].to(dev)
                    logits = self._logits(net, xb[:, :-1])[:, -(t - 1) :]  # predict x_1..x_{T-1}
                    tgt = xb[:, -(t - 1) :]
                    lp = logits.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
                    out[c, s : s + rows] = lp.cpu().numpy()
        return out

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        """Mean log-likelihood per token of each block (tokens 1..T-1, nats): ``(chains, n)``."""
        return self.score_tokens(data).astype(np.float64).mean(axis=-1)

    # ------------------------------------------------------------ sampling

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` new blocks per chain, ``(chains, n, block_len)``. Each continues the first
        ``prompt_tokens`` tokens of a training block (every block used equally often, in random
        order; BOS alone with ``prompt_tokens=0``) by ``new_tokens_`` tokens with the configured
        decoding; the last ``block_len`` tokens of prompt + continuation are kept."""
        n = check_n(n)
        self.check_fitted()
        settings = self.decoding()
        out = np.empty((self.n_chains_, n, self.block_len_), dtype=np.dtype(self.dtype_))
        self.generated_tokens_per_s_ = []
        for c in range(self.n_chains_):
            pick = rng.permuted(np.resize(np.arange(self.prompts_.shape[1]), n))
            prompts = self._with_bos(self.prompts_[c, pick])
            tic = time.perf_counter()
            ids = self._generate(c, prompts, self.new_tokens_, rng, settings)
            self.generated_tokens_per_s_.append(n * self.new_tokens_ / (time.perf_counter() - tic))
            out[c] = ids[:, -self.block_len_ :]
        return out

    def complete(self, prompts: np.ndarray, new_tokens: int, rng: np.random.Generator,
                 chain: int = 0) -> np.ndarray:  # fmt: skip
        """Continue fixed prompts ``(b, p)`` by ``new_tokens`` tokens with chain ``chain``'s model and
        the configured decoding: ``(b, p + new_tokens)`` (BOS is prepended, not returned)."""
        self.check_fitted()
        prompts = sampling.check_prompts(prompts, new_tokens)
        sampling.check_token_blocks(prompts[None], chains=self.n_chains_, vocab_size=self.vocab_size_)
        limit = self._max_len()
        if limit is not None and prompts.shape[1] + new_tokens > limit:
            raise ValueError(f"prompt length + new_tokens must be <= context_len={limit}; "
                             f"got {prompts.shape[1]} + {new_tokens}")
        if prompts.shape[1] == 0 and self.bos_id_ is None:
            raise ValueError("prompts must hold at least one token: the model has no BOS")
        ids = self._generate(chain, self._with_bos(prompts), int(new_tokens), rng, self.decoding())
        skip = 0 if self.bos_id_ is None else 1
        return ids[:, skip:].astype(prompts.dtype)

    def _generate(self, chain: int, prompts: np.ndarray, new_tokens: int,
                  rng: np.random.Generator, settings: Decoding) -> np.ndarray:  # fmt: skip
        """Chain ``chain``'s continuation of ``prompts`` (b, p) int64 (BOS included) by exactly
        ``new_tokens`` tokens: (b, p + new_tokens) int64. The torch engine; a family may hand it
        to another (``hf``'s ``generation_engine: vllm``)."""
        net = self._net(chain)
        x = torch.from_numpy(prompts).to(device_of(net))
        ids = sampling.generate(self._make_step(net), x, new_tokens, rng=rng, settings=settings)
        return ids.cpu().numpy()  # type: ignore[no-any-return]
