"""``generation_engine: vllm`` on ``hf``: vLLM's offline ``LLM`` in a child process writes the blocks.

A tiny random Llama (hidden 64, 2 heads of 32, 2 layers) with a byte-level BPE of 512 tokens trained
on WikiText-2 (:mod:`tests.models.tiny_llama`), saved locally: no hub. Needs the ``vllm`` extra
(``pip install -e ".[vllm]"``; CI installs it); only the missing-vLLM error runs without it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from collapselab.config import load_config
from collapselab.errors import ConfigError
from collapselab.loop import run
from collapselab.models import vllm_engine
from collapselab.models.hf import HFCausalLM
from tests.models import tiny_llama
from tests.models.torch_threads import one_torch_thread  # noqa: F401

needs_vllm = pytest.mark.skipif(not vllm_engine.available(),
                                reason='vLLM is not installed: pip install -e ".[vllm]"')  # fmt: skip
BLOCK, PROMPT = 16, 4
FILES = {s: str(tiny_llama.WIKITEXT / f"{f}.txt") for s, f in
         (("train", "train"), ("validation", "valid"), ("test", "test"))}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def no_engine_left():
    yield
    vllm_engine.close()


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_llama.build(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="module")
def fitted(llama: str) -> HFCausalLM:
    """The tiny Llama fine-tuned for an epoch on WikiText-2 blocks of its own tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama)
    lines = tiny_llama.WIKITEXT.joinpath("train.txt").read_text().splitlines()[:400]
    ids = np.array(tok(" ".join(lines))["input_ids"][: 128 * BLOCK], dtype=np.int32)
    model = HFCausalLM(name_or_path=llama, epochs=1, batch_size=16, lr=3e-3, device="cpu",
                       valid_fraction=0.0, prompt_tokens=PROMPT, sample_batch_size=256)  # fmt: skip
    return model.fit(ids.reshape(1, -1, BLOCK), rng=np.random.default_rng(0))


def engine(model: HFCausalLM, name: str, **controls) -> HFCausalLM:
    """The fitted ``model`` with ``generation_engine=name`` and these decoding controls."""
    twin = model.clone()
    twin.__dict__.update({k: v for k, v in vars(model).items() if k.endswith("_")})
    twin._nets = model._nets
    for key, value in {"generation_engine": name, **controls}.items():
        setattr(twin, key, value)
    return twin


def config(tmp_path: Path, name_or_path: str, **model) -> Path:
    cfg = {
        "name": "vllm-tiny", "generations": 2, "chains": 1, "out_dir": str(tmp_path),
        "model": {"family": "hf", "name_or_path": name_or_path, "epochs": 1, "batch_size": 16,
                  "lr": 3e-3, "device": "cpu", "prompt_tokens": PROMPT,
                  "generation_engine": "vllm", **model},
        "data": {"source": "hf", "dataset": "text", "data_files": FILES, "tokenizer": name_or_path,
                 "block_len": BLOCK, "max_train_tokens": 1024, "max_eval_tokens": 512, "size": 48},
        "policy": {"name": "replace"},
    }  # fmt: skip
    path = tmp_path / "vllm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------- the loop


@needs_vllm
def test_two_generations_through_vllm(llama: str, tmp_path: Path):
    """A run's sampling (and the continuations metric's prompts) through vLLM, the loop unchanged."""
    store = run(load_config(config(tmp_path, llama, top_k=50, top_p=0.95)))
    rows = store.metrics()
    assert [r["generation"] for r in rows] == [0, 1] and store.manifest()["status"] == "complete"
    for key in ("ppl_test", "synthetic_ppl", "types", "distinct_2"):
        assert all(np.isfinite(r[key]) for r in rows), key
    samples = store.samples(1)
    assert samples.shape == (1, 48, BLOCK) and samples.max() < 512
    assert len(store.artifacts(1)["continuations"]) == 4  # complete() went through vLLM too


# ---------------------------------------------------------------- the same decoding


@needs_vllm
def test_greedy_is_the_torch_engines(fitted: HFCausalLM):
    """Greedy decoding, 64 blocks of 12 new tokens: the same tokens from both engines (float32)."""
    torch_, vllm_ = (engine(fitted, e, do_sample=False) for e in ("torch", "vllm"))
    a = torch_.sample(64, np.random.default_rng(1))
    b = vllm_.sample(64, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    prompts = a[0, :5, :6]
    np.testing.assert_array_equal(torch_.complete(prompts, 10, np.random.default_rng(0)),
                                  vllm_.complete(prompts, 10, np.random.default_rng(0)))


def frequency_pvalues(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per new-token position, the chi-square two-sample test of token frequencies: ``a``, ``b``
    (n, T) blocks; tokens seen fewer than 10 times in both together are pooled into one bin."""
    out = []
    for j in range(PROMPT, a.shape[1]):  # within a position the blocks are independent draws
        ids, counts = np.unique(np.concatenate([a[:, j], b[:, j]]), return_counts=True)
        common = ids[counts >= 10]
        table = np.array([[*(np.sum(x[:, j] == t) for t in common),
                           np.sum(~np.isin(x[:, j], common))] for x in (a, b)])  # fmt: skip
        table = table[:, table.sum(axis=0) > 0]
        out.append(stats.chi2_contingency(table).pvalue)
    return np.array(out)


@needs_vllm
def test_sampled_token_frequencies_agree(fitted: HFCausalLM):
    """Sampling with temperature, top-k, top-p and repetition penalty: 1000 blocks x 12 new tokens
    (12,000 tokens) per engine from the same prompts. Per position, the two-sample chi-square test
    of token frequencies; tokens of one block depend on each other, so positions are tested
    separately (the blocks are independent) and Bonferroni-combined: under "same distribution" the
    smallest of 12 p-values is below 0.001/12 with probability <= 0.001. The same test tells a
    temperature of 0.5 from 1.0 (its power, checked on the same samples)."""
    controls = dict(do_sample=True, temperature=1.0, top_k=50, top_p=0.9, repetition_penalty=1.1)
    a = engine(fitted, "torch", **controls).sample(1000, np.random.default_rng(2))
    b = engine(fitted, "vllm", **controls).sample(1000, np.random.default_rng(3))
    assert a.size - 1000 * PROMPT >= 10_000
    p = frequency_pvalues(a[0], b[0])
    assert p.min() > 0.001 / len(p), p
    cooler = engine(fitted, "vllm", **{**controls, "temperature": 0.5})
    cooler = cooler.sample(1000, np.random.default_rng(4))
    assert frequency_pvalues(a[0], cooler[0]).min() < 0.001 / len(p)


@needs_vllm
def test_seeds_per_request_repeat(fitted: HFCausalLM):
    """One seed per request from the generation's stream: the same stream, the same blocks (a
    resume writes what the first try wrote); another stream, other blocks."""
    model = engine(fitted, "vllm", do_sample=True)
    a = model.sample(20, np.random.default_rng(5))
    np.testing.assert_array_equal(a, model.sample(20, np.random.default_rng(5)))
    rng = np.random.default_rng(5)
    assert not np.array_equal(model.sample(20, rng), model.sample(20, rng))


@needs_vllm
def test_best_beam_is_hf_generates(fitted: HFCausalLM):
    """vLLM's best of 5 beams equals Hugging Face ``generate(num_beams=5)``'s (EOS suppressed by
    ``min_new_tokens``, so every beam has the same length and HF's length penalty ranks them by
    total log-probability, as vLLM's does); and the torch engine's own beam search."""
    import torch

    prompts = fitted.prompts_[0, :6].astype(np.int64)
    vllm_ = engine(fitted, "vllm", num_beams=5, do_sample=False)
    ours = vllm_.complete(prompts, 12, np.random.default_rng(0))  # (6, PROMPT + 12), no BOS
    net = fitted._net(0)
    x = torch.from_numpy(fitted._with_bos(prompts))
    with torch.no_grad():
        hf = net.generate(input_ids=x, attention_mask=torch.ones_like(x), num_beams=5,
                          do_sample=False, max_new_tokens=12, min_new_tokens=12,
                          pad_token_id=fitted.bos_id_)  # fmt: skip
    np.testing.assert_array_equal(ours, hf[:, 1:].numpy())
    torch_ = engine(fitted, "torch", num_beams=5, do_sample=False)
    np.testing.assert_array_equal(ours, torch_.complete(prompts, 12, np.random.default_rng(0)))


# ---------------------------------------------------------------- what it refuses


def test_without_vllm_the_config_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(vllm_engine, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"model\.generation_engine: .*'vllm' needs vLLM, which is "
                       r"not installed here: pip install -e \"\.\[vllm\]\".*got 'vllm'"):  # fmt: skip
        load_config(config(tmp_path, str(tmp_path / "any-model")))


@needs_vllm
def test_what_vllm_cannot_decode_is_refused_at_config_time(llama: str, tmp_path: Path):
    path = config(tmp_path, llama, num_beams=5, repetition_penalty=1.2)
    raw = yaml.safe_load(path.read_text())
    raw["watermark"] = {"delta": 2.0}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == [
        "model.generation_engine: a watermark biases every decoding step's logits, which vLLM's "
        "engine cannot take per request (no logits processors in its V1 engine); use "
        "generation_engine: torch with watermark:; got 'vllm'",
        "model.repetition_penalty: vLLM's beam search has no repetition penalty "
        "(generation_engine: vllm with num_beams=5); use 1.0 or generation_engine: torch; got 1.2",
    ]


@needs_vllm
def test_a_head_size_vllm_cannot_serve_exits_2(tmp_path: Path):
    """Head size 16 on CPU: vLLM refuses it. The CLI exits 2 naming the model and vLLM's reason,
    without a traceback; no generation was committed, so nothing is left behind (the store's
    rule for a new run), and the engine's scratch folder is gone."""
    model = tiny_llama.build(tmp_path / "llama-head16", head_dim=16)
    (tmp_path / "out").mkdir()
    path = config(tmp_path / "out", str(model))
    done = subprocess.run([sys.executable, "-m", "collapselab", "run", str(path)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"vLLM cannot serve {str(model)!r}" in done.stderr
    assert "head_dim=16" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "vllm-tiny").exists()
