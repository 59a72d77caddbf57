"""The ``gpt`` family: protocol, learning, scoring, decoding, checkpoints. Tiny models, seconds."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from collapselab import registry
from collapselab.errors import ConfigError
from collapselab.models import sampling
from collapselab.models.gpt import GPT, pretrain_base
from collapselab.protocol import NotFittedError, clone
from tests.models.torch_threads import one_torch_thread  # noqa: F401

VOCAB, BLOCK = 10, 12
DEFAULT_THREADS = torch.get_num_threads()  # before the module's one-thread fixture
TINY = dict(n_layer=2, n_head=2, d_model=32, epochs=6, batch_size=16, lr=1e-2, device="cpu")


def cyclic_blocks(n: int, rng: np.random.Generator) -> np.ndarray:
    """Blocks of the cycle 0..7 from a random phase: after the first token everything is determined."""
    starts = rng.integers(0, 8, size=n)
    return ((starts[:, None] + np.arange(BLOCK)) % 8).astype(np.int64)


@pytest.fixture(scope="module")
def corpus() -> np.ndarray:
    return cyclic_blocks(160, np.random.default_rng(0))[None]  # (1, 160, 12)


@pytest.fixture(scope="module")
def fitted(corpus: np.ndarray) -> GPT:
    data = np.concatenate([corpus, corpus])  # 2 chains
    return GPT(vocab_size=VOCAB, prompt_tokens=2, **TINY).fit(data, rng=np.random.default_rng(1))


def test_training_lowers_loss_and_raises_heldout_score(fitted: GPT) -> None:
    heldout = cyclic_blocks(50, np.random.default_rng(99))[None]
    noise = np.random.default_rng(5).integers(0, VOCAB, size=(1, 50, BLOCK))
    for losses in fitted.train_loss_:
        assert losses[-1] < losses[0] - 0.5
    score = fitted.score(heldout)  # (chains,)
    assert score.shape == (2,)
    assert (score > -0.5).all()  # near-deterministic: a uniform model would score -log(10) = -2.3
    assert (fitted.score(noise) < score - 1.0).all()


def test_sample_shape_prompts_and_learned_pattern(fitted: GPT, corpus: np.ndarray) -> None:
    out = fitted.sample(30, np.random.default_rng(2))
    assert out.shape == (2, 30, BLOCK) and out.dtype == corpus.dtype
    prefixes = {tuple(r) for r in corpus[0, :, :2]}
    assert all(tuple(r) in prefixes for r in out.reshape(-1, BLOCK)[:, :2])  # paper's prompts
    follows = (out[..., 1:] - out[..., :-1]) % 8 == 1
    assert follows.mean() > 0.9


def test_same_seed_same_samples_two_draws_differ(fitted: GPT) -> None:
    a = fitted.sample(8, np.random.default_rng(3))
    b = fitted.sample(8, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(3)
    hot = clone(fitted)
    hot.__dict__.update({k: v for k, v in vars(fitted).items() if k.endswith("_")})
    hot.temperature = 3.0  # flat enough that two draws surely differ
    assert not np.array_equal(hot.sample(8, rng), hot.sample(8, rng))


def test_fit_is_deterministic_on_cpu(corpus: np.ndarray) -> None:
    params = {**TINY, "epochs": 1}
    a = GPT(**params).fit(corpus[:, :40], rng=np.random.default_rng(7))
    b = GPT(**params).fit(corpus[:, :40], rng=np.random.default_rng(7))
    for k, v in a.state_dicts_[0].items():
        torch.testing.assert_close(v, b.state_dicts_[0][k], rtol=0, atol=0)
    assert a.vocab_size_ == 8  # inferred: max id + 1


def test_chains_are_independent_networks(fitted: GPT, corpus: np.ndarray) -> None:
    scores = fitted.score_samples(corpus[:, :5])
    assert scores.shape == (2, 5)
    assert not np.allclose(scores[0], scores[1])


def test_score_tokens_is_the_next_token_logprob(fitted: GPT, corpus: np.ndarray) -> None:
    data = corpus[:, :4]
    tok = fitted.score_tokens(data)
    assert tok.shape == (2, 4, BLOCK - 1) and (tok <= 0).all()
    np.testing.assert_allclose(fitted.score_samples(data), tok.mean(-1), rtol=1e-6)
    # same numbers from the decoding step: log p(x_1..x_{T-1} | BOS, x_0)
    ids = torch.from_numpy(fitted._with_bos(data[0]))
    total = sampling.sequence_logprob(fitted.step_fn(chain=1, use_cache=False), ids, 2)
    np.testing.assert_allclose(tok[1].sum(-1), total.numpy(), rtol=1e-4)


def test_pickle_round_trip_gives_identical_scores(fitted: GPT, corpus: np.ndarray) -> None:
    fitted.score(corpus)  # builds the cached networks, which are not pickled
    copy = pickle.loads(pickle.dumps(fitted))
    assert "_nets" not in vars(copy) or not copy._nets
    np.testing.assert_array_equal(copy.score_samples(corpus), fitted.score_samples(corpus))
    np.testing.assert_array_equal(
        copy.sample(4, np.random.default_rng(0)), fitted.sample(4, np.random.default_rng(0))
    )


def test_not_fitted_and_n_zero_errors(fitted: GPT) -> None:
    msg = r"^GPT is not fitted yet: call fit\(data\) first$"
    with pytest.raises(NotFittedError, match=msg):
        GPT().sample(3, np.random.default_rng(0))
    with pytest.raises(NotFittedError, match=msg):
        GPT().score_samples(np.zeros((1, 2, 4), dtype=np.int64))
    with pytest.raises(
        ValueError, match=r"^n must be a positive integer number of samples; got 0$"
    ):
        fitted.sample(0, np.random.default_rng(0))


def test_complete_keeps_prompts_and_writes_new_tokens(fitted: GPT) -> None:
    greedy = clone(fitted)
    greedy.__dict__.update({k: v for k, v in vars(fitted).items() if k.endswith("_")})
    greedy.do_sample = False
    prompts = np.array([[0, 1, 2], [5, 6, 7]])
    out = greedy.complete(prompts, 6, np.random.default_rng(0), chain=1)
    assert out.shape == (2, 9)
    np.testing.assert_array_equal(out[:, :3], prompts)
    np.testing.assert_array_equal(out, (prompts[:, :1] + np.arange(9)) % 8)
    with pytest.raises(ValueError, match=r"context_len=12; got 3 \+ 10$"):
        greedy.complete(prompts, 10, np.random.default_rng(0))


def test_beam_search_sampling(fitted: GPT) -> None:
    beams = clone(fitted)
    beams.__dict__.update({k: v for k, v in vars(fitted).items() if k.endswith("_")})
    beams.num_beams = 5
    out = beams.sample(6, np.random.default_rng(0))
    assert ((out[..., 1:] - out[..., :-1]) % 8 == 1).all()


def test_clone_is_unfitted_with_the_same_params(fitted: GPT) -> None:
    fresh = clone(fitted)
    assert fresh.get_params() == fitted.get_params()
    assert not fresh.is_fitted()


def test_invalid_hyperparameters_are_reported_together(corpus: np.ndarray) -> None:
    bad = GPT(d_model=30, n_head=4, top_p=1.5, temperature=-1.0, device="cpu")
    with pytest.raises(ConfigError) as err:
        bad.fit(corpus, rng=np.random.default_rng(0))
    msg = str(err.value)
    assert "invalid config (3 problems)" in msg
    assert "d_model must be divisible by n_head=4; got 30" in msg
    assert "top_p must be in (0, 1]; got 1.5" in msg
    assert "temperature must be a number > 0; got -1.0" in msg


def test_config_schema_comes_from_the_signature() -> None:
    model = registry.params_model(GPT)
    assert model.model_validate({"n_layer": 2, "vocab_size": None}).n_layer == 2
    with pytest.raises(Exception, match="n_layer"):
        model.model_validate({"n_layer": 0})
    with pytest.raises(Exception, match="device"):
        model.model_validate({"device": "tpu"})
    with pytest.raises(Exception, match="seed"):
        model.model_validate({"seed": 1})


def test_data_errors_name_the_value(fitted: GPT) -> None:
    with pytest.raises(ValueError, match=r"^token ids must be < vocab_size=10; got max id 12$"):
        fitted.score_samples(np.full((1, 2, 5), 12))
    with pytest.raises(ValueError, match=r"^block_len must be <= context_len=12; got 13$"):
        fitted.score_samples(np.zeros((1, 2, 13), dtype=np.int64))
    with pytest.raises(ValueError, match=r"^prompt_tokens must be < block_len=12; got 12$"):
        GPT(prompt_tokens=12, **TINY).fit(
            np.zeros((1, 4, 12), dtype=np.int64), rng=np.random.default_rng(0)
        )


def test_pretrain_base_then_fine_tune_from_it(tmp_path, corpus: np.ndarray) -> None:
    params = {**TINY, "vocab_size": VOCAB}
    path = pretrain_base(GPT(**params), corpus[:, :80], tmp_path / "base.pt",
                         rng=np.random.default_rng(0))  # fmt: skip
    heldout = cyclic_blocks(30, np.random.default_rng(4))[None]
    base = GPT(init_from=str(path), **params)
    tuned = base.fit(corpus[:, 80:96], rng=np.random.default_rng(1))
    scratch = GPT(**params).fit(corpus[:, 80:96], rng=np.random.default_rng(1))
    assert tuned.score(heldout)[0] > scratch.score(heldout)[0] + 0.3  # starts from the base
    wrong = GPT(init_from=str(path), **{**params, "d_model": 16})
    with pytest.raises(ValueError, match=r"does not match: d_model: model 16, checkpoint 32$"):
        wrong.fit(corpus[:, :8], rng=np.random.default_rng(0))
    with pytest.raises(
        FileNotFoundError, match=r"^init_from checkpoint not found; got 'nope\.pt'$"
    ):
        GPT(init_from="nope.pt", **params).fit(corpus[:, :8], rng=np.random.default_rng(0))


def test_unconditional_sampling_from_bos(corpus: np.ndarray) -> None:
    model = GPT(vocab_size=VOCAB, **TINY).fit(corpus, rng=np.random.default_rng(0))
    out = model.sample(20, np.random.default_rng(1))
    assert out.shape == (1, 20, BLOCK)
    assert ((out[..., 1:] - out[..., :-1]) % 8 == 1).mean() > 0.9


@pytest.mark.slow
def test_benchmark_against_hugging_face_gpt2() -> None:
    """Throughput vs HF GPT-2 of the same size (4 layers, 4 heads, d=256, vocab 16k), CPU.

    Run: ``pytest -m slow -s tests/models/test_gpt.py -k benchmark`` (``BENCH_THREADS=n`` sets
    torch's thread count; default: torch's). Training: batch 32x128, AdamW,
    a plain HF loop (``model(input_ids, labels=...)``) against ``GPT.fit``. Sampling: batch 32, one
    prompt token, 128 new tokens, multinomial sampling, against HF ``generate``. Rounds alternate
    and the best of each is kept, so a busy machine hurts both sides alike."""
    import os
    import time

    transformers = pytest.importorskip("transformers")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", DEFAULT_THREADS)))
    vocab, batch, block, new, steps, rounds = 16_000, 32, 128, 128, 3, 3
    rng = np.random.default_rng(0)
    data = rng.integers(0, vocab, size=(1, batch * steps, block))
    arch = dict(n_layer=4, n_head=4, d_model=256, vocab_size=vocab, context_len=block + 2)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=block + 2, n_embd=256, n_layer=4,
                                  n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg)
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=3e-4)
    x = torch.from_numpy(data[0])

    def hf_train() -> None:
        hf.train()
        for s in range(steps):
            xb = x[s * batch : (s + 1) * batch]
            loss = hf(input_ids=xb, labels=xb).loss
            hf_opt.zero_grad()
            loss.backward()
            hf_opt.step()

    ours = GPT(**arch, batch_size=batch, device="cpu", lr_schedule="constant")
    prompts = data[0, :batch, :1]
    hf_prompts = torch.from_numpy(prompts)

    def hf_sample() -> None:
        hf.eval()
        with torch.no_grad():
            out = hf.generate(hf_prompts, attention_mask=torch.ones_like(hf_prompts),
                              do_sample=True, top_k=0, max_new_tokens=new, min_new_tokens=new,
                              pad_token_id=0)  # fmt: skip
        assert out.shape == (batch, 1 + new)

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    best: dict[str, float] = {}
    for r in range(rounds):
        res = {
            "train ours": timed(lambda: ours.fit(data, rng=rng)),
            "train hf": timed(hf_train),
            "sample ours": timed(lambda: ours.complete(prompts, new, rng)),
            "sample hf": timed(hf_sample),
        }
        if r:  # the first round warms up
            best = {k: min(v, best.get(k, np.inf)) for k, v in res.items()}
    train = {k: batch * block * steps / v for k, v in best.items() if k.startswith("train")}
    samp = {k: batch * new / v for k, v in best.items() if k.startswith("sample")}
    print(f"\ntorch threads {torch.get_num_threads()}; tokens/s: ")
    for k, v in {**train, **samp}.items():
        print(f"  {k:12s} {v:10,.0f}")
    assert train["train ours"] > 0.8 * train["train hf"]
    assert samp["sample ours"] > samp["sample hf"]
