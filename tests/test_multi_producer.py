"""Cross-model loops: several producers, each trained on a mix of the others' output."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from collapselab import provenance, registry
from collapselab.aggregate import run_costs
from collapselab.cli import app
from collapselab.config import ConfigError, load_config
from collapselab.loop import run
from collapselab.models.gaussian import Gaussian
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
    assert "<td>bigram: ngram, trigram: ngram</td>" in page  # each producer's family
    assert 'id="metric-ppl_test"' in page and 'id="metric-bigram/ppl_test"' not in page


def test_each_producers_training_samples_list_and_sum_to_its_composition(tmp_path):
    store = run(load_config(TWO, [f"out_dir={tmp_path}", "generations=3", "data.size=60",
                                  "policy={name: accumulate}", "curation=[{name: dedup}]"]))
    k = 2
    for producer in ("bigram", "trigram"):
        rows = provenance.listing(store, k, producer)
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["origin"]] = counts.get(r["origin"], 0) + 1
        recorded = {key.removeprefix(f"{producer}/composition."): v
                    for key, v in store.metrics()[k].items()
                    if key.startswith(f"{producer}/composition.")}
        assert counts.keys() == recorded.keys()
        for origin, count in counts.items():
            assert count / len(rows) == pytest.approx(recorded[origin], abs=1e-12)
        # a synthetic row names the producer and family that wrote it, and is the block it claims
        row = next(r for r in rows if r["origin"] == "gen_001/trigram")
        assert (row["producer"], row["family"], row["generation"]) == ("trigram", "ngram", 1)
        assert row["index"] in store.provenance(1, "trigram")["kept"][row["chain"]]
        assert "score.dedup" in row
    assert "gen_001/trigram" in counts and "gen_000/bigram" in counts  # the trigram's mixed pool

    result = CliRunner().invoke(app, ["provenance", str(store.root), "-g", "2"])
    assert result.exit_code == 2
    assert "multi-producer run: name one of its producers ['bigram', 'trigram']" in result.output
    result = CliRunner().invoke(app, ["provenance", str(store.root), "-g", "2", "-p", "bigram"])
    assert result.exit_code == 0, result.output
    assert "gen_001/trigram" in result.output and "total" in result.output


class Weighted(Gaussian):
    """A Gaussian that declares network weights: ``size`` parameters a chain."""

    state_dicts_: list[dict[str, Any]]

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.size = size

    def fit(self, data: np.ndarray, *, rng: np.random.Generator | None = None) -> Weighted:
        super().fit(data, rng=rng)
        self.state_dicts_ = [{"w": torch.zeros(self.size)} for _ in range(data.shape[0])]
        return self


@pytest.fixture
def weighted():
    registry.families.register("_weighted", Weighted)
    yield
    registry.families._entries.pop("_weighted")


@pytest.mark.parametrize("producers,flops,sizes", [
    (None, 8 * 60 * 3, "3"),
    ("[{name: a, model: {family: _weighted, size: 3}},"
     " {name: b, model: {family: _weighted, size: 5}, trains_on: {a: 1.0}}]", 8 * 60 * (3 + 5),
     "a 3, b 5"),
])
def test_flops_count_each_producers_parameters_and_samples(tmp_path, weighted, producers, flops,
                                                           sizes):
    """6·N·trained + 2·N·generated per producer: 2 generations x 10 samples x 3 chains each."""
    extra = [f"producers={producers}"] if producers else ["model.family=_weighted"]
    store = run(load_config(None, [f"out_dir={tmp_path}", "generations=2", "chains=3",
                                   "data.size=10", "metrics=[variance_ratio]", *extra]))
    costs = run_costs(store)
    assert costs["trained"] == costs["generated"] == 60 * (2 if producers else 1)
    assert costs["flops"] == flops
    assert costs["flops_note"] == f"6·N·trained + 2·N·generated, N = {sizes} per chain"
