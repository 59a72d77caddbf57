"""Text sources: the builtin ground-truth language, local files, Hugging Face datasets."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pydantic
import pytest
from scipy import stats

from collapselab import registry
from collapselab.errors import DataError
from collapselab.sources.text import BuiltinSource, FilesSource, HFSource

WIKITEXT2 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wikitext-2"


def tiny_source(**kw) -> BuiltinSource:
    params = dict(seed=3, vocab_size=4, states=3, branching=2, block_len=3, train_blocks=50)
    return BuiltinSource(**(params | kw))


def brute_force_log_prob(src: BuiltinSource, x: np.ndarray) -> float:
    """Per-token mean log-likelihood by summing over every hidden path."""
    total = 0.0
    for path in itertools.product(range(src.states), repeat=len(x)):
        p = src.initial_[path[0]] * src.emission_[path[0], x[0]]
        for t in range(1, len(x)):
            p *= src.transition_[path[t - 1], path[t]] * src.emission_[path[t], x[t]]
        total += p
    return float(np.log(total) / len(x))


# ---------------------------------------------------------------------------- builtin


def test_builtin_is_deterministic_in_its_seed():
    a, b, c = BuiltinSource(seed=5), BuiltinSource(seed=5), BuiltinSource(seed=6)
    np.testing.assert_array_equal(a.corpus.train, b.corpus.train)
    np.testing.assert_array_equal(a.emission_, b.emission_)
    assert a.vocab == b.vocab
    assert not np.array_equal(a.corpus.train, c.corpus.train)


def test_builtin_truth_is_a_valid_hmm():
    src = BuiltinSource()
    np.testing.assert_allclose(src.transition_.sum(axis=1), 1.0)
    np.testing.assert_allclose(src.emission_.sum(axis=1), 1.0)
    np.testing.assert_allclose(src.initial_ @ src.transition_, src.initial_, atol=1e-12)
    assert np.all(np.diff(src.unigram_) <= 0)  # ids sorted by true frequency
    assert len(set(src.vocab)) == src.vocab_size == 1000


def test_builtin_blocks_shapes_dtypes_range():
    src = BuiltinSource(block_len=16, train_blocks=40, valid_blocks=7, test_blocks=9)
    rng = np.random.default_rng(0)
    real = src.real(10, 3, rng)
    assert real.shape == (3, 10, 16) and real.dtype == np.int32
    assert 0 <= real.min() and real.max() < src.vocab_size
    np.testing.assert_array_equal(real[0], real[2])  # one pool shared by all chains
    assert src.real(None, 2, rng).shape == (2, 40, 16)
    assert src.heldout(rng).shape == (1, 9, 16) and src.heldout(rng).dtype == np.int32
    assert src.valid(rng).shape == (1, 7, 16)
    fresh = src.fresh(5, 2, rng)
    assert fresh.shape == (2, 5, 16) and fresh.dtype == np.int32
    assert not np.array_equal(fresh[0], fresh[1])
    np.testing.assert_array_equal(
        src.train_counts, np.bincount(src.corpus.train.ravel(), minlength=1000)
    )


def test_real_asking_for_more_blocks_than_the_split_is_an_error():
    src = BuiltinSource(train_blocks=40)
    msg = "real: asked for n=41 blocks but the train split of builtin has only 40 blocks"
    with pytest.raises(DataError, match=re.escape(msg)):
        src.real(41, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"n must be a positive integer number of blocks; got 0"):
        src.real(0, 1, np.random.default_rng(0))


def test_log_prob_equals_brute_force_on_tiny_cases():
    src = tiny_source()
    seqs = np.array(list(itertools.product(range(4), repeat=3)), dtype=np.int32)  # (64, 3)
    expected = np.array([brute_force_log_prob(src, x) for x in seqs])
    np.testing.assert_allclose(src.log_prob(seqs), expected, rtol=1e-12)
    # a probability distribution over all 4**3 sequences
    np.testing.assert_allclose(np.exp(3 * src.log_prob(seqs)).sum(), 1.0, rtol=1e-12)
    # vectorised over leading axes: (chains, n, T) -> (chains, n)
    np.testing.assert_allclose(src.log_prob(seqs.reshape(4, 16, 3)), expected.reshape(4, 16))


def test_log_prob_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 4\); got range \[0, 4\]"):
        tiny_source().log_prob(np.array([[0, 1, 4]]))


def test_samples_follow_the_exact_sequence_distribution():
    # chi-square goodness of fit of 20,000 sampled blocks over all 64 sequences; a correct
    # sampler fails with probability 1e-4
    src = tiny_source()
    seqs = np.array(list(itertools.product(range(4), repeat=3)))
    probs = np.exp(3 * src.log_prob(seqs))
    x = src.sample_blocks(20_000, np.random.default_rng(1))
    observed = np.bincount(x @ np.array([16, 4, 1]), minlength=64)
    _, p_value = stats.chisquare(observed, 20_000 * probs)
    assert p_value > 1e-4


def test_train_unigram_matches_the_exact_marginal():
    # a block's token frequency is a mean of Bernoullis, so its variance is at most p(1 - p):
    # 5 standard errors over the blocks bound the deviation (odds of failure < 1e-5 per token)
    src = BuiltinSource(train_blocks=3000)
    freq = src.train_counts / src.train_counts.sum()
    p = src.unigram_
    bound = 5 * np.sqrt(p * (1 - p) / src.n_train_blocks)
    assert np.all(np.abs(freq[:50] - p[:50]) < bound[:50])


def test_entropy_rate_is_below_the_unigram_entropy():
    src = BuiltinSource()
    h = src.entropy_rate(2000, np.random.default_rng(0))
    h_unigram = -(src.unigram_ * np.log(src.unigram_)).sum()
    assert 0 < h < h_unigram  # the hidden states carry structure


def test_builtin_builds_from_the_registry_and_validates_fields():
    src = registry.sources.build("builtin", {"block_len": 8, "train_blocks": 5})
    assert src.real(None, 1, np.random.default_rng(0)).shape == (1, 5, 8)
    with pytest.raises(pydantic.ValidationError, match="states"):
        registry.sources.build("builtin", {"states": 0})


# ---------------------------------------------------------------------------- files


def write_corpus(folder: Path, train: str, valid: str = "a b c d\n", test: str = "a b zz d\n"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in [("train", train), ("valid", valid), ("test", test)]:
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return folder


def test_files_word_tokenizer(tmp_path):
    folder = write_corpus(tmp_path / "c", "a b a c\na b d\n")
    src = FilesSource(str(folder), block_len=2)
    # <unk>, <eos>, then by frequency (ties alphabetical): a:3 b:2 c:1 d:1
    assert src.vocab == ["<unk>", "<eos>", "a", "b", "c", "d"]
    # stream a b a c <eos> a b d <eos> -> 9 tokens -> 4 blocks of 2
    np.testing.assert_array_equal(src.corpus.train, [[2, 3], [2, 4], [1, 2], [3, 5]])
    np.testing.assert_array_equal(src.train_counts, [0, 2, 3, 2, 1, 1])
    np.testing.assert_array_equal(src.heldout()[0], [[2, 3], [0, 5]])  # zz -> <unk>
    assert src.decode([2, 3, 1, 4]) == "a b\nc"
    assert src.real(None, 2, np.random.default_rng(0)).shape == (2, 4, 2)


def test_files_max_vocab_and_slices(tmp_path):
    folder = write_corpus(tmp_path / "c", "a b a c\na b d\n")
    src = FilesSource(str(folder), block_len=2, max_vocab=4, max_train_tokens=5)
    # the slice keeps the first line (5 tokens): vocab from it, capped to 4 entries
    assert src.vocab == ["<unk>", "<eos>", "a", "b"]
    np.testing.assert_array_equal(src.corpus.train, [[2, 3], [2, 0]])


def test_files_subword(tmp_path):
    text = "the cat sat on the mat\nthe dog sat on the log\n" * 20
    folder = write_corpus(tmp_path / "c", text, valid=text, test="the cat sat on the log\n")
    src = FilesSource(str(folder), tokenizer="subword", subword_vocab=40, block_len=4)
    assert src.vocab_size <= 40 and src.vocab[:2] == ["<unk>", "<eos>"]
    x = src.heldout()[0].ravel()
    assert src.decode(x).startswith("the cat sat on")
    assert src.corpus.train.dtype == np.int32 and src.corpus.train.max() < src.vocab_size


@pytest.mark.skipif(not WIKITEXT2.is_dir(), reason="WikiText-2 not in shared/data")
def test_files_wikitext2_slice():
    src = FilesSource(str(WIKITEXT2), max_train_tokens=20_000, max_eval_tokens=3_000)
    assert src.corpus.train.shape == (20_000 // 64, 64)
    assert src.corpus.test.shape == (3_000 // 64, 64)
    assert src.corpus.valid is not None and src.corpus.valid.shape == (3_000 // 64, 64)
    assert src.vocab[:3] == ["<unk>", "<eos>", "the"]
    assert src.train_counts.sum() == 20_000
    assert "Valkyria" in src.decode(src.corpus.train[0])


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"missing data folder {tmp_path / 'nope'}")):
        FilesSource(str(tmp_path / "nope"))


def test_missing_split_file(tmp_path):
    folder = write_corpus(tmp_path / "c", "a b\n")
    (folder / "valid.txt").unlink()
    with pytest.raises(DataError, match=re.escape(f"missing split file {folder / 'valid.txt'}")):
        FilesSource(str(folder))


def test_empty_file(tmp_path):
    folder = write_corpus(tmp_path / "c", "a b c d\n", test=" \n\n")
    with pytest.raises(DataError, match=re.escape(f"{folder / 'test.txt'} is empty")):
        FilesSource(str(folder), block_len=2).load()


@pytest.mark.parametrize("payload", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"caf\xe9 au lait"])
def test_binary_file(tmp_path, payload):
    folder = write_corpus(tmp_path / "c", "a b c d\n")
    (folder / "train.txt").write_bytes(payload)
    with pytest.raises(DataError, match=re.escape(f"{folder / 'train.txt'} is not UTF-8 text")):
        FilesSource(str(folder), block_len=2).load()


def test_corpus_shorter_than_a_block(tmp_path):
    folder = write_corpus(tmp_path / "c", "a b c d e f g h\n", valid="a b\n")
    msg = f"{folder / 'valid.txt'} has 3 tokens, fewer than one block of block_len=4"
    with pytest.raises(DataError, match=re.escape(msg)):
        FilesSource(str(folder), block_len=4).load()


# ---------------------------------------------------------------------------- hf


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf")
    write_corpus(folder, "a b a c\na b d\n" * 3, valid="a b c d\n", test="a b zz d\n")
    return folder


def test_hf_text_builder_on_local_files(text_files, tmp_path):
    files = {s: str(text_files / f"{s}.txt") for s in ("train", "validation", "test")}
    files["validation"] = str(text_files / "valid.txt")
    src = HFSource("text", data_files=files, block_len=2, cache_dir=str(tmp_path / "cache"))
    assert src.vocab == ["<unk>", "<eos>", "a", "b", "c", "d"]
    assert src.corpus.train.shape == (27 // 2, 2)
    np.testing.assert_array_equal(src.heldout()[0], [[2, 3], [0, 5]])
    assert src.valid().shape == (1, 2, 2)


def test_hf_load_from_disk_and_model_tokenizer(text_files, tmp_path):
    import datasets
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    rows = {"train": ["a b a c", "a b d"] * 3, "test": ["a b zz d"]}
    dd = datasets.DatasetDict({k: datasets.Dataset.from_dict({"body": v}) for k, v in rows.items()})
    dd.save_to_disk(str(tmp_path / "disk"))
    src = HFSource(str(tmp_path / "disk"), text_field="body", valid_split=None, block_len=3)
    assert src.corpus.train.shape == (9, 3) and src.corpus.valid is None
    assert not src.has_valid

    # a model's own tokenizer, saved locally (no hub)
    wl = models.WordLevel({"<unk>": 0, "</s>": 1, "a": 2, "b": 3, "c": 4, "d": 5}, "<unk>")
    tok = Tokenizer(wl)
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")
    fast.save_pretrained(str(tmp_path / "tok"))
    src = HFSource(
        str(tmp_path / "disk"),
        text_field="body",
        valid_split=None,
        block_len=5,
        tokenizer=str(tmp_path / "tok"),
    )
    assert src.vocab_size == 6 and src.vocab[1] == "</s>"
    np.testing.assert_array_equal(src.heldout()[0], [[2, 3, 0, 5, 1]])


def test_hf_bad_split_and_column(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a b"]})}).save_to_disk(
        str(tmp_path / "d")
    )
    with pytest.raises(DataError, match=r"has no split 'validation'; it has \['train'\]"):
        HFSource(str(tmp_path / "d"), block_len=1).load()
    with pytest.raises(DataError, match=r"split 'train' has no column 'body'; columns: \['text'\]"):
        HFSource(str(tmp_path / "d"), text_field="body", valid_split=None, block_len=1).load()
