"""What every text source shares: a lazily loaded, tokenised :class:`Corpus` and the source protocol
on top of it (``real``, ``fresh``, ``heldout``, ``valid``, ``vocab``, ``train_counts``,
``encode``/``decode``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from collapselab.capabilities import HasVocabulary
from collapselab.errors import DataError
from collapselab.sources.base import tile_chains
from collapselab.sources.tokenizers import EOS, UNK, Tokenizer, WordTokenizer

SPLITS = ("train", "valid", "test")


@dataclass
class Corpus:
    """A tokenised corpus: the vocabulary and each split cut into ``(n_blocks, block_len)`` int32."""

    vocab: list[str]
    train: np.ndarray
    valid: np.ndarray | None
    test: np.ndarray
    train_counts: np.ndarray  # (vocab_size,) token frequencies of the whole train split


class TokenSource(HasVocabulary):
    """Shared plumbing: a lazily loaded :class:`Corpus` and the source protocol on top of it."""

    kind = "tokens"
    name = "tokens"
    _corpus_: Corpus | None = None
    _tok: Tokenizer | None = None  # the corpus tokenizer, where the source tokenises text

    def _load(self) -> Corpus:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self) -> TokenSource:
        """Read/generate and tokenise the corpus now (otherwise done on first use); returns self."""
        if self._corpus_ is None:
            self._corpus_ = self._load()
        return self

    @property
    def corpus(self) -> Corpus:
        return self.load()._corpus_  # type: ignore[return-value]

    @property
    def vocab(self) -> list[str]:
        return self.corpus.vocab

    @property
    def vocab_size(self) -> int:
        return len(self.corpus.vocab)

    @property
    def train_counts(self) -> np.ndarray:
        """``(vocab_size,)`` token frequencies of the real train split (for rare-token metrics)."""
        return self.corpus.train_counts

    @property
    def n_train_blocks(self) -> int:
        return int(self.corpus.train.shape[0])

    def real(self, n: int | None, chains: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` train blocks chosen with ``rng`` (in corpus order), shared by all chains.

        ``n=None`` takes the whole train split; ``n`` above its size raises :class:`DataError`.
        """
        train = self.corpus.train
        if n is None or n == train.shape[0]:
            return tile_chains(train, chains)
        idx = np.sort(rng.choice(train.shape[0], size=self._check_n(n, "real"), replace=False))
        return tile_chains(train[idx], chains)

    def fresh(self, n: int, chains: int, rng: np.random.Generator) -> np.ndarray:
        """A new random subset of ``n`` train blocks per chain: ``(chains, n, block_len)``."""
        train = self.corpus.train
        n = self._check_n(n, "fresh")
        idx = np.stack([rng.choice(train.shape[0], size=n, replace=False) for _ in range(chains)])
        return train[idx]

    def heldout(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """The test split, ``(1, m, block_len)``."""
        return self.corpus.test[None]

    def valid(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """The validation split, ``(1, m, block_len)``."""
        if self.corpus.valid is None:
            raise DataError(f"{self.name} has no validation split")
        return self.corpus.valid[None]

    @property
    def has_valid(self) -> bool:
        return self.corpus.valid is not None

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Text of a 1-D id sequence: words joined by spaces, ``<eos>`` as a newline."""
        vocab = self.vocab
        words = [vocab[int(i)] for i in np.asarray(ids).ravel()]
        return " ".join(words).replace(f" {EOS} ", "\n").replace(EOS, "\n")

    def encode(self, text: str) -> np.ndarray:
        """Ids of one line of text, without its end-of-line token (fixed prompts given as text):
        the corpus tokenizer's, or whitespace words looked up in the vocabulary (``<unk>`` for a
        word it lacks; :class:`DataError` naming the word where there is no ``<unk>``)."""
        tok = self.load()._tok
        if tok is not None and not isinstance(tok, WordTokenizer):
            ids = np.asarray(tok.encode([text]), dtype=np.int64)
            eos = tok.eos
            return ids[:-1] if eos is not None and ids.size and ids[-1] == eos else ids
        index = {w: i for i, w in enumerate(self.vocab)}
        out = []
        for word in text.split():
            if word not in index and UNK not in index:
                raise DataError(f"prompt word {word!r} is not in the vocabulary of {self.name}")
            out.append(index.get(word, index.get(UNK, 0)))
        return np.asarray(out, dtype=np.int64)

    def _check_n(self, n: Any, what: str) -> int:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer number of blocks; got {n!r}")
        have = self.corpus.train.shape[0]
        if n > have:
            raise DataError(
                f"{what}: asked for n={n} blocks but the train split of {self.name} has only "
                f"{have} blocks of block_len={self.corpus.train.shape[1]}; lower n or use more data"
            )
        return int(n)
