"""The Kneser-Ney n-gram family: exact probabilities, sampling, errors, ARPA and KenLM agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from collapselab import protocol, registry
from collapselab.models.ngram import NGram, _Hash, _modified_discounts
from collapselab.sources.base import tile_chains

WIKITEXT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "wikitext-2"
ALPHA = 1e-3  # chi-square level: a correct sampler fails one such check with probability 0.1%


def tokens(text: list[str]) -> tuple[np.ndarray, list[str]]:
    """Blocks of equal-length sentences -> (1, n, L) ids and the sorted vocabulary."""
    words = np.array([s.split() for s in text])
    vocab, ids = np.unique(words, return_inverse=True)
    return ids.reshape(1, *words.shape), vocab.tolist()


def random_corpus(seed: int, chains: int = 1, n: int = 200, length: int = 10, vocab: int = 6):
    """Skewed random tokens with some structure (a token often repeats its predecessor)."""
    rng = np.random.default_rng(seed)
    x = rng.choice(
        vocab, size=(chains, n, length), p=np.linspace(2, 1, vocab) / np.linspace(2, 1, vocab).sum()
    )
    repeat = rng.random(x.shape) < 0.3
    x[..., 1:] = np.where(repeat[..., 1:], x[..., :-1], x[..., 1:])
    return x


# a b | a c | b b, with plain KN, D = 1/2: every number below is worked out by hand.
# continuation counts: a 1 (after <s>), b 3 (after a, <s>, b), c 1 (after a); total 5, gamma = 3/10
# p1 = (a - 1/2) / 5 + gamma / 3 = a 1/5, b 3/5, c 1/5
# p(.|<s>): counts a 2, b 1; gamma = 1/3: a 3/4 * 2/3 + 1/15 = 17/30, b 11/30, c 2/30
# p(.|a): counts b 1, c 1; gamma = 1/2: a 1/10, b 1/4 + 3/10 = 11/20, c 1/4 + 1/10 = 7/20
# p(.|b): count b 1; gamma = 1/2: a 1/10, b 1/2 + 3/10 = 4/5, c 1/10
HAND = ["a b", "a c", "b b"]
HAND_PROBA = {(): [17 / 30, 11 / 30, 2 / 30], (0,): [0.1, 0.55, 0.35], (1,): [0.1, 0.8, 0.1]}


@pytest.fixture
def hand_model():
    data, vocab = tokens(HAND)
    assert vocab == ["a", "b", "c"]
    return NGram(order=2, discount=0.5).fit(data)


@pytest.mark.parametrize("prefix", list(HAND_PROBA))
def test_hand_checked_probabilities(hand_model, prefix):
    proba = hand_model.predict_proba(np.array([prefix], dtype=np.int64).reshape(1, len(prefix)))
    np.testing.assert_allclose(proba[0], HAND_PROBA[prefix], rtol=1e-12)


def test_hand_checked_scores(hand_model):
    data, _ = tokens(["a b", "c a", "b c"])  # c is never a context: backs off to p1
    expected = [
        (np.log(17 / 30) + np.log(0.55)) / 2,
        (np.log(2 / 30) + np.log(1 / 5)) / 2,
        (np.log(11 / 30) + np.log(0.1)) / 2,
    ]
    np.testing.assert_allclose(hand_model.score_samples(data), [expected], rtol=1e-12)


def test_modified_discounts_follow_chen_goodman():
    # n1 = 4, n2 = 2, n3 = 1, n4 = 1: Y = 1/2, D_r = r - (r + 1) Y n_{r+1} / n_r
    np.testing.assert_allclose(
        _modified_discounts(np.array([1, 1, 1, 1, 2, 2, 3, 4, 5])), [0.5, 1.25, 1.0]
    )


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("discount", [None, 0.7])
def test_distributions_sum_to_one_and_match_scores(order, discount):
    data = random_corpus(0)
    model = NGram(order=order, discount=discount, vocab_size=8).fit(data)  # ids 6, 7 never seen
    rng = np.random.default_rng(1)
    prefixes = rng.integers(0, 8, size=(50, 5))
    prefixes[:25] = data[0, :25, :5]  # seen contexts as well as random ones
    np.testing.assert_allclose(model.predict_proba(prefixes).sum(axis=1), 1.0, rtol=1e-12)
    # score_samples (sparse backoff walk) agrees with the dense distributions, position by position
    blocks = rng.integers(0, 8, size=(1, 20, 6))
    blocks[0, :10] = data[0, :10, :6]
    dense = np.array(
        [
            np.log(model.predict_proba(blocks[0, :, :j])[np.arange(20), blocks[0, :, j]])
            for j in range(6)
        ]
    ).mean(axis=0)
    np.testing.assert_allclose(model.score_samples(blocks)[0], dense, rtol=1e-10)


def chi_square_pvalue(draws: np.ndarray, proba: np.ndarray) -> float:
    """Pearson's test of draws against proba; categories expecting < 5 are pooled."""
    observed = np.bincount(draws, minlength=proba.size).astype(float)
    expected = proba * draws.size
    small = expected < 5
    observed = np.append(observed[~small], observed[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    keep = expected > 0
    return float(stats.chisquare(observed[keep], expected[keep]).pvalue)


@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.5])
def test_sampled_next_tokens_follow_the_model(temperature):
    data = random_corpus(2)
    model = NGram(order=3, vocab_size=8, temperature=temperature).fit(data)
    rng = np.random.default_rng(3)
    # contexts that exercise every level: seen trigram context, seen bigram only, unseen, BOS
    prompts = [data[0, 0, :4], data[0, 5, :2], np.array([7, 6, 7]), np.array([], dtype=np.int64)]
    for prompt in prompts:
        batch = np.tile(prompt, (20_000, 1)).reshape(20_000, prompt.size)
        draws = model.complete(batch, 1, rng)[:, -1]
        proba = model.predict_proba(batch[:1])[0] ** (1 / temperature)
        assert chi_square_pvalue(draws, proba / proba.sum()) > ALPHA


def test_score_tokens_sum_to_score_samples_and_match_the_distributions():
    data = random_corpus(12, chains=2)
    model = NGram(order=3, vocab_size=8).fit(data)
    blocks = np.random.default_rng(13).integers(0, 8, size=(2, 15, 7))
    per_token = model.score_tokens(blocks)
    assert per_token.shape == (2, 15, 7)
    np.testing.assert_allclose(per_token.sum(axis=2), model.score_samples(blocks) * 7, rtol=1e-12)
    for chain in (0, 1):  # token j is scored by the distribution after its block prefix
        for j in (0, 3, 6):
            proba = model.predict_proba(blocks[chain, :, :j], chain=chain)
            np.testing.assert_allclose(
                per_token[chain, :, j], np.log(proba[np.arange(15), blocks[chain, :, j]]),
                rtol=1e-10,
            )
    assert model.score_tokens(blocks[:1]).shape == (2, 15, 7)  # one shared set, like held-out data


def test_hash_finds_what_a_sorted_search_finds():
    """The scoring index (open addressing) against binary search on the sorted keys: every key
    found at its row, absent keys -1, including keys that had to probe past a taken slot."""
    rng = np.random.default_rng(20)
    keys = np.unique(rng.integers(0, 10**12, 5000))
    index = _Hash(keys)
    assert (index.keys[index.slot(keys)] != keys).any()  # some keys probed past their slot
    q = np.concatenate([keys, rng.integers(0, 10**12, 5000), keys[::7] + 1])
    pos = np.minimum(np.searchsorted(keys, q), keys.size - 1)
    np.testing.assert_array_equal(index.find(q), np.where(keys[pos] == q, pos, -1))


def test_pickled_model_rebuilds_its_index():
    import pickle

    model = NGram(order=3, vocab_size=8).fit(random_corpus(21))
    blocks = np.random.default_rng(22).integers(0, 8, size=(1, 30, 10))
    before = model.score_samples(blocks)
    assert model.tables_[0].index  # built by the first lookup
    loaded = pickle.loads(pickle.dumps(model))
    assert not loaded.tables_[0].index
    np.testing.assert_array_equal(loaded.score_samples(blocks), before)


def truncated_reference(proba: np.ndarray, temperature: float, top_k: int, top_p: float):
    """The sampling distribution, the slow obvious way: temper, keep the k largest (ties with the
    k-th too), renormalise, walk the sorted tokens until the mass ahead reaches top_p."""
    q = proba ** (1 / temperature)
    q /= q.sum()
    if top_k:
        q = np.where(q >= np.sort(q)[::-1][top_k - 1], q, 0.0)
        q /= q.sum()
    if top_p < 1:
        keep = np.zeros(q.size, dtype=bool)
        ahead = 0.0
        for w in np.argsort(-q, kind="stable"):
            if ahead >= top_p and keep.any():
                break
            keep[w], ahead = True, ahead + q[w]
        q = np.where(keep | (q >= q[keep].min()), q, 0.0)  # ties with the last kept survive
        q /= q.sum()
    return q


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, 3, 1.0), (1.0, 0, 0.6), (0.7, 0, 0.8), (1.3, 5, 0.9), (0.5, 1, 1.0)],
)
def test_truncated_sampling_stays_in_the_allowed_set_and_follows_it(temperature, top_k, top_p):
    data = random_corpus(14, vocab=12)
    model = NGram(order=3, vocab_size=14, temperature=temperature, top_k=top_k, top_p=top_p)
    model.fit(data)
    rng = np.random.default_rng(15)
    prompts = [data[0, 0, :4], data[0, 5, :2], np.array([13, 12, 13]), np.array([], dtype=np.int64)]
    for prompt in prompts:
        batch = np.tile(prompt, (20_000, 1)).reshape(20_000, prompt.size)
        draws = model.complete(batch, 1, rng)[:, -1]
        expected = truncated_reference(model.predict_proba(batch[:1])[0], temperature, top_k, top_p)
        assert (expected[draws] > 0).all(), "a token outside the top-k / nucleus was emitted"
        allowed = expected > 0
        assert allowed.sum() < 14  # the truncation bites at every prompt
        if allowed.sum() > 1:  # (a one-token set is checked by the line above alone)
            assert chi_square_pvalue(draws, expected) > ALPHA


def test_truncated_sampling_is_the_same_in_chunks(monkeypatch):
    import collapselab.models.ngram as ngram

    model = NGram(order=3, prompt_tokens=2, top_p=0.9, temperature=0.8).fit(random_corpus(16))
    whole = model.sample(50, np.random.default_rng(17))
    monkeypatch.setattr(ngram, "_CHUNK_FLOATS", 7 * 6)  # 7 rows of 6 tokens at a time
    np.testing.assert_array_equal(model.sample(50, np.random.default_rng(17)), whole)


def test_sample_shapes_seeds_and_own_score():
    data = random_corpus(4, chains=2)
    model = NGram(order=3).fit(data)
    a = model.sample(30, np.random.default_rng(5))
    b = model.sample(30, np.random.default_rng(5))
    assert a.shape == (2, 30, 10)
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(6)
    assert not np.array_equal(model.sample(30, rng), model.sample(30, rng))
    assert np.isfinite(model.score(a)).all()


def test_prompts_are_training_block_beginnings():
    data = random_corpus(7, n=50)
    model = NGram(order=2, prompt_tokens=3).fit(data)
    out = model.sample(40, np.random.default_rng(8))
    starts = {tuple(b) for b in data[0, :, :3]}
    assert {tuple(b) for b in out[0, :, :3]} <= starts
    assert out.shape == (1, 40, 10)


def test_shared_pool_fits_once_and_chains_are_independent():
    pool = random_corpus(9)[0]
    model = NGram(order=3).fit(tile_chains(pool, 3))
    assert model.tables_[0] is model.tables_[2]
    separate = NGram(order=3).fit(random_corpus(10, chains=2))
    scores = separate.score(pool[None])
    assert scores[0] != scores[1]


def test_registry_build_and_clone():
    model = registry.families.build("ngram", {"order": 4, "discount": 0.3})
    assert model.get_params() == {
        "order": 4,
        "vocab_size": None,
        "discount": 0.3,
        "prompt_tokens": 0,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
    }
    fitted = model.fit(random_corpus(11))
    assert not protocol.clone(fitted).is_fitted()


def test_not_fitted_errors():
    rng = np.random.default_rng(0)
    message = r"^NGram is not fitted yet: call fit\(data\) first$"
    with pytest.raises(protocol.NotFittedError, match=message):
        NGram().sample(5, rng)
    with pytest.raises(protocol.NotFittedError, match=message):
        NGram().score(random_corpus(0))


@pytest.mark.parametrize("n", [0, -2, 1.5])
def test_sample_n_must_be_positive(n):
    model = NGram(order=2).fit(random_corpus(0))
    with pytest.raises(
        ValueError, match=rf"^n must be a positive integer number of samples; got {n}$"
    ):
        model.sample(n, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"order": 9}, r"^order: Input should be less than or equal to 6; got 9$"),
        ({"prompt_tokens": 10}, r"^prompt_tokens must be < block_len=10; got 10$"),
        ({"vocab_size": 3}, r"^data token ids must be < vocab_size=3; got 5$"),
        ({"discount": 1.5}, r"^discount: Input should be less than 1; got 1\.5$"),
        ({"top_p": 1.5}, r"^top_p: Input should be less than or equal to 1; got 1\.5$"),
        ({"top_k": -1}, r"^top_k: Input should be greater than or equal to 0; got -1$"),
    ],
)
def test_bad_params_name_field_and_value(params, message):
    with pytest.raises(ValueError, match=message):
        NGram(**params).fit(random_corpus(0))


def test_scoring_rejects_unknown_ids():
    model = NGram(order=2).fit(random_corpus(0))
    with pytest.raises(ValueError, match=r"^data token ids must be < vocab_size=6; got 6$"):
        model.score_samples(np.full((1, 2, 3), 6))


def write_arpa(model: NGram, tmp_path: Path, vocab: list[str]) -> Path:
    path = tmp_path / "lm.arpa"
    model.to_arpa(path, vocab)
    return path


VOCAB8 = [
    "the",
    "<unk>",
    "cat",
    "sat",
    "on",
    "mat",
    "dog",
    "ran",
]  # <unk> as a real word, as in WikiText


@pytest.mark.parametrize("order", [1, 3, 5])
def test_arpa_round_trip(tmp_path, order):
    data = random_corpus(12)
    model = NGram(order=order, vocab_size=8).fit(data)
    loaded = NGram.from_arpa(write_arpa(model, tmp_path, VOCAB8), VOCAB8, block_len=10)
    test = np.concatenate(
        [random_corpus(13, n=50), np.random.default_rng(0).integers(0, 8, (1, 50, 10))], 1
    )
    np.testing.assert_allclose(loaded.score_samples(test), model.score_samples(test), rtol=1e-7)
    prefixes = test[0, :, :4]
    np.testing.assert_allclose(
        loaded.predict_proba(prefixes), model.predict_proba(prefixes), rtol=1e-7
    )
    sampled = loaded.sample(20, np.random.default_rng(14))
    assert sampled.shape == (1, 20, 10)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_kenlm_reads_our_arpa_as_the_same_model(tmp_path, order):
    kenlm = pytest.importorskip("kenlm")
    model = NGram(order=order, vocab_size=8).fit(random_corpus(15, n=300))
    lm = kenlm.Model(str(write_arpa(model, tmp_path, VOCAB8)))
    test = np.concatenate(
        [random_corpus(16, n=40), np.random.default_rng(1).integers(0, 8, (1, 40, 10))], 1
    )
    theirs = (
        np.array(
            [
                sum(
                    p
                    for p, _, _ in lm.full_scores(
                        " ".join(VOCAB8[i] for i in block), bos=True, eos=False
                    )
                )
                for block in test[0]
            ]
        )
        * np.log(10)
        / test.shape[2]
    )
    ours = model.score_samples(test)[0]
    np.testing.assert_allclose(theirs, ours, rtol=1e-5)
    assert np.exp(-theirs.mean()) == pytest.approx(np.exp(-ours.mean()), rel=1e-4)


def wikitext_words(split: str, limit: int) -> np.ndarray:
    words: list[str] = []
    with open(WIKITEXT / f"{split}.txt", encoding="utf-8") as f:
        for line in f:
            words += [*line.split(), "<eos>"]
            if len(words) >= limit:
                break
    return np.array(words[:limit])


@pytest.mark.skipif(not WIKITEXT.is_dir(), reason="WikiText-2 not found in ../shared/data")
def test_wikitext2_slice_perplexity():
    train, test = wikitext_words("train", 200_000), wikitext_words("test", 20_000)
    vocab, ids = np.unique(np.concatenate([train, test]), return_inverse=True)
    blocks = [ids[: train.size].reshape(1, -1, 50), ids[train.size :].reshape(1, -1, 50)]
    ppl = {
        order: float(
            np.exp(-NGram(order=order, vocab_size=vocab.size).fit(blocks[0]).score(blocks[1])[0])
        )
        for order in (1, 3)
    }
    # 200k tokens: a unigram model sits near 1000, a trigram far below it but above the
    # full-corpus (2M-token) trigram's ~230
    assert 600 < ppl[1] < 2000
    assert 230 < ppl[3] < 0.6 * ppl[1]


@pytest.mark.slow
@pytest.mark.skipif(not WIKITEXT.is_dir(), reason="WikiText-2 not found in ../shared/data")
def test_wikitext2_full_speed_and_kenlm(tmp_path):
    """The speed targets on all of WikiText-2 (3-gram, blocks of 128): fit < 10 s, score the test
    split < 5 s, sample 100k tokens < 5 s; KenLM agrees on the exported ARPA. Run with -m slow -s."""
    import time

    train, test = wikitext_words("train", 10**8), wikitext_words("test", 10**8)
    vocab, ids = np.unique(np.concatenate([train, test]), return_inverse=True)
    blocks = [a[: a.size // 128 * 128].reshape(1, -1, 128) for a in np.split(ids, [train.size])]
    model = NGram(order=3, vocab_size=vocab.size)
    seconds = {}
    start = time.perf_counter()
    model.fit(blocks[0])
    seconds["fit"] = time.perf_counter() - start
    start = time.perf_counter()
    score = model.score_samples(blocks[1])[0]
    seconds["score"] = time.perf_counter() - start
    start = time.perf_counter()
    model.sample(100_000 // 128, np.random.default_rng(0))
    seconds["sample"] = time.perf_counter() - start
    print(f"{train.size} train tokens, {seconds}, test perplexity {np.exp(-score.mean()):.2f}")
    assert seconds["fit"] < 10 and seconds["score"] < 5 and seconds["sample"] < 5
    kenlm = pytest.importorskip("kenlm")
    lm = kenlm.Model(str(write_arpa(model, tmp_path, vocab.tolist())))
    theirs = (
        sum(
            p
            for block in blocks[1][0]
            for p, _, _ in lm.full_scores(" ".join(vocab[block]), bos=True, eos=False)
        )
        * np.log(10)
        / blocks[1][0].size
    )
    print(f"KenLM perplexity {np.exp(-theirs):.4f}")
    assert np.exp(-theirs) == pytest.approx(np.exp(-score.mean()), rel=1e-4)
