"""The ``gpt`` family: protocol, learning, scoring, decoding, checkpoints. Tiny models, seconds."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from collapselab import registry
from collapselab.errors import ConfigError
from collapselab.models import gpt, sampling
from collapselab.models.gpt import GPT, GPTNet, pretrain_base
from collapselab.protocol import NotFittedError, clone
from tests.models.torch_threads import one_torch_thread  # noqa: F401

VOCAB, BLOCK = 10, 12
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


def tiny_net(vocab: int = 50, context: int = 16) -> GPTNet:
    net = GPTNet(vocab, context, n_layer=2, n_head=2, d_model=32)
    net.init_weights(torch.Generator().manual_seed(0))
    return net


def bos_blocks(net: GPTNet, n: int, length: int) -> torch.Tensor:
    x = torch.randint(0, net.vocab_size, (n, length), generator=torch.Generator().manual_seed(1))
    x[:, 0] = net.vocab_size  # BOS
    return x


def test_same_logits_loss_and_gradients_as_hugging_face_gpt2() -> None:
    """Our network and HF's GPT2LMHeadModel holding the same weights: same logits, and the training
    loss (ours by the chunked LinearCrossEntropy) with the same gradient for every weight."""
    pytest.importorskip("transformers")
    from benchmarks.gpt import HF_NAMES, hf_copy

    net = tiny_net().train()
    hf = hf_copy(net).train()
    x = bos_blocks(net, 6, 17)
    v = net.vocab_size
    theirs = hf(input_ids=x[:, :-1]).logits[..., :v]
    assert torch.allclose(net(x[:, :-1]), theirs, atol=1e-5)
    ours_loss = net(x[:, :-1], targets=x[:, 1:])
    hf_loss = F.cross_entropy(theirs.reshape(-1, v), x[:, 1:].reshape(-1))
    assert torch.allclose(ours_loss, hf_loss, atol=1e-6)
    ours_loss.backward()
    hf_loss.backward()
    hf_params = dict(hf.named_parameters())
    grads = [(net.wte.weight.grad, hf_params["transformer.wte.weight"].grad),
             (net.wpe.weight.grad, hf_params["transformer.wpe.weight"].grad),
             (net.ln_f.weight.grad, hf_params["transformer.ln_f.weight"].grad),
             (net.ln_f.bias.grad, hf_params["transformer.ln_f.bias"].grad)]  # fmt: skip
    for i, block in enumerate(net.blocks):
        for ours, theirs_name in HF_NAMES.items():
            mod = getattr(block, ours)
            hf_weight = hf_params[f"transformer.h.{i}.{theirs_name}.weight"].grad
            grads.append((mod.weight.grad, hf_weight if ours.startswith("ln") else hf_weight.T))
            grads.append((mod.bias.grad, hf_params[f"transformer.h.{i}.{theirs_name}.bias"].grad))
    assert len(grads) == len(list(net.parameters()))
    for ours_g, hf_g in grads:
        assert torch.allclose(ours_g, hf_g, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("rows", [1, 7, 96, 10_000])
def test_chunked_loss_equals_the_plain_cross_entropy(rows: int, monkeypatch) -> None:
    """The training loss in chunks of ``rows`` rows (a partial last chunk too) gives the loss and
    gradients of ``F.cross_entropy`` on the full logits; without gradients, the same loss."""
    net = tiny_net()
    x = bos_blocks(net, 6, 17)
    monkeypatch.setattr(gpt, "LOSS_CHUNK", rows * net.vocab_size)
    plain = F.cross_entropy(net(x[:, :-1]).reshape(-1, net.vocab_size), x[:, 1:].reshape(-1))
    want = torch.autograd.grad(plain, list(net.parameters()))
    fused = net(x[:, :-1], targets=x[:, 1:])
    got = torch.autograd.grad(fused, list(net.parameters()))
    assert torch.allclose(fused, plain, atol=1e-6)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-5)
    with torch.no_grad():
        assert torch.allclose(net(x[:, :-1], targets=x[:, 1:]), plain, atol=1e-6)
