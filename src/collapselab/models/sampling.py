"""Batched autoregressive decoding with a KV cache, generic over a model's *step* function.

A step function runs the network on the tokens not yet seen and returns the next-token logits::

    step(ids, cache) -> (logits, cache)     # ids (B, t) int64; logits (B, vocab) for the last position

``cache`` is ``None`` on the first call (``ids`` is then the whole prompt) and afterwards whatever the
step returned (``ids`` is then the one token just chosen, ``(B, 1)``). Our :class:`~collapselab.models.
gpt.GPT` passes a static KV cache; a Hugging Face model fits in a three-line wrapper around
``model(input_ids=ids, past_key_values=cache, use_cache=True)``. Beam search reorders the cache along
the batch axis with ``reorder_cache(cache, index)``; the default calls ``cache.reorder_cache(index)``
when the cache has that method (our cache, HF ``Cache`` objects) and otherwise ``index_select``-s every
tensor in a nested tuple/list.

Decoding order per step (Hugging Face's): repetition penalty -> watermark (``watermark.applied``)
-> eos suppression (``min_new_tokens``)
-> temperature -> top-k -> top-p -> draw. Everything is batched over sequences: no Python loop over
sequences, one over decoding steps.

The controls are one :class:`~collapselab.models.decoding.Decoding` (validated once, when built).

Randomness comes in as a ``numpy.random.Generator``: one ``torch.Generator`` is seeded from it per call
(:func:`torch_generator`), so the same numpy seed gives the same text and two calls on one generator
differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from collapselab import watermark
from collapselab.models.decoding import Decoding

StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
ReorderFn = Callable[[Any, torch.Tensor], Any]


def check_prompts(prompts: Any, new_tokens: Any) -> np.ndarray:
    """``complete()``'s inputs: an int array ``(b, p)`` and a token count >= 0."""
    prompts = np.asarray(prompts)
    if prompts.ndim != 2 or prompts.dtype.kind not in "iu":
        raise ValueError(f"prompts must be an int array (b, p); got {prompts.dtype} {prompts.shape}")
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, (int, np.integer)) or new_tokens < 0:
        raise ValueError(f"new_tokens must be an integer >= 0; got {new_tokens!r}")
    return prompts


def check_token_blocks(
    data: np.ndarray, *, chains: int | None = None, vocab_size: int | None = None
) -> np.ndarray:
    """Token blocks ``(chains, n, block_len)`` of non-negative int ids; once fitted, also 1 or
    ``chains`` chains and ids below ``vocab_size``."""
    if data.ndim != 3:
        raise ValueError(
            f"data must be int token blocks (chains, n, block_len); got shape {data.shape}"
        )
    if data.dtype.kind not in "iu":
        raise ValueError(f"data must hold integer token ids; got dtype {data.dtype}")
    if data.size and int(data.min()) < 0:
        raise ValueError(f"token ids must be >= 0; got min id {int(data.min())}")
    if chains is not None and data.shape[0] not in (1, chains):
        raise ValueError(f"data must have 1 or {chains} chains; got {data.shape[0]}")
    if vocab_size is not None and data.size and int(data.max()) >= vocab_size:
        raise ValueError(
            f"token ids must be < vocab_size={vocab_size}; got max id {int(data.max())}"
        )
    return data


def torch_generator(
    rng: np.random.Generator | torch.Generator, device: Any = "cpu"
) -> torch.Generator:
    """A torch generator on ``device`` seeded from ``rng`` (drawing advances ``rng``)."""
    if isinstance(rng, torch.Generator):
        return rng
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    gen = torch.Generator(device=device)
    gen.manual_seed(int(rng.integers(0, 2**63 - 1)))
    return gen


# ---------------------------------------------------------------- logits processors (batched, in place)


def apply_repetition_penalty(
    logits: torch.Tensor, ids: torch.Tensor, penalty: float
) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019): every token already in ``ids`` gets its logit divided by
    ``penalty`` if positive, multiplied if negative. ``logits`` (B, V), ``ids`` (B, L)."""
    if penalty == 1.0 or ids.shape[1] == 0:
        return logits
    seen = logits.gather(1, ids)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter_(1, ids, seen)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the k-th largest of its row to -inf (ties with the k-th survive)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill_(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float, first_k: int = 64) -> torch.Tensor:
    """Nucleus filter (Holtzman et al. 2020): keep the smallest set of most likely tokens whose total
    probability is >= p; the most likely token always survives (and any tied with the last kept).

    Only the sorted logit *values* are needed, not the order: the ``first_k`` largest (``topk``)
    when they hold mass >= p in every row, else every row's values sorted (on CPU by NumPy: for a
    (256, 5000) batch, 7 ms against torch.sort's 48 ms, which was most of a small model's sampling
    time)."""
    if p >= 1.0:
        return logits
    log_total = logits.logsumexp(dim=-1, keepdim=True)
    top = torch.topk(logits, min(first_k, logits.shape[-1]), dim=-1).values  # (B, k), descending
    probs = (top - log_total).exp()
    if top.shape[-1] < logits.shape[-1] and bool((probs.sum(dim=-1) < p).any()):
        top = _descending(logits)  # some nucleus is wider than k
        probs = (top - log_total).exp()
    before = probs.cumsum(dim=-1) - probs  # probability mass strictly ahead of each token
    kept = (before < p).sum(dim=-1, keepdim=True).clamp_(min=1)  # the nucleus' size per row
    smallest = top.gather(1, kept - 1)  # its least likely logit
    return logits.masked_fill_(logits < smallest, float("-inf"))


def _descending(x: torch.Tensor) -> torch.Tensor:
    """The values of each row of ``x`` sorted in descending order."""
    if x.device.type == "cpu":
        return torch.from_numpy(-np.sort(-x.numpy(), axis=-1))
    return torch.sort(x, dim=-1, descending=True).values


def draw(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One token per row of unnormalised ``probs`` (B, V) by inverse-CDF sampling: one uniform per
    row and a binary search in the cumulative sums (``torch.multinomial`` cost 34 ms a token on a
    (256, 5000) batch; this, about 2). Zero-probability tokens are never drawn."""
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(probs.shape[0], 1, generator=gen, device=probs.device, dtype=cdf.dtype)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return idx.squeeze(1).clamp_(max=probs.shape[-1] - 1)


def process_logits(
    logits: torch.Tensor,
    ids: torch.Tensor,
    n_new: int,
    settings: Decoding,
    *,
    sampling: bool,
) -> torch.Tensor:
    """Apply the controls to next-token ``logits`` (B, V) given the sequences so far ``ids`` (B, L),
    of which ``n_new`` tokens were generated. Returns float32 logits: a new tensor where a control
    changes them, else ``logits`` themselves (float32 already; callers only read them)."""
    marker = watermark.current()  # a green-list watermark (Kirchenbauer et al.): + delta on green
    changes = (settings.repetition_penalty != 1.0 or marker is not None
               or (settings.eos_id is not None and n_new < settings.min_new_tokens)
               or (sampling and (settings.temperature != 1.0 or settings.top_k > 0
                                 or settings.top_p < 1.0)))  # fmt: skip
    logits = logits.float()  # a copy unless float32 already
    if changes:  # the processors below work in place: not on the step's tensor
        logits = logits.clone()
    logits = apply_repetition_penalty(logits, ids, settings.repetition_penalty)
    if marker is not None:
        logits = marker.bias_logits(logits, ids[:, -1])
    if settings.eos_id is not None and n_new < settings.min_new_tokens:
        logits[:, settings.eos_id] = float("-inf")
    if sampling:
        if settings.temperature != 1.0:
            logits.div_(settings.temperature)
        logits = top_k_filter(logits, settings.top_k)
        logits = top_p_filter(logits, settings.top_p)
    return logits


# ---------------------------------------------------------------- decoding


def default_reorder(cache: Any, index: torch.Tensor) -> Any:
    """Select rows ``index`` of every cached tensor (batch axis first)."""
    if cache is None:
        return None
    if hasattr(cache, "reorder_cache"):
        out = cache.reorder_cache(index)
        return cache if out is None else out
    if isinstance(cache, torch.Tensor):
        return cache.index_select(0, index.to(cache.device))
    if isinstance(cache, (tuple, list)):
        return type(cache)(default_reorder(c, index) for c in cache)
    raise TypeError(f"cannot reorder a cache of type {type(cache).__name__}; pass reorder_cache")


def generate(
    step: StepFn,
    prompts: torch.Tensor,
    max_new_tokens: int,
    *,
    rng: np.random.Generator | torch.Generator | None = None,
    settings: Decoding | None = None,
    reorder_cache: ReorderFn = default_reorder,
    **controls: Any,
) -> torch.Tensor:
    """Continue each prompt by exactly ``max_new_tokens`` tokens: ``prompts`` (B, p) -> (B, p + new).

    ``settings`` (or keyword ``controls`` such as ``top_k=50``) choose the decoding. ``rng`` is needed
    when sampling; greedy and beam search are deterministic. Sequences that emit ``eos_id`` are padded
    with it. Prompts are decoded ``batch_size`` at a time (``batch_size`` counts sequences before
    beams are expanded).
    """
    settings = settings or Decoding()
    if controls:
        settings = settings.replace(**controls)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)):
        raise ValueError(f"max_new_tokens must be an integer >= 0; got {max_new_tokens!r}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0; got {max_new_tokens!r}")
    if prompts.ndim != 2 or prompts.shape[1] < 1:
        raise ValueError(f"prompts must have shape (B, p) with p >= 1; got {tuple(prompts.shape)}")
    prompts = prompts.long()
    if max_new_tokens == 0 or prompts.shape[0] == 0:
        return prompts.clone()
    sampling = settings.do_sample and settings.num_beams == 1
    gen = None
    if sampling:
        if rng is None:
            raise ValueError("rng is required when sampling (do_sample=True, num_beams=1)")
        gen = torch_generator(rng, prompts.device)
    outs = []
    for start in range(0, prompts.shape[0], settings.batch_size):
        chunk = prompts[start : start + settings.batch_size]
        if settings.num_beams > 1:
            outs.append(beam_search(step, chunk, max_new_tokens, settings, reorder_cache))
        else:
            outs.append(_decode(step, chunk, max_new_tokens, settings, gen))
    return torch.cat(outs)


@torch.no_grad()
def _decode(
    step: StepFn,
    prompts: torch.Tensor,
    max_new_tokens: int,
    settings: Decoding,
    gen: torch.Generator | None,
) -> torch.Tensor:
    """Sampling (``gen`` given) or greedy decoding of one batch."""
    b, p = prompts.shape
    ids = torch.empty(b, p + max_new_tokens, dtype=torch.long, device=prompts.device)
    ids[:, :p] = prompts
    logits, cache = step(prompts, None)
    eos = settings.eos_id
    done = torch.zeros(b, dtype=torch.bool, device=prompts.device) if eos is not None else None
    for i in range(max_new_tokens):
        scores = process_logits(logits, ids[:, : p + i], i, settings, sampling=gen is not None)
        if gen is None:
            nxt = scores.argmax(dim=-1)
        else:
            nxt = draw(scores.softmax(dim=-1), gen)
        if done is not None and eos is not None:
            nxt = nxt.masked_fill_(done, eos)
            done |= nxt == eos
        ids[:, p + i] = nxt
        if i + 1 < max_new_tokens:
            logits, cache = step(ids[:, p + i : p + i + 1], cache)
    return ids


@torch.no_grad()
def beam_search(
    step: StepFn,
    prompts: torch.Tensor,
    max_new_tokens: int,
    settings: Decoding,
    reorder_cache: ReorderFn = default_reorder,
) -> torch.Tensor:
    """Deterministic beam search: keeps the ``num_beams`` highest total log-probability continuations
    per prompt and returns the best one, ``(B, p + max_new_tokens)``. Finished beams (after eos)
    continue with eos at log-probability 0; no length penalty (all outputs have the same length)."""
    k = settings.num_beams
    b, p = prompts.shape
    dev = prompts.device
    ids = torch.empty(b * k, p + max_new_tokens, dtype=torch.long, device=dev)
    ids[:, :p] = prompts.repeat_interleave(k, dim=0)
    logits, cache = step(prompts, None)  # each prompt once: its beams are the same so far
    logits = logits.repeat_interleave(k, dim=0)
    vocab = logits.shape[-1]
    # only beam 0 is live at the start, so the first step picks k distinct tokens
    beam_scores = torch.full((b, k), float("-inf"), device=dev)
    beam_scores[:, 0] = 0.0
    base = (torch.arange(b, device=dev) * k).unsqueeze(1)  # (b, 1) row of each prompt's beam 0
    eos = settings.eos_id
    done = torch.zeros(b * k, dtype=torch.bool, device=dev) if eos is not None else None
    for i in range(max_new_tokens):
        scores = process_logits(logits, ids[:, : p + i], i, settings, sampling=False)
        logp = scores.log_softmax(dim=-1)  # (b*k, V)
        if done is not None and bool(done.any()):
            finished = torch.full((vocab,), float("-inf"), device=dev)
            finished[eos] = 0.0
            logp[done] = finished
        cand = (beam_scores.unsqueeze(-1) + logp.view(b, k, vocab)).view(b, k * vocab)
        beam_scores, flat = torch.topk(cand, k, dim=-1)  # sorted: beam 0 is the best
        rows = (base + torch.div(flat, vocab, rounding_mode="floor")).view(-1)  # (b*k,)
        tok = (flat % vocab).view(-1)
        ids = ids.index_select(0, rows)
        ids[:, p + i] = tok
        if done is not None:
            done = done.index_select(0, rows) | (tok == eos)
        if i + 1 < max_new_tokens:  # the first reorder also spreads each prompt over its beams
            cache = reorder_cache(cache, rows if i else torch.div(rows, k, rounding_mode="floor"))
            logits, cache = step(tok.unsqueeze(1), cache)
    return ids.view(b, k, -1)[:, 0]


def sequence_logprob(step: StepFn, ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Total log-probability of ``ids[:, prompt_len:]`` given the prompt, by full recompute: (B,)."""
    with torch.no_grad():
        total = torch.zeros(ids.shape[0], dtype=torch.float64, device=ids.device)
        for t in range(prompt_len, ids.shape[1]):
            logits, _ = step(ids[:, :t], None)
            logp = logits.double().log_softmax(-1)
            total += logp.gather(1, ids[:, t : t + 1]).squeeze(1)
    return total


def hf_step(model: Any) -> StepFn:
    """A step function for a Hugging Face causal LM (its ``DynamicCache`` reorders itself for beams).

    Prompts must be unpadded (equal length): no attention mask is passed. Newer transformers call
    the cache argument ``cache`` (``past_key_values`` is deprecated); both are handled."""
    import inspect

    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def step(ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        out = model(input_ids=ids, use_cache=True, **{key: cache})
        new_cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        return out.logits[:, -1], new_cache

    return step
