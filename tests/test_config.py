"""Config: layering, validation messages (matched whole, value included), nothing written on error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from collapselab import registry
from collapselab.capabilities import ScoresTokens
from collapselab.config import apply_override, load_config, validate
from collapselab.errors import ConfigError
from tests.conftest import ROOT


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(raw)
    return info.value.problems


def test_layers_defaults_file_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ngenerations: 7\npolicy: {name: real_fraction, real_fraction: 0.2}\n")
    cfg = load_config(path, ["policy.real_fraction=0.3", "chains=4"])
    assert (cfg.name, cfg.generations, cfg.chains, cfg.seed) == ("x", 7, 4, 0)
    assert cfg.policy.name == "real_fraction" and cfg.policy.real_fraction == 0.3
    assert cfg.model.family == "gaussian" and cfg.model.variance == "mle"  # defaults filled in


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(ROOT / "configs" / "gaussian" / "real_fraction.yaml")
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_every_problem_reported_at_once_with_field_rule_and_value():
    problems = problems_of({
        "generations": 0,
        "model": {"family": "gmn"},
        "policy": {"name": "real_fraction", "real_fraction": 1.5},
        "data": {"source": "files", "path": "/no/such/folder"},
    })
    assert problems == [
        "generations: Input should be greater than or equal to 1; got 0",
        "model.family: Unknown model family 'gmn'. Did you mean: gmm? Available: "
        + ", ".join(registry.families.names()),
        problems[2],
        "policy.real_fraction: Input should be less than or equal to 1; got 1.5",
    ]
    assert problems[2].startswith("data: ") and "/no/such/folder" in problems[2]


def test_unknown_field_suggests_the_closest():
    assert problems_of({"generatoins": 3}) == [
        "generatoins: unknown field. Did you mean: generations? Allowed: name, generations, seed, "
        "chains, synthetic_size, model, data, policy, curation, metrics, producers, watermark, "
        "on_degenerate, "
        "keep_samples, out_dir, tracking"
    ]
    assert problems_of({"model": {"family": "gaussian", "varience": "mle"}}) == [
        "model.varience: unknown field. Did you mean: variance? Allowed: variance"
    ]
    # the section's own fields are offered beside the source's parameters
    assert problems_of({"data": {"source": "normal", "sise": 10}}) == [
        "data.sise: unknown field. Did you mean: size? Allowed: size, source, dim, mean, std, "
        "heldout_size"
    ]
    # a field of another component says which
    assert problems_of({"model": {"family": "gaussian", "n_components": 3}}) == [
        "model.n_components: unknown field. Allowed: variance "
        "(n_components is a parameter of model family gmm)"
    ]


def test_metric_that_does_not_fit_the_data_is_named():
    (problem,) = problems_of({"metrics": ["variance_ratio", "support"]})
    assert problem.startswith("metrics[1]: 'support' does not apply to continuous data;")


def test_a_metric_the_source_cannot_feed_is_refused_and_left_out_of_the_defaults(tmp_path):
    """``true_kl`` needs exact source probabilities: on a text folder it is a config error when
    listed (not a crash minutes into the run) and is not among the default metrics."""
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text("the cat sat on the mat . " * 200)
    data = {"source": "files", "path": str(tmp_path), "block_len": 8}
    (problem,) = problems_of({"model": {"family": "ngram"}, "data": data,
                              "metrics": ["perplexity", "true_kl"]})
    assert problem.startswith("metrics[1]: 'true_kl' needs a source with capability HasTrueDensity "
                              "(exact token probabilities (log_prob_tokens)), which FilesSource "
                              "lacks; metrics for FilesSource: ")
    assert "perplexity" in problem.split("metrics for FilesSource: ")[1]
    defaults = [m.name for m in validate({"model": {"family": "ngram"}, "data": data}).metrics]
    assert "perplexity" in defaults and "true_kl" not in defaults
    builtin = validate({"model": {"family": "ngram"}, "data": {"source": "builtin"}}).metrics
    assert "true_kl" in [m.name for m in builtin]


class NeedsTokenScores:
    """A metric that reads per-token scores: only for families that declare ScoresTokens."""

    kinds = frozenset({"continuous", "tokens"})
    needs = (ScoresTokens,)

    def __call__(self, ctx):
        return {}


def test_a_metric_needing_a_model_capability_names_the_family_that_lacks_it():
    name = "tests.test_config:NeedsTokenScores"
    (problem,) = problems_of({"model": {"family": "gaussian"}, "metrics": [name]})
    assert problem.startswith(f"metrics[0]: '{name}' needs a model family with capability "
                              "ScoresTokens (per-token log-likelihoods (score_tokens)), which "
                              "Gaussian lacks; metrics for ")
    ok = validate({"model": {"family": "ngram"}, "data": {"source": "builtin"}, "metrics": [name]})
    assert [m.name for m in ok.metrics] == [name]


def test_family_that_does_not_fit_the_data_is_named():
    (problem,) = problems_of({"model": {"family": "categorical"}})
    assert problem.startswith("model.family: 'categorical' cannot model continuous data;")


def test_default_metrics_are_those_for_the_data_kind():
    cfg = validate({"data": {"source": "categorical"}, "model": {"family": "categorical"}})
    assert {m.name for m in cfg.metrics} == {"support", "entropy", "categorical_kl",
                                             "state_presence"}


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match=r"override 'generations' must look like key=value"):
        apply_override({}, "generations")
    with pytest.raises(ConfigError, match=r"override 'name.x=1': name is not a section; got 'a'"):
        apply_override({"name": "a"}, "name.x=1")


def test_bad_config_via_cli_exits_2_with_one_message_and_writes_nothing(tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "collapselab", "run", str(ROOT / "configs/gaussian/replace.yaml"),
           f"out_dir={out}", "model.family=gmn", "policy.name=real_fraction",
           "policy.real_fraction=1.5", "generations=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    text = " ".join(proc.stderr.split())
    assert "invalid config (3 problems)" in text
    for needle in ("generations", "got 0", "model.family", "gmm", "policy.real_fraction", "got 1.5"):
        assert needle in text
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*nope\.yaml' does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_bad_section_field_is_reported_once():
    assert problems_of({"data": {"source": "normal", "size": 0}}) == [
        "data.size: Input should be greater than or equal to 1; got 0"
    ]
