"""How every figure looks, and how it becomes bytes: the figure record pages embed, a
colour-blind-safe palette that stays visible on white, paper sizes, fonts, and legends placed
outside the data.

- :data:`PALETTE`: Okabe & Ito's colours (*Color Universal Design*, 2008) without the yellow and
  the sky blue, and with the orange darkened: each has a contrast of at least 3:1 against white
  (WCAG 2.1's rule for graphical objects). Runs or series beyond six repeat a colour with a
  marker (:func:`series_style`).
- :func:`ordered`: an ordered series (generations) on ``plasma`` cut at 0.62, where it is still
  3:1 against white (its bright yellow end would vanish).
- Sizes: :data:`FULL` (6.75 in, a two-column page's text width) for small multiples,
  :data:`COLUMN` (3.25 in) for one chart; PNG at 150 dpi on the page, 300 dpi for a paper.
"""

from __future__ import annotations

import functools
import io
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#BD8300", "#000000")
MARKERS = ("", "o", "s", "^", "D", "v")  # round k of the palette: a marker tells the runs apart
SEQUENTIAL = ("plasma", 0.62)  # colormap, and where it stops (still 3:1 against white)
REAL = "#555555"  # real data's share in a composition plot
FULL, COLUMN = 6.75, 3.25  # inches: a page's text width, a column's
ROW = 2.3  # inches: the height of one row of panels
PAGE_DPI, PAPER_DPI = 150, 300

RC: dict[str, Any] = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "figure.titlesize": 9,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "grid.linewidth": 0.5, "lines.linewidth": 1.4, "lines.markersize": 3,
    "legend.frameon": False, "svg.fonttype": "none", "pdf.fonttype": 42,
    "figure.constrained_layout.use": True, "svg.hashsalt": "collapselab",
}


@dataclass
class Figure:
    name: str
    title: str
    png: bytes
    lines: list[str] = field(default_factory=list)  # what each series means, under the caption
    wide: bool = False  # small multiples: the page gives it its full width
    files: dict[str, bytes] = field(default_factory=dict)  # paper copies: {"svg": ..., ...}


def contrast(color: Any) -> float:
    """WCAG 2.1 contrast ratio of ``color`` against white (1 to 21)."""
    from matplotlib.colors import to_rgb

    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in to_rgb(color))
    return 1.05 / (0.2126 * r + 0.7152 * g + 0.0722 * b + 0.05)


def series_style(i: int) -> dict[str, Any]:
    """Colour (and, past the palette, a marker) of the ``i``-th run or series."""
    marker = MARKERS[(i // len(PALETTE)) % len(MARKERS)]
    return {"color": PALETTE[i % len(PALETTE)], "marker": marker or None, "markevery": 0.1}


def ordered(i: int, n: int) -> Any:
    """Colour of item ``i`` of ``n`` ordered ones (generations), dark to light."""
    import matplotlib

    name, stop = SEQUENTIAL
    return matplotlib.colormaps[name](stop * i / max(n - 1, 1))


F = TypeVar("F", bound=Callable[..., Any])


def styled(draw: F) -> F:
    """Run a drawing function under the report's matplotlib settings (:data:`RC`)."""

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context(RC):  # type: ignore[arg-type]
            return draw(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def wrap(text: str, inches: float) -> str:
    """``text`` in lines that fit ``inches`` at 8 pt (about 11 characters an inch)."""
    return "\n".join(textwrap.wrap(text, max(16, int(11 * inches))))


def ylabel(text: str, height: float = ROW) -> str:
    """A y-axis label wrapped to the axis' height."""
    return wrap(text, height)


def legend_below(fig: Any, handles: list[Any], labels: list[str]) -> Any:
    """One legend for the whole figure, under its axes (never over the data), in as many columns
    as its longest label lets fit the figure's width (a longer label is wrapped); the figure
    grows by the legend's height, so the axes keep theirs."""
    width = fig.get_figwidth()
    labels = [wrap(text, (width - 0.6) * 1.15) for text in labels]  # 7 pt: 13 characters an inch
    longest = max((len(line) for text in labels for line in text.split("\n")), default=1)
    per_column = 0.45 + longest / 13  # inches: the handle and the text
    ncol = max(1, min(len(labels), 4, int(width // per_column)))
    rows = [labels[i:i + ncol] for i in range(0, len(labels), ncol)]
    lines = sum(max(text.count("\n") + 1 for text in row) for row in rows)
    fig.set_figheight(fig.get_figheight() + 0.08 + 0.135 * lines)
    return fig.legend(handles, labels, loc="outside lower center", ncol=ncol)


def log_axis(axis: Any) -> None:
    """A log axis labelled 1, 2, 5, 10, 20, ... in plain numbers (no overlapping 2×10¹)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def encode(fig: Any, formats: tuple[str, ...] = ("png",), dpi: int = PAGE_DPI
           ) -> dict[str, bytes]:
    """The figure in each of ``formats`` (png at ``dpi``; svg and pdf are vectors); closes it."""
    import matplotlib.pyplot as plt

    out = {}
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=_metadata(fmt))
        out[fmt] = buf.getvalue()
    plt.close(fig)
    return out


def _metadata(fmt: str) -> dict[str, Any] | None:
    """No dates or versions in the files: the same run gives byte-identical figures."""
    return {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)


def png_bytes(fig: Any) -> bytes:
    """The figure as a PNG for the page; closes it."""
    return encode(fig)["png"]


def figure(fig: Any, name: str, title: str, lines: list[str] | None = None,
           wide: bool = False, paper: bool = False) -> Figure:
    """A :class:`Figure` of a matplotlib figure: a page PNG, or (``paper``) a 300 dpi PNG with an
    SVG and a PDF beside it."""
    if not paper:
        return Figure(name, title, png_bytes(fig), lines or [], wide)
    files = encode(fig, ("png", "svg", "pdf"), PAPER_DPI)
    return Figure(name, title, files["png"], lines or [], wide, files)
