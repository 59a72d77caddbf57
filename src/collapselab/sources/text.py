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

One module per concern: :mod:`~collapselab.sources.tokens` (the shared source behaviour),
:mod:`~collapselab.sources.language` (the ground-truth language), :mod:`~collapselab.sources.tokenizers`
and :mod:`~collapselab.sources.corpora` (``files`` and ``hf``). This module imports them (registering
the three sources) and keeps the names configs and code import from ``collapselab.sources.text``.
"""

from __future__ import annotations

from collapselab.sources.corpora import (
    FilesSource,
    HFSource,
    build_corpus,
    cap_lines,
    read_text,
    to_blocks,
)
from collapselab.sources.language import BuiltinSource, made_up_words
from collapselab.sources.tokenizers import (
    EOS,
    UNK,
    BPETokenizer,
    PretrainedTokenizer,
    Tokenizer,
    WordTokenizer,
    make_tokenizer,
    word_vocab,
    words_of,
)
from collapselab.sources.tokens import SPLITS, Corpus, TokenSource

__all__ = [
    "EOS", "SPLITS", "UNK", "BPETokenizer", "BuiltinSource", "Corpus", "FilesSource", "HFSource",
    "PretrainedTokenizer", "TokenSource", "Tokenizer", "WordTokenizer", "build_corpus", "cap_lines",
    "made_up_words", "make_tokenizer", "read_text", "to_blocks", "word_vocab", "words_of",
]  # fmt: skip
