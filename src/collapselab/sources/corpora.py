"""Corpus loaders: ``files`` (a local folder with train/valid/test text files) and ``hf`` (a Hugging
Face ``datasets`` dataset), tokenised by :mod:`collapselab.sources.tokenizers` and cut into blocks."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from collapselab import registry
from collapselab.errors import DataError
from collapselab.sources.tokenizers import Tokenizer, make_tokenizer
from collapselab.sources.tokens import SPLITS, Corpus, TokenSource

log = logging.getLogger(__name__)


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


def to_blocks(ids: np.ndarray, block_len: int, where: str) -> np.ndarray:
    if ids.shape[0] < block_len:
        raise DataError(
            f"{where} has {ids.shape[0]} tokens, fewer than one block of block_len={block_len}"
        )
    n = ids.shape[0] // block_len
    return np.ascontiguousarray(ids[: n * block_len].reshape(n, block_len), dtype=np.int32)


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
