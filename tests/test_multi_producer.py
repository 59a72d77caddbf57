"""Cross-model loops: several producers, each trained on a mix of the others' output."""

from __future__ import annotations

import pytest

from collapselab.config import ConfigError, load_config
from collapselab.loop import run
from collapselab.report import write_report

TWO = "configs/curation/two_producers.yaml"


def test_producer_mixes_are_validated_by_name_and_sum():
    with pytest.raises(ConfigError) as err:
        load_config(TWO, [
            "producers=[{name: a, model: {family: ngrm}, trains_on: {c: 0.5}}]"])
    assert err.value.problems == [
        "producers[0].model.family: Unknown model family 'ngrm'. Did you mean: ngram? "
        f"Available: {err.value.problems[0].split('Available: ')[1]}",
        "producers[0].trains_on: unknown producer(s) ['c']; producers: ['a']",
        "producers[0].trains_on: shares must sum to 1; got 0.5",
    ]


def test_a_two_producer_loop_runs_and_reports_each_producers_share(tmp_path):
    cfg = load_config(TWO, [f"out_dir={tmp_path}", "generations=2", "data.size=100"])
    store = run(cfg)
    last = store.metrics()[-1]
    # the bigram learns only from the trigram; the trigram from both, half each (90% synthetic)
    assert last["bigram/composition.real"] == pytest.approx(0.1)
    assert last["bigram/composition.gen_000/trigram"] == pytest.approx(0.9)
    assert last["trigram/composition.gen_000/bigram"] == pytest.approx(0.45, abs=0.02)
    assert last["trigram/composition.gen_000/trigram"] == pytest.approx(0.45, abs=0.02)
    assert "bigram/ppl_test" in last and "trigram/ppl_test" in last
    page = write_report([store.root]).read_text()
    assert "bigram: composition" in page and "trigram: composition" in page
