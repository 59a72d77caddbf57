"""The collapse alarm: held-out NLL against generation 0's, paired over chains or bootstrapped over
held-out blocks; the first generation it fires is the run's 'generations to collapse'."""

from __future__ import annotations

import numpy as np
import pytest

import collapselab.components  # noqa: F401
from collapselab.config import load_config
from collapselab.loop import run
from collapselab.metrics.alarm import excess_test, generations_to_collapse


def test_paired_test_by_hand():
    # chain means 0.1, 0.2, 0.3: mean 0.2, sd 0.1, se 0.1/sqrt(3); z(0.99) = 2.3263
    excess = np.array([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]])
    out = excess_test(excess, alpha=0.01, margin=0.01, bootstrap=100, rng=np.random.default_rng(0))
    assert out["alarm_excess_nll"] == pytest.approx(0.2)
    assert out["alarm_lower"] == pytest.approx(0.2 - 2.3263479 * 0.1 / np.sqrt(3))
    assert out["alarm_effect"] == pytest.approx(2.0)
    assert out["alarm"] == 1.0
    out = excess_test(excess, alpha=0.01, margin=0.1, bootstrap=100, rng=np.random.default_rng(0))
    assert out["alarm"] == 0.0  # lower bound 0.066 does not clear a margin of 0.1


def test_single_chain_bootstrap_leaves_the_metrics_stream_alone():
    rng = np.random.default_rng(3)
    before = np.random.default_rng(3).random()
    excess = np.r_[np.zeros(50), np.ones(50)][None]  # mean 0.5; bootstrap sd 0.05
    out = excess_test(excess, alpha=0.01, margin=0.0, bootstrap=4000, rng=rng)
    assert out["alarm_lower"] == pytest.approx(0.5 - 2.326 * 0.05, abs=0.02)
    assert rng.random() == before  # spawned, not drawn from


def test_generations_to_collapse_reads_the_first_alarm():
    rows = [{"generation": g, "alarm": float(g >= 3)} for g in range(6)]
    assert generations_to_collapse(rows) == 3
    assert generations_to_collapse(rows[:3]) is None


@pytest.mark.parametrize("size", [100, 316])
def test_the_alarm_flags_replace_and_not_accumulate_on_the_gaussian_table(tmp_path, size):
    first = {}
    for policy in ("replace", "accumulate"):
        cfg = load_config("configs/gaussian/replace.yaml", [
            f"out_dir={tmp_path}", f"name={policy}", "generations=30", "chains=300",
            f"data.size={size}", f"policy.name={policy}", "keep_samples=none",
            "metrics=[collapse_alarm]"])
        rows = run(cfg).metrics()
        assert rows[0]["alarm"] == 0 and rows[0]["alarm_excess_nll"] == 0
        first[policy] = generations_to_collapse(rows)
    # replace: excess NLL about t/(2M) nats after t fits; margin 0.01 is cleared within a few
    assert first["replace"] is not None and first["replace"] <= 6
    assert first["accumulate"] is None


def test_single_chain_language_alarm_fires_under_replace(tmp_path):
    cfg = load_config("src/collapselab/configs/demo/language_replace.yaml", [
        f"out_dir={tmp_path}", "generations=4", "metrics=[perplexity, collapse_alarm]"])
    rows = run(cfg).metrics()
    assert [r["alarm"] for r in rows][0] == 0
    # ppl_test rises 205 -> 249 -> 292 (log ratio 0.2 nats a generation) over 200 test blocks
    assert rows[-1]["alarm"] == 1
    assert rows[-1]["alarm_excess_nll"] == pytest.approx(
        np.log(rows[-1]["ppl_test"] / rows[0]["ppl_test"]), rel=0.05)
