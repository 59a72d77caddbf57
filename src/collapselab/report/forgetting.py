"""When each category was forgotten, by how common it was: the ``forgetting`` metric's record
(``collapselab.metrics.forgetting``) drawn per run, the theory's expected loss time beside it.

One chart per kind of data (categorical states, word types): x is a type's count in the real data
(log scale), y the first generation it was missing from the generated data (types never lost
within the run's G generations sit at G: the expectation is censored the same way). Each run is
a colour: its types as faint points (a sample of them where there are many) and the mean per count
(or per band of counts) as a line. The theory is the expected first absence under ``replace`` for
a chain refitted to its own samples: exact (Wright-Fisher) for categorical runs, the Poisson(1)
branching approximation for word types in a large corpus.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.report.draw import FULL, ROW, Figure, figure, legend_below, series_style, styled
from collapselab.report.view import RunView

CAPTION = ("When each category was forgotten, by how common it was: the first generation each "
           "real {what} was missing, against its count in the real data. Minority data vanish "
           "first (the seed's point: the rarer a category or word in the real data, the sooner "
           "the model stops producing it)")
MAX_POINTS = 4000  # faint points drawn per run (a random sample beyond)


def recorded(view: RunView) -> Any | None:
    """The run's first-absence record, or None where it did not record ``forgetting``."""
    from collapselab.metrics.forgetting import first_absence

    if view.completed < 1 or "forgotten_train" not in view.frame.columns:
        return None  # its rows say whether it did: no artifact opened for the others
    return first_absence(view.store)


def count_bands(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x, band of each type)``: one band per distinct count where there are few (<= 25), else
    log-spaced bands; x is each band's geometric-mean count."""
    distinct = np.unique(counts)
    if len(distinct) <= 25:
        return distinct.astype(float), np.searchsorted(distinct, counts)
    edges = np.unique(np.geomspace(counts.min(), counts.max() + 1, 16).astype(int))
    band = np.clip(np.searchsorted(edges, counts, side="right") - 1, 0, len(edges) - 2)
    used = np.unique(band)
    x = np.array([np.exp(np.log(counts[band == b]).mean()) for b in used])
    return x, np.searchsorted(used, band)


def theory_curve(view: RunView, counts: np.ndarray, generations: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str] | None:
    """``(counts, E first absence from the generated data, from the training set, how)`` under
    ``replace``, censored at G; None for other policies. Missing from the training set at t is
    missing from the generated data at t - 1, so its expectation is 1 + the other's over G - 1."""
    from collapselab import theory

    cfg = view.config
    if cfg.policy.name != "replace" or cfg.curation or cfg.producers:
        return None
    if cfg.data.source == "categorical":
        m0, m = cfg.data.size, cfg.synthetic_size or cfg.data.size
        if max(m0, m) > theory.WF_MAX_SIZE:
            return None
        x = np.arange(1, m0 + 1)
        return (x, theory.expected_loss_generation(x, m0, m, generations),
                1 + theory.expected_loss_generation(x, m0, m, generations - 1), "Wright-Fisher")
    x = np.unique(np.geomspace(1, max(int(counts.max()), 2), 60).astype(int))
    return (x, theory.branching_loss_generation(x, generations),
            1 + theory.branching_loss_generation(x, generations - 1), "branching approx.")


@styled
def forgetting_figure(runs: list[tuple[RunView, Any]], kind: str) -> Figure:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(FULL, ROW + 1.0), sharey=True)
    rng = np.random.default_rng(0)
    lines, last = [], 0
    what = {"categorical": "state", "tokens": "word type"}.get(kind, "type")
    for i, (view, fa) in enumerate(runs):
        style = series_style(i)
        counts, train, generated = fa.lost()
        gens = fa.generations
        last = max(last, gens)
        curve = theory_curve(view, counts, gens)
        pick = (rng.choice(len(counts), MAX_POINTS, replace=False) if len(counts) > MAX_POINTS
                else np.arange(len(counts)))
        x, band = count_bands(counts)
        for j, (ax, first) in enumerate(zip(axes, (generated, train), strict=True)):
            when = np.where(first < 0, gens, first).astype(float)  # never: censored at G
            jitter = np.exp(rng.uniform(-0.08, 0.08, len(pick)))
            ax.scatter(counts[pick] * jitter, when[pick] + rng.uniform(-0.2, 0.2, len(pick)), s=2,
                       color=style["color"], alpha=0.15, lw=0)
            mean = np.bincount(band, weights=when) / np.bincount(band)
            ax.plot(x, mean, color=style["color"], marker=style["marker"] or "o", ms=3,
                    label=view.label)
            if curve is not None:
                ax.plot(curve[0], curve[1 + j], color=style["color"], ls="--", lw=1.2,
                        label=f"theory ({curve[3]})")
        if curve is not None:
            lines.append(f"{view.label}, dashed: the expected first generation of absence under "
                         f"replace for a chain refitted to its own samples ({curve[3]}"
                         + (", exact" if curve[3] == "Wright-Fisher" else ", for counts far "
                            "below the corpus size") + ").")
        lines.append(f"{view.label}: {(generated >= 0).mean():.0%} of the real {what}s were "
                     f"missing from the generated data at some generation, "
                     f"{(train >= 0).mean():.0%} from the training set, within {gens}.")
    for ax, title in zip(axes, ("missing from the generated data", "missing from the training set"),
                         strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(f"{what}'s count in the real data")
        ax.set_title(title)
        ax.set_ylim(-0.5, last + 0.5)
    axes[0].set_ylabel("first generation missing")
    legend_below(fig, *axes[0].get_legend_handles_labels())
    lines.append(f"Points: single {what}s (jittered); those never missing within the run's G "
                 "generations sit at G. Under real_fraction and accumulate a missing type can "
                 "come back (it is still in the real rows): its first absence is a dip, not a loss.")
    return figure(fig, f"forgetting-{kind}", CAPTION.format(what=what) + ".", lines, wide=True)


def forgetting_figures(pages: list[RunView]) -> list[Figure]:
    """A chart per kind of data among the runs that recorded ``forgetting`` (runs overlaid)."""
    by_kind: dict[str, list[tuple[RunView, Any]]] = {}
    for view in pages:
        fa = recorded(view)
        if fa is not None:
            kind = "categorical" if view.config.data.source == "categorical" else "tokens"
            by_kind.setdefault(kind, []).append((view, fa))
    return [forgetting_figure(runs, kind) for kind, runs in by_kind.items()]
