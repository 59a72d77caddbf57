"""Capabilities are declared (a Protocol subclassed, or implemented) and read through one module."""

from __future__ import annotations

import numpy as np

import collapselab.components  # noqa: F401  (registers every component)
from collapselab import capabilities as caps
from collapselab import registry
from collapselab.sources.text import BuiltinSource, FilesSource


class Completer:
    """Implements CompletesPrompts without importing it (as a plugin would)."""

    def __init__(self, prompt_tokens: int = 3) -> None:
        self.prompt_tokens = prompt_tokens

    def complete(self, prompts, new_tokens, rng, chain=0):
        return prompts


def test_families_declare_what_they_can_do():
    have = {name: {c.__name__ for c in (caps.ScoresTokens, caps.CompletesPrompts, caps.HasWeights,
                                        caps.RunsThreads)
                   if caps.provides(registry.families.get(name), c)}
            for name in ("gpt", "hf", "ngram", "gmm", "vae")}
    assert have["gpt"] == have["hf"] == {"ScoresTokens", "CompletesPrompts", "HasWeights",
                                         "RunsThreads"}
    assert have["ngram"] == {"ScoresTokens", "CompletesPrompts"}
    assert have["gmm"] == set()
    assert have["vae"] == {"HasWeights", "RunsThreads"}  # structurally: NetworkCache, threaded


def test_sources_declare_vocabulary_and_exact_density():
    assert caps.provides(BuiltinSource, caps.HasTrueDensity)
    assert not caps.provides(FilesSource, caps.HasTrueDensity)
    assert caps.provides(FilesSource, caps.HasVocabulary)
    assert caps.missing(FilesSource, (caps.HasVocabulary, caps.HasTrueDensity)) == [
        caps.HasTrueDensity]
    source = BuiltinSource(vocab_size=50)
    assert caps.source_sizes(source) == {"vocab_size": 50}


def test_what_the_loop_asks():
    from collapselab.models.gmm import GMM
    from collapselab.models.ngram import NGram

    assert caps.prompt_tokens(NGram(prompt_tokens=4)) == 4
    assert caps.prompt_tokens(Completer(3)) == 3  # implemented, not declared: still seen
    assert caps.prompt_tokens(GMM()) == 0
    assert caps.provides(Completer, caps.CompletesPrompts)  # a keyword of __init__ declares it
    assert caps.threaded(registry.families.get("gpt")) and not caps.threaded(GMM())
    assert caps.parameter_count(GMM()) is None


def test_parameter_count_of_a_fitted_network():
    from collapselab.models.gpt import GPT

    blocks = np.tile(np.arange(5), (1, 4, 1))
    model = GPT(n_layer=1, n_head=1, d_model=8, device="cpu").fit(blocks, rng=np.random.default_rng(0))
    assert caps.parameter_count(model) == sum(v.numel() for v in model.state_dicts_[0].values())
    assert caps.is_neural(model) and caps.is_neural(GPT) and not caps.is_neural(NotImplemented)
