"""The forgetting metric: per state / word type, the first generation it is missing from the
training set and from the generated data, read back from a run against its real count."""

from __future__ import annotations

import numpy as np
import pytest

from collapselab.errors import DataError
from collapselab.metrics.forgetting import counts_per_chain, first_absence, presence

CATEGORICAL = ["model.family=categorical", "data.source=categorical", "data.size=12",
               "data.probs=[0.4, 0.3, 0.2, 0.06, 0.04]", "chains=40"]


def test_counts_per_chain():
    x = np.array([[0, 2, 2], [1, 1, 1]])
    assert counts_per_chain(x, 3).tolist() == [[1, 0, 2], [0, 3, 0]]


def test_replace_loses_from_the_generated_data_one_generation_before_the_training_set(run_config):
    gens = 12
    store = run_config(None, *CATEGORICAL, f"generations={gens}", "metrics=[forgetting]")
    fa = first_absence(store)
    assert fa.real.shape == fa.train.shape == (40, 5) and fa.generations == gens
    assert (fa.real.sum(axis=1) == 12).all()  # each chain's own real rows
    seen = fa.real > 0
    assert (fa.train[~seen] == 0).all()  # never in the real data: missing from the start
    # replace: generation t + 1 trains on generation t's output
    lost = seen & (fa.generated >= 0) & (fa.generated < gens - 1)
    assert lost.any() and (fa.train[lost] == fa.generated[lost] + 1).all()
    assert (fa.train[seen & (fa.generated < 0)] == -1).all()
    rows = store.metrics()
    for gen in (0, 5, gens - 1):  # the rows count what the record says (absorbing under replace)
        forgotten = (seen & (fa.train >= 0) & (fa.train <= gen)).sum(axis=1)
        assert rows[gen]["forgotten_train"] == pytest.approx(forgotten.mean())
        assert store.artifacts(gen)["forgetting_train"].dtype == np.uint8


def test_accumulate_never_loses_a_real_state_from_the_training_set(run_config):
    store = run_config(None, *CATEGORICAL, "generations=6", "policy.name=accumulate",
                       "metrics=[forgetting]")
    fa = first_absence(store)
    assert (fa.train[fa.real > 0] == -1).all()


def test_rare_word_types_are_lost_first(run_config):
    gens = 4
    store = run_config(None, "model.family=ngram", "data.source=builtin", "data.size=40",
                       "chains=2", f"generations={gens}", "metrics=[forgetting]")
    counts, train, _ = first_absence(store).lost()
    when = np.where(train < 0, gens, train)  # never lost: censored at G
    means = [when[(counts >= lo) & (counts < hi)].mean() for lo, hi in [(1, 2), (2, 8), (8, 10**9)]]
    assert means[0] < means[1] < means[2]


def test_a_run_without_the_metric_is_a_clear_error(run_config):
    store = run_config(None, *CATEGORICAL, "generations=2", "metrics=[support]")
    with pytest.raises(DataError, match=r"has no forgetting record: add 'forgetting' to metrics"):
        first_absence(store)


def test_the_report_draws_when_each_state_was_forgotten(run_config, tmp_path):
    """The chart: runs overlaid, the exact Wright-Fisher expectation beside the replace run, the
    seed's point in the caption; a page without the metric has no such chart."""
    from collapselab.report import write_report

    stores = [run_config(None, *CATEGORICAL, "generations=8", f"name=f-{policy}",
                         f"policy.name={policy}", "metrics=[support, forgetting]")
              for policy in ("replace", "accumulate")]
    page = write_report([s.root for s in stores], tmp_path / "page.html").read_text()
    assert 'id="forgetting-categorical"' in page and "Minority data vanish first" in page
    assert "Wright-Fisher, exact" in page and "0% from the training set" in page  # accumulate
    plain = run_config(None, *CATEGORICAL, "generations=2", "name=plain", "metrics=[support]")
    assert "forgetting-" not in write_report([plain.root], tmp_path / "plain.html").read_text()


def test_presence_is_a_count_above_zero():
    data = np.random.default_rng(3).integers(0, 12, (7, 30, 1))  # ids 10, 11: beyond the types
    np.testing.assert_array_equal(presence(data, 10), counts_per_chain(np.minimum(data, 10), 11)[:, :10] > 0)
