"""The figure record every page embeds, and how a matplotlib figure becomes bytes."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    name: str
    title: str
    png: bytes
    lines: list[str] = field(default_factory=list)  # what each series means, under the caption


def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


