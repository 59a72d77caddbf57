"""Green-list watermark: the samplers' bias, the z-test detector's rates, the filter in a loop."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import collapselab.components  # noqa: F401
from collapselab import registry
from collapselab.config import load_config
from collapselab.loop import run
from collapselab.report import write_report
from collapselab.watermark import Watermark, applied, current
from tests.conftest import ROOT, SHARED_DATA


@pytest.fixture(scope="module")
def lm():
    source = registry.sources.build("builtin", {})
    real = source.real(400, 1, np.random.default_rng(0))
    model = registry.families.build("ngram", {"order": 3, "prompt_tokens": 4, "top_p": 0.9,
                                              "vocab_size": source.vocab_size}).fit(real)
    return source, real, model


def test_green_lists_hold_gamma_of_the_vocabulary_and_depend_on_the_key():
    wm = Watermark(gamma=0.25)
    rows = wm.green_rows(np.arange(50), 1000)  # (50, 1000)
    # Binomial(50_000, 0.25): sd of the share 0.0019; 5 sd
    assert abs(rows.mean() - 0.25) < 0.01
    assert (rows != Watermark(gamma=0.25, key=1).green_rows(np.arange(50), 1000)).mean() > 0.3
    assert Watermark(z_threshold=4.0).false_positive_rate == pytest.approx(3.167e-5, rel=1e-3)


def test_the_active_watermark_reaches_the_torch_logits_processor():
    torch = pytest.importorskip("torch")
    from collapselab.models.decoding import Decoding
    from collapselab.models.sampling import process_logits

    wm = Watermark(gamma=0.5, delta=2.0)
    logits, ids = torch.zeros(3, 20), torch.tensor([[1, 4], [2, 5], [3, 6]])
    with applied(wm):
        assert current() is wm
        out = process_logits(logits, ids, 0, Decoding(), sampling=True)
    assert current() is None
    green = wm.green_rows(np.array([4, 5, 6]), 20)
    np.testing.assert_allclose(out.numpy(), 2.0 * green)


def test_detector_finds_watermarked_ngram_text_and_spares_real_text(lm):
    """delta 3, gamma 0.25, z > 4 on 32-token blocks (4 prompt tokens unscored): TPR >= 0.95
    and FPR <= 0.01 (implied per-block FPR 3e-5: 0 of 400 real blocks expected)."""
    source, real, model = lm
    wm = Watermark(gamma=0.25, delta=3.0, z_threshold=4.0)
    rng = np.random.default_rng(1)
    with applied(wm):
        marked = model.sample(200, rng)
    plain = model.sample(200, rng)
    assert wm.detect(marked, skip=4).mean() >= 0.95
    assert wm.detect(real, skip=4).mean() <= 0.01
    assert wm.detect(plain, skip=4).mean() <= 0.01
    # unwatermarked z-scores are standard normal: mean within 5 SE of 0 (n = 400)
    assert abs(wm.z_scores(real, skip=4).mean()) < 5 / math.sqrt(400)


def _ppl(cfg_path, tmp_path, **over):
    overrides = [f"out_dir={tmp_path}", "generations=3", "data.size=200", "chains=1",
                 *(f"{k}={v}" for k, v in over.items())]
    store = run(load_config(cfg_path, overrides))
    return [r["ppl_test"] for r in store.metrics()], store.metrics()


def test_watermark_filter_keeps_a_watermarked_pool_at_baseline_while_unfiltered_collapses(tmp_path):
    """The acceptance pair at CPU-test scale (configs/curation/watermark_*.yaml, 6 generations of
    500 blocks, measured: filtered ppl 212.1 every generation; unfiltered 212 -> 318)."""
    kept, rows = _ppl("configs/curation/watermark_filtered.yaml", tmp_path)
    assert all(abs(p / kept[0] - 1) < 0.02 for p in kept)  # within 2% of generation 0
    assert all(r["watermark.tpr"] >= 0.95 and r["watermark.fpr"] <= 0.01 for r in rows)
    assert all(r["watermark.ppl_cost"] > 1 for r in rows)
    unfiltered, _ = _ppl("configs/curation/watermark_unfiltered.yaml", tmp_path)
    assert unfiltered[-1] > 1.05 * unfiltered[0]
    root = tmp_path / "curation-watermark-filtered"
    lines = (root / "metrics.jsonl").read_text().splitlines()
    # what is left of the synthetic pool is what the detector missed (TPR >= 0.95 above)
    assert json.loads(lines[-1])["composition.real"] >= 0.98
    # the report tabulates TPR, FPR and the perplexity cost by generation
    page = write_report([root]).read_text()
    table = page.split("Watermark: detection rate")[1].split("</table>")[0]
    assert "<th>tpr</th><th>fpr</th><th>fpr_implied</th>" in table
    assert table.count("<tr><td>") == len(rows)
    assert f"<td>{rows[-1]['watermark.ppl_cost']:.4g}</td>" in table
    assert "Curation: share of each generation" in page  # kept.watermark by generation


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "wikitext-2").is_dir(), reason="no ../shared/data/wikitext-2")
def test_the_watermark_pair_on_wikitext2(tmp_path):
    """configs/curation/watermark_wikitext2_*.yaml for 3 generations (about 2.5 min): the detector
    separates marked from real WikiText-2 blocks, the filtered pool stays at generation 0's test
    perplexity and the unfiltered one rises (measured: 130.5 -> 171.7 -> 197.7)."""
    over = {"generations": 3, "data.size": 1562}
    kept, rows = _ppl(ROOT / "configs/curation/watermark_wikitext2_filtered.yaml", tmp_path, **over)
    assert all(r["watermark.tpr"] >= 0.95 and r["watermark.fpr"] <= 0.01 for r in rows)
    assert kept == [kept[0]] * 3
    unfiltered, _ = _ppl(ROOT / "configs/curation/watermark_wikitext2_unfiltered.yaml", tmp_path,
                         **over)
    assert unfiltered[0] == kept[0] and unfiltered[2] > 1.2 * unfiltered[0]
