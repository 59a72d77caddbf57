"""Where every training row came from: pools, index plans and their record.

A policy never touches data. It returns a ``Plan``: the next training set as ``Part``s, each taking
rows from one pool, or from several pools read as one concatenation (``rows=None``: all of them, in
order). Pools are what the loop holds: position 0 is the real pool, 1.. the synthetic history
(oldest first), ``FRESH_POOL`` the new real data the plan asks for (``Plan.fresh`` rows per chain,
drawn from the source once, by the loop). The loop applies the plan once to the data and once to
the pools' labels, and stores the plan itself (compact dtypes, nothing when ``rows`` is ``None``)
as the generation's provenance: no policy runs twice, and a policy that needs more than selecting
rows cannot be written.

A row's label ``(origin, producer, index)`` is packed in one int64: ``origin`` is ``REAL`` (the
real pool), ``FRESH`` or the generation that produced it; ``producer`` numbers the producing model
(0 in a one-model run); ``index`` is the row in the real (or fresh) pool, or in that generation's
*produced* (pre-curation) samples.

A generation's record (in ``records/``, keys ``provenance.<producer>.*``) holds its plan, the
produced rows curation kept (only when something was filtered), each filter's scores, the mix that
built each consumer's pool in a multi-producer run (who produced it: the run's config).
``training_labels`` rebuilds any generation's per-row labels from these records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from collapselab.errors import RunError

REAL, FRESH = -2, -1
FRESH_POOL = -1  # position of the fresh pool in a Part's ``pools``
COMPOSITION_ORIGINS = 8  # generations named one by one in a metrics row's composition
_SHIFT_ORIGIN, _SHIFT_PRODUCER = 40, 32


def encode(origin: int, index: np.ndarray, producer: int | np.ndarray = 0) -> np.ndarray:
    index = np.asarray(index, dtype=np.int64)
    producer = np.asarray(producer, dtype=np.int64)
    return ((origin + 2) << _SHIFT_ORIGIN) | (producer << _SHIFT_PRODUCER) | index


def decode(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(origin, producer, index)`` arrays of the label codes."""
    codes = np.asarray(codes, dtype=np.int64)
    return ((codes >> _SHIFT_ORIGIN) - 2, (codes >> _SHIFT_PRODUCER) & 0xFF,
            codes & 0xFFFFFFFF)


def compact(rows: np.ndarray) -> np.ndarray:
    """Non-negative indices in the smallest unsigned dtype that holds them."""
    rows = np.asarray(rows)
    top = int(rows.max()) if rows.size else 0
    return rows.astype(np.min_scalar_type(top), copy=False)


# --- pools and plans ---------------------------------------------------------------------------


@dataclass
class Pool:
    """Rows a plan can take: ``data`` ``(C or 1, n, ...)`` and each row's label.

    ``key`` names the pool in a record: ``(REAL, 0)``, ``(FRESH, 0)`` or ``(generation, consumer)``.
    ``labels`` is ``(C or 1, n)``; it is built only when asked for (a pool of one origin knows its
    composition without it)."""

    key: tuple[int, int]
    data: np.ndarray
    _labels: np.ndarray | None = field(default=None, repr=False)
    origin: tuple[int, int] | None = None  # (origin, producer) when every row shares it
    rows: np.ndarray | None = field(default=None, repr=False)  # of a one-origin pool: its index

    @property
    def n(self) -> int:
        return int(self.data.shape[1])

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:  # one origin: row i is row ``rows[i]`` (or i) of it
            origin, producer = self.origin or (self.key[0], 0)
            rows = np.arange(self.n)[None, :] if self.rows is None else self.rows
            self._labels = encode(origin, rows, producer)
        return self._labels

    @classmethod
    def real(cls, data: np.ndarray, key: int = REAL) -> Pool:
        return cls((key, 0), data, origin=(key, 0))


@dataclass(frozen=True)
class Part:
    """Rows of the concatenation of ``pools`` (positions): all, in order (``rows=None``), or
    ``rows`` ``(C, k)`` of it, per chain."""

    pools: tuple[int, ...]
    rows: np.ndarray | None = None


@dataclass(frozen=True)
class Plan:
    """The next training set: its parts, concatenated along the sample axis, and how many fresh
    real rows per chain the loop must draw for ``FRESH_POOL``."""

    parts: tuple[Part, ...]
    fresh: int = 0


def draw_rows(n: int, k: int, chains: int, rng: np.random.Generator) -> np.ndarray | None:
    """``k`` of ``n`` rows per chain without replacement, a fresh random subset for every chain;
    ``None`` (all rows, in order) when ``k >= n``."""
    if k >= n:
        return None
    # random keys + argpartition: O(chains * n), no Python loop over chains
    return np.argpartition(rng.random((chains, n)), k - 1, axis=1)[:, :k]


Take = tuple[list[Pool], "np.ndarray | None"]  # a part resolved: its pools and rows


def takes(plan: Plan, pools: list[Pool]) -> list[Take]:
    """The plan's parts with the pools they read (``pools[FRESH_POOL]`` is the fresh pool when
    ``plan.fresh``)."""
    return [([pools[i] for i in part.pools], part.rows) for part in plan.parts]


def _gather(arrays: list[np.ndarray], rows: np.ndarray | None, chains: int) -> np.ndarray:
    whole = [a if a.shape[0] == chains else np.broadcast_to(a, (chains, *a.shape[1:]))
             for a in arrays]
    if len(whole) > 1:
        src = np.concatenate(whole, axis=1)
    else:  # a pool's own array (samples staged for the commit): a family gets it read-only
        src = whole[0].view()
        src.flags.writeable = False
    return src if rows is None else src[np.arange(chains)[:, None], rows]


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def data_of(parts: list[Take], chains: int) -> np.ndarray:
    """The training set ``(chains, size, ...)`` the parts select."""
    return _concat([_gather([p.data for p in src], rows, chains) for src, rows in parts])


def labels_of(parts: list[Take], chains: int) -> np.ndarray:
    """``(chains, size)`` label codes of the rows the parts select."""
    return _concat([_gather([p.labels for p in src], rows, chains) for src, rows in parts])


def composition(parts: list[Take], chains: int,
                producers: list[str] | None = None) -> dict[str, float]:
    """``composition.<origin>``: share of the training set from each origin (mean over chains):
    real, fresh, and each of the ``COMPOSITION_ORIGINS`` newest generations (per producer); older
    generations share ``gen_older``, so a row's size does not grow with the run (the full
    per-row origins: ``training_labels``). Parts that take whole single-origin pools are counted
    by size, the rest by their labels."""
    counts: dict[tuple[int, int], float] = {}
    total = 0
    for src, rows in parts:
        if rows is None and all(p.origin is not None for p in src):
            for p in src:
                counts[p.origin] = counts.get(p.origin, 0) + p.n * chains  # type: ignore[index]
                total += p.n * chains
            continue
        origin, producer, _ = decode(labels_of([(src, rows)], chains))
        pair = (origin.ravel() + 2) * 256 + producer.ravel()  # one bincount: no sort
        hist = np.bincount(pair)
        for code in np.flatnonzero(hist):
            key = (int(code) // 256 - 2, int(code) % 256)
            counts[key] = counts.get(key, 0) + float(hist[code])
        total += origin.size
    newest = sorted({o for o, _ in counts if o >= 0})[-COMPOSITION_ORIGINS:]
    out: dict[str, float] = {}
    for (o, p), count in sorted(counts.items()):
        producer = producers[p] if producers else None
        key = origin_key(o, producer) if o < 0 or o in newest else \
            "gen_older" + (f"/{producer}" if producer else "")
        out[f"composition.{key}"] = out.get(f"composition.{key}", 0.0) + count / total
    return out


def origin_key(origin: int, producer: str | None = None) -> str:
    if origin == FRESH:
        return "fresh"
    if origin < 0:
        return "real"
    return f"gen_{origin:03d}" + (f"/{producer}" if producer else "")


# --- the record ----------------------------------------------------------------------------------


def record_parts(parts: list[Take], prefix: str) -> dict[str, np.ndarray]:
    """Parts as compact arrays: per part its pools' keys and sizes, and its rows unless it takes
    them all in order."""
    out = {f"{prefix}parts": np.array(len(parts))}
    for i, (src, rows) in enumerate(parts):
        out[f"{prefix}part{i}.pools"] = np.array([p.key for p in src], dtype=np.int64).reshape(-1, 2)
        out[f"{prefix}part{i}.sizes"] = np.array([p.n for p in src], dtype=np.int64)
        if rows is not None:
            out[f"{prefix}part{i}.rows"] = compact(rows)
    return out


def read_parts(rec: dict[str, np.ndarray], prefix: str,
               pool: Any) -> list[Take]:
    """Parts of a record, each pool key ``(origin, index)`` of size n made by ``pool(o, i, n)``."""
    out = []
    for i in range(int(rec[f"{prefix}parts"])):
        keys, sizes = rec[f"{prefix}part{i}.pools"], rec[f"{prefix}part{i}.sizes"]
        rows = rec.get(f"{prefix}part{i}.rows")
        out.append(([pool(int(o), int(c), int(n)) for (o, c), n in zip(keys, sizes, strict=True)],
                    None if rows is None else rows.astype(np.int64)))
    return out


def record(parts: list[Take], *, kept: np.ndarray | None, produced: int,
           scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One producer's provenance of one generation: its training set's parts, the produced rows
    curation kept (``None``: all, in order) and each filter's scores. Who produced it (family,
    seed, streams) is in the run's config and manifest."""
    out = record_parts(parts, "train.")
    out["produced"] = np.array(produced)
    if kept is not None:
        out["kept"] = compact(kept)
    out.update({f"score.{name}": s.astype(np.float32) for name, s in scores.items()})
    return out


def training_labels(store: Any, generation: int, producer: str | None = None) -> np.ndarray:
    """``(chains, size)`` label codes of generation ``generation``'s training set, rebuilt from the
    stored records: pools resolved through the records of the generations that made them."""
    names = store.producer_names()
    chains = store.config().chains

    def output(g: int, p: int, n: int) -> Pool:  # producer p's curated output of generation g
        prov = store.provenance(g, names[p] if names else None)
        kept = prov["kept"] if "kept" in prov else np.arange(int(prov["produced"]))[None, :n]
        codes = encode(g, np.broadcast_to(kept.astype(np.int64), (chains, kept.shape[-1])), p)
        return Pool((g, p), np.empty((0, n)), codes)

    def pool(o: int, c: int, n: int) -> Pool:  # what a part read: real, fresh or c's pool of o
        if o < 0:
            return Pool.real(np.empty((0, n)), o)
        mix = store.pool(o, names[c] if names else None)
        if "parts" not in mix:
            return output(o, c, n)
        return Pool((o, c), np.empty((0, n)), labels_of(read_parts(mix, "", output), chains))

    return labels_of(read_parts(store.provenance(generation, producer), "train.", pool), chains)


def listing(store: Any, generation: int, producer: str | None = None) -> list[dict[str, Any]]:
    """One dict per training sample of ``generation`` (of ``producer``, in a multi-producer run):
    chain, position, origin, ``index`` (its row in the real pool, or in the producing generation's
    produced samples), producing model (family, generation, seed), ``stored_row`` (its row in that
    generation's ``samples.npy``, where kept), whether it is real, and every filter score it
    received when produced."""
    names = store.producer_names()
    if names and producer not in names:
        raise RunError(f"{store.root} is a multi-producer run: name one of its producers "
                       f"{names}" + (f"; got {producer!r}" if producer else ""))
    if not names and producer is not None:
        raise RunError(f"{store.root} has one model; it has no producer {producer!r}")
    cfg = store.config()
    families = [p.model.family for p in cfg.producers] if names else [cfg.model.family]
    origin, prod, index = decode(training_labels(store, generation, producer))
    rows = []
    scores: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    kept: dict[tuple[int, int], np.ndarray | None] = {}
    for c in range(origin.shape[0]):
        for j in range(origin.shape[1]):
            o, p, i = int(origin[c, j]), int(prod[c, j]), int(index[c, j])
            name = names[p] if names else None
            row: dict[str, Any] = {"chain": c, "position": j, "origin": origin_key(o, name),
                                   "is_real": o < 0, "index": i}
            if o >= 0:
                if (o, p) not in scores:
                    prov = store.provenance(o, name)
                    scores[o, p] = {k: v for k, v in prov.items() if k.startswith("score.")}
                    kept[o, p] = prov.get("kept")
                rows_kept = kept[o, p]  # the produced rows, in the order samples.npy holds them
                stored = i if rows_kept is None else int(np.flatnonzero(rows_kept[c] == i)[0])
                row.update(producer=name or "model", family=families[p], generation=o,
                           seed=cfg.seed, stored_row=stored)
                row.update({k: float(v[c, i]) for k, v in scores[o, p].items()})
            rows.append(row)
    return rows
