"""The sweep report's band figures: with few seeds each seed's value is drawn, not a t-band (from
2 seeds the band is wider than the data); with enough seeds the t-band stays inside the metric's
declared bounds; the theory is drawn where the runs recorded it; the y axis says what the metric
measures. Built from tidy tables in memory, and one tiny real sweep (2 runs of 3 generations)
for the theory rows and the figure files: a few seconds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from scipy import stats

from collapselab import registry
from collapselab.aggregate import MIN_BAND_SEEDS, band_figure, band_stats
from collapselab.metrics.declare import declared_bounds
from collapselab.report import Declared, draw

GENS = 4


def tidy(seeds: int, values: np.ndarray, group: str = "policy=replace()") -> pd.DataFrame:
    """A tidy table of one group: ``values`` (seeds, generations) of variance_ratio."""
    return pd.DataFrame([
        {"run": f"seed-{s}", "group": group, "seed": s, "generation": g,
         "metric": "variance_ratio", "value": float(values[s, g])}
        for s in range(seeds) for g in range(GENS)])


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures band_figure draws, kept open for inspection."""
    import matplotlib

    matplotlib.use("Agg")
    kept = []
    encode = draw.encode

    def keep(fig, *args, **kwargs):
        kept.append(fig)
        out = encode(fig, *args, **kwargs)
        return out

    monkeypatch.setattr(draw, "encode", keep)
    return kept


@pytest.fixture
def declared() -> Declared:
    """The variance ratio's real declarations (title, bounds >= 0) from its metric class."""
    import collapselab.components  # noqa: F401

    metric = registry.metrics.get("variance_ratio")
    out = Declared(bounds=declared_bounds(metric))
    out.plots = list(metric.plots)
    return out


def test_two_seeds_are_drawn_as_points_not_as_a_t_band(figures, declared):
    # two seeds far apart near 0: a t-band (t(0.975, 1) = 12.7) would reach far below 0
    values = np.array([[1.0, 0.6, 0.3, 0.1], [1.0, 0.2, 0.05, 0.01]])
    frame = tidy(2, values)
    st = band_stats(frame)
    assert (st["mean"] - st["half"]).min() < -0.5  # what the old band drew
    figure = band_figure("variance_ratio", st, frame, declared=declared)
    (ax,) = figures[0].axes
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]  # no band
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sorted(map(tuple, points.get_offsets().tolist())) == sorted(
        (g, values[s, g]) for s in range(2) for g in range(GENS))
    assert ax.get_ylabel().replace("\n", " ") == "variance ratio (the spread that is left)"
    assert "n = 2 seeds per group" in figure.title and "95% t-interval" in figure.title


def test_enough_seeds_draw_a_t_band_clipped_to_the_declared_bounds(figures, declared):
    rng = np.random.default_rng(0)
    seeds = MIN_BAND_SEEDS
    values = np.abs(rng.normal(0.05, 0.2, size=(seeds, GENS)))  # >= 0, spread wider than mean
    frame = tidy(seeds, values)
    st = band_stats(frame)
    band_figure("variance_ratio", st, frame, declared=declared)
    (ax,) = figures[0].axes
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert not [c for c in ax.collections if isinstance(c, PathCollection)]  # no points
    ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
    mean, sd = values.mean(axis=0), values.std(axis=0, ddof=1)
    half = stats.t.ppf(0.975, seeds - 1) * sd / np.sqrt(seeds)
    assert (mean - half).min() < 0  # the interval itself leaves the range ...
    assert ys.min() == 0.0  # ... the band stops at the bound
    assert ys.max() == pytest.approx((mean + half).max())


def test_theory_is_drawn_dashed_in_its_groups_colour(figures, declared):
    frame = pd.concat([tidy(2, np.ones((2, GENS)), "a"), tidy(2, np.ones((2, GENS)) / 2, "b")])
    theory = pd.DataFrame({"group": ["a"] * GENS, "generation": range(GENS),
                           "metric": "variance_ratio", "theory": 0.9 ** np.arange(GENS)})
    figure = band_figure("variance_ratio", band_stats(frame), frame, theory, declared)
    (ax,) = figures[0].axes
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    (line,) = dashed  # group b recorded no theory
    assert line.get_ydata().tolist() == pytest.approx(0.9 ** np.arange(GENS))
    assert line.get_color() == draw.PALETTE[0]  # group a's colour
    assert figure.title.endswith("dashed: the exact theory")
    legend = figures[0].legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [
        "a (n=2)", "b (n=2)", "one seed", "theory (exact)"]


def test_a_sweeps_theory_rows_reach_its_figures_and_files(tmp_path):
    """A real sweep (2 seeds, 3 generations): the theory each run recorded is read back per
    group, and ``write_sweep_figures`` writes each metric's figure as PNG, SVG and PDF."""
    from collapselab.aggregate import tidy_frames, write_sweep_figures
    from collapselab.store import RunStore
    from collapselab.sweep import load_sweep, run_sweep

    out = tmp_path / "sweep"
    run_sweep(load_sweep(raw={
        "base": {"generations": 3, "chains": 10, "model": {"family": "gaussian", "variance": "mle"},
                 "data": {"source": "normal", "size": 10, "dim": 1},
                 "metrics": ["variance_ratio"]},
        "grid": {"seed": [0, 1]}, "out_dir": str(out), "workers": 1}))
    frame, theory = tidy_frames(out)
    rows = RunStore(out / "seed-0").metrics()
    want = [r["variance_ratio.theory"] for r in rows]
    got = theory[theory["metric"] == "variance_ratio"].groupby("generation")["theory"].mean()
    assert got.tolist() == pytest.approx(want) and set(theory["group"]) == set(frame["group"])
    written = write_sweep_figures(out, tmp_path / "figs")
    assert {p.name for p in written} >= {f"band-variance_ratio.{ext}" for ext in ("png", "svg", "pdf")}
