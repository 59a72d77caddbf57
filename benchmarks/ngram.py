"""Workload 3: the ``ngram`` family (interpolated modified Kneser-Ney, order 3) on WikiText-2.

* On all of WikiText-2 train (word tokens, one ``<eos>`` per line, 128-token blocks): fit time
  (goal < 10 s), score the test split, sample 100k tokens.
* Against NLTK's ``nltk.lm.KneserNeyInterpolated`` (same order, same blocks as sentences): fit,
  score and sample tokens/s, on a subset of train because NLTK takes seconds per sampled token and
  tens of milliseconds per scored token; both sides run on the same subset, alternated.
* Against KenLM's C++ query (Python module) on the ARPA file our model exports: scoring the test
  split, ``model.score(block, bos=True, eos=False)`` per block (the strings are built untimed).
  Neither side's index build is timed: KenLM builds its probing hash when it loads the file, ours
  builds its hash on the first lookup (the warm-up call; its time is in the row's note).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Row, alternate, fmt_rate, fmt_seconds, timed
from collapselab.models.ngram import NGram

ORDER = 3
BLOCK = 128


def data_dir() -> Path:
    """WikiText-2 beside the repository: ``<repo>/../shared/data/wikitext-2``."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikitext-2"


def read_words(split: str, limit: int | None = None) -> list[str]:
    words: list[str] = []
    with open(data_dir() / f"{split}.txt", encoding="utf-8") as f:
        for line in f:
            words += [*line.split(), "<eos>"]
            if limit is not None and len(words) >= limit:
                break
    return words[:limit]


def blocks_of(ids: np.ndarray) -> np.ndarray:
    return ids[: ids.size // BLOCK * BLOCK].reshape(1, -1, BLOCK)


def run(sizes: dict[str, Any], reps: int) -> tuple[list[Row], dict[str, Any]]:
    if not data_dir().is_dir():
        raise FileNotFoundError(f"WikiText-2 not found at {data_dir()} (the benchmark needs it)")
    train, test = read_words("train", sizes.get("train_tokens")), read_words("test")
    vocab, ids = np.unique(np.array(train + test), return_inverse=True)
    train_b, test_b = blocks_of(ids[: len(train)]), blocks_of(ids[len(train) :])
    rows = full_corpus(train_b, test_b, vocab, reps, sizes)
    rows += against_nltk(train_b, test_b, vocab, sizes, max(1, reps - 1))
    return rows, {}


def full_corpus(train_b: np.ndarray, test_b: np.ndarray, vocab: np.ndarray, reps: int,
                sizes: dict[str, Any]) -> list[Row]:  # fmt: skip
    import kenlm

    n_train, n_test = train_b.size, test_b.size
    fit_s = []
    for _ in range(reps):
        model = NGram(order=ORDER, vocab_size=vocab.size)
        fit_s.append(timed(lambda m=model: m.fit(train_b)))
    sample_blocks = sizes["sample_tokens"] // BLOCK
    sample_s = [timed(lambda i=i: model.sample(sample_blocks, np.random.default_rng(i)))
                for i in range(reps)]  # fmt: skip
    cold_s = timed(lambda: model.score_samples(test_b))  # first lookups build the hash index
    ours_ppl = float(np.exp(-model.score_samples(test_b).mean()))
    with tempfile.TemporaryDirectory() as tmp:
        arpa = Path(tmp) / "wt2.arpa"
        model.to_arpa(arpa, vocab.tolist())
        lm = kenlm.Model(str(arpa))
    sentences = [" ".join(vocab[b]) for b in test_b[0]]
    kenlm_total: list[float] = []

    def kenlm_score() -> float:
        tic = time.perf_counter()
        kenlm_total.append(sum(lm.score(s, bos=True, eos=False) for s in sentences))
        return time.perf_counter() - tic

    pairs = alternate(lambda: timed(lambda: model.score_samples(test_b)), kenlm_score, reps)
    kenlm_ppl = float(10 ** (-kenlm_total[0] / n_test))
    fit = min(fit_s)
    return [
        Row(f"3 n-gram fit, all WikiText-2 train ({n_train / 1e6:.2f}M tok), order 3",
            f"{fmt_seconds(fit)} ({fmt_rate(n_train / fit, 'tok/s')})", "—", None,
            goal_text="< 10 s", seconds=fit, limit_s=10.0,
            data={"fit_s": fit_s, "train_tokens": n_train, "vocab": int(vocab.size)}),
        Row(f"3 n-gram score test ({n_test / 1e3:.0f}k tok) vs KenLM query, same ARPA",
            fmt_rate(n_test / min(pairs.ours), "tok/s"),
            fmt_rate(n_test / min(pairs.peer), "tok/s"), pairs.ratio, goal=1,
            goal_text=">= 1x KenLM, same perplexity",
            note=(f"perplexity ours {ours_ppl:.2f}, KenLM {kenlm_ppl:.2f}; our first call, "
                  f"building the hash index, {fmt_seconds(cold_s)}"),
            data={"ours_s": pairs.ours, "peer_s": pairs.peer, "ratios": pairs.ratios,
                  "cold_s": cold_s,
                  "test_tokens": n_test, "ours_ppl": ours_ppl, "kenlm_ppl": kenlm_ppl}),
        Row(f"3 n-gram sample {sample_blocks * BLOCK / 1e3:.0f}k tokens (full model)",
            fmt_rate(sample_blocks * BLOCK / min(sample_s), "tok/s"), "—", None,
            note="exact KN sampling, temperature 1",
            data={"sample_s": sample_s, "tokens": sample_blocks * BLOCK}),
    ]  # fmt: skip


def nltk_model(train_b: np.ndarray, vocab: np.ndarray) -> Any:
    from nltk.lm import KneserNeyInterpolated
    from nltk.lm.preprocessing import padded_everygram_pipeline

    sents = [vocab[b].tolist() for b in train_b[0]]
    grams, words = padded_everygram_pipeline(ORDER, sents)
    lm = KneserNeyInterpolated(ORDER)
    lm.fit(grams, words)
    return lm


def against_nltk(train_b: np.ndarray, test_b: np.ndarray, vocab: np.ndarray,
                 sizes: dict[str, Any], reps: int) -> list[Row]:  # fmt: skip
    rows = []
    for what, n_blocks, n_tokens in (("fit + score", sizes["nltk_train_blocks"],
                                      sizes["nltk_score_tokens"]),
                                     ("sample", sizes["nltk_sample_train_blocks"],
                                      sizes["nltk_sample_tokens"])):  # fmt: skip
        sub = train_b[:, :n_blocks]
        used = np.unique(sub)  # NLTK's vocabulary is the subset's words: compare like with like
        remap = np.full(vocab.size, -1)
        remap[used] = np.arange(used.size)
        sub_ids, words = remap[sub], vocab[used]
        if what == "sample":
            sample_rows(rows, sub_ids, words, n_tokens, reps)
            continue
        # test tokens the subset's vocabulary covers, scored with their two predecessors
        flat = remap[test_b[0].ravel()]
        pos = np.flatnonzero((flat[2:] >= 0) & (flat[1:-1] >= 0) & (flat[:-2] >= 0))[:n_tokens] + 2
        trigrams = np.stack([flat[pos - 2], flat[pos - 1], flat[pos]], axis=1)
        fit_rows(rows, sub_ids, words, trigrams, reps)
    return rows


def fit_rows(rows: list[Row], sub: np.ndarray, words: np.ndarray, trigrams: np.ndarray,
             reps: int) -> None:  # fmt: skip
    n_train, n_score = sub.size, len(trigrams)
    holder: dict[str, Any] = {}
    fit = alternate(lambda: timed(lambda: holder.__setitem__(
                        "ours", NGram(order=ORDER, vocab_size=words.size).fit(sub))),
                    lambda: timed(lambda: holder.__setitem__("nltk", nltk_model(sub, words))),
                    reps)  # fmt: skip
    ours, lm = holder["ours"], holder["nltk"]
    tri_words = words[trigrams].tolist()
    # ours scores the same trigrams as 3-token contexts: predict_proba would be O(V); use
    # score_tokens on (prefix, word) blocks of length 3, keeping the last position
    blocks = trigrams[None]

    def ours_score() -> float:
        return timed(lambda: ours.score_tokens(blocks)[0, :, 2])

    def nltk_score() -> float:
        return timed(lambda: [lm.logscore(w, [a, b]) for a, b, w in tri_words])

    score = alternate(ours_score, nltk_score, reps, warmup=False)
    rows.append(Row(f"3 n-gram fit vs NLTK KN, {n_train / 1e3:.0f}k-token train subset",
                    fmt_rate(n_train / min(fit.ours), "tok/s"),
                    fmt_rate(n_train / min(fit.peer), "tok/s"), fit.ratio,
                    note="NLTK on a subset: too slow for all of train",
                    data={"ours_s": fit.ours, "peer_s": fit.peer, "ratios": fit.ratios,
                          "train_tokens": n_train}))  # fmt: skip
    rows.append(Row(f"3 n-gram score vs NLTK KN, {n_score} test tokens",
                    fmt_rate(n_score / min(score.ours), "tok/s"),
                    fmt_rate(n_score / min(score.peer), "tok/s"), score.ratio,
                    note="same subset models; NLTK logscore per token",
                    data={"ours_s": score.ours, "peer_s": score.peer, "ratios": score.ratios,
                          "tokens": n_score}))  # fmt: skip


def sample_rows(rows: list[Row], sub: np.ndarray, words: np.ndarray, n_tokens: int,
                reps: int) -> None:  # fmt: skip
    ours = NGram(order=ORDER, vocab_size=words.size).fit(sub)
    lm = nltk_model(sub, words)
    prompts = np.zeros((1, 0), dtype=np.int64)
    pairs = alternate(
        lambda: timed(lambda: ours.complete(prompts.repeat(1, 0), n_tokens, np.random.default_rng(0))),
        lambda: timed(lambda: lm.generate(n_tokens, random_seed=0)),
        reps, warmup=False)  # fmt: skip
    rows.append(Row(f"3 n-gram sample vs NLTK KN generate, {sub.size / 1e3:.0f}k-token model",
                    fmt_rate(n_tokens / min(pairs.ours), "tok/s"),
                    fmt_rate(n_tokens / min(pairs.peer), "tok/s"), pairs.ratio,
                    note=f"{n_tokens} tokens, one sequence each (NLTK: seconds per token)",
                    data={"ours_s": pairs.ours, "peer_s": pairs.peer, "ratios": pairs.ratios,
                          "tokens": n_tokens, "train_tokens": int(sub.size)}))  # fmt: skip
