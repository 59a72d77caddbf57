"""The language track reproduces the paper's qualitative results (Shumailov et al. 2024) on the
built-in language, with the shipped demo configs (trigram KN, nucleus top_p 0.9), and, slow-marked,
on a WikiText-2 slice with the shipped CPU-scale configs (4 generations each: ~5 min of CPU).

Margins: each run is one seed; the test split is 200 blocks of 32 tokens (6.4k tokens), whose
perplexity under a fixed model has a relative standard error of about 2% (per-block log-ppl sd
~0.3 / sqrt(200)); the same test split scores every policy, so differences between policies are
smaller still. Measured (seed 0, generations 0-2; ppl_test): replace 205 -> 249 -> 292, real 10%
205 -> 245 -> 276, accumulate 205 -> 236 -> 261. So rises are asserted with 10% margins (five
standard errors), and the policies are compared at generation 2, where they are ~15 apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from collapselab.config import load_config
from collapselab.loop import run
from tests.conftest import ROOT, SHARED_DATA

DEMO = ROOT / "src" / "collapselab" / "configs" / "demo"
WIKITEXT = ROOT / "configs" / "language"
POLICIES = {"replace": "language_replace", "real10": "language_real_fraction",
            "accumulate": "language_accumulate"}


def curves(path: Path, out_dir: Path, generations: int) -> dict[str, np.ndarray]:
    """Run ``path`` for ``generations``; per-generation metrics and synthetic-ppl quantiles."""
    store = run(load_config(path, [f"out_dir={out_dir}", f"generations={generations}"]))
    rows = store.metrics()
    quantiles = np.array([
        np.quantile(store.artifacts(g)["synthetic_ppl"], [0.1, 0.5, 0.9, 0.99])
        for g in range(len(rows))
    ])  # (generations, 4): q10, q50, q90, q99 of the gen-0 model's perplexity of each block
    return {"ppl": np.array([r["ppl_test"] for r in rows]),
            "rare": np.array([r["rare_recall"] for r in rows]), "q": quantiles}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("language")
    return {k: curves(DEMO / f"{name}.yaml", out, 3) for k, name in POLICIES.items()}


def check_policies(runs: dict[str, dict[str, np.ndarray]], last: int) -> None:
    rep, real, acc = (runs[k]["ppl"] for k in ("replace", "real10", "accumulate"))
    assert rep[0] == real[0] == acc[0]  # generation 0 is the same model under every policy
    assert rep[1] > 1.1 * rep[0]  # the jump at the first synthetic generation
    assert (rep[1:] > 1.1 * rep[0]).all()  # and it stays above
    rise = {k: runs[k]["ppl"][last] - rep[0] for k in runs}
    assert rise["real10"] < rise["replace"]  # keeping 10% real data limits the damage
    assert rise["accumulate"] < rise["real10"]  # accumulating limits it most


def test_replace_rises_real_fraction_less_accumulate_least(demo):
    check_policies(demo, last=2)


def test_rare_tokens_vanish_under_replace(demo):
    rare = demo["replace"]["rare"]
    assert rare[-1] < 0.8 * rare[0]
    assert demo["accumulate"]["rare"][-1] > rare[-1]


def test_later_generations_pile_up_at_low_perplexity(demo):
    q = demo["replace"]["q"]
    assert q[-1, 0] < 0.9 * q[0, 0]  # q10: more mass where the original model is confident


def test_untruncated_sampling_grows_the_long_right_tail(tmp_path):
    """The paper's other histogram feature, and what it hinges on: with plain ancestral sampling
    (top_p 1) later generations write blocks the generation-0 model finds far less likely than
    anything it wrote itself (measured, seed 0, q90/q99: gen 0 208/338, gen 1 292/446, gen 2
    352/522); with nucleus sampling (the demo's top_p 0.9) mass piles up at low perplexity instead
    (test above) and no tail appears (the xfail below)."""
    store = run(load_config(DEMO / "language_replace.yaml", [
        f"out_dir={tmp_path}", "generations=3", "model.top_p=1.0",
        "metrics=[perplexity, synthetic_ppl]"]))
    q = np.array([np.quantile(store.artifacts(g)["synthetic_ppl"], [0.9, 0.99]) for g in range(3)])
    assert (q[1:] > 1.15 * q[0]).all()


@pytest.mark.xfail(strict=True, reason=(
    "does not hold on builtin: the whole gen-0-perplexity distribution of later generations "
    "shifts down (seed 0, replace, q10/q90/q99: gen 0 51/133/203, gen 1 45/131/194, gen 9 "
    "18/38/49); no new long right tail appears (on WikiText-2 it does, at generation 1 only)"))
def test_later_generations_grow_a_long_right_tail(demo):
    q = demo["replace"]["q"]
    assert q[1, 2] > q[0, 2] and q[1, 3] > q[0, 3]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "wikitext-2").is_dir(), reason="no ../shared/data/wikitext-2")
def test_wikitext2_replace_and_real10(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name the data relative to the repository root
    runs = {k: curves(WIKITEXT / f"ngram_wikitext2_{k}.yaml", tmp_path, 4)
            for k in ("replace", "real10")}
    rep, real = runs["replace"]["ppl"], runs["real10"]["ppl"]
    assert rep[1] > 1.1 * rep[0] and (rep[1:] > 1.1 * rep[0]).all()
    assert real[-1] - real[0] < rep[-1] - rep[0]
    assert runs["replace"]["rare"][-1] < 0.8 * runs["replace"]["rare"][0]
    for k in runs:
        q = runs[k]["q"]  # measured (replace) q10/q90/q99: gen 0 39/136/206, gen 1 30/148/247
        assert q[1, 0] < q[0, 0] and q[-1, 0] < q[0, 0]  # more mass at low perplexity
        # a longer right tail at generation 1 (1562 blocks: q90 +9%, q99 +20% measured); by
        # generation 3 the whole distribution has shifted down and the tail is gone
        assert q[1, 2] > q[0, 2] and q[1, 3] > q[0, 3]
