"""Provenance: every training sample's origin, listed with one command, sums to the composition."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from collapselab import provenance
from collapselab.cli import app
from collapselab.config import load_config
from collapselab.loop import run
from collapselab.store import RunStore


def test_labels_round_trip():
    codes = provenance.encode(7, np.array([0, 5, 2**31]), producer=3)
    origin, producer, index = provenance.decode(codes)
    assert origin.tolist() == [7, 7, 7] and producer.tolist() == [3, 3, 3]
    assert index.tolist() == [0, 5, 2**31]
    assert provenance.decode(provenance.encode(provenance.REAL, np.array([4])))[0].tolist() == [-2]


def test_provenance_of_generation_k_lists_with_one_command_and_sums_to_the_composition(tmp_path):
    cfg = load_config(None, [
        f"out_dir={tmp_path}", "name=prov", "generations=4", "chains=2", "data.source=builtin",
        "data.size=100", "model.family=ngram", "model.prompt_tokens=4", "metrics=[perplexity]",
        "policy.name=accumulate_subsample", "curation=[{name: repetition, min_distinct: 0.5}]"])
    store = run(cfg)
    rows = store.metrics()
    assert rows[0]["composition.real"] == 1.0
    k = 3
    listing = provenance.listing(RunStore(store.root), k)
    assert len(listing) == 2 * 100
    counts: dict[str, int] = {}
    for r in listing:
        counts[r["origin"]] = counts.get(r["origin"], 0) + 1
    recorded = {key.removeprefix("composition."): v for key, v in rows[k].items()
                if key.startswith("composition.")}
    assert set(counts) == set(recorded) and len(counts) > 1  # real and earlier generations
    for origin, count in counts.items():
        assert count / len(listing) == recorded[origin]
    synthetic = next(r for r in listing if not r["is_real"])
    assert synthetic["family"] == "ngram" and synthetic["seed"] == 0
    assert "score.repetition" in synthetic  # the filter score it received when produced
    # the training sample is the produced block it claims to be
    gen, chain = synthetic["generation"], synthetic["chain"]
    kept = store.provenance(gen)["produced_kept"][chain]
    pos = list(kept).index(synthetic["index"])
    assert pos >= 0

    result = CliRunner().invoke(app, ["provenance", str(store.root), "--generation", str(k),
                                      "--csv", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    assert "total" in result.output and (tmp_path / "p.csv").is_file()


def test_large_training_sets_keep_their_composition_not_per_row_labels(tmp_path, monkeypatch):
    """Per-row labels of huge accumulated training sets are not stored (they would be ~100 MB a
    generation); the listing says so, and the composition is still recorded."""
    from collapselab.errors import RunError

    monkeypatch.setattr(provenance, "TRAIN_LABELS_LIMIT", 100)
    store = run(load_config(None, [f"out_dir={tmp_path}", "chains=2", "data.size=30",
                                   "generations=3", "policy.name=accumulate",
                                   "metrics=[variance_ratio]"]))
    assert len(provenance.listing(store, 0)) == 60  # 2 chains x 30 real rows: under the limit
    with pytest.raises(RunError, match=r"generation 2 trained on 180 rows: more than the 100"):
        provenance.listing(store, 2)
    row = store.metrics()[2]
    assert row["composition.real"] == pytest.approx(1 / 3)
    assert row["composition.gen_000"] == pytest.approx(1 / 3)
