"""Every shipped component and the example plugin's (examples/plugin) pass collapselab.testing's
checks: the kit a plugin author runs on their own (docs/how-to/conformance.md), one test per
component and rule."""

from __future__ import annotations

import sys
from pathlib import Path

from collapselab import registry
from collapselab.testing import parametrize_with_checks

# tiny, fast hyperparameters of the components the checks build; others use their defaults
TINY = {
    ("family", "gpt"): {"n_layer": 1, "n_head": 2, "d_model": 16, "epochs": 1, "batch_size": 8},
    ("family", "vae"): {"epochs": 1, "max_steps": 2},
    ("family", "ddpm"): {"hidden": 16, "layers": 1, "timesteps": 4,
                         "sample_steps": 2, "epochs": 1, "max_steps": 2},
    ("source", "builtin"): {"vocab_size": 40, "train_blocks": 60},
}
KNOWN_GAPS = {
    ("family", "hf"): "needs a model name or path; tests/models/test_hf.py checks a tiny local OPT",
    ("source", "files"): "needs text files; tests/sources/test_text.py writes some",
    ("source", "hf"): "needs a Hugging Face dataset; tests/sources/test_text.py builds one",
    ("source", "folder"): "needs an image folder; tests/sources/test_images.py writes one",
    ("source", "mnist"): "reads MNIST (seconds); digits is the same class, ImageCorpus",
    ("metric", "mauve"): "loads a GPT-2 featurizer (a minute); tests/metrics/test_diversity.py",
}
PLUGIN_SRC = Path(__file__).resolve().parents[1] / "examples" / "plugin" / "src"


def shipped() -> list:
    """An instance of every built-in component, tiny where it would be slow."""
    out = []
    for key, reg in registry.REGISTRIES.items():
        for name in reg.names(registry.BUILTIN):
            if (key, name) not in KNOWN_GAPS:
                out.append(reg.build(name, TINY.get((key, name), {})))
    return out


def plugin() -> list:
    sys.path.insert(0, str(PLUGIN_SRC))
    try:
        from collapselab_laplace import Kurtosis, Laplace, Window
    finally:
        sys.path.remove(str(PLUGIN_SRC))
    return [Laplace(), Window(window=2, real_fraction=0.25), Kurtosis()]


@parametrize_with_checks([*shipped(), *plugin()])
def test_component_conforms(component, check):
    check(component)


def test_known_gaps_are_registered_components():
    for key, name in KNOWN_GAPS:
        assert name in registry.REGISTRIES[key].names(registry.BUILTIN), (key, name)
