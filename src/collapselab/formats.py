"""How a run's data is written: metrics rows as JSON lines (per-chain values summarised into
them), the per-generation arrays as one ``.npz`` per commit (stacked across its generations),
samples as ``.npy``."""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """Plain JSON values; non-finite floats become null (JSON has no NaN/inf)."""
    kind = type(value)
    if kind is str or kind is int:  # most of a metrics row: no conversion
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.integer, bool, np.bool_)):
        return value.item() if hasattr(value, "item") else value
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


ENCODE = json.JSONEncoder(allow_nan=False).encode  # one encoder for every metrics line


def json_line(row: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A metrics row as one JSON line, and the row as written (``jsonable``)."""
    try:
        return row, ENCODE(row) + "\n"  # plain values, most rows: no conversion pass
    except (TypeError, ValueError):  # NumPy scalars, NaN or inf
        row = jsonable(row)
        return row, ENCODE(row) + "\n"


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` (``numpy.load`` reads it) whose wide integer and text arrays are deflated
    (indices in int64 shrink several-fold) and whose floats and one-byte arrays are stored
    (metric values barely compress; booleans and small counts halve, at 1 ms per 100 kB, more
    than the rest of a commit)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compresslevel=1) as zf:  # level 1: 5x faster than 6
        for key, value in arrays.items():
            value = np.asarray(value)
            entry = io.BytesIO()
            np.lib.format.write_array(entry, value, allow_pickle=False)
            stored = value.dtype.kind in "fc" or value.dtype.itemsize == 1
            packed = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            zf.writestr(f"{key}.npy", entry.getvalue(), compress_type=packed)
    return buf.getvalue()


def npy_writer(array: np.ndarray) -> Callable[[Any], None]:
    """Writes ``array`` as ``.npy`` straight into an open file (no copy in memory)."""
    return lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def stack(records: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several generations' records as one set of arrays: a key whose arrays agree in shape and
    dtype is stacked (``all/<key>``), any other is kept per generation (``<gen>/<key>``).
    ``gens`` names the stacked generations; a key missing from some of them names its own
    (``gens/<key>``). The entries grow with the keys, not the generations."""
    by_key: dict[str, dict[int, np.ndarray]] = {}
    for gen, record in records.items():
        for key, value in record.items():
            by_key.setdefault(key, {})[gen] = np.asarray(value)
    out: dict[str, np.ndarray] = {"gens": np.array(list(records), dtype=np.int64)}
    for key, values in by_key.items():
        arrays = list(values.values())
        if len({(a.shape, a.dtype) for a in arrays}) == 1:
            out[f"all/{key}"] = np.array(arrays)  # np.stack's result, 2-10x faster
            if len(values) < len(records):
                out[f"gens/{key}"] = np.array(list(values), dtype=np.int64)
        else:
            out.update({f"{gen}/{key}": a for gen, a in values.items()})
    return out


def unstack(arrays: dict[str, np.ndarray], gen: int) -> dict[str, np.ndarray]:
    """Generation ``gen``'s record out of ``stack``'s arrays."""
    out = {}
    for name, value in arrays.items():
        where, _, key = name.partition("/")
        if where == str(gen):
            out[key] = value
        elif where == "all":
            hits = np.flatnonzero(arrays.get(f"gens/{key}", arrays.get("gens")) == gen)
            if hits.size:
                out[key] = value[hits[0]]
    return out


@dataclass
class Staged:
    """A finished generation waiting for the next commit."""

    gen: int
    row: dict[str, Any]
    record: dict[str, np.ndarray]
    samples: dict[str | None, np.ndarray]
    models: dict[str | None, Any]
    per_chain: dict[str, np.ndarray] = field(default_factory=dict)


def summarize(staged: list[Staged]) -> None:
    """Each generation's per-chain values into its row: ``<key>``, the mean over chains (as
    NumPy's ``mean``), and, for more than one chain, ``<key>.sem``, ``std(ddof=1) / sqrt(n)`` to
    rounding; in one vectorised pass per key over every staged generation (a generation pays no
    per-key NumPy calls). Then ``nonfinite`` names the row's values that are not finite."""
    groups: dict[tuple[str, tuple[int, ...]], list[Staged]] = {}
    for st in staged:
        for key, values in st.per_chain.items():
            groups.setdefault((key, values.shape), []).append(st)
    for (key, _), members in groups.items():
        x = np.array([st.per_chain[key] for st in members], dtype=np.float64)
        x = x.reshape(len(members), -1)  # (generations, values)
        n = x.shape[1]
        mean = np.add.reduce(x, axis=1) / n
        x -= mean[:, None]  # in place: a temporary this size costs its page faults, 5x the math
        x *= x
        sem = np.sqrt(np.add.reduce(x, axis=1) / (n - 1) / n).tolist() if n > 1 else None
        for i, (st, m) in enumerate(zip(members, mean.tolist(), strict=True)):
            st.row[key] = m
            if sem is None:
                st.row.pop(f"{key}.sem", None)  # one chain: no standard error
            else:
                st.row[f"{key}.sem"] = sem[i]
    for st in staged:
        st.per_chain = {}  # in the row now
        bad = [k for k, v in st.row.items() if type(v) is float and not math.isfinite(v)]
        if bad:
            st.row["nonfinite"] = bad
