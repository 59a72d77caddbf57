"""Imports every light component module (they register themselves) and lists the heavy ones lazily.

Heavy families (torch, transformers) register as ``"module:Class"`` strings so that importing
collapselab, validating a config or listing components never imports torch.
"""

from __future__ import annotations

# light modules: NumPy/SciPy/scikit-learn only; importing them registers their components
from collapselab import curation, policies, registry  # noqa: F401
from collapselab.metrics import (  # noqa: F401
    alarm,
    continuous,
    discrete,
    diversity,
    forgetting,
    regression,
    states,
)
from collapselab.metrics import images as image_metrics  # noqa: F401  (+ sources.images)
from collapselab.metrics import text as text_metrics  # noqa: F401
from collapselab.models import categorical, gaussian, gmm, kde, linreg, ngram  # noqa: F401
from collapselab.sources import distributions, linear, text  # noqa: F401

# heavy modules: imported on first use
registry.families.register("gpt", "collapselab.models.gpt:GPT")
registry.families.register("hf", "collapselab.models.hf:HFCausalLM")
registry.families.register("vae", "collapselab.models.vae:VAE")
registry.families.register("ddpm", "collapselab.models.ddpm:DDPM")

# components installed distributions declare (entry-point group "collapselab.components")
registry.load_entry_points()
