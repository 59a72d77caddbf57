"""The generation being made, and a scratch folder for the processes a family starts for it.

The loop enters :func:`generation` around each producer's fit and sample. A family that hands work
to other processes (torchrun workers for a fit across processes, a vLLM engine for sampling) takes
a folder from :func:`scratch` for what it passes them, and names the generation in its errors with
:func:`label` (``"generation 3"``, ``"generation 3 of producer a"``; outside a run: ``"the fit"``).

Scratch folders are made under the system's temporary folder (``TMPDIR`` moves it), never inside
the run directory: the run directory holds only what the store commits, and a scratch folder a
killed process left there would make the store refuse the folder as not a run. Each scratch
folder is removed when its ``with`` block ends, however it ends.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Generation:
    run: Path  # the run directory
    index: int
    producer: str | None = None  # named producers only


_current: contextvars.ContextVar[Generation | None] = contextvars.ContextVar("generation",
                                                                            default=None)


@contextlib.contextmanager
def generation(run: str | Path, index: int, producer: str | None = None) -> Iterator[Generation]:
    """Within the block, :func:`current` is this generation."""
    token = _current.set(Generation(Path(run), index, producer))
    try:
        yield _current.get()  # type: ignore[misc]
    finally:
        _current.reset(token)


def current() -> Generation | None:
    return _current.get()


def label(default: str = "the fit") -> str:
    """``"generation 3"`` (``"generation 3 of producer a"``) inside the loop, else ``default``."""
    gen = _current.get()
    if gen is None:
        return default
    return f"generation {gen.index}" + (f" of producer {gen.producer}" if gen.producer else "")


@contextlib.contextmanager
def scratch(purpose: str) -> Iterator[Path]:
    """A new empty folder for ``purpose`` (``"fit"``, ``"vllm"``), removed after the block."""
    gen = _current.get()
    where = "" if gen is None else f"{gen.run.name}-g{gen.index}-"
    prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", f"collapselab-{purpose}-{where}")
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
