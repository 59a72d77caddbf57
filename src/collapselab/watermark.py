"""Green-list watermarks (Kirchenbauer et al. 2023) and their detector.

Sampling: before each token, a keyed hash of the previous token picks a "green" fraction ``gamma``
of the vocabulary, and green logits get ``+delta`` (for the n-gram family, whose sampler works on
probabilities, the same thing: green weights times ``exp(delta)``). Membership is a keyed hash of
``(previous token, token)``, so a green list never has to be materialised for a large vocabulary;
each list holds ``gamma |V|`` tokens in expectation (Binomial, not exactly, unlike the paper's
permutation; the detector's null is unchanged: unwatermarked text is green with probability gamma).

Detection: a one-proportion z-test on the number of green tokens among the ``T`` scored tokens of a
block, ``z = (g - gamma T) / sqrt(T gamma (1 - gamma))``; a block is flagged when ``z > z_threshold``,
whose false-positive rate on unwatermarked text is ``1 - Phi(z_threshold)`` (normal approximation).

The samplers see an active watermark through :func:`applied` (a context variable), so a model's
own code does not change: ``with applied(wm): model.sample(n, rng)``. ``models/sampling.py`` (gpt,
hf) and ``models/ngram.py`` read :func:`current`.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from collapselab import protocol

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_K_PREV, _K_TOK = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD6E8FEB86659FD93)
_TABLE_MAX_V = 8192  # a (V + 1, V) bool table: 67 MB at most
_tables: dict[tuple[int, float, int], np.ndarray] = {}
_active: contextvars.ContextVar[Watermark | None] = contextvars.ContextVar("watermark", default=None)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a uint64 -> uint64 bijection that scrambles every bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


class Watermark(BaseModel):
    """The config's ``watermark:`` section: the scheme's parameters and the generations it marks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gamma: float = Field(0.25, gt=0, lt=1, description="green share of the vocabulary")
    delta: float = Field(2.0, ge=0, description="logit bonus of green tokens")
    key: int = Field(15485863, ge=0, description="secret key of the hash that seeds green lists")
    generations: list[int] | None = Field(None, description=(
        "generations whose sampling is watermarked; null: every generation"))
    z_threshold: float = Field(4.0, gt=0, description=(
        "detector: a block is watermarked when its green-count z-score exceeds this"))

    def applies(self, gen: int) -> bool:
        return self.generations is None or gen in self.generations

    @property
    def false_positive_rate(self) -> float:
        """Implied per-block false-positive rate of the z-test: ``1 - Phi(z_threshold)``."""
        return 0.5 * math.erfc(self.z_threshold / math.sqrt(2))

    # --- green lists ------------------------------------------------------------------------

    def is_green(self, prev: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Whether each token is green after its previous token (broadcast shapes)."""
        with np.errstate(over="ignore"):
            p = np.asarray(prev).astype(np.uint64)
            t = np.asarray(tokens).astype(np.uint64)
            h = _mix(_mix(p * _K_PREV ^ np.uint64(self.key)) ^ (t * _K_TOK))
        return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53 < self.gamma

    def green_rows(self, prev: np.ndarray, vocab_size: int) -> np.ndarray:
        """``(b, V)`` green masks for the previous tokens ``prev`` (b,) (ids up to ``V``: BOS)."""
        prev = np.asarray(prev)
        if vocab_size <= _TABLE_MAX_V:  # small vocabularies: one (V + 1, V) table, hashed once
            table_key = (self.key, self.gamma, vocab_size)
            if table_key not in _tables:
                _tables.clear()
                _tables[table_key] = self.is_green(np.arange(vocab_size + 1)[:, None],
                                                   np.arange(vocab_size)[None, :])
            return _tables[table_key][prev]
        return self.is_green(prev[:, None], np.arange(vocab_size)[None, :])

    def bias_weights(self, p: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """Unnormalised next-token weights ``p`` (b, V) with green ones times ``exp(delta)``."""
        return np.where(self.green_rows(prev, p.shape[1]), p * math.exp(self.delta), p)

    def bias_logits(self, logits: Any, prev: Any) -> Any:
        """Torch logits (b, V) plus ``delta`` on green tokens after ``prev`` (b,) (in place)."""
        import torch

        green = self.green_rows(prev.detach().cpu().numpy(), logits.shape[-1])
        return logits.add_(torch.from_numpy(green).to(logits.device, logits.dtype) * self.delta)

    # --- detection --------------------------------------------------------------------------

    def z_scores(self, blocks: np.ndarray, skip: int = 0) -> np.ndarray:
        """z-score of each block ``(..., T)``: tokens ``max(1, skip)..T-1`` scored, each against
        the token before it (``skip``: e.g. prompt tokens copied from real text)."""
        x = np.asarray(blocks)
        start = max(1, skip)
        n = x.shape[-1] - start
        if n < 1:
            raise ValueError(f"blocks of {x.shape[-1]} tokens leave none to score after skip={skip}")
        green = self.is_green(x[..., start - 1 : -1], x[..., start:]).sum(axis=-1)
        return (green - self.gamma * n) / math.sqrt(n * self.gamma * (1 - self.gamma))

    def detect(self, blocks: np.ndarray, skip: int = 0) -> np.ndarray:
        return self.z_scores(blocks, skip) > self.z_threshold


@contextmanager
def applied(wm: Watermark | None) -> Iterator[None]:
    """Samplers inside this block watermark their output with ``wm`` (nothing when ``None``)."""
    token = _active.set(wm)
    try:
        yield
    finally:
        _active.reset(token)


def current() -> Watermark | None:
    """The watermark samplers should apply now, if any."""
    return _active.get()


def measure(wm: Watermark, model: Any, produced: np.ndarray, real: np.ndarray,
            rng: np.random.Generator, skip: int = 0, plain_size: int = 64) -> dict[str, float]:
    """Per-generation watermark row: detection TPR on the (watermarked) produced blocks, FPR on real
    blocks of the same length, and the perplexity cost: the producing model's perplexity of its
    watermarked text against that of a small unwatermarked sample (``plain_size`` blocks)."""
    real = np.asarray(real)[:, : produced.shape[1]]
    with applied(None):
        plain = model.sample(min(plain_size, produced.shape[1]), rng)
    ppl_marked = float(np.exp(-np.mean(protocol.scores(model, produced))))
    ppl_plain = float(np.exp(-np.mean(protocol.scores(model, plain))))
    return {
        "watermark.tpr": float(wm.detect(produced, skip).mean()),
        "watermark.fpr": float(wm.detect(real, skip).mean()),
        "watermark.fpr_implied": wm.false_positive_rate,
        "watermark.ppl": ppl_marked,
        "watermark.ppl_plain": ppl_plain,
        "watermark.ppl_cost": ppl_marked / ppl_plain,
    }
