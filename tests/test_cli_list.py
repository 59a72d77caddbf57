"""``collapselab list``: every component with its kind and one-line description; ``list NAME``: its
parameters with types and defaults; an unknown name is named, with the close matches."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from collapselab import components, registry
from collapselab.cli import app

WIDE = {"COLUMNS": "400"}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=WIDE)


def rows(output: str) -> dict[tuple[str, str], str]:
    """(kind, name) -> description of the listing's table rows."""
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in output.splitlines()
             if line.count("│") == 4]
    return {(kind, name): description for kind, name, description in cells}


def test_list_shows_every_component_with_its_kind_and_description():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    listed = rows(result.output)
    catalogue = components.catalogue()
    assert len(listed) == len(catalogue) == sum(len(r.names()) for r in registry.REGISTRIES.values())
    for c in catalogue:
        assert listed[c.kind, c.name] == c.summary
        assert 10 < len(c.summary) <= 200, f"{c.key} {c.name}: {c.summary!r}"  # a real sentence
    assert listed["metric", "variance_ratio"] == "Total model variance over total true variance"
    assert listed["model family", "gpt"] == "A nanoGPT-like language model over int token blocks"


@pytest.mark.parametrize(("doc", "line"), [
    ("Total model variance over total true variance: tr(S_t) / tr(S). Collapse drives it to 0.",
     "Total model variance over total true variance"),
    ("KL(model || truth): finite even after states are lost.\n\nMore.",
     "KL(model || truth): finite even after states are lost"),
    ("A Hugging Face ``datasets`` corpus, e.g. ``dataset='wikitext'``.",
     "A Hugging Face `datasets` corpus, e.g. `dataset='wikitext'`"),
    ("Precision (share of samples in real balls: fidelity), Kynkäänniemi et al. 2019; density.",
     "Precision (share of samples in real balls: fidelity), Kynkäänniemi et al. 2019"),
    ("Is generation 0 a good model? Collapse is measured from it.", "Is generation 0 a good model?"),
    ("A nanoGPT-like language model over int token\nblocks; one network per chain.",
     "A nanoGPT-like language model over int token blocks"),
    ("", ""),
])
def test_the_description_is_the_docstrings_first_sentence_or_clause(doc, line):
    assert components.summary(doc) == line


def test_list_name_prints_parameters_with_types_and_defaults():
    result = invoke("list", "tail_mass")
    assert result.exit_code == 0, result.output
    assert "tail_mass: metric (collapselab.metrics.continuous:TailMass)" in result.output
    assert "data: continuous" in result.output
    row = next(line for line in result.output.splitlines() if "│ sigmas" in line)
    assert [c.strip() for c in row.split("│")[1:-1]] == [
        "sigmas", "list[float], length >= 1", "[2.0, 3.0]", "thresholds in standard deviations"]
    result = invoke("list", "gmm")
    fields = {cells[0]: cells[1:3] for cells in (
        [c.strip() for c in line.split("│")[1:-1]] for line in result.output.splitlines()
        if line.count("│") == 5)}
    assert fields["n_components"] == ["int, >= 1, <= 100", "2"]
    assert fields["covariance_type"] == ["'full' | 'diag' | 'spherical' | 'tied'", '"full"']


def test_list_name_shows_each_kind_a_name_has():
    result = invoke("list", "categorical")
    assert result.exit_code == 0, result.output
    assert "categorical: model family (collapselab.models.categorical:Categorical)" in result.output
    assert "categorical: data source (collapselab.sources.distributions:Categorical)" in result.output
    assert "│ n_states " in result.output and "│ probs " in result.output


def test_an_unknown_name_is_named_with_close_matches():
    result = invoke("list", "gausian")
    assert result.exit_code == 2
    assert result.output.strip() == ("error: Unknown component 'gausian'. Did you mean: gaussian? "
                                     "`collapselab list` names them all.")
    result = invoke("list", "zzzz")
    assert result.exit_code == 2
    assert result.output.strip() == ("error: Unknown component 'zzzz'. `collapselab list` names "
                                     "them all.")


def test_a_lazy_component_that_cannot_be_imported_is_listed_and_named(monkeypatch):
    for reg in registry.REGISTRIES.values():  # restored after the test
        monkeypatch.setattr(reg, "_entries", dict(reg._entries))
        monkeypatch.setattr(reg, "_origins", dict(reg._origins))
    registry.families.register("broken", "collapselab_no_such_module:Broken")
    assert rows(invoke("list").output)["model family", "broken"] == ""
    result = invoke("list", "broken")
    assert result.exit_code == 0, result.output
    assert "parameters: cannot import it (No module named 'collapselab_no_such_module')" in (
        result.output)
