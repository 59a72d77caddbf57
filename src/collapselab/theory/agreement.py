"""Agreement of a run with its theory: measured chain means against predictions, as z."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

PASS_Z = 4.0  # |z| below this passes: a two-sided false alarm of 6e-5 per row when the theory holds
BOUNDS = {1.0: "upper", -1.0: "lower"}  # a row's ``<metric>.theory_bound``: the theory is a bound


@dataclass(frozen=True)
class Agreement:
    """One predicted metric of one run at one generation, measured against its theory."""

    metric: str
    generation: int
    measured: float  # the chain mean the run recorded
    theory: float  # the predicted expectation of that chain mean
    se: float  # standard error of the chain mean: the theory's sd / sqrt(chains), else the chains'
    se_from: str  # "theory" or "chains"
    z: float  # (measured - theory) / se
    bound: str | None = None  # "upper" / "lower": the theory bounds the expectation, one-sided test

    @property
    def passed(self) -> bool:
        if not np.isfinite(self.z):
            return False
        if self.bound == "upper":
            return bool(self.z < PASS_Z)
        if self.bound == "lower":
            return bool(self.z > -PASS_Z)
        return bool(abs(self.z) < PASS_Z)

    @property
    def theory_text(self) -> str:
        """The prediction as printed: ``1.06``, or ``<= 1.06 (upper bound)`` for a bound."""
        if self.bound is None:
            return f"{self.theory:.5g}"
        return f"{'<=' if self.bound == 'upper' else '>='} {self.theory:.5g} ({self.bound} bound)"


def agreement(rows: list[dict[str, Any]], generations: list[int] | None = None) -> list[Agreement]:
    """Measured against predicted, per metric with a theory, at ``generations`` (default: the last
    recorded one; negative counts from the end) of a run's metric rows (``RunStore.metrics()``).
    Metrics are in the rows' order; a generation with no measured value (degenerate) is left out.
    A bound (``<metric>.theory_bound``: 1 upper, -1 lower) passes unless z is beyond it by 4."""
    if not rows:
        return []
    by_gen = {int(r["generation"]): r for r in rows}
    last = max(by_gen)
    wanted = [last] if not generations else [g if g >= 0 else last + 1 + g for g in generations]
    out = []
    for gen in wanted:
        row = by_gen.get(gen)
        if row is None:
            continue
        for key in row:
            if not key.endswith(".theory") or not isinstance(row.get(key[:-7]), (int, float)):
                continue
            metric = key[:-7]
            se, se_from = row.get(f"{metric}.theory_se"), "theory"
            if se is None:
                se, se_from = row.get(f"{metric}.sem", float("nan")), "chains"
            measured, predicted = float(row[metric]), float(row[key])
            z = (measured - predicted) / se if se and np.isfinite(se) and se > 0 else float("nan")
            bound = BOUNDS.get(row.get(f"{metric}.theory_bound"))  # type: ignore[arg-type]
            out.append(Agreement(metric, gen, measured, predicted, float(se), se_from, float(z),
                                 bound))
    return out


def run_agreement(run_dir: Any, generations: list[int] | None = None) -> list[Agreement]:
    """:func:`agreement` of a run directory (what a report calls; it reads only the directory)."""
    from collapselab.store import RunStore

    store = RunStore(run_dir)
    store.manifest()  # a folder that is not a run: a RunError naming it
    return agreement(store.metrics(), generations)
