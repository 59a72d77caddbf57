"""Metrics for token blocks: perplexity, the fate of rare words, distance to the true language.

Models are asked for ``score_samples(x) -> (chains, n)`` (mean log-likelihood per token of each
block, nats) and, where a metric needs single tokens, ``score_tokens(x) -> (chains, n, k)``: the
log-likelihood of each of the *last* ``k`` tokens of every block given the tokens before it
(``k = T``, or ``T - 1`` for families that do not score the first token). Metrics align targets and
source probabilities to those same ``k`` positions. Held-out data ``(1, m, T)`` are broadcast to
every chain; per-block arrays go into ``ctx.artifacts`` for the report's histograms.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from collapselab import protocol
from collapselab.capabilities import (
    CompletesPrompts,
    HasTrainCounts,
    HasTrueDensity,
    HasValidSplit,
    ScoresTokens,
    provides,
    source_sizes,
)
from collapselab.errors import DataError
from collapselab.metrics.base import GenerationContext
from collapselab.metrics.declare import Plot
from collapselab.registry import metrics

log = logging.getLogger(__name__)

TOKENS = frozenset({"tokens"})

MaxBlocks = Annotated[
    int | None, Field(ge=1, description="Evaluate at most this many blocks (None: all).")
]


# ----------------------------------------------------------------------------------------------
# helpers (pure functions on arrays, tested directly)


def perplexity(loglik: np.ndarray) -> np.ndarray:
    """``exp(-mean)`` over the last axis: per-token log-likelihoods -> perplexity."""
    return np.exp(-np.asarray(loglik, dtype=np.float64).mean(axis=-1))


def token_scores(model: Any, x: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``(chains, n, k)`` per-token log-likelihoods and ``k``, or None if the model has no
    ``score_tokens``."""
    if not isinstance(model, ScoresTokens):
        return None
    scores = np.asarray(model.score_tokens(x), dtype=np.float64)
    k = scores.shape[-1]
    if not 0 < k <= x.shape[-1]:
        raise ValueError(
            f"{type(model).__name__}.score_tokens must return (chains, n, k) with 0 < k <= "
            f"block_len={x.shape[-1]}; got shape {scores.shape}"
        )
    return scores, k


def train_counts(ctx: GenerationContext) -> np.ndarray:
    """Token frequencies of the real train split (the source's, else generation 0's real pool)."""
    if provides(ctx.source, HasTrainCounts):
        return np.asarray(ctx.source.train_counts)
    size = source_sizes(ctx.source).get("vocab_size") or int(ctx.real.max()) + 1
    return np.bincount(np.asarray(ctx.real[0]).ravel(), minlength=size)


def vocab_size(ctx: GenerationContext, counts: np.ndarray) -> int:
    size = max(len(counts), int(ctx.synthetic.max()) + 1 if ctx.synthetic.size else 0)
    return int(max(size, source_sizes(ctx.source).get("vocab_size", 0)))


def frequency_buckets(counts: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket of every type, ``(V,)`` in ``[0, buckets)``: equal shares of the train tokens.

    Types are sorted from rarest to most frequent (ties by id); a type falls in bucket
    ``floor(buckets * m / total)`` where ``m`` is the train mass of the rarer types plus half its
    own. So bucket 0 holds the rarest types that together make ``1/buckets`` of the train tokens
    (unseen types included), the last bucket the most frequent ones.
    """
    counts = np.asarray(counts, dtype=np.float64)
    order = np.lexsort((np.arange(len(counts)), counts))
    sorted_counts = counts[order]
    total = sorted_counts.sum()
    if total <= 0:
        return np.zeros(len(counts), dtype=np.int64)
    mid = np.cumsum(sorted_counts) - sorted_counts / 2
    out = np.empty(len(counts), dtype=np.int64)
    out[order] = np.minimum((mid * buckets / total).astype(np.int64), buckets - 1)
    return out


def ngram_view(x: np.ndarray, n: int) -> np.ndarray:
    """``(m, T) -> (m, T - n + 1)`` n-grams, each one opaque value (comparable, sortable)."""
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(x, dtype=np.int64), n, axis=-1)
    rows = np.ascontiguousarray(windows)  # (m, T-n+1, n)
    return rows.view(np.dtype((np.void, 8 * n)))[..., 0]


def distinct_n(x: np.ndarray, n: int) -> float:
    """Distinct n-grams over all n-grams of a set of blocks ``(m, T)`` (none cross blocks)."""
    if x.shape[-1] < n or x.size == 0:
        return float("nan")
    grams = ngram_view(x, n).ravel()
    return len(np.unique(grams)) / grams.size


def repetition_rate(x: np.ndarray, n: int) -> float:
    """Mean over blocks of the share of a block's n-grams that repeat one earlier in the block."""
    if x.shape[-1] < n or x.size == 0:
        return float("nan")
    grams = ngram_view(x, n)  # (m, L)
    m, length = grams.shape
    unique_per_block = np.array([len(np.unique(row)) for row in grams])
    return float(np.mean(1.0 - unique_per_block / length)) if m else float("nan")


def unigram_kl(p_counts: np.ndarray, q_counts: np.ndarray, smoothing: float) -> float:
    """KL(p || q) of two count vectors after adding ``smoothing`` to every type of both."""
    p = np.asarray(p_counts, dtype=np.float64) + smoothing
    q = np.asarray(q_counts, dtype=np.float64) + smoothing
    p, q = p / p.sum(), q / q.sum()
    mask = p > 0
    return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(q[mask]))))


def zipf_exponent(counts: np.ndarray) -> float:
    """``-slope`` of the least-squares line through (log rank, log frequency) of the seen types."""
    freq = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    freq = freq[freq > 0]
    if len(freq) < 2:
        return float("nan")
    slope = np.polyfit(np.log(np.arange(1, len(freq) + 1)), np.log(freq), 1)[0]
    return float(-slope)


def _first(x: np.ndarray, max_blocks: int | None) -> np.ndarray:
    return x if max_blocks is None else x[:, :max_blocks]


# ----------------------------------------------------------------------------------------------
# metrics


@metrics.register("perplexity")
class Perplexity:
    """Perplexity of real test data (``ppl_test``) and validation data (``ppl_valid``, if any).

    Artifact ``ppl_test``: ``(chains, m)`` perplexity of each test block.
    """

    kinds = TOKENS
    describe = {"ppl_test": "perplexity of the real test split (the paper's y-axis)",
                "ppl_valid": "perplexity of the real validation split"}
    worse = {"ppl_*": "higher"}
    bounds = {"ppl_*": (1, None)}
    plots = (Plot.group("ppl_test", "ppl_valid", title="real-data perplexity", headline=True),)

    def __init__(self, max_blocks: MaxBlocks = None) -> None:
        self.max_blocks = max_blocks

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        test = _first(ctx.heldout_chains(), self.max_blocks)
        ll = protocol.scores(ctx.model, test)  # (chains, m)
        ctx.artifacts["ppl_test"] = np.exp(-ll)
        out: dict[str, Any] = {"ppl_test": perplexity(ll)}
        if provides(ctx.source, HasValidSplit):
            try:
                valid = np.asarray(ctx.source.valid(ctx.rng))
            except DataError:
                return out
            valid = np.broadcast_to(valid, (ctx.chains, *valid.shape[1:]))
            valid = _first(valid, self.max_blocks)
            out["ppl_valid"] = perplexity(protocol.scores(ctx.model, valid))
        return out


@metrics.register("synthetic_ppl")
class SyntheticPerplexity:
    """Perplexity of this generation's synthetic blocks under the generation-0 model.

    The paper's histograms (Shumailov et al. 2024, Fig. 1b): collapse shifts mass to sequences the
    original model finds likely and grows a tail of unlikely ones. Artifact ``synthetic_ppl``
    ``(chains, m)``; values ``synthetic_ppl`` (exp of minus the mean log-likelihood) and the
    per-block quantiles ``synthetic_ppl_q10``, ``_q50``, ``_q90``.
    """

    kinds = TOKENS
    describe = {"synthetic_ppl": "perplexity of the generated text under generation 0's model",
                "synthetic_ppl_q*": "that perplexity's per-block quantile (q10, q50, q90)"}
    plots = (Plot.group("synthetic_ppl_q*", "synthetic_ppl",
                        title="generated text's perplexity under generation 0 (quantiles)"),
             Plot.histogram("synthetic_ppl", "perplexity of generated text under generation 0 "
                                             "(Shumailov et al. 2024, Fig. 1b)"))

    def __init__(self, max_blocks: MaxBlocks = None) -> None:
        self.max_blocks = max_blocks

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        x = _first(ctx.synthetic, self.max_blocks)
        ll = protocol.scores(ctx.reference, x)  # (chains, m)
        per_block = np.exp(-ll)
        ctx.artifacts["synthetic_ppl"] = per_block
        q10, q50, q90 = np.quantile(per_block, [0.1, 0.5, 0.9], axis=1)
        return {
            "synthetic_ppl": perplexity(ll),
            "synthetic_ppl_q10": q10,
            "synthetic_ppl_q50": q50,
            "synthetic_ppl_q90": q90,
        }


@metrics.register("tails")
class Tails:
    """Real-test loss (nats per token) bucketed by the real-train frequency of the target token.

    ``tail_nll_0`` is the rarest bucket, ``tail_nll_{buckets-1}`` the most frequent: each bucket's
    types make up an equal share of the train tokens (:func:`frequency_buckets`). Needs the model's
    ``score_tokens``; a model without it is skipped with a warning (no values). An empty bucket
    (a single type holding more than a bucket's share) reports NaN. Artifact ``tail_token_share``:
    the share of scored test tokens in each bucket.
    """

    kinds = TOKENS
    describe = {"tail_nll_*": "real-test loss (nats/token) on tokens of frequency bucket * "
                              "(0 = rarest; equal shares of the train tokens)"}
    worse = {"tail_nll_*": "higher"}
    plots = (Plot.group("tail_nll_*", title="real-test loss by token frequency (0 = rarest)",
                        headline=True),)

    def __init__(
        self,
        buckets: Annotated[int, Field(ge=1, le=100, description="Frequency buckets.")] = 5,
        max_blocks: MaxBlocks = None,
    ) -> None:
        self.buckets = buckets
        self.max_blocks = max_blocks

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        test = _first(ctx.heldout_chains(), self.max_blocks)
        scored = token_scores(ctx.model, test)
        if scored is None:
            log.warning("tails: %s has no score_tokens; skipped", type(ctx.model).__name__)
            return {}
        scores, k = scored  # (chains, m, k)
        targets = np.asarray(test[0, :, test.shape[-1] - k :])  # (m, k)
        counts = train_counts(ctx)
        bucket_of = frequency_buckets(counts, self.buckets)
        bucket_of = np.concatenate(  # ids the train split never produced count as rarest
            [bucket_of, np.zeros(max(0, int(targets.max()) + 1 - len(bucket_of)), np.int64)]
        )
        bucket = bucket_of[targets]  # (m, k)
        out: dict[str, Any] = {}
        share = np.zeros(self.buckets)
        for j in range(self.buckets):
            mask = bucket == j
            share[j] = mask.mean()
            out[f"tail_nll_{j}"] = (
                -scores[:, mask].mean(axis=1) if mask.any() else np.full(ctx.chains, np.nan)
            )
        ctx.artifacts["tail_token_share"] = share
        return out


@metrics.register("rare_recall")
class RareRecall:
    """Share of the real train's rare types that still appear in this generation's synthetic set.

    A type is rare if it occurs in the real train split at least once and fewer than ``threshold``
    times. ``rare_recall`` per chain (NaN if the train split has no rare type); ``rare_types`` the
    number of rare types.
    """

    kinds = TOKENS
    describe = {"rare_recall": "share of the real train's rare words still generated",
                "rare_types": "number of rare words in the real train split"}
    worse = {"rare_recall": "lower"}
    bounds = {"rare_recall": (0, 1)}
    plots = (Plot.curve("rare_recall", "rare words still generated", headline=True),)

    def __init__(
        self,
        threshold: Annotated[
            int, Field(ge=2, description="Rare: train count in [1, threshold).")
        ] = 10,
    ) -> None:
        self.threshold = threshold

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        counts = train_counts(ctx)
        rare = (counts > 0) & (counts < self.threshold)
        size = vocab_size(ctx, counts)
        recall = np.empty(ctx.chains)
        for c in range(ctx.chains):
            present = np.bincount(np.asarray(ctx.synthetic[c]).ravel(), minlength=size)[: len(rare)]
            recall[c] = (present[rare] > 0).sum() / rare.sum() if rare.any() else np.nan
        return {"rare_recall": recall, "rare_types": int(rare.sum())}


@metrics.register("types")
class Types:
    """Vocabulary size of the synthetic set (``types``), next to the real train's (``types_real``)."""

    kinds = TOKENS
    describe = {"types": "distinct words in the generated text (vocabulary used)"}
    worse = {"types": "lower"}
    bounds = {"types": (0, None)}
    plots = (Plot.curve("types", "vocabulary of the generated text", headline=True),)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        types = np.array([len(np.unique(np.asarray(s))) for s in ctx.synthetic])
        return {"types": types, "types_real": int((train_counts(ctx) > 0).sum())}


@metrics.register("true_kl")
class TrueKL:
    """KL(source || model) per token (nats), for sources with an exact ``log_prob_tokens``.

    Estimated on source samples (the held-out split, or ``fresh_blocks`` new blocks) as the mean of
    ``log p_source(x_t | x_<t) - log p_model(x_t | x_<t)`` over the positions the model scores.
    Also ``source_entropy`` (per token, the same positions) and ``model_xent`` = the two summed.
    Artifact ``true_kl``: ``(chains, m)`` per block. Sources without exact probabilities (files,
    hf) raise :class:`DataError`: use ``perplexity`` there.
    """

    kinds = TOKENS
    describe = {"true_kl": "KL(true language || model), nats per token",
                "source_entropy": "the true language's entropy, nats per token",
                "model_xent": "cross-entropy of the model on the true language, nats per token"}
    worse = {"true_kl": "higher", "model_xent": "higher"}
    plots = (Plot.curve("true_kl", "distance to the true language (KL)", headline=True),)
    needs = (HasTrueDensity,)  # of the source: config validation checks it

    def __init__(
        self,
        max_blocks: MaxBlocks = None,
        fresh_blocks: Annotated[
            int | None,
            Field(ge=1, description="Draw this many new source blocks (None: the held-out split)."),
        ] = None,
    ) -> None:
        self.max_blocks = max_blocks
        self.fresh_blocks = fresh_blocks

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        source = ctx.source
        if not isinstance(source, HasTrueDensity):
            raise DataError(
                f"metric 'true_kl' needs a source with exact probabilities (log_prob_tokens), "
                f"such as 'builtin'; {type(source).__name__} has none: use 'perplexity'"
            )
        if self.fresh_blocks is not None:
            x = source.sample_blocks(self.fresh_blocks, ctx.rng)  # (m, T)
        else:
            x = np.asarray(_first(ctx.heldout, self.max_blocks)[0])
        xc = np.broadcast_to(x, (ctx.chains, *x.shape))
        src_tok = np.asarray(source.log_prob_tokens(x), dtype=np.float64)  # (m, T)
        scored = token_scores(ctx.model, xc)
        if scored is not None:
            scores, k = scored
            src = src_tok[:, x.shape[-1] - k :]
            kl = (src[None] - scores).mean(axis=-1)  # (chains, m)
        else:
            src = src_tok
            kl = src.mean(axis=-1)[None] - protocol.scores(ctx.model, xc)
        ctx.artifacts["true_kl"] = kl
        entropy = float(-src.mean())
        return {
            "true_kl": kl.mean(axis=1),
            "source_entropy": entropy,
            "model_xent": entropy + kl.mean(axis=1),
        }


@metrics.register("diversity")
class Diversity:
    """Diversity of the synthetic set, per chain.

    ``distinct_1``, ``distinct_2``, ``distinct_3`` (distinct n-grams / n-grams, within blocks);
    ``rep_{rep_n}`` (mean share of a block's ``rep_n``-grams repeating an earlier one);
    ``unigram_kl`` = KL(real train || synthetic) of unigram frequencies, both add-``smoothing``;
    ``zipf_exponent`` (slope of log frequency vs log rank) next to ``zipf_exponent_real``.
    """

    kinds = TOKENS
    describe = {"distinct_*": "distinct n-grams over all n-grams of the generated text",
                "rep_*": "share of a block's n-grams repeating an earlier one",
                "unigram_kl": "KL(real train || generated) of word frequencies",
                "zipf_exponent": "slope of log frequency against log rank of generated words"}
    worse = {"distinct_*": "lower", "rep_*": "higher", "unigram_kl": "higher"}
    bounds = {"distinct_*": (0, 1), "rep_*": (0, 1), "unigram_kl": (0, None)}
    plots = (Plot.group("distinct_*", title="diversity of the generated text (distinct-n)",
                        headline=True),)

    def __init__(
        self,
        rep_n: Annotated[int, Field(ge=1, description="n of the repeated n-gram rate.")] = 4,
        smoothing: Annotated[
            float, Field(gt=0.0, description="Pseudo-count added to every type in unigram_kl.")
        ] = 0.5,
        max_blocks: MaxBlocks = None,
    ) -> None:
        self.rep_n = rep_n
        self.smoothing = smoothing
        self.max_blocks = max_blocks

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        synthetic = _first(ctx.synthetic, self.max_blocks)
        counts = train_counts(ctx)
        size = vocab_size(ctx, counts)
        real = np.pad(counts, (0, size - len(counts)))
        keys = [
            "distinct_1",
            "distinct_2",
            "distinct_3",
            f"rep_{self.rep_n}",
            "unigram_kl",
            "zipf_exponent",
        ]
        out = {key: np.empty(ctx.chains) for key in keys}
        for c in range(ctx.chains):
            x = np.asarray(synthetic[c])
            syn = np.bincount(x.ravel(), minlength=size)
            for n in (1, 2, 3):
                out[f"distinct_{n}"][c] = distinct_n(x, n)
            out[f"rep_{self.rep_n}"][c] = repetition_rate(x, self.rep_n)
            out["unigram_kl"][c] = unigram_kl(real, syn, self.smoothing)
            out["zipf_exponent"][c] = zipf_exponent(syn)
        return {**out, "zipf_exponent_real": zipf_exponent(counts)}


@metrics.register("continuations")
class Continuations:
    """The same fixed prompts continued by every generation's model (chain 0): the most direct
    view of collapse (Shumailov et al. 2024 print one prompt continued by generations 0 to 9).

    Prompts are the first ``prompt_tokens`` tokens of ``prompts`` evenly spaced blocks of the
    held-out (test) split, or the given lines of text (tokenised by the source). Each is continued
    by up to ``new_tokens`` tokens with the model's own decoding, capped so that prompt and
    continuation fit one block (the models' context). Artifacts (unicode arrays, one entry per
    prompt): ``continuations`` and ``continuation_prompts``; no values. A family without
    ``complete`` is skipped with a warning. Draws from its own child of the metrics stream, so
    adding it changes no other metric's values.
    """

    kinds = TOKENS
    describe = {"continuations": "fixed prompts continued by each generation's model (chain 0)"}
    plots = (Plot.text("continuations", "continuation_prompts",
                       "fixed prompts, continued by each generation"),)

    def __init__(
        self,
        prompts: Annotated[
            int | list[str],
            Field(description="Number of held-out (test) blocks whose first prompt_tokens are "
                              "the prompts, or the prompts as lines of text."),
        ] = 4,
        prompt_tokens: Annotated[
            int, Field(ge=1, description="Tokens of each held-out block used as its prompt.")
        ] = 8,
        new_tokens: Annotated[
            int, Field(ge=1, description="Tokens generated per prompt (at most a block).")
        ] = 24,
    ) -> None:
        if isinstance(prompts, int) and not isinstance(prompts, bool) and prompts < 1:
            raise ValueError(f"prompts must be at least 1 (or a list of text); got {prompts}")
        if isinstance(prompts, list) and not prompts:
            raise ValueError("prompts must be at least 1 (or a list of text); got []")
        self.prompts = prompts
        self.prompt_tokens = prompt_tokens
        self.new_tokens = new_tokens

    def prompt_ids(self, ctx: GenerationContext) -> list[np.ndarray]:
        """The prompts as token ids, each at most ``block_len - 1`` long."""
        test = np.asarray(ctx.heldout[0])  # (m, T)
        block = test.shape[-1]
        if isinstance(self.prompts, int):
            rows = thin_rows(test.shape[0], self.prompts)
            p = min(self.prompt_tokens, block - 1)
            return [test[r, :p].astype(np.int64) for r in rows]
        return [np.asarray(ctx.source.encode(text), dtype=np.int64)[-(block - 1):]
                for text in self.prompts]

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        if not provides(ctx.model, CompletesPrompts):
            log.warning("continuations: %s has no complete(); skipped", type(ctx.model).__name__)
            return {}
        block = ctx.heldout.shape[-1]
        rng = ctx.rng.spawn(1)[0]  # a child: the metrics stream itself is not advanced
        prompts, texts = [], []
        for ids in self.prompt_ids(ctx):
            new = max(1, min(self.new_tokens, block - len(ids)))
            out = np.asarray(ctx.model.complete(ids[None], new, rng))[0]  # (p + new,)
            prompts.append(ctx.source.decode(ids))
            texts.append(ctx.source.decode(out[len(ids):]))
        ctx.artifacts["continuation_prompts"] = np.array(prompts, dtype=str)
        ctx.artifacts["continuations"] = np.array(texts, dtype=str)
        return {}


def thin_rows(n: int, k: int) -> np.ndarray:
    """``min(k, n)`` evenly spaced row indices of ``n`` (the first included)."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(np.int64)) if n else \
        np.zeros(0, np.int64)
