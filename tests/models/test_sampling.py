"""The shared decoder: each control does what it says, batched, with exact checks or stated odds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from collapselab.errors import ConfigError
from collapselab.models import sampling
from collapselab.models.decoding import Decoding
from collapselab.models.gpt import GPTNet, make_step
from collapselab.models.sampling import generate
from tests.models.torch_threads import one_torch_thread  # noqa: F401

ALPHA = 1e-3  # chi-square tests: a correct sampler fails each with probability 0.1%


def bigram_step(table: torch.Tensor) -> sampling.StepFn:
    """A step function whose next-token logits depend only on the last token: ``table[last]``."""

    def step(ids: torch.Tensor, cache: object) -> tuple[torch.Tensor, object]:
        return table[ids[:, -1]].clone(), cache

    return step


def one_step_draws(logits: torch.Tensor, n: int, seed: int = 0, **controls: object) -> np.ndarray:
    """``n`` independent draws of one token from ``logits`` (V,), all in one batch."""
    step = bigram_step(logits.unsqueeze(0))
    prompts = torch.zeros(n, 1, dtype=torch.long)
    out = generate(step, prompts, 1, rng=np.random.default_rng(seed), batch_size=n, **controls)
    return out[:, 1].numpy()


def chi2_pvalue(draws: np.ndarray, probs: np.ndarray) -> float:
    observed = np.bincount(draws, minlength=len(probs))
    keep = probs > 0
    assert observed[~keep].sum() == 0  # never a zero-probability token
    expected = probs[keep] / probs[keep].sum() * len(draws)
    return float(stats.chisquare(observed[keep], expected).pvalue)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_one_step_frequencies_match_tempered_softmax(temperature: float) -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, 1.5])
    draws = one_step_draws(logits, 20_000, temperature=temperature)
    probs = torch.softmax(logits / temperature, -1).double().numpy()
    assert chi2_pvalue(draws, probs) > ALPHA


def test_top_k_never_leaves_the_k_most_likely() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=gen) * 0.3  # flat: outside tokens would show up
    draws = one_step_draws(logits, 5_000, top_k=7)
    allowed = set(torch.topk(logits, 7).indices.tolist())
    assert set(np.unique(draws).tolist()) <= allowed
    assert len(np.unique(draws)) == 7
    probs = np.zeros(50)
    probs[list(allowed)] = torch.softmax(logits[list(allowed)].double(), -1).numpy()
    assert chi2_pvalue(draws, probs) > ALPHA  # and renormalised softmax inside


def test_top_p_keeps_exactly_the_smallest_nucleus() -> None:
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    kept = lambda p: set(  # noqa: E731
        torch.isfinite(sampling.top_p_filter(probs.log().clone(), p))[0].nonzero().view(-1).tolist()
    )
    assert kept(0.45) == {1}
    assert kept(0.75) == {1, 3}
    assert kept(0.85) == {1, 3, 2}
    assert kept(0.99) == {0, 1, 2, 3}
    assert kept(1.0) == {0, 1, 2, 3}


def test_top_p_nucleus_is_minimal_on_random_rows() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(200, 30, generator=gen) * 2
    ps = torch.rand(200, generator=gen) * 0.98 + 0.01
    for row, p in zip(logits, ps.tolist(), strict=True):
        probs = row.softmax(-1)
        keep = torch.isfinite(sampling.top_p_filter(row.clone().unsqueeze(0), p))[0]
        mass = probs[keep].sum().item()
        assert mass >= p - 1e-6  # reaches p ...
        assert mass - probs[keep].min().item() < p + 1e-6  # ... and no smaller set would
        assert probs[keep].min() >= probs[~keep].max() if (~keep).any() else True  # the top ones


def test_top_p_nucleus_is_the_same_whether_it_fits_in_the_first_topk_or_not() -> None:
    """Peaked rows (nucleus inside the first 64 candidates) and flat ones (wider: every value
    sorted) in one batch, against the nucleus computed by sorting each row."""
    gen = torch.Generator().manual_seed(2)
    scale = torch.tensor([8.0, 4.0, 1.0, 0.3, 0.05]).repeat(40)[:, None]
    logits = torch.randn(200, 1000, generator=gen) * scale
    for p in (0.5, 0.9, 0.99):
        keep = torch.isfinite(sampling.top_p_filter(logits.clone(), p))
        probs = logits.softmax(-1)
        sizes = keep.sum(-1)
        assert sizes.min() < 64 < sizes.max()  # both paths are taken
        ordered = probs.sort(-1, descending=True).values.cumsum(-1)
        want = (ordered - probs.sort(-1, descending=True).values < p).sum(-1)
        assert torch.equal(sizes, want)


def test_top_p_sampling_draws_from_the_renormalised_nucleus() -> None:
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    draws = one_step_draws(logits, 10_000, top_p=0.75)
    assert chi2_pvalue(draws, np.array([0.5, 0.3, 0.0, 0.0]) / 0.8) > ALPHA


def test_repetition_penalty_lowers_a_repeated_tokens_probability() -> None:
    logits = torch.tensor([[1.0, -1.0, 0.5, 0.2]])
    ids = torch.tensor([[0, 1, 0]])  # tokens 0 (positive logit) and 1 (negative) were seen
    plain = Decoding()
    penal = Decoding(repetition_penalty=1.5)
    p0 = sampling.process_logits(logits, ids, 0, plain, sampling=True).softmax(-1)[0]
    p1 = sampling.process_logits(logits, ids, 0, penal, sampling=True).softmax(-1)[0]
    assert p1[0] < p0[0] and p1[1] < p0[1]
    assert p1[2] > p0[2] and p1[3] > p0[3]
    assert torch.allclose(
        sampling.process_logits(logits, ids, 0, penal, sampling=True),
        torch.tensor([[1.0 / 1.5, -1.5, 0.5, 0.2]]),
    )


def test_min_new_tokens_suppresses_eos_then_pads_with_it() -> None:
    table = torch.zeros(4, 4)
    table[:, 3] = 10.0  # eos (3) is almost certain everywhere
    step = bigram_step(table)
    prompts = torch.zeros(64, 1, dtype=torch.long)
    out = generate(step, prompts, 8, rng=np.random.default_rng(0), eos_id=3, min_new_tokens=5)
    assert (out[:, 1:6] != 3).all()
    assert (out[:, 6:] == 3).all()


def random_table(vocab: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * 2


def test_beam_search_with_one_beam_is_greedy() -> None:
    step = bigram_step(random_table())
    prompts = torch.randint(0, 12, (16, 2), generator=torch.Generator().manual_seed(3))
    greedy = generate(step, prompts, 10, do_sample=False)
    beam1 = sampling.beam_search(step, prompts, 10, Decoding(num_beams=1))
    assert torch.equal(greedy, beam1)
    # greedy is argmax at every step
    for t in range(2, 12):
        assert torch.equal(greedy[:, t], random_table()[greedy[:, t - 1]].argmax(-1))


def test_beam_search_beats_greedy_on_a_trap() -> None:
    # from 0: token 1 (p=.6) leads to a flat row; token 2 (p=.4) to an almost sure token 3
    table = torch.full((6, 6), -30.0)
    table[0, 1], table[0, 2] = np.log(0.6), np.log(0.4)
    table[1, :] = 0.0  # uniform: at best 1/6
    table[2, 3] = 0.0
    table[3, :] = 0.0
    table[4:, :] = 0.0
    step = bigram_step(table)
    prompts = torch.zeros(3, 1, dtype=torch.long)
    greedy = generate(step, prompts, 2, do_sample=False)
    beam = generate(step, prompts, 2, num_beams=3)
    assert greedy[0, 1] == 1 and beam[0, 1] == 2
    lp_greedy = sampling.sequence_logprob(step, greedy, 1)
    lp_beam = sampling.sequence_logprob(step, beam, 1)
    assert (lp_beam > lp_greedy + 0.5).all()  # log(.4) vs log(.6/6)


def test_beam_search_is_exhaustive_when_beams_cover_the_vocabulary() -> None:
    vocab = 5
    table = random_table(vocab, seed=7)
    step = bigram_step(table)
    prompts = torch.tensor([[0], [4]])
    beam = generate(step, prompts, 3, num_beams=vocab)
    # brute force over all 5**3 continuations
    logp = table.log_softmax(-1)
    for row, start in enumerate([0, 4]):
        best = max(
            (logp[start, a] + logp[a, b] + logp[b, c]).item()
            for a in range(vocab)
            for b in range(vocab)
            for c in range(vocab)
        )
        got = sampling.sequence_logprob(step, beam[row : row + 1], 1).item()
        assert got == pytest.approx(best, abs=1e-5)


def test_same_seed_same_text_and_two_draws_differ() -> None:
    step = bigram_step(random_table() * 0.3)
    prompts = torch.zeros(8, 1, dtype=torch.long)
    a = generate(step, prompts, 40, rng=np.random.default_rng(42))
    b = generate(step, prompts, 40, rng=np.random.default_rng(42))
    assert torch.equal(a, b)
    rng = np.random.default_rng(42)
    c, d = generate(step, prompts, 40, rng=rng), generate(step, prompts, 40, rng=rng)
    assert not torch.equal(c, d)


def test_batch_size_splits_without_changing_greedy_output() -> None:
    step = bigram_step(random_table())
    prompts = torch.randint(0, 12, (10, 1), generator=torch.Generator().manual_seed(0))
    whole = generate(step, prompts, 6, do_sample=False, batch_size=10)
    parts = generate(step, prompts, 6, do_sample=False, batch_size=3)
    assert torch.equal(whole, parts)


def tiny_net(seed: int = 0) -> GPTNet:
    net = GPTNet(vocab_size=20, context_len=24, n_layer=2, n_head=2, d_model=16)
    net.init_weights(torch.Generator().manual_seed(seed))
    with torch.no_grad():  # larger weights than init so the logits are far from uniform
        for p in net.parameters():
            if p.ndim == 2:
                p.mul_(20)
    return net.eval()


def recording(step: sampling.StepFn, log: list[torch.Tensor]) -> sampling.StepFn:
    def wrapped(ids: torch.Tensor, cache: object) -> tuple[torch.Tensor, object]:
        logits, cache = step(ids, cache)
        log.append(logits.clone())
        return logits, cache

    return wrapped


@pytest.mark.parametrize("controls", [{"do_sample": False}, {"do_sample": True, "top_k": 5}])
def test_kv_cache_generation_equals_full_recompute(controls: dict[str, object]) -> None:
    net = tiny_net()
    prompts = torch.randint(0, 20, (6, 4), generator=torch.Generator().manual_seed(1))
    cached_log: list[torch.Tensor] = []
    full_log: list[torch.Tensor] = []
    a = generate(recording(make_step(net), cached_log), prompts, 15,
                 rng=np.random.default_rng(0), **controls)  # fmt: skip
    b = generate(recording(make_step(net, use_cache=False), full_log), prompts, 15,
                 rng=np.random.default_rng(0), **controls)  # fmt: skip
    assert torch.equal(a, b)
    assert len(cached_log) == len(full_log) == 15
    for x, y in zip(cached_log, full_log, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_kv_cache_beam_search_equals_full_recompute() -> None:
    net = tiny_net(seed=2)
    prompts = torch.randint(0, 20, (4, 3), generator=torch.Generator().manual_seed(2))
    a = generate(make_step(net), prompts, 12, num_beams=4)
    b = generate(make_step(net, use_cache=False), prompts, 12, num_beams=4)
    assert torch.equal(a, b)


def test_cache_prefill_in_chunks_matches_one_pass() -> None:
    net = tiny_net()
    x = torch.randint(0, 20, (3, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = net(x)
        cache = net.new_cache(3)
        first = net(x[:, :4], cache)
        rest = net(x[:, 4:], cache)  # several queries after a cached prefix
    torch.testing.assert_close(torch.cat([first, rest], 1), full, atol=1e-5, rtol=1e-5)


def test_settings_report_every_problem_with_its_value() -> None:
    with pytest.raises(ConfigError) as err:
        Decoding(temperature=0.0, top_k=-1, top_p=1.5, num_beams=0, batch_size=0)
    msg = str(err.value)
    assert "invalid config (5 problems)" in msg
    assert "temperature must be a number > 0; got 0.0" in msg
    assert "top_k must be an integer >= 0 (0 = off); got -1" in msg
    assert "top_p must be in (0, 1]; got 1.5" in msg
    assert "num_beams must be an integer >= 1; got 0" in msg
    assert "batch_size must be an integer >= 1; got 0" in msg


def test_generate_argument_errors() -> None:
    step = bigram_step(random_table())
    prompts = torch.zeros(2, 1, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^max_new_tokens must be an integer >= 0; got -1$"):
        generate(step, prompts, -1, do_sample=False)
    with pytest.raises(ValueError, match=r"^rng is required when sampling"):
        generate(step, prompts, 3)
    with pytest.raises(
        ValueError, match=r"^prompts must have shape \(B, p\) with p >= 1; got \(2,\)$"
    ):
        generate(step, prompts[:, 0], 3, do_sample=False)
    with pytest.raises(ConfigError, match=r"repetition_penalty must be a number > 0; got -2"):
        generate(step, prompts, 3, do_sample=False, repetition_penalty=-2)


def tiny_hf_gpt2():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=30, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                  bos_token_id=0, eos_token_id=0)  # fmt: skip
    torch.manual_seed(0)  # built locally, nothing downloaded
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_hf_step_greedy_and_beams_match_hf_generate() -> None:
    model = tiny_hf_gpt2()
    prompts = torch.randint(1, 30, (3, 4), generator=torch.Generator().manual_seed(0))
    ours = generate(sampling.hf_step(model), prompts, 8, do_sample=False)
    with torch.no_grad():
        theirs = model.generate(prompts, do_sample=False, max_new_tokens=8, min_new_tokens=8,
                                pad_token_id=0, attention_mask=torch.ones_like(prompts))  # fmt: skip
    assert torch.equal(ours, theirs)
    # beam search through HF's cache: same result as recomputing every step
    beams = generate(sampling.hf_step(model), prompts, 6, num_beams=3)
    recompute = generate(make_step_recompute(model), prompts, 6, num_beams=3)
    assert torch.equal(beams, recompute)


def make_step_recompute(model) -> sampling.StepFn:
    def step(ids: torch.Tensor, cache: object) -> tuple[torch.Tensor, object]:
        seq = ids if cache is None else torch.cat([cache, ids], 1)
        with torch.no_grad():
            return model(input_ids=seq).logits[:, -1], seq

    return step


def test_beam_search_matches_hf_generate_beams_and_scores() -> None:
    """Five beams, no length penalty: HF ``generate``'s best beam and its score (the sum of its
    tokens' log-probabilities) are ours."""
    model = tiny_hf_gpt2()
    prompts = torch.randint(1, 30, (3, 4), generator=torch.Generator().manual_seed(0))
    ours = generate(sampling.hf_step(model), prompts, 6, num_beams=5)
    with torch.no_grad():
        theirs = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                                num_beams=5, max_new_tokens=6, eos_token_id=None, pad_token_id=0,
                                length_penalty=0.0, early_stopping=False, output_scores=True,
                                return_dict_in_generate=True)  # fmt: skip
    assert torch.equal(ours, theirs.sequences)
    score = sampling.sequence_logprob(sampling.hf_step(model), ours, 4)
    torch.testing.assert_close(score.float(), theirs.sequences_scores, atol=1e-4, rtol=0)


def test_gpt_beams_through_our_cache_are_hf_gpt2s_on_the_same_weights() -> None:
    """Our network's beam search (its KV cache, the prompt run once and spread over its beams)
    writes what the same weights in HF's GPT2LMHeadModel and its cache write."""
    pytest.importorskip("transformers")
    from benchmarks.gpt import hf_copy

    net = tiny_net(seed=3)
    hf = sampling.hf_step(hf_copy(net))

    def hf_without_bos(ids: torch.Tensor, cache: object) -> tuple[torch.Tensor, object]:
        logits, cache = hf(ids, cache)
        return logits[:, : net.vocab_size], cache  # the BOS row is never predicted

    prompts = torch.randint(0, 20, (3, 2), generator=torch.Generator().manual_seed(3))
    ours = generate(make_step(net), prompts, 10, num_beams=5)
    assert torch.equal(ours, generate(hf_without_bos, prompts, 10, num_beams=5))
