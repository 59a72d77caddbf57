"""The image track end to end: VAEs and diffusion models retrained on their own samples.

Generation 0 is checked against the quality bar first (fast: a small budget and a lower bar; slow:
the shipped configs and the bar), then collapse over generations (slow: minutes on 2 busy cores).
Chains are independent replicates (own networks, own samples): the inequalities compare chain
means, with margins stated from the measured runs.
"""

from __future__ import annotations

import numpy as np
import pytest

from collapselab import registry
from collapselab.report import write_report
from tests.conftest import ROOT

IMAGES = ROOT / "configs" / "images"

for _name, _target in (("vae", "collapselab.models.vae:VAE"), ("ddpm", "collapselab.models.ddpm:DDPM")):
    if _name not in registry.families:  # components.py registers them; keep the tests standalone
        registry.families.register(_name, _target)


def column(store, key: str) -> np.ndarray:
    return np.array([row[key] for row in store.metrics()])


def test_image_run_records_image_metrics_and_the_report_shows_sample_grids(run_config):
    store = run_config(IMAGES / "vae_digits_replace.yaml", "generations=2", "chains=1",
                       "data.size=64", "model.epochs=1")
    rows = store.metrics()
    for key in ("latent_spread", "frechet_distance", "precision", "recall", "density", "coverage",
                "class_entropy"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert rows[0]["gen0_ok"] == 0.0 and "gen0_ok" not in rows[1]  # one epoch: a poor start
    for gen in (0, 1):
        assert store.artifacts(gen)["sample_grid"].shape == (16, 8, 8)  # every generation
    assert any(k.startswith("feature_net.") for k in store.artifacts(0))  # the instrument
    html = write_report([store.root]).read_text()
    assert f'id="grid-{store.root.name}"' in html and "samples by generation" in html
    assert f'id="hist-latent_spread-{store.root.name}"' in html


def test_ddpm_run_on_moons(run_config):
    store = run_config(IMAGES / "ddpm_moons_replace.yaml", "generations=2", "chains=1",
                       "data.size=100", "model.epochs=5")
    assert {"frechet_distance", "precision", "recall"} <= set(store.metrics()[-1])


# Generation 0 against the quality bar of gen0_quality (recall >= 0.5 and precision >= 0.6 of the
# real data's, 10 classes, class entropy within 10%). Fast (about a minute each on 2 busy cores):
# 600 training images, a small step budget; measured vae recall 0.55 / precision 1.01 of the real
# data's, ddpm 0.96 / 0.61, both clearing the bar at this size, asserted with room to spare
# (recall > 0.35, precision > 0.5). Slow: the shipped configs, the bar itself.
FAST = {"vae": ["model.max_steps=2000"], "ddpm": ["model.max_steps=400", "model.sample_steps=20"]}
GEN0 = ["generations=1", "metrics=[gen0_quality]"]


@pytest.mark.parametrize("family", ["vae", "ddpm"])
def test_generation0_learns_digits_fast(run_config, family):
    store = run_config(IMAGES / f"{family}_digits_replace.yaml", *GEN0, *FAST[family],
                       "data.size=600", "synthetic_size=600")
    row = store.metrics()[0]
    assert row["gen0_recall_ratio"] > 0.35 and row["gen0_precision_ratio"] > 0.5, row
    assert row["gen0_classes"] == 10 and abs(row["gen0_entropy_ratio"] - 1) < 0.1, row


@pytest.mark.slow
@pytest.mark.parametrize("family", ["vae", "ddpm"])
def test_generation0_meets_the_quality_bar_on_digits(run_config, family):
    # measured (2 busy cores, seed 0): vae recall 0.53 / precision 1.01 of the real data's in
    # 110-150 s; ddpm 0.97 / 0.83 in about 150 s
    store = run_config(IMAGES / f"{family}_digits_replace.yaml", *GEN0)
    row = store.metrics()[0]
    assert row["gen0_ok"] == 1.0, row


@pytest.mark.slow
def test_vae_recall_falls_under_replace_and_holds_in_the_fresh_data_loop(run_config):
    # measured (seed 0, one chain): replace recall 0.51, 0.47, 0.37; fresh 0.51, 0.50, 0.48. A
    # recall over 359 held-out images has a sampling sd of about 0.026: the margins are 3 sd.
    common = ["generations=3", "metrics=[precision_recall, frechet]"]
    rep = run_config(IMAGES / "vae_digits_replace.yaml", *common, "name=rep")
    fresh = run_config(IMAGES / "vae_digits_fresh.yaml", *common, "name=fresh")
    r_rep, r_fresh = column(rep, "recall"), column(fresh, "recall")
    assert r_rep[-1] < r_rep[0] - 0.08
    assert r_fresh[-1] > r_rep[-1] + 0.08 and r_fresh[-1] > r_fresh[0] - 0.08
    assert column(rep, "frechet_distance")[-1] > column(fresh, "frechet_distance")[-1]


@pytest.mark.slow
def test_ddpm_moons_drifts_under_replace_and_is_stable_with_half_real_data(run_config):
    common = ["generations=5", "chains=2", "seed=1"]
    rep = run_config(IMAGES / "ddpm_moons_replace.yaml", *common, "name=rep")
    mix = run_config(IMAGES / "ddpm_moons_replace.yaml", *common, "name=mix",
                     "policy.name=real_fraction", "policy.real_fraction=0.5")
    fd_rep, fd_mix = column(rep, "frechet_distance"), column(mix, "frechet_distance")
    assert fd_rep[-1] > 2 * fd_rep[0]  # errors compound: measured 0.019 -> 0.116 (seed 0)
    assert fd_mix[-1] < 0.5 * fd_rep[-1]
    r_rep, r_mix = column(rep, "recall"), column(mix, "recall")
    assert r_rep[-1] < r_rep[0] and r_mix[-1] > r_rep[-1]  # coverage is lost, not fidelity
    assert column(rep, "precision")[-1] > column(rep, "precision")[0] - 0.1
