"""The ground-truth language (``builtin``): a seeded hidden Markov model over made-up words, whose
probabilities are known, so ``log_prob`` is exact and metrics can measure a model's true KL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from collapselab import registry
from collapselab.capabilities import HasTrueDensity
from collapselab.sources.tokens import Corpus, TokenSource

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def made_up_words(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct pronounceable words, shorter for lower (more frequent) ranks."""
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]  # 70
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < n:
        k = 1 + int(np.log10(len(words) + 2) * 1.2)  # syllables grow with log rank
        w = "".join(syllables[i] for i in rng.integers(len(syllables), size=k))
        if len(words) % 3 == 1:
            w += _CONSONANTS[rng.integers(len(_CONSONANTS))]  # some closed last syllables
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


@registry.sources.register("builtin")
class BuiltinSource(TokenSource, HasTrueDensity):
    """A seeded ground-truth language: a hidden Markov model with Zipf-distributed emissions.

    Each hidden state moves to ``branching`` successor states (plus a 1% uniform leak so the chain is
    ergodic) and emits word ``v`` with probability proportional to ``(v + 1) ** -zipf`` times a
    per-state Gamma(``concentration``) weight, so each state prefers its own few words; ids are then
    sorted by true marginal frequency (word 0 is the most frequent). Every block starts from the stationary distribution. Fitted truth is
    in ``initial_`` (S,), ``transition_`` (S, S), ``emission_`` (S, V) and ``unigram_`` (V,), the
    exact marginal token distribution.
    """

    name = "builtin"

    def __init__(
        self,
        seed: Annotated[
            int, Field(ge=0, description="Seed of the language and of its splits.")
        ] = 0,
        vocab_size: Annotated[
            int, Field(ge=2, le=100_000, description="Number of (made-up) word types.")
        ] = 1000,
        states: Annotated[int, Field(ge=1, le=1024, description="Hidden states of the HMM.")] = 32,
        branching: Annotated[
            int, Field(ge=1, description="Successor states each state can move to.")
        ] = 3,
        zipf: Annotated[
            float, Field(ge=0.0, le=5.0, description="Zipf exponent of the word frequencies.")
        ] = 1.0,
        concentration: Annotated[
            float,
            Field(gt=0.0, description="Gamma shape of per-state emission weights (small: peaky)."),
        ] = 0.1,
        block_len: Annotated[int, Field(ge=1, description="Tokens per block.")] = 32,
        train_blocks: Annotated[int, Field(ge=1, description="Blocks in the train split.")] = 1000,
        valid_blocks: Annotated[int, Field(ge=1, description="Blocks in the valid split.")] = 200,
        test_blocks: Annotated[int, Field(ge=1, description="Blocks in the test split.")] = 200,
    ) -> None:
        self.seed = seed
        self.vocab_size_ = vocab_size
        self.states = states
        self.branching = branching
        self.zipf = zipf
        self.concentration = concentration
        self.block_len = block_len
        self.train_blocks = train_blocks
        self.valid_blocks = valid_blocks
        self.test_blocks = test_blocks
        self._build_truth()

    @property
    def vocab_size(self) -> int:
        return self.vocab_size_

    @property
    def truth(self) -> dict[str, Any]:
        return {"states": self.states, "vocab_size": self.vocab_size_, "zipf": self.zipf}

    def _build_truth(self) -> None:
        lang_seq, self._split_seq = np.random.SeedSequence(self.seed).spawn(2)
        rng = np.random.default_rng(lang_seq)
        s, v = self.states, self.vocab_size_
        k = min(self.branching, s)
        sparse = np.zeros((s, s))
        for i in range(s):
            succ = rng.choice(s, size=k, replace=False)
            sparse[i, succ] = rng.dirichlet(np.ones(k))
        self.transition_ = 0.99 * sparse + 0.01 / s  # (S, S), rows sum to 1
        # stationary distribution: left eigenvector of eigenvalue 1
        vals, vecs = np.linalg.eig(self.transition_.T)
        pi = np.abs(np.real(vecs[:, np.argmin(np.abs(vals - 1.0))]))
        self.initial_ = pi / pi.sum()  # (S,)
        zipf_w = (np.arange(v) + 1.0) ** -self.zipf
        weights = zipf_w * rng.gamma(self.concentration, size=(s, v)) + 1e-12 * zipf_w
        emission = weights / weights.sum(axis=1, keepdims=True)  # (S, V)
        order = np.argsort(-(self.initial_ @ emission), kind="stable")  # ids by true frequency
        self.emission_ = np.ascontiguousarray(emission[:, order])
        self.unigram_ = self.initial_ @ self.emission_  # (V,) marginal at every position
        self.words_ = made_up_words(v, rng)
        self._cum_init = np.cumsum(self.initial_)
        self._cum_trans = np.cumsum(self.transition_, axis=1)
        self._cum_emit = np.cumsum(self.emission_, axis=1)

    def sample_blocks(self, n: int, rng: np.random.Generator, block_len: int | None = None):
        """``n`` fresh blocks from the language: ``(n, block_len)`` int32."""
        t_len = self.block_len if block_len is None else block_len
        s_max, v_max = self.states - 1, self.vocab_size_ - 1
        hidden = np.empty((n, t_len), dtype=np.int64)
        hidden[:, 0] = np.searchsorted(self._cum_init, rng.random(n), side="right")
        np.minimum(hidden[:, 0], s_max, out=hidden[:, 0])
        for t in range(1, t_len):
            u = rng.random(n)
            nxt = (self._cum_trans[hidden[:, t - 1]] < u[:, None]).sum(axis=1)
            hidden[:, t] = np.minimum(nxt, s_max)
        u = rng.random((n, t_len))
        tokens = np.empty((n, t_len), dtype=np.int32)
        for s in range(self.states):
            mask = hidden == s
            if mask.any():
                ids = np.searchsorted(self._cum_emit[s], u[mask], side="right")
                tokens[mask] = np.minimum(ids, v_max)
        return tokens

    def log_prob_tokens(self, blocks: np.ndarray) -> np.ndarray:
        """Exact ``log p(x_t | x_<t)`` of every token (forward algorithm): ``(..., T) -> (..., T)``."""
        x = np.asarray(blocks)
        if x.ndim < 1 or x.shape[-1] < 1:
            raise ValueError(f"blocks must have shape (..., T) with T >= 1; got {x.shape}")
        if x.size and (x.min() < 0 or x.max() >= self.vocab_size_):
            raise ValueError(
                f"token ids must be in [0, {self.vocab_size_}); got range [{x.min()}, {x.max()}]"
            )
        flat = x.reshape(-1, x.shape[-1]).astype(np.int64)  # (M, T)
        out = np.empty(flat.shape)
        emit_t = self.emission_.T  # (V, S)
        alpha = self.initial_ * emit_t[flat[:, 0]]  # (M, S) joint of state and tokens so far
        for t in range(flat.shape[1]):
            if t:
                alpha = (alpha @ self.transition_) * emit_t[flat[:, t]]
            c = alpha.sum(axis=1)  # p(x_t | x_<t)
            out[:, t] = np.log(c)
            alpha /= c[:, None]
        return out.reshape(x.shape)

    def log_prob(self, blocks: np.ndarray) -> np.ndarray:
        """Exact mean log-likelihood per token of each block: ``(..., n, T) -> (..., n)``."""
        return self.log_prob_tokens(blocks).mean(axis=-1)

    def entropy_rate(self, n: int, rng: np.random.Generator) -> float:
        """Monte Carlo estimate (``n`` fresh blocks) of the source's entropy per token, nats."""
        return float(-self.log_prob(self.sample_blocks(n, rng)).mean())

    def fresh(self, n: int, chains: int, rng: np.random.Generator) -> np.ndarray:
        """New blocks drawn from the language itself (not the train split): ``(chains, n, T)``."""
        n = self._check_positive(n)
        return self.sample_blocks(n * chains, rng).reshape(chains, n, self.block_len)

    @staticmethod
    def _check_positive(n: Any) -> int:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer number of blocks; got {n!r}")
        return int(n)

    def _load(self) -> Corpus:
        rng = np.random.default_rng(self._split_seq)
        train = self.sample_blocks(self.train_blocks, rng)
        valid = self.sample_blocks(self.valid_blocks, rng)
        test = self.sample_blocks(self.test_blocks, rng)
        counts = np.bincount(train.ravel(), minlength=self.vocab_size_)
        return Corpus(list(self.words_), train, valid, test, counts)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        return " ".join(self.words_[int(i)] for i in np.asarray(ids).ravel())
