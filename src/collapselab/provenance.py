"""Where every training sample came from.

Each row of a training set carries a label ``(origin, producer, index)`` packed in one int64:
``origin`` is ``REAL`` (the real pool), ``FRESH`` (new real data from the source) or the generation
that produced it; ``producer`` numbers the producing model (0 for a one-model run); ``index`` is the
row in the real pool, or in that generation's *produced* (pre-curation) samples. The labels are
composed by the same policy call as the data, on a copy of the same random stream, so they select
exactly the rows the data did (policies only subsample and concatenate along the sample axis).

``gen_XXX/provenance.npz`` holds, per generation: the training set's labels, which produced rows
survived curation, every filter's per-sample scores and the producing model's family and seed.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from collapselab.errors import RunError

REAL, FRESH = -2, -1
TRAIN_LABELS_LIMIT = 1_000_000  # training rows (chains x samples) whose labels are stored
_SHIFT_ORIGIN, _SHIFT_PRODUCER = 40, 32


def encode(origin: int, index: np.ndarray, producer: int = 0) -> np.ndarray:
    index = np.asarray(index, dtype=np.int64)
    return ((origin + 2) << _SHIFT_ORIGIN) | (producer << _SHIFT_PRODUCER) | index


def decode(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(origin, producer, index)`` arrays of the label codes."""
    codes = np.asarray(codes, dtype=np.int64)
    return ((codes >> _SHIFT_ORIGIN) - 2, (codes >> _SHIFT_PRODUCER) & 0xFF,
            codes & 0xFFFFFFFF)


def real_labels(real: np.ndarray) -> np.ndarray:
    """Labels of the real pool ``(chains, n, ...)``: ``(chains, n)``."""
    return np.broadcast_to(encode(REAL, np.arange(real.shape[1])), real.shape[:2])


def origin_key(origin: int, producer: str | None = None) -> str:
    if origin < 0:
        return "real"
    return f"gen_{origin:03d}" + (f"/{producer}" if producer else "")


class _LabelSource:
    """Stands in for the source when a policy composes labels: ``fresh`` draws what the real source
    would (so the random stream advances identically) and returns ``FRESH`` labels instead."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def fresh(self, n: int, chains: int, rng: np.random.Generator) -> np.ndarray:
        self.source.fresh(n, chains, rng)
        return np.broadcast_to(encode(FRESH, np.arange(n)), (chains, n))


def compose(policy: Any, *, real: np.ndarray, history: list[np.ndarray], labels: np.ndarray,
            history_labels: list[np.ndarray], size: int, rng: np.random.Generator,
            source: Any) -> tuple[np.ndarray, np.ndarray]:
    """The policy's next training set and its labels ``(chains, size')``."""
    twin = copy.deepcopy(rng)  # the labels' compose draws exactly what the data's does
    train = policy.compose(real=real, history=history, size=size, rng=rng, source=source)
    codes = policy.compose(real=labels, history=history_labels, size=size, rng=twin,
                           source=_LabelSource(source))
    return train, np.broadcast_to(codes, train.shape[:2])


def composition(codes: np.ndarray, producers: list[str] | None = None) -> dict[str, float]:
    """``composition.<origin>``: share of the training set from each origin (mean over chains)."""
    origin, producer, _ = decode(codes)
    # count (origin, producer) pairs with one bincount: O(rows), no sort, no Python per row
    pair = (origin.ravel() + 2) * 256 + producer.ravel()
    counts = np.bincount(pair)
    out: dict[str, float] = {}
    for code in np.flatnonzero(counts):
        o, p = int(code) // 256 - 2, int(code) % 256
        key = f"composition.{origin_key(o, producers[p] if producers else None)}"
        out[key] = out.get(key, 0.0) + float(counts[code] / codes.size)
    return out


def record(codes: np.ndarray, kept: np.ndarray, scores: dict[str, np.ndarray], *, family: str,
           generation: int, seed: int, producer: str = "model") -> dict[str, np.ndarray]:
    """The arrays of ``gen_XXX/provenance.npz``. Per-row training labels are kept in compact
    dtypes, and only up to ``TRAIN_LABELS_LIMIT`` rows: an accumulating run of 1000 chains would
    otherwise write ~100 MB a generation (measured: 11 GB for the demo's Gaussian run). Beyond
    that the generation's composition (in its metrics row) is what remains."""
    origin, prod, index = decode(codes)
    train: dict[str, np.ndarray] = {"train_rows": np.array(codes.size)}
    if codes.size <= TRAIN_LABELS_LIMIT:
        train.update(train_origin=origin.astype(np.int32), train_producer=prod.astype(np.uint8),
                     train_index=index.astype(np.int64), train_is_real=origin < 0)
    return {
        **train,
        "produced_kept": np.asarray(kept),
        "producer_family": np.array(family), "producer_generation": np.array(generation),
        "producer_seed": np.array(seed), "producer_name": np.array(producer),
        "producer_streams": np.array(f"SeedSequence({seed}, spawn_key=(1, {generation}))"),
        **{f"score.{name}": s for name, s in scores.items()},
    }


def listing(store: Any, generation: int, producer: str | None = None) -> list[dict[str, Any]]:
    """One dict per training sample of ``generation`` (of ``producer``, in a multi-producer run):
    chain, position, origin, producing model (family, generation, seed), whether it is real, and
    every filter score it received when produced."""
    names = [p.name for p in store.config().producers or []]
    if names and producer not in names:
        raise RunError(f"{store.root} is a multi-producer run: name one of its producers "
                       f"{names}" + (f"; got {producer!r}" if producer else ""))
    if not names and producer is not None:
        raise RunError(f"{store.root} has one model; it has no producer {producer!r}")
    prov = store.provenance(generation, producer)
    if "train_origin" not in prov:
        raise RunError(f"generation {generation} trained on {int(prov['train_rows']):,} rows: more "
                       f"than the {TRAIN_LABELS_LIMIT:,} whose labels are stored; its metrics row "
                       "records the composition")
    rows = []
    cache: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    origin, prod, index = prov["train_origin"], prov["train_producer"], prov["train_index"]
    for c in range(origin.shape[0]):
        for j in range(origin.shape[1]):
            o, p, i = int(origin[c, j]), int(prod[c, j]), int(index[c, j])
            name = names[p] if names else None
            row: dict[str, Any] = {"chain": c, "position": j, "origin": origin_key(o, name),
                                   "is_real": o < 0, "index": i}
            if o >= 0:
                src = cache.get((o, p))
                if src is None:
                    src = cache[o, p] = store.provenance(o, name)
                row.update(producer=str(src["producer_name"]), family=str(src["producer_family"]),
                           generation=o, seed=int(src["producer_seed"]))
                for key in src:
                    if key.startswith("score."):
                        row[key] = float(src[key][c, i])
            rows.append(row)
    return rows
