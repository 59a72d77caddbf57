"""What a run's manifest commits and whether its files agree: each file's size and CRC-32, and
``metrics.jsonl``'s committed rows (``RunStore.verify``, ``collapselab verify``)."""

from __future__ import annotations

import builtins
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"


@dataclass
class Checksum:
    """The size and CRC-32 of bytes as they go by: a check, at 1.5 GB/s, that a file holds what
    was committed (it detects damage, not tampering)."""

    bytes: int = 0
    crc: int = 0

    def update(self, data: builtins.bytes | memoryview) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.bytes += len(data)

    @property
    def entry(self) -> dict[str, Any]:
        """As the manifest lists it."""
        return {"bytes": self.bytes, "crc32": f"{self.crc:08x}"}

    @classmethod
    def of_file(cls, path: Path) -> Checksum:
        out = cls()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                out.update(chunk)
        return out


class Summed:
    """A file being written whose bytes ``checksum`` sees on their way in."""

    def __init__(self, f: Any, checksum: Checksum) -> None:
        self.f, self.checksum = f, checksum

    def write(self, data: bytes) -> int:
        self.checksum.update(data)
        return int(self.f.write(data))


def malformed(manifest: Any) -> str | None:
    """What makes a parsed manifest unusable; None if nothing does."""
    if not isinstance(manifest, dict):
        return f"a JSON {type(manifest).__name__}, not an object"
    for key in ("status", "completed_generations"):
        if key not in manifest:
            return f"no {key}"
    done = manifest["completed_generations"]
    if type(done) is not int or done < 0:
        return f"completed_generations must be a whole number >= 0; got {done!r}"
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(
            isinstance(e, dict) and type(e.get("bytes")) is int and isinstance(e.get("crc32"), str)
            for e in files.values()):
        return "files must map each file to its bytes and crc32"
    return None


def damaged(root: Path, problems: list[str]) -> str:
    """The message refusing a damaged run: its problems, one per line if several."""
    if len(problems) == 1:
        return f"{root} is damaged: {problems[0]}"
    return f"{root} is damaged:\n" + "\n".join(f"  - {p}" for p in problems)


def generation_of(line: bytes) -> int | None:
    """The generation of a metrics line; None for a line that is not a metrics row."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    gen = row.get("generation") if isinstance(row, dict) else None
    return gen if type(gen) is int else None


def problems(root: Path, manifest: dict[str, Any]) -> list[str]:
    """What is wrong with the files the (well-formed) ``manifest`` of the run at ``root`` lists,
    each naming the file: every listed file must hold the size and CRC-32 committed;
    ``metrics.jsonl`` one row per committed generation, in order, then only rows of uncommitted
    generations (a killed writer's, removed by the next) and perhaps a torn last line."""
    listed = manifest.get("files") or {}
    out = [problem for rel, entry in listed.items() if rel != METRICS
           for problem in [check_file(root, rel, entry)] if problem]
    return out + check_metrics(root, manifest["completed_generations"], listed.get(METRICS))


def check_file(root: Path, rel: str, entry: dict[str, Any]) -> str | None:
    """What is wrong with ``rel`` under ``root`` against its manifest ``entry`` (None: nothing)."""
    try:
        got = Checksum.of_file(root / rel)
    except FileNotFoundError:
        return f"{rel} is missing; the manifest committed it"
    except OSError as exc:
        return f"{rel} is unreadable ({exc.strerror or exc})"
    if got.bytes != entry["bytes"]:
        return f"{rel} holds {got.bytes} bytes; the manifest committed {entry['bytes']}"
    if got.entry["crc32"] != entry["crc32"]:
        return f"{rel} has crc32 {got.entry['crc32']}; the manifest committed {entry['crc32']}"
    return None

def check_metrics(root: Path, done: int, committed: dict[str, Any] | None) -> list[str]:
    """What is wrong with ``metrics.jsonl``'s rows against ``done`` committed generations and
    the manifest's entry for it (``committed``; None: an older manifest)."""
    path = root / METRICS
    if not path.is_file():
        return [f"{METRICS} is missing; the manifest committed {done} rows"] if done else []
    data = path.read_bytes()
    *lines, torn = data.split(b"\n")
    gens = [generation_of(line) for line in lines]
    if None in gens:
        return [f"{METRICS} line {gens.index(None) + 1} is not a metrics row"]
    held = sum(g < done for g in gens)  # type: ignore[operator]
    if held != done:
        return [f"{METRICS} holds {held} rows{' and a torn line' * bool(torn)}; the manifest "
                f"committed {done}"]
    wrong = next((i for i, g in enumerate(gens[:done]) if g != i), None)
    if wrong is not None:
        return [f"{METRICS} line {wrong + 1} holds generation {gens[wrong]}; expected {wrong}"]
    if committed is None:
        return []
    if committed.get("rows") != done:
        return [f"the manifest lists {committed.get('rows')} rows of {METRICS} and commits "
                f"{done} generations"]
    got = Checksum()
    got.update(memoryview(data)[:sum(len(line) + 1 for line in lines[:done])])
    if got.bytes != committed["bytes"]:
        return [f"{METRICS} holds {got.bytes} bytes in its {done} rows; the manifest "
                f"committed {committed['bytes']}"]
    if got.entry["crc32"] != committed["crc32"]:
        return [f"{METRICS} has crc32 {got.entry['crc32']} over its {done} rows; the "
                f"manifest committed {committed['crc32']}"]
    return []
