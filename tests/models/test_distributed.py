"""A fit across processes (``distributed: {nproc_per_node: 2}``): torchrun workers over gloo on
CPU train what one process would (same global batch and seed), a worker killed mid-fit fails the
generation cleanly and ``--resume`` ends where an uninterrupted run ends. Tiny models; each
torchrun start costs a few seconds (the workers import torch), so the runs are shared."""

from __future__ import annotations

import json
import pickle
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from collapselab.cli import app
from collapselab.config import validate
from collapselab.errors import ConfigError
from collapselab.models.distributed import Distributed, Ranks, failure
from collapselab.models.gpt import GPT
from collapselab.store import RunStore
from tests.models import dying_lm
from tests.models.torch_threads import one_torch_thread  # noqa: F401

DATA = {"source": "builtin", "size": 96, "vocab_size": 40, "states": 4, "block_len": 12,
        "train_blocks": 200, "valid_blocks": 8, "test_blocks": 32}
GPT_MODEL = {"family": "tests.models.dying_lm:DyingGPT", "n_layer": 1, "n_head": 2, "d_model": 32,
             "epochs": 2, "batch_size": 16, "lr": 3e-3, "device": "cpu"}
TWO = {"nproc_per_node": 2}


def config(tmp: Path, name: str, model: dict, generations: int = 2) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "generations": generations, "seed": 3, "chains": 1, "model": model,
        "data": DATA, "metrics": ["perplexity"], "keep_samples": "all", "out_dir": str(tmp / "runs"),
    }))  # fmt: skip
    return path


def cli(*args: str):
    return CliRunner().invoke(app, [*args, "--no-report"])


def rows(root: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "wall_s"}
            for line in (root / "metrics.jsonl").read_text().splitlines()]  # fmt: skip


def weights(root: Path) -> dict:
    return pickle.loads((root / "gen_000" / "model.pkl").read_bytes()).state_dicts_[0]


def assert_close_ppl(got: dict, want: dict) -> None:
    assert abs(got["ppl_test"] / want["ppl_test"] - 1) < 0.05, (got["ppl_test"], want["ppl_test"])


@pytest.fixture(scope="module")
def gpt_runs(tmp_path_factory) -> Path:
    """The same 2-generation gpt run in one process and across two (uninterrupted)."""
    tmp = tmp_path_factory.mktemp("gpt")
    for name, model in (("one", GPT_MODEL), ("two", {**GPT_MODEL, "distributed": TWO})):
        result = cli("run", str(config(tmp, name, model)))
        assert result.exit_code == 0, result.output
    return tmp


def test_two_gpt_processes_train_what_one_does(gpt_runs):
    one, two = rows(gpt_runs / "runs" / "one"), rows(gpt_runs / "runs" / "two")
    assert_close_ppl(two[0], one[0])
    a, b = weights(gpt_runs / "runs" / "one"), weights(gpt_runs / "runs" / "two")
    assert sorted(a) == sorted(b)  # the workers' state dict has the plain network's names
    # same batches, seed and schedule: only the all-reduce's summation order differs
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3


def test_a_killed_worker_fails_the_generation_and_resume_ends_as_an_uninterrupted_run(gpt_runs):
    kill_and_resume(gpt_runs, {**GPT_MODEL, "distributed": TWO}, gpt_runs / "runs" / "two")


def kill_and_resume(tmp: Path, model: dict, want: Path) -> None:
    """Generation 1's worker of rank 1 SIGKILLs itself mid-fit; then ``--resume`` ends as the
    uninterrupted run ``want`` did."""
    cfg = config(tmp, "killed", model)
    root = tmp / "runs" / "killed"
    dying_lm.Dying.fits, dying_lm.Dying.kill_at_fit = 0, 2  # generation 1's worker of rank 1
    try:
        result = cli("run", str(cfg))
    finally:
        dying_lm.Dying.kill_at_fit = 0
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert ("generation 1 failed: the fit across 2 processes (torchrun, ddp): worker rank 1 "
            "exited with -9 (SIGKILL); nothing of it was kept, earlier generations are "
            "committed: rerun with --resume to continue") in message, result.output
    assert "Traceback" not in result.output
    run = RunStore(root)
    assert run.completed() == 1 and len(rows(root)) == 1  # generation 0 kept, nothing of 1
    assert not list(root.glob("gen_001"))
    assert not list(Path(tempfile.gettempdir()).glob("collapselab-fit-killed-*"))  # scratch gone

    result = cli("run", str(cfg), "--resume")
    assert result.exit_code == 0, result.output
    assert rows(root) == rows(want)
    for gen in (0, 1):
        np.testing.assert_array_equal(RunStore(root).samples(gen), RunStore(want).samples(gen))
    a, b = weights(root), weights(want)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


# ---------------------------------------------------------------- hf


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    """A 2-layer Llama (hidden 32, 2 heads of 16, 64 ids) with random weights, saved locally."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=1, eos_token_id=2)  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(path)
    return str(path)


def hf_model(path: str) -> dict:
    return {"family": "hf", "name_or_path": path, "vocab_size": 40, "epochs": 2, "batch_size": 16,
            "lr": 1e-2, "device": "cpu", "valid_fraction": 0.2}


def test_two_hf_processes_train_what_one_does(tmp_path, tiny_llama):
    model = hf_model(tiny_llama)
    for name, m in (("one", model), ("two", {**model, "distributed": TWO})):
        result = cli("run", str(config(tmp_path, name, m, generations=1)))
        assert result.exit_code == 0, result.output
    one, two = rows(tmp_path / "runs" / "one"), rows(tmp_path / "runs" / "two")
    assert_close_ppl(two[0], one[0])


@pytest.mark.slow
def test_a_killed_hf_worker_then_resume_ends_as_an_uninterrupted_run(tmp_path, tiny_llama):
    model = {**hf_model(tiny_llama), "family": "tests.models.dying_lm:DyingHF", "distributed": TWO}
    result = cli("run", str(config(tmp_path, "two", model)))
    assert result.exit_code == 0, result.output
    kill_and_resume(tmp_path, model, tmp_path / "runs" / "two")


def test_fsdp_shards_and_trains_what_one_process_does():
    data = np.random.default_rng(0).integers(0, 20, size=(1, 40, 8)).astype(np.int32)
    kw = dict(n_layer=2, n_head=2, d_model=16, batch_size=8, epochs=2, device="cpu")
    two = GPT(**kw, distributed={"nproc_per_node": 2, "strategy": "fsdp"})
    two.fit(data, rng=np.random.default_rng(1))
    one = GPT(**kw).fit(data, rng=np.random.default_rng(1))
    np.testing.assert_allclose(two.train_loss_, one.train_loss_, rtol=1e-4)
    a, b = two.state_dicts_[0], one.state_dicts_[0]
    assert sorted(a) == sorted(b) and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    assert two.sample(3, np.random.default_rng(2)).shape == (1, 3, 8)


# ---------------------------------------------------------------- config and messages


def experiment(model: dict) -> dict:
    return {"generations": 1, "model": model, "data": DATA, "metrics": ["perplexity"]}


def test_a_batch_the_processes_cannot_share_is_refused_at_config_time():
    with pytest.raises(ConfigError) as info:
        validate(experiment({**GPT_MODEL, "family": "gpt", "batch_size": 15,
                             "distributed": {"nproc_per_node": 2}}))
    assert info.value.problems == [
        "model.batch_size: must be divisible by distributed.nproc_per_node * nnodes = 2 (each "
        "process trains on batch_size / 2 blocks of every global batch); got 15"]


@pytest.mark.parametrize("distributed, problem", [
    ({"nproc_per_node": 0}, r"model\.distributed\.nproc_per_node: Input should be greater than or "
                            r"equal to 1; got 0"),
    ({"nproc_per_node": 2, "nnodes": 2}, r"model\.distributed\.nnodes: Value error, must be 1: the "
                                         r"training workers are started by the loop's process .*got 2"),
    ({"nproc_per_node": 2, "strategy": "zero"}, r"model\.distributed\.strategy: Input should be "
                                                r"'ddp' or 'fsdp'; got 'zero'"),
])  # fmt: skip
def test_bad_distributed_settings_name_the_field_and_the_value(distributed, problem):
    with pytest.raises(ConfigError) as info:
        validate(experiment({**GPT_MODEL, "family": "gpt", "distributed": distributed}))
    assert len(info.value.problems) == 1
    assert re.fullmatch(problem, info.value.problems[0]), info.value.problems


def test_a_python_error_in_a_worker_is_named_with_its_rank_and_message():
    log = """[rank1]: boom
Root Cause (first observed failure):
[0]:
  time      : 2026-12-05_09:10:09
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 7395)
  error_file: /tmp/x/error.json
  traceback : Traceback (most recent call last):
    File "w.py", line 7, in main
      raise ValueError("boom from rank 1")
  ValueError: boom from rank 1

============================================================"""
    assert failure("the fit", Distributed(nproc_per_node=2), 1, log) == (
        "the fit failed: the fit across 2 processes (torchrun, ddp): worker rank 1 exited with 1: "
        "ValueError: boom from rank 1")
    assert failure("the fit", Distributed(nproc_per_node=2), -9, "") == (
        "the fit failed: the fit across 2 processes (torchrun, ddp): torchrun exited with -9 "
        "(SIGKILL)")


def test_each_rank_takes_its_rows_and_the_weights_make_the_global_mean():
    import torch

    batch = torch.arange(5)  # a short last batch: 3 rows to rank 0, 2 to rank 1
    shares = [Ranks(r, 2).share(batch) for r in range(2)]
    assert [s[0].tolist() for s in shares] == [[0, 2, 4], [1, 3]]
    assert sum(w for _, w in shares) / 2 == pytest.approx(1.0)  # DDP averages over ranks
    rows, weight = Ranks(3, 4).share(torch.arange(2))  # no rows: one row that counts 0
    assert rows.tolist() == [0] and weight == 0.0
