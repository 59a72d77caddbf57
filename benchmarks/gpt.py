"""Workloads 4 and 5: the ``gpt`` family against the same architecture in Hugging Face transformers.

4. Training tokens/s: our ``GPT.fit`` (its own loop: AdamW fused, cosine schedule, grad clip 1) vs
   ``GPT2LMHeadModel`` (GPT2Config: 4 layers, 4 heads, d=256, vocab 16k, 128 positions, all dropout
   0, default attention) trained by a plain PyTorch loop (``torch.optim.AdamW`` defaults + the same
   clip); batch 32 x 128 on both sides, each rep building its model and taking the same number of
   steps. The fraction of the machine's fp32 matmul ceiling counts a step's matmul FLOPs
   (:func:`train_flops_per_token`: 6 x multiplying weights + attention, per token); the ceiling is
   a 2048^2 ``torch.mm``, measured next to every pair (its best of a few), so both figures see the
   same machine load.
5. Sampling new tokens/s: our KV-cache sampler (``models/sampling.generate``) vs HF ``generate`` on
   the same weights (our network's parameters copied into a ``GPT2LMHeadModel`` whose vocabulary has
   the extra BOS row; its logits match ours, checked), batch 32, BOS prompt, 128 new tokens, plain
   sampling (temperature 1, no top-k/top-p); and 5-way beam search, with a row for what bounds it
   (:func:`forward_bound`: the share of its time in the forward passes it makes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.harness import Row, alternate, fmt_rate, timed
from collapselab.models import sampling
from collapselab.models.decoding import Decoding
from collapselab.models.gpt import GPT, GPTNet, make_step

ARCH = {"n_layer": 4, "n_head": 4, "d_model": 256}
VOCAB = 16_000
BATCH, BLOCK = 32, 128


def matmul_gflops(size: int = 2048, reps: int = 3) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * size**3 / best / 1e9


def hf_config(vocab: int, positions: int, n_layer: int = ARCH["n_layer"],
              n_head: int = ARCH["n_head"], d_model: int = ARCH["d_model"]) -> Any:  # fmt: skip
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=d_model, n_layer=n_layer,
                      n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      bos_token_id=None, eos_token_id=None, pad_token_id=0)  # fmt: skip


# ---------------------------------------------------------------- 4. training


def train_flops_per_token(net: GPTNet, block: int) -> int:
    """Matmul FLOPs of a training step per token (PaLM's count, forward + backward): 6 x the
    weights that multiply (the blocks' Linears and the tied output layer, not the embedding
    lookups, biases or LayerNorms) + 12 x layers x d_model x block for attention's two matmuls."""
    weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, torch.nn.Linear))
    weights += net.vocab_size * net.d_model
    return 6 * weights + 12 * net.n_layer * net.d_model * block


def ours_train(data: np.ndarray) -> float:
    model = GPT(**ARCH, vocab_size=VOCAB, batch_size=BATCH, device="cpu")
    return timed(lambda: model.fit(data, rng=np.random.default_rng(0)))


def hf_train(data: np.ndarray) -> float:
    from transformers import GPT2LMHeadModel

    tic = time.perf_counter()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(hf_config(VOCAB, BLOCK)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    x = torch.from_numpy(data[0].astype(np.int64))  # (n, 128)
    inp = torch.cat([torch.zeros(len(x), 1, dtype=torch.long), x[:, :-1]], dim=1)  # shifted
    for s in range(0, len(x), BATCH):
        logits = model(input_ids=inp[s : s + BATCH]).logits  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), x[s : s + BATCH].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return time.perf_counter() - tic


def training(sizes: dict[str, Any], reps: int) -> tuple[list[Row], dict[str, Any]]:
    steps = sizes["train_steps"]
    data = np.random.default_rng(0).integers(0, VOCAB, (1, steps * BATCH, BLOCK), dtype=np.int32)
    tokens = steps * BATCH * BLOCK
    params = sum(p.numel() for p in GPTNet(VOCAB, BLOCK, **ARCH).parameters())
    flops_per_token = train_flops_per_token(GPTNet(VOCAB, BLOCK, **ARCH), BLOCK)
    ceilings: list[float] = []

    def ours() -> float:
        ceilings.append(matmul_gflops())
        return ours_train(data)

    # warm up with one small step each (lazy imports, allocator)
    ours_train(data[:, :2])
    hf_train(data[:, :2])
    pairs = alternate(ours, lambda: hf_train(data), reps, warmup=False)
    ceilings.append(matmul_gflops())
    fractions = [flops_per_token * tokens / s / 1e9 / c
                 for s, c in zip(pairs.ours, ceilings, strict=False)]  # fmt: skip
    hf_fractions = [flops_per_token * tokens / s / 1e9 / c
                    for s, c in zip(pairs.peer, ceilings, strict=False)]  # fmt: skip
    frac = float(np.median(fractions))
    ceiling = float(np.median(ceilings))
    info = {"params": params, "flops_per_token": flops_per_token, "steps": steps,
            "tokens_per_rep": tokens, "ceiling_gflops": ceilings,
            "ours_ceiling_fraction": fractions, "hf_ceiling_fraction": hf_fractions,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}  # fmt: skip
    rows = [
        Row(f"4 gpt training, batch 32x128, {steps} steps ({params / 1e6:.2f}M params)",
            fmt_rate(tokens / min(pairs.ours), "tok/s"), fmt_rate(tokens / min(pairs.peer), "tok/s"),
            pairs.ratio, goal=1.5, goal_text=">= 1.5x HF eager",
            note=f"HF GPT2LMHeadModel + plain loop; {torch.get_num_threads()} torch threads",
            data={"ours_s": pairs.ours, "peer_s": pairs.peer, "ratios": pairs.ratios, **info}),
        Row("4 gpt training, fraction of fp32 matmul ceiling",
            f"{100 * frac:.0f}%", f"{100 * float(np.median(hf_fractions)):.0f}% (HF)", frac,
            goal=0.65, goal_text=">= 65% of ceiling",
            note=f"ceiling {ceiling:.0f} GFLOP/s (2048^2 torch.mm, this run); ratio = fraction",
            data=info),
    ]  # fmt: skip
    return rows, {"gpt_training": info}


# ---------------------------------------------------------------- 5. sampling


# our block's modules -> GPT-2's (its Conv1D layers hold the transposed weights of our Linears)
HF_NAMES = {"ln1": "ln_1", "ln2": "ln_2", "qkv": "attn.c_attn", "proj": "attn.c_proj",
            "fc": "mlp.c_fc", "fc_out": "mlp.c_proj"}  # fmt: skip


def hf_copy(net: GPTNet) -> Any:
    """A ``GPT2LMHeadModel`` holding ``net``'s weights (HF's Conv1D stores weights transposed)."""
    from transformers import GPT2LMHeadModel

    cfg = hf_config(net.vocab_size + 1, net.context_len, net.n_layer, net.n_head, net.d_model)
    hf = GPT2LMHeadModel(cfg).eval()
    sd = {"transformer.wte.weight": net.wte.weight, "transformer.wpe.weight": net.wpe.weight,
          "transformer.ln_f.weight": net.ln_f.weight, "transformer.ln_f.bias": net.ln_f.bias}
    for i, block in enumerate(net.blocks):
        for ours, theirs in HF_NAMES.items():
            mod = getattr(block, ours)
            linear = ours not in ("ln1", "ln2")
            sd[f"transformer.h.{i}.{theirs}.weight"] = mod.weight.T if linear else mod.weight
            sd[f"transformer.h.{i}.{theirs}.bias"] = mod.bias
    missing = hf.load_state_dict({k: v.detach().contiguous() for k, v in sd.items()}, strict=False)
    assert not missing.unexpected_keys, missing.unexpected_keys
    hf.tie_weights()
    return hf


def sampling_bench(sizes: dict[str, Any], reps: int) -> tuple[list[Row], dict[str, Any]]:
    new = sizes["sample_new_tokens"]
    net = GPTNet(VOCAB, new + 1, **ARCH)
    net.init_weights(torch.Generator().manual_seed(0))
    net.eval()
    hf = hf_copy(net)
    with torch.no_grad():
        probe = torch.randint(0, VOCAB, (2, 16))
        diff = float((hf(input_ids=probe).logits[..., :VOCAB] - net(probe)).abs().max())
    rows, info = [], {"max_abs_logit_diff": diff}
    for kind, batch, n_new, beams in (("sampling", sizes["sample_batch"], new, 1),
                                       ("beam search (5 beams)", sizes["beam_batch"],
                                        sizes["beam_new_tokens"], 5)):  # fmt: skip
        prompts = torch.full((batch, 1), VOCAB, dtype=torch.long)  # BOS
        settings = Decoding(num_beams=beams, do_sample=beams == 1, batch_size=batch)

        def ours(p: torch.Tensor = prompts, n: int = n_new,
                 s: Decoding = settings) -> float:  # fmt: skip
            return timed(lambda: sampling.generate(make_step(net), p, n, settings=s,
                                                   rng=np.random.default_rng(0)))  # fmt: skip

        def theirs(p: torch.Tensor = prompts, n: int = n_new, b: int = beams) -> float:
            kwargs: dict[str, Any] = ({"do_sample": True, "top_k": 0, "top_p": 1.0,
                                       "temperature": 1.0} if b == 1 else
                                      {"do_sample": False, "num_beams": b, "early_stopping": False})
            with torch.no_grad():
                return timed(lambda: hf.generate(input_ids=p, attention_mask=torch.ones_like(p),
                                                 max_new_tokens=n, min_new_tokens=n,
                                                 pad_token_id=0, **kwargs))  # fmt: skip

        pairs = alternate(ours, theirs, reps)
        tokens = batch * n_new
        rows.append(Row(
            f"5 gpt {kind}, batch {batch}, {n_new} new tokens",
            fmt_rate(tokens / min(pairs.ours), "new tok/s"),
            fmt_rate(tokens / min(pairs.peer), "new tok/s"), pairs.ratio,
            goal=3, goal_text=">= 3x HF generate",
            note=f"same weights (max logit diff {diff:.1e}); KV cache both",
            data={"ours_s": pairs.ours, "peer_s": pairs.peer, "ratios": pairs.ratios,
                  "batch": batch, "new_tokens": n_new, "num_beams": beams}))  # fmt: skip
        rows.append(forward_bound(net, prompts, n_new, beams, ours, pairs.ratio, reps, kind))
    return rows, {"gpt_sampling": info}


def forward_bound(net: GPTNet, prompts: torch.Tensor, n_new: int, beams: int,
                  ours: Callable[[], float], ratio: float, reps: int, kind: str) -> Row:  # fmt: skip
    """What bounds our decoding: the share of its time spent in the forward passes it makes (the
    prompts once, then ``n_new - 1`` tokens for every beam, through the KV cache), timed alone and
    alternated with the whole decoding; the rest is bookkeeping (logits processing, the draw or the
    top-k over beams x vocab, the cache reorder). ``ratio`` (ours over HF) / share is the ratio a
    decoder with free bookkeeping would reach. Best times of each side, not medians of pairs: on a
    busy machine one slow spell would otherwise put the share above 100%."""
    step = make_step(net)
    spread = torch.arange(len(prompts)).repeat_interleave(beams)
    tokens = torch.zeros(len(spread), 1, dtype=torch.long)

    def forward_only() -> float:
        def run() -> None:
            with torch.no_grad():
                _, cache = step(prompts, None)
                if beams > 1:
                    cache = cache.reorder_cache(spread)
                for _ in range(n_new - 1):
                    _, cache = step(tokens, cache)

        return timed(run)

    pairs = alternate(forward_only, ours, max(reps, 5))
    share = min(pairs.ours) / min(pairs.peer)  # best of each: a busy spell inflates either side
    bound = ratio / share
    return Row(f"5 gpt {kind}: share of our time in its forward passes (its bound)",
               f"{100 * share:.0f}%", "—", share,
               note=f"the rest is bookkeeping; with none, the ratio to HF would be {bound:.2f}x",
               data={"forward_s": pairs.ours, "decode_s": pairs.peer, "free_bookkeeping_ratio": bound})  # fmt: skip
