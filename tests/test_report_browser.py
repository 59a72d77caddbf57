"""The report as a person sees it, in a real browser (headless Chromium over the DevTools
protocol, ``tests/browser.py``): every image decodes and is shown at its own size, nothing is
logged as an error, the table of contents links to sections that exist, the page fits the
window's width, the continuation table has one row per generation, and the screenshot is not
blank. Skipped, with the reason, only where no Chromium is installed (``.ci/run`` installs
Debian's ``chromium`` when absent)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from browser import find_browser, open_page  # noqa: E402

from collapselab.report import write_report  # noqa: E402

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium on PATH (apt-get install -y chromium; .ci/run does)")

SEEN = """JSON.stringify({
  images: Array.from(document.images).map(i => ({id: i.id, complete: i.complete,
                                                 width: i.naturalWidth, shown: i.width,
                                                 wide: i.parentElement.className === 'wide'})),
  rows: Array.from(document.querySelectorAll('table.text tr.gen')).map(r => r.cells[0].innerText),
  prompts: document.querySelectorAll('table.text mark.prompt').length,
  toc: Array.from(document.querySelectorAll('nav#toc a')).map(
    a => [a.getAttribute('href'), !!document.querySelector(a.getAttribute('href'))]),
  fits: document.documentElement.scrollWidth <= window.innerWidth})"""


def test_a_language_run_report_renders_in_chromium(run_config, tmp_path):
    import json

    from matplotlib.image import imread

    gens = 3
    store = run_config(None, "name=lang", f"generations={gens}",
                       "model={family: ngram, order: 2, prompt_tokens: 2}",
                       "data={source: builtin, size: 60, vocab_size: 200, block_len: 16,"
                       " train_blocks: 120, valid_blocks: 20, test_blocks: 20}",
                       "metrics=[perplexity, rare_recall, types, synthetic_ppl, diversity,"
                       " true_kl, {name: continuations, prompts: 2}]")
    page = write_report([store.root], tmp_path / "report.html")
    seen = open_page(BROWSER, page, SEEN)
    assert seen.errors == []
    got = json.loads(seen.value)
    assert len(got["images"]) >= 8
    assert all(i["complete"] and i["width"] > 0 for i in got["images"]), got["images"]
    # figures at their own size (150 dpi), never stretched or squeezed (one run: no small
    # multiples, every chart a column's width)
    assert all(i["shown"] == i["width"] and not i["wide"] for i in got["images"]), got["images"]
    assert got["rows"] == [f"gen {g}" for g in range(gens)]  # one row per generation
    assert got["prompts"] == 2 * gens
    assert got["toc"] and all(found for _, found in got["toc"]), got["toc"]
    assert got["fits"]  # no sideways scrolling of the page (wide tables scroll inside)

    pixels = imread(io.BytesIO(seen.screenshot), format="png")[..., :3]  # (H, W, 3) in [0, 1]
    assert pixels.shape[0] > 500 and pixels.shape[1] > 500
    dark = (pixels.mean(axis=-1) < 0.5).mean()  # text and lines on a white page
    assert 0.005 < dark < 0.5 and np.std(pixels) > 0.05
