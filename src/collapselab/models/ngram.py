"""Interpolated Kneser-Ney n-gram language models, built and queried with NumPy.

One LM per chain. Each block of a ``(chains, n_blocks, block_len)`` token array is one sequence whose
first context is a single beginning-of-sequence symbol (id ``vocab_size``), exactly as KenLM scores a
sentence with ``bos=True, eos=False``; nothing predicts an end symbol because blocks have a fixed
length. So ``to_arpa`` writes a file whose KenLM query reproduces our probabilities.

Storage (per chain, per order ``k >= 2``): the distinct k-grams sorted by a hierarchical key
``id(prefix) * (V + 1) + w``, where ``id(prefix)`` is the row of the (k-1)-gram prefix in the
order-(k-1) table (order 1 is dense: id = token, BOS = V). Sorting groups the continuations of a
context contiguously, so a CSR offset array finds them (sampling), and an open-addressing hash of
the keys (``_Hash``) finds any k-gram in about one cache miss, where a binary search over millions
of keys takes a dozen (scoring, context updates): counting, scoring and sampling are whole-array
NumPy operations, with Python loops only over orders, chains and (for sampling) positions.

Smoothing (Chen & Goodman 1999, as in KenLM's lmplz): lower orders use continuation counts (the
number of distinct left extensions; n-grams starting with BOS keep their raw count since nothing can
precede them); ``p_k(w|h) = (a(hw) - D(a)) / a(h.) + gamma(h) p_{k-1}(w|h')`` down to a uniform
distribution over the vocabulary. An interpolated model is exactly an ARPA backoff model whose
entries are the interpolated probabilities and whose backoff weights are the ``gamma(h)``.

Sampling: the model itself (temperature 1, no truncation) walks the interpolation levels top-down
without any ``(b, V)`` array; temperature, top-k and top-p build the dense next-token distributions
of the whole batch per position, in chunks of ``_CHUNK_FLOATS // V`` rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pydantic

from collapselab import protocol, registry, watermark
from collapselab.capabilities import CompletesPrompts, ScoresTokens
from collapselab.errors import DataError
from collapselab.models import decoding

_LN10 = math.log(10.0)
_ARPA_ZERO = -99.0  # ARPA's log10 of probability zero (<s>, </s>, and <unk> when not a real word)
# truncated/tempered sampling builds dense (rows, V) next-token distributions: rows per chunk so that
# one such array holds at most this many floats (a few temporaries of that size live at once)
_CHUNK_FLOATS = 1 << 22
_FIBONACCI = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio: Knuth's multiplicative hash


class _Hash:
    """Open-addressing hash (linear probing, load <= 1/2) from a table's sorted keys to their
    rows: a lookup costs about one cache miss where a binary search over millions of keys costs
    a dozen. Built and probed as whole-array rounds (each round resolves most of what is left)."""

    def __init__(self, keys: np.ndarray) -> None:
        bits = max(1, int(2 * keys.size - 1).bit_length())
        self.shift, self.mask = np.uint64(64 - bits), (1 << bits) - 1
        self.keys = np.full(1 << bits, -1, dtype=np.int64)  # -1: empty (keys are >= 0)
        self.rows = np.zeros(1 << bits, dtype=np.int64)
        pending, pos = np.arange(keys.size), self.slot(keys)
        while pending.size:
            want = keys[pending]
            free = self.keys[pos] == -1
            self.keys[pos[free]] = want[free]  # keys wanting the same free slot: one gets it
            won = self.keys[pos] == want
            self.rows[pos[won]] = pending[won]
            pending, pos = pending[~won], (pos[~won] + 1) & self.mask

    def slot(self, q: np.ndarray) -> np.ndarray:
        return ((q.astype(np.uint64) * _FIBONACCI) >> self.shift).astype(np.int64)

    def find(self, q: np.ndarray) -> np.ndarray:
        """Row of each key ``q`` (1-D, >= 0), -1 where absent."""
        pos = self.slot(q)
        at = self.keys[pos]
        hit = at == q
        out = np.where(hit, self.rows[pos], -1)  # most keys sit in their own slot
        todo = np.flatnonzero(~hit & (at != -1))
        pos = (pos[todo] + 1) & self.mask
        while todo.size:
            at = self.keys[pos]
            hit = at == q[todo]
            out[todo[hit]] = self.rows[pos[hit]]
            go = ~hit & (at != -1)
            todo, pos = todo[go], (pos[go] + 1) & self.mask
        return out


@dataclass
class _Tables:
    """One chain's LM. Lists are indexed by order ``k`` (entries below the first used order are empty).

    ``n_k`` is the number of distinct k-grams (``V + 1`` for the dense order 1, BOS included).
    """

    vocab_size: int
    logp: list[np.ndarray]  # [k] (n_k,) ln p_k(w | h), the interpolated probability; BOS: -inf
    log_backoff: list[
        np.ndarray
    ]  # [k] (n_k,) ln gamma of the k-gram as a context, k < order; 0: none
    keys: list[np.ndarray]  # [k >= 2] (n_k,) sorted hierarchical int64 keys
    starts: list[
        np.ndarray
    ]  # [k >= 2] (n_{k-1} + 1,) continuations of context c: starts[c]:starts[c+1]
    disc: list[
        np.ndarray
    ]  # [k >= 2] (n_k,) discounted mass of each k-gram; per context sums to 1 - gamma
    cumdisc: list[
        np.ndarray
    ]  # [k >= 2] (n_k + 1,) cumulative disc with a leading 0, for searchsorted
    # [k >= 2] the keys' hash, built on the order's first lookup (about 70 ns a key, a fifth of
    # the fit's time), left out of pickles
    index: dict[int, _Hash] = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "index": {}}  # rebuilt on demand, not pickled

    @property
    def order(self) -> int:
        return len(self.logp) - 1

    @property
    def base(self) -> int:
        return self.vocab_size + 1

    def lookup(self, k: int, prefix: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Row of the k-gram (prefix's (k-1)-gram, w) in the order-k table, -1 where absent."""
        if k == 1:
            return w
        keys = self.keys[k]
        if keys.size == 0:
            return np.full(np.shape(w), -1, dtype=np.int64)
        index = self.index.get(k)
        if index is None:
            index = self.index[k] = _Hash(keys)
        q = np.where(prefix >= 0, prefix * self.base + w, 0)  # (keys of prefix -1 masked below)
        return np.where(prefix >= 0, index.find(q.ravel()).reshape(q.shape), -1)

    def start_state(self, b: int) -> list[np.ndarray]:
        """Context ids after BOS: ``state[m]`` (b,) is the id of the length-m context, -1 if none."""
        state = [np.empty(0, np.int64), np.full(b, self.vocab_size, dtype=np.int64)]
        return state + [np.full(b, -1, dtype=np.int64) for _ in range(2, self.order)]

    def advance(self, state: list[np.ndarray], w: np.ndarray) -> list[np.ndarray]:
        """Contexts after appending tokens ``w`` (b,): each m-gram is the old (m-1)-gram plus w."""
        return [state[0], w] + [self.lookup(m, state[m - 1], w) for m in range(2, self.order)]

    def gamma(self, k: int, ctx: np.ndarray) -> np.ndarray:
        """Backoff weight of the length-(k-1) contexts ``ctx`` at order k (1 where ctx is absent)."""
        return np.where(ctx >= 0, np.exp(self.log_backoff[k - 1][np.maximum(ctx, 0)]), 1.0)

    def draw(self, state: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """One token per context, walking the interpolation levels top-down (exact for temperature 1).

        At order k, with probability 1 - gamma(h) take an observed continuation of h (proportional to
        its discounted mass: cumulative sums + searchsorted), else descend; order 1 is dense.
        """
        b = state[1].size
        w = np.full(b, -1, dtype=np.int64)
        pending = np.ones(b, dtype=bool)
        for k in range(self.order, 1, -1):
            ctx = state[k - 1]
            u = rng.random(b)
            take = pending & (ctx >= 0) & (u < 1.0 - self.gamma(k, ctx))
            c = ctx[take]
            lo, hi = self.starts[k][c], self.starts[k][c + 1]
            idx = np.searchsorted(self.cumdisc[k], self.cumdisc[k][lo] + u[take], side="right") - 1
            w[take] = self.keys[k][np.clip(idx, lo, hi - 1)] % self.base
            pending &= ~take
        cdf = np.cumsum(np.exp(self.logp[1][: self.vocab_size]))
        u = rng.random(int(pending.sum())) * cdf[-1]
        w[pending] = np.minimum(np.searchsorted(cdf, u, side="right"), self.vocab_size - 1)
        return w

    def sparse(self, state: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        """Next-token distributions as ``scale[r] * p1 + sparse additions`` (exact, no (b, V) array).

        Unrolling the interpolation, p(w|h) = (prod of the gammas) p1(w) + the discounted masses of
        w's observed continuations, each scaled by the gammas above its order. Returns ``scale``
        (b,) and the additions as ``rows, tokens, mass`` (nnz,), sorted by (row, token), unique.
        """
        b = state[1].size
        scale = np.ones(b)
        rows, tokens, mass = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
        levels = []
        for k in range(self.order, 1, -1):
            ctx = state[k - 1]
            c = np.maximum(ctx, 0)
            lo = self.starts[k][c]
            lengths = np.where(ctx >= 0, self.starts[k][c + 1] - lo, 0)
            rows = np.repeat(np.arange(b), lengths)
            # concatenated ranges lo[r]:lo[r]+lengths[r] without a Python loop
            entries = np.arange(rows.size) + np.repeat(lo - np.cumsum(lengths) + lengths, lengths)
            tokens = self.keys[k][entries] % self.base
            mass = self.disc[k][entries] * scale[rows]
            levels.append((rows * self.vocab_size + tokens, mass))
            scale *= self.gamma(k, ctx)
        # an observed k-gram's suffix is an observed (k-1)-gram, so the bigram continuations (the
        # last level, sorted by row then token) hold every higher level's tokens: merge into them
        if levels:
            merged, mass = levels.pop()
            mass = mass.copy()
            for key, m in levels:
                mass[np.searchsorted(merged, key)] += m
        return scale, rows, tokens, mass

    def dense(self, state: list[np.ndarray], exponent: float = 1.0) -> np.ndarray:
        """Full next-token distributions ``(b, V)``, or with ``exponent`` e their unnormalised
        ``p ** e``: ``(s p1) ** e`` is an outer product, only the sparse entries need a power."""
        scale, rows, tokens, added = self.sparse(state)
        p1 = np.exp(self.logp[1][: self.vocab_size])
        if exponent == 1:
            p = np.outer(scale, p1)
            p[rows, tokens] += added
            return p
        p = np.outer(scale**exponent, p1**exponent)
        p[rows, tokens] = (scale[rows] * p1[tokens] + added) ** exponent
        return p

    def draw_truncated(
        self,
        state: list[np.ndarray],
        temperature: float,
        top_k: int,
        top_p: float,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """One token per context from the tempered, top-k then top-p truncated distribution.

        Whole-batch dense distributions, ``_CHUNK_FLOATS // V`` rows at a time (the vocabulary of
        a CPU-scale corpus is small enough that O(V) per token beats any per-row Python).
        """
        b = state[1].size
        w = np.empty(b, dtype=np.int64)
        step = max(1, _CHUNK_FLOATS // self.vocab_size)
        for lo in range(0, b, step):
            p = self.dense([s[lo : lo + step] for s in state], 1.0 / temperature)  # (rows, V)
            w[lo : lo + step] = draw_rows(truncate(p, top_k, top_p), rng)
        return w

    def ids(self, x: np.ndarray) -> list[np.ndarray]:
        """For BOS-padded blocks ``x`` (n, L + 1): ``ids[k]`` (n, L + 1), the row of the k-gram ending
        at each position (-1 where absent or where it would cross the block start)."""
        out = [np.empty(0, np.int64), x]
        for k in range(2, self.order + 1):
            idk = np.full(x.shape, -1, dtype=np.int64)
            idk[:, 1:] = self.lookup(k, out[k - 1][:, :-1], x[:, 1:])
            out.append(idk)
        return out

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """ln p of every token of BOS-padded blocks ``x`` (n, L + 1) given its block prefix: (n, L).

        ARPA backoff: the probability of the longest observed k-gram ending at the token, plus the
        log backoff of each context whose extension by the token is unseen (a k-gram's suffixes
        are all observed, so those are the orders above the longest match).
        """
        ids = self.ids(x)
        best = self.logp[1][x[:, 1:]]
        back = np.zeros(best.shape)
        for k in range(2, self.order + 1):
            idk, ctx = ids[k][:, 1:], ids[k - 1][:, :-1]
            best = np.where(idk >= 0, _at(self.logp[k], idk), best)
            back += np.where(idk < 0, _at(self.log_backoff[k - 1], ctx), 0.0)
        return best + back


def _at(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``a[rows]``, 0 where a row is -1 (absent)."""
    return np.where(rows >= 0, a[rows], 0.0) if a.size else np.zeros(rows.shape)


def truncate(p: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Unnormalised sampling weights ``p`` (rows, V) (already tempered) kept only on the top-k,
    then on the nucleus, in the order of Hugging Face's warpers and ``models/sampling.py``.

    Top-k keeps the k largest of each row (ties with the k-th survive). The nucleus keeps the
    most likely tokens whose mass ahead of them is below ``top_p`` of the row's remaining mass;
    the most likely always survives, and so do ties with the last one kept (values, not ranks,
    decide: one ``np.sort`` per row, no argsort).
    """
    v = p.shape[1]
    if 0 < top_k < v:
        kth = np.partition(p, v - top_k, axis=1)[:, v - top_k, None]
        p = np.where(p >= kth, p, 0.0)
    if top_p < 1:
        p = np.where(p >= _nucleus_cut(p, top_p)[:, None], p, 0.0)
    return p


def _nucleus_cut(p: np.ndarray, top_p: float, m: int = 64) -> np.ndarray:
    """Smallest value kept by the nucleus of each row of ``p`` (rows, V).

    Only the ``m`` largest of a row are sorted (``np.partition`` is O(V)); rows whose nucleus is
    longer than that are sorted whole.
    """
    rows, v = p.shape
    limit = top_p * p.sum(axis=1)
    m = min(m, v)
    desc = -np.sort(np.partition(-p, m - 1, axis=1)[:, :m] if m < v else -p, axis=1)
    ahead = np.cumsum(desc, axis=1) - desc
    size = np.maximum((ahead < limit[:, None]).sum(axis=1), 1)
    cut = desc[np.arange(rows), size - 1]
    longer = size == m  # (possibly) longer than the m largest: sort the whole row
    if m < v and longer.any():
        cut[longer] = _nucleus_cut(p[longer], top_p, v)
    return cut


def draw_rows(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of non-negative ``weights`` (rows, V), proportional to them."""
    cdf = np.cumsum(weights, axis=1)
    u = rng.random(weights.shape[0]) * cdf[:, -1]
    # the first index whose cdf exceeds u: a zero weight never is (its cdf equals its left one)
    return np.minimum((cdf <= u[:, None]).sum(axis=1), weights.shape[1] - 1)


def _modified_discounts(adjusted: np.ndarray) -> np.ndarray:
    """D1, D2, D3+ from the count-of-counts of adjusted counts (Chen & Goodman's estimates).

    Degenerate count-of-counts (tiny corpora: no doubletons, ...) give estimates outside (0, r);
    those fall back to the plain KN estimate Y (or 1/2 when Y itself is degenerate).
    """
    n = np.array([np.count_nonzero(adjusted == r) for r in range(1, 5)], dtype=float)
    y = n[0] / (n[0] + 2 * n[1]) if n[0] > 0 and n[1] > 0 else 0.5
    out = np.empty(3)
    for r in range(1, 4):
        d = r - (r + 1) * y * n[r] / n[r - 1] if n[r - 1] > 0 else -1.0
        out[r - 1] = d if 0 < d < r else y
    return out


def _fit_chain(blocks: np.ndarray, vocab_size: int, order: int, discount: float | None):
    """Count, smooth and index one chain's blocks ``(n, L)``; returns ``(_Tables, discounts (order, 3))``."""
    n, length = blocks.shape
    base = vocab_size + 1
    x = np.empty((n, length + 1), dtype=np.int64)
    x[:, 0] = vocab_size
    x[:, 1:] = blocks
    ids = [np.empty(0, np.int64), x]  # ids[k]: (n, L + 1) row of the k-gram ending at each position
    keys = [np.empty(0, np.int64)] * 2
    raw = [np.empty(0), np.bincount(blocks.ravel(), minlength=base)]
    suffix = [np.empty(0, np.int64)] * 2  # suffix[k]: (n_k,) row of each k-gram's last k-1 tokens
    for k in range(2, order + 1):
        prev = ids[k - 1][:, :-1]
        valid = prev >= 0
        q = prev[valid] * base + x[:, 1:][valid]
        uniq, first, inv, cnt = np.unique(
            q, return_index=True, return_inverse=True, return_counts=True
        )
        idk = np.full(x.shape, -1, dtype=np.int64)
        idk[:, 1:][valid] = inv
        ids.append(idk)
        keys.append(uniq)
        raw.append(cnt)
        suffix.append(ids[k - 1][:, 1:][valid][first])

    # adjusted counts: raw at the top order and for n-grams starting with BOS, else the number of
    # distinct left extensions (how many contexts a word completes, not how often)
    adjusted = [np.empty(0)] * (order + 1)
    adjusted[order] = raw[order]
    for k in range(order - 1, 0, -1):
        a = np.bincount(suffix[k + 1], minlength=raw[k].size)
        if k >= 2 and length >= k - 1:
            bos = np.unique(ids[k][:, k - 1])
            a[bos] = raw[k][bos]
        adjusted[k] = a
    adjusted[1] = adjusted[1].copy()
    adjusted[1][vocab_size] = 0  # BOS is a context only, never predicted

    discounts = np.empty((order, 3))
    logp = [np.empty(0)] * (order + 1)
    log_backoff = [np.empty(0)] * (order + 1)
    starts, disc, cumdisc = ([np.empty(0, np.int64)] * 2 for _ in range(3))
    for k in range(1, order + 1):
        a = adjusted[k].astype(float)
        seen = adjusted[k] > 0
        d = _modified_discounts(adjusted[k][seen]) if discount is None else np.full(3, discount)
        discounts[k - 1] = d
        dk = np.where(seen, d[np.clip(adjusted[k], 1, 3) - 1], 0.0)  # D(a) per n-gram
        ctx = keys[k] // base if k > 1 else np.zeros(base, dtype=np.int64)
        n_ctx = keys[k - 1].size if k > 2 else (base if k == 2 else 1)
        total = np.bincount(ctx, weights=a, minlength=n_ctx)
        gamma = np.ones(n_ctx)
        has = total > 0
        gamma[has] = np.bincount(ctx, weights=dk, minlength=n_ctx)[has] / total[has]
        dmass = np.where(seen, (a - dk) / np.maximum(total[ctx], 1.0), 0.0)
        if k == 1:
            lower = np.full(base, 1.0 / vocab_size)
        else:
            lower = np.exp(logp[k - 1][suffix[k]])
            log_backoff[k - 1] = np.log(gamma)
            starts.append(np.searchsorted(keys[k], np.arange(n_ctx + 1) * base))
            disc.append(dmass)
            cumdisc.append(np.concatenate([[0.0], np.cumsum(dmass)]))
        p = dmass + gamma[ctx] * lower
        if k == 1:
            p[vocab_size] = 0.0
        with np.errstate(divide="ignore"):
            logp[k] = np.log(p)
    return _Tables(vocab_size, logp, log_backoff, keys, starts, disc, cumdisc), discounts


def _check_tokens(data: object, name: str, vocab_size: int | None = None) -> np.ndarray:
    """Validate token blocks ``(chains, n_blocks, block_len)`` of ids in ``[0, vocab_size)``."""
    arr = protocol.check_data(data, name=name)
    if arr.ndim != 3 or arr.shape[2] < 1:
        raise ValueError(
            f"{name} must be token blocks of shape (chains, n_blocks, block_len); got shape {arr.shape}"
        )
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer token ids; got dtype {arr.dtype}")
    _check_ids(arr, name, vocab_size)
    return arr


def _check_ids(arr: np.ndarray, name: str, vocab_size: int | None) -> None:
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} token ids must be >= 0; got {arr.min()}")
    if vocab_size is not None and arr.size and arr.max() >= vocab_size:
        raise ValueError(f"{name} token ids must be < vocab_size={vocab_size}; got {arr.max()}")


def _pad_bos(blocks: np.ndarray, bos: int) -> np.ndarray:
    """(n, L) -> (n, L + 1) int64 with the BOS id in column 0."""
    x = np.empty((blocks.shape[0], blocks.shape[1] + 1), dtype=np.int64)
    x[:, 0] = bos
    x[:, 1:] = blocks
    return x


def _check_vocab(vocab: list[str], vocab_size: int) -> list[str]:
    words = [str(w) for w in vocab]
    if len(words) != vocab_size:
        raise ValueError(f"vocab must have vocab_size={vocab_size} words; got {len(words)}")
    if len(set(words)) != len(words):
        raise ValueError("vocab words must be unique; got duplicates")
    bad = [w for w in words if not w or w.split() != [w] or w in ("<s>", "</s>")]
    if bad:
        raise ValueError(
            f"vocab words must be non-empty, without whitespace, not <s> or </s>; got {bad[0]!r}"
        )
    return words


def _arpa_lines(log10p: np.ndarray, grams: list[str], log10bo: np.ndarray | None) -> list[str]:
    if log10bo is None:
        return [f"{p:.9g}\t{g}" for p, g in zip(log10p.tolist(), grams, strict=True)]
    return [
        f"{p:.9g}\t{g}\t{b:.9g}"
        for p, g, b in zip(log10p.tolist(), grams, log10bo.tolist(), strict=True)
    ]


@registry.families.register("ngram")
class NGram(protocol.Model, ScoresTokens, CompletesPrompts):
    """Interpolated Kneser-Ney n-gram LM over token blocks, one per chain.

    ``fit(data (chains, n_blocks, block_len))``; ``score_samples(data) -> (chains, n)`` mean ln p per
    token of each block (perplexity = exp(-score)); ``sample(n, rng) -> (chains, n, block_len)``.
    """

    kinds = frozenset({"tokens"})

    def __init__(
        self,
        order: Annotated[
            int,
            pydantic.Field(
                ge=1, le=6, description="n: each token is predicted from n - 1 before it"
            ),
        ] = 3,
        vocab_size: Annotated[
            int,
            pydantic.Field(ge=1, description="token ids are in [0, vocab_size); None: max id + 1"),
        ]
        | None = None,
        discount: Annotated[
            float,
            pydantic.Field(
                gt=0,
                lt=1,
                description="None: modified KN (D1, D2, D3+ per order, estimated); "
                "a number: plain KN with this discount at every order",
            ),
        ]
        | None = None,
        prompt_tokens: Annotated[
            int,
            pydantic.Field(
                ge=0,
                description="sampled blocks continue the first prompt_tokens of a random "
                "training block (0: sample from the block start)",
            ),
        ] = 0,
        temperature: decoding.Temperature = 1.0,
        top_k: decoding.TopK = 0,
        top_p: decoding.TopP = 1.0,
    ) -> None:
        self.order = order
        self.vocab_size = vocab_size
        self.discount = discount
        self.prompt_tokens = prompt_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p

    @classmethod
    def check_setup(cls, params: dict[str, Any], setup: Any) -> list[str]:
        """Config time: the prompt leaves room for a sampled token."""
        return setup.prompt_problems(params["prompt_tokens"])  # type: ignore[no-any-return]

    def _check_params(self) -> None:
        try:
            registry.params_model(type(self)).model_validate(self.get_params())
        except pydantic.ValidationError as err:
            problems = [
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}; got {e['input']!r}"
                for e in err.errors()
            ]
            raise ValueError("; ".join(problems)) from None

    def fit(self, data: np.ndarray, *, rng: np.random.Generator | None = None) -> NGram:
        """Count and smooth; deterministic, so ``rng`` is unused."""
        self._check_params()
        data = _check_tokens(data, "data", self.vocab_size)
        chains, _, block_len = data.shape
        if self.prompt_tokens >= block_len:
            raise ValueError(
                f"prompt_tokens must be < block_len={block_len}; got {self.prompt_tokens}"
            )
        vocab_size = self.vocab_size or int(data.max()) + 1
        if chains > 1 and data.strides[0] == 0:  # tile_chains: one shared pool, one LM
            fitted = [_fit_chain(data[0], vocab_size, self.order, self.discount)] * chains
        else:
            fitted = [_fit_chain(d, vocab_size, self.order, self.discount) for d in data]
        self.tables_ = [t for t, _ in fitted]
        self.discounts_ = np.stack([d for _, d in fitted])  # (chains, order, 3): D1, D2, D3+
        self.vocab_size_ = vocab_size
        self.block_len_: int | None = block_len
        self.prompts_ = np.array(data[:, :, : self.prompt_tokens], dtype=np.int64)
        return self

    def _chain(self, chain: int) -> _Tables:
        self.check_fitted()
        if not 0 <= chain < len(self.tables_):
            raise ValueError(f"chain must be in [0, {len(self.tables_)}); got {chain}")
        return self.tables_[chain]

    def score_samples(self, data: np.ndarray) -> np.ndarray:
        """Mean ln p per token of each block given its own prefix from BOS: ``(chains, n)``.

        ``data`` has ``chains`` chains or 1 (shared by every chain, like held-out data).
        """
        return self.score_tokens(data).mean(axis=2)

    def score_tokens(self, data: np.ndarray) -> np.ndarray:
        """ln p of every token given its block prefix from BOS: ``(chains, n, block_len)``.

        ``data`` has ``chains`` chains or 1 (shared by every chain, like held-out data).
        """
        self.check_fitted()
        data = _check_tokens(data, "data", self.vocab_size_)
        chains = len(self.tables_)
        if data.shape[0] not in (1, chains):
            raise ValueError(f"data must have 1 or {chains} chains; got {data.shape[0]}")
        return np.stack(
            [
                t.log_prob(_pad_bos(data[c if data.shape[0] > 1 else 0], self.vocab_size_))
                for c, t in enumerate(self.tables_)
            ]
        )

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(chains, n, block_len)`` blocks; with ``prompt_tokens`` p, each starts with the first p
        tokens of a random training block of its chain (the paper's protocol) and the rest is drawn."""
        n = protocol.check_n(n)
        self.check_fitted()
        if self.block_len_ is None:
            raise ValueError("block_len is unknown for a model loaded from ARPA: pass block_len")
        out = np.empty((len(self.tables_), n, self.block_len_), dtype=np.int64)
        for c, t in enumerate(self.tables_):
            prompts = self.prompts_[c, rng.integers(self.prompts_.shape[1], size=n)]
            out[c] = self._continue(t, prompts, self.block_len_ - prompts.shape[1], rng)
        return out

    def complete(
        self, prompts: np.ndarray, new_tokens: int, rng: np.random.Generator, chain: int = 0
    ) -> np.ndarray:
        """Continue each prompt (read from BOS) by ``new_tokens``: ``(b, p)`` -> ``(b, p + new_tokens)``."""
        t = self._chain(chain)
        prompts = np.asarray(prompts)
        if prompts.ndim != 2 or prompts.dtype.kind not in "iu":
            raise ValueError(
                f"prompts must be an integer array (b, p); got {prompts.dtype} {prompts.shape}"
            )
        _check_ids(prompts, "prompts", self.vocab_size_)
        if (
            isinstance(new_tokens, bool)
            or not isinstance(new_tokens, int | np.integer)
            or new_tokens < 0
        ):
            raise ValueError(f"new_tokens must be a non-negative integer; got {new_tokens!r}")
        return self._continue(t, prompts.astype(np.int64), int(new_tokens), rng)

    def predict_proba(self, prefixes: np.ndarray, chain: int = 0) -> np.ndarray:
        """The model's next-token distribution after each prefix (read from BOS): ``(b, p)`` ->
        ``(b, vocab_size)``, rows summing to 1 (temperature not applied)."""
        t = self._chain(chain)
        prefixes = np.asarray(prefixes, dtype=np.int64)
        _check_ids(prefixes, "prefixes", self.vocab_size_)
        return t.dense(self._read(t, prefixes))

    @staticmethod
    def _read(t: _Tables, prefixes: np.ndarray) -> list[np.ndarray]:
        state = t.start_state(prefixes.shape[0])
        for j in range(prefixes.shape[1]):
            state = t.advance(state, prefixes[:, j])
        return state

    def _continue(
        self, t: _Tables, prompts: np.ndarray, new_tokens: int, rng: np.random.Generator
    ) -> np.ndarray:
        """All sequences advance together, one position per step."""
        b, p = prompts.shape
        out = np.empty((b, p + new_tokens), dtype=np.int64)
        out[:, :p] = prompts
        state = self._read(t, prompts)
        d = decoding.Decoding.of(self)  # temperature, top_k, top_p (the rest do not apply)
        truncated = (0 < d.top_k < t.vocab_size) or d.top_p < 1
        marker = watermark.current()  # green-list watermark: green weights times exp(delta)
        for j in range(p, p + new_tokens):
            if marker is not None:
                prev = out[:, j - 1] if j else np.full(b, t.vocab_size)
                w = truncate(t.dense(state, 1.0 / d.temperature), d.top_k, d.top_p)
                out[:, j] = draw_rows(marker.bias_weights(w, prev), rng)
            elif truncated or d.temperature != 1:
                out[:, j] = t.draw_truncated(state, d.temperature, d.top_k, d.top_p, rng)
            else:  # the model itself: the exact level walk, no (b, V) arrays
                out[:, j] = t.draw(state, rng)
            state = t.advance(state, out[:, j])
        return out

    def to_arpa(self, path: str | Path, vocab: list[str], chain: int = 0) -> None:
        """Write chain ``chain``'s LM as an ARPA file (log10 probabilities and backoff weights).

        ``vocab[i]`` names token i. ``<s>`` is the BOS context (probability 0, as is ``</s>``, which
        a fixed-length block never emits); ``<unk>`` gets probability 0 unless it is a real word.
        KenLM's query with ``bos=True, eos=False`` then gives exactly this model's probabilities.
        """
        t = self._chain(chain)
        vocab_size = self.vocab_size_
        words = _check_vocab(vocab, vocab_size)
        names = np.array([*words, "<s>"], dtype=object)
        order = t.order

        def backoff(k: int) -> np.ndarray | None:
            return t.log_backoff[k] / _LN10 if k < order else None

        bo1 = backoff(1)
        sections = [
            _arpa_lines(t.logp[1][:vocab_size] / _LN10, words, None if bo1 is None else bo1[:-1])
        ]
        extra = [("<s>", 0.0 if bo1 is None else bo1[-1]), ("</s>", 0.0)]
        extra += [] if "<unk>" in words else [("<unk>", 0.0)]
        sections[0] += _arpa_lines(
            np.full(len(extra), _ARPA_ZERO),
            [w for w, _ in extra],
            None if bo1 is None else np.array([b for _, b in extra]),
        )
        rows = np.arange(vocab_size + 1)[:, None]
        for k in range(2, order + 1):
            keys = t.keys[k]
            rows = np.concatenate([rows[keys // t.base], (keys % t.base)[:, None]], axis=1)
            grams = [" ".join(r) for r in names[rows].tolist()]
            sections.append(_arpa_lines(t.logp[k] / _LN10, grams, backoff(k)))
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n\\data\\\n")
            f.writelines(f"ngram {k}={len(s)}\n" for k, s in enumerate(sections, 1))
            for k, lines in enumerate(sections, 1):
                f.write(f"\n\\{k}-grams:\n")
                f.write("\n".join(lines))
                f.write("\n")
            f.write("\n\\end\\\n")

    @classmethod
    def from_arpa(
        cls, path: str | Path, vocab: list[str], *, block_len: int | None = None
    ) -> NGram:
        """Load an ARPA LM as a one-chain fitted model; ``vocab[i]`` names token i.

        N-grams with ``</s>`` or words outside ``vocab`` are dropped (never queried for blocks).
        ``block_len`` is needed only by ``sample``; ``complete`` and scoring work without it.
        """
        words = _check_vocab(vocab, len(vocab))
        vocab_size = len(words)
        index = {w: i for i, w in enumerate(words)}
        index["<s>"] = vocab_size
        sections = _read_arpa(path)
        order = max(sections)
        t = _Tables(
            vocab_size,
            logp=[np.empty(0)] * 2,
            log_backoff=[np.empty(0)] * 2,
            keys=[np.empty(0, np.int64)] * 2,
            starts=[np.empty(0, np.int64)] * 2,
            disc=[np.empty(0)] * 2,
            cumdisc=[np.empty(0)] * 2,
        )
        for k in range(1, order + 1):
            kept = [f for f in sections.get(k, []) if all(w in index for w in f[1 : k + 1])]
            toks = np.array([[index[w] for w in f[1 : k + 1]] for f in kept], np.int64).reshape(
                -1, k
            )
            logp = np.array([float(f[0]) for f in kept]) * _LN10
            backoff = np.array([float(f[k + 1]) if len(f) > k + 1 else 0.0 for f in kept]) * _LN10
            if k == 1:
                t.logp[1] = np.full(vocab_size + 1, -np.inf)
                t.logp[1][toks[:, 0]] = logp
                t.logp[1][vocab_size] = -np.inf  # BOS is a context, never predicted
                t.log_backoff[1] = np.zeros(vocab_size + 1)
                t.log_backoff[1][toks[:, 0]] = backoff
                continue
            prefix, suffix = _ids_of(t, toks[:, :-1]), _ids_of(t, toks[:, 1:])
            if (prefix < 0).any() or (suffix < 0).any():
                bad = toks[np.argmax((prefix < 0) | (suffix < 0))]
                raise DataError(
                    f"{path}: the {k}-gram {' '.join(_index_words(bad, words))!r} lacks its "
                    f"{k - 1}-gram prefix or suffix"
                )
            keys = prefix * t.base + toks[:, -1]
            sort = np.argsort(keys)
            keys, prefix, suffix, logp, backoff = (
                a[sort] for a in (keys, prefix, suffix, logp, backoff)
            )
            # discounted mass = interpolated p minus what the lower order contributes
            lower = t.gamma(k, prefix) * np.exp(t.logp[k - 1][suffix])
            disc = np.maximum(np.exp(logp) - lower, 0.0)
            n_ctx = t.logp[k - 1].size
            t.keys.append(keys)
            t.logp.append(logp)
            t.log_backoff.append(backoff)
            t.starts.append(np.searchsorted(keys, np.arange(n_ctx + 1) * t.base))
            t.disc.append(disc)
            t.cumdisc.append(np.concatenate([[0.0], np.cumsum(disc)]))
        t.log_backoff[order] = np.empty(0)
        model = cls(order=order, vocab_size=vocab_size)
        model.tables_ = [t]
        model.vocab_size_ = vocab_size
        model.block_len_ = block_len
        model.prompts_ = np.zeros((1, 1, 0), dtype=np.int64)
        return model


def _index_words(ids: np.ndarray, words: list[str]) -> list[str]:
    return [words[i] if i < len(words) else "<s>" for i in ids.tolist()]


def _ids_of(t: _Tables, rows: np.ndarray) -> np.ndarray:
    """Row of each j-gram ``rows`` (m, j) in the order-j table (-1 where absent)."""
    ids = rows[:, 0]
    for i in range(1, rows.shape[1]):
        ids = t.lookup(i + 1, ids, rows[:, i])
    return ids


def _read_arpa(path: str | Path) -> dict[int, list[list[str]]]:
    """ARPA sections: ``{k: [fields of each k-gram line]}``."""
    sections: dict[int, list[list[str]]] = {}
    current: list[list[str]] | None = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\") and line.endswith("-grams:"):
                current = sections.setdefault(int(line[1:].split("-")[0]), [])
            elif line.startswith("\\"):
                current = None
            elif line and current is not None:
                current.append(line.split())
    if not sections:
        raise DataError(f"{path}: no n-gram sections; is it an ARPA file?")
    return sections
