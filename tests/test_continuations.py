"""Fixed prompts continued by every generation: stored as text in the run directory, the same
prompts every generation, shown in the report (one row per generation) and by
``collapselab samples``; adding the metric changes no other metric's values."""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from collapselab.cli import app
from collapselab.errors import DataError
from collapselab.report import write_report
from collapselab.sources.text import BuiltinSource

LANG = ["model={family: ngram, order: 2, prompt_tokens: 2}",
        "data={source: builtin, size: 60, vocab_size: 200, block_len: 16, train_blocks: 120,"
        " valid_blocks: 20, test_blocks: 20}", "generations=3"]


def _run(run_config, name, metrics):
    return run_config(None, f"name={name}", *LANG, f"metrics={metrics}")


def test_every_generation_continues_the_same_held_out_prompts(run_config, tmp_path):
    store = _run(run_config, "cont", "[perplexity, {name: continuations, prompts: 3, "
                                     "prompt_tokens: 5, new_tokens: 7}]")
    test = BuiltinSource(vocab_size=200, block_len=16, train_blocks=120, valid_blocks=20,
                         test_blocks=20)
    expected = [test.decode(test.corpus.test[r, :5]) for r in (0, 10, 19)]  # evenly spaced
    for g in range(3):
        arts = store.artifacts(g)
        assert arts["continuation_prompts"].dtype.kind == "U"  # text, no pickles
        assert arts["continuation_prompts"].tolist() == expected
        assert [len(t.split()) for t in arts["continuations"]] == [7, 7, 7]
    assert store.artifacts(0)["continuations"].tolist() != store.artifacts(2)[
        "continuations"].tolist()

    page = write_report([store.root], tmp_path / "r.html").read_text()
    table = page.split('<table class="text">')[1].split("</table>")[0]
    assert re.findall(r'<tr class="gen"><th>gen (\d+)</th>', table) == ["0", "1", "2"]
    assert table.count(f'<mark class="prompt">{expected[0]}</mark>') == 3

    out = CliRunner().invoke(app, ["samples", str(store.root), "-g", "2"])
    assert out.exit_code == 0, out.output
    last = store.artifacts(2)["continuations"][1]
    assert f"gen   2: [{expected[1]}] {last}" in out.output
    assert "gen   0" not in out.output


def test_prompts_given_as_text_are_tokenised_by_the_source(run_config):
    words = BuiltinSource(vocab_size=200).vocab[:3]
    store = _run(run_config, "text", f"[{{name: continuations, prompts: ['{' '.join(words)}']}}]")
    assert store.artifacts(1)["continuation_prompts"].tolist() == [" ".join(words)]
    # prompt and continuation fit one block (the model's context): 16 - 3 new tokens
    assert len(store.artifacts(1)["continuations"][0].split()) == 13
    with pytest.raises(DataError, match=r"prompt word 'qqq' is not in the vocabulary of builtin"):
        BuiltinSource(vocab_size=200).encode("qqq")


def test_adding_continuations_changes_no_other_metric(run_config):
    plain = _run(run_config, "plain", "[perplexity, synthetic_ppl, diversity]")
    more = _run(run_config, "more", "[continuations, perplexity, synthetic_ppl, diversity]")

    def rows(store):
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in store.metrics()]

    assert rows(plain) == rows(more)
    assert np.array_equal(plain.samples(2), more.samples(2))


def test_samples_says_when_a_run_has_no_continuations(run_config):
    store = run_config(None, "name=g", "generations=1", "data.size=10")
    out = CliRunner().invoke(app, ["samples", str(store.root)])
    assert out.exit_code == 2
    assert "recorded no continuations" in out.output
