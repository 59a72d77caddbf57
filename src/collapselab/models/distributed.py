"""A language model's fit across processes: ``distributed: {nproc_per_node: N}`` on ``gpt`` and ``hf``.

The loop's process stays the coordinator. Its fit writes what the training needs into a scratch
folder (:func:`collapselab.workarea.scratch`): the training blocks, the family's hyperparameters
(an unfitted clone, pickled) and each chain's fit seed. A child process,
``python -m torch.distributed.run --nproc_per_node N -m collapselab.models.distributed <folder>``,
starts the workers; each prepares the family as the parent did (the pretrained weights or
``init_from`` checkpoint it names), builds each chain's network from the same seed, wraps it in
``DistributedDataParallel`` (``strategy: ddp``) or FSDP2's ``fully_shard`` (``strategy: fsdp``:
parameters, gradients and optimizer state sharded) and runs the one trainer
(:func:`collapselab.models.torch_lm.train`) over gloo (CPU) or nccl (GPU). Every worker draws the
same shuffles as one process would and trains on its rows of each global batch (``batch_size /
N`` of them, weighted so the all-reduced gradient is the global batch's mean gradient): the same
global batch, seed and schedule as one process, up to floating-point summation order. Rank 0
writes the fitted state dicts; the parent loads them and samples as usual.

A worker that dies (an exception, ``kill -9``) fails the generation with a ``RunError`` naming it
and the worker's exit; the loop has committed the generations before it, and ``--resume`` trains
it again, from the same seeds, to the same weights. A diverged loss is a ``NumericalError`` as in
one process (a degenerate generation).
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pydantic
import torch

from collapselab import workarea
from collapselab.errors import NumericalError, RunError

if TYPE_CHECKING:
    from collapselab.models.torch_lm import TorchLM, Trained

RESULT = "fitted.pt"


class Distributed(pydantic.BaseModel):
    """How a fit runs across processes (a family's ``distributed`` keyword)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    nproc_per_node: Annotated[int, pydantic.Field(ge=1, description="training processes (torchrun --nproc_per_node); with CUDA at most one per GPU")]
    nnodes: Annotated[int, pydantic.Field(ge=1, description="machines; 1 only: the workers are children of the loop's process")] = 1
    strategy: Annotated[Literal["ddp", "fsdp"], pydantic.Field(description="ddp: DistributedDataParallel, a full copy per process; fsdp: FSDP2 fully_shard, parameters, gradients and optimizer state sharded")] = "ddp"  # fmt: skip

    @pydantic.field_validator("nnodes")
    @classmethod
    def _one_node(cls, value: int) -> int:
        if value != 1:
            raise ValueError("must be 1: the training workers are started by the loop's process on "
                             "its own machine (a multi-machine fit needs a launcher on every node); "
                             f"got {value}")  # fmt: skip
        return value

    @property
    def world(self) -> int:
        return self.nproc_per_node * self.nnodes


DistributedOption = Annotated[
    Distributed | None,
    pydantic.Field(description="train each fit across processes with torchrun: {nproc_per_node: N, "
                               "strategy: ddp | fsdp}, the same global batch and seed as one "
                               "process; None: in the loop's process"),
]  # fmt: skip


def problems(value: Any, batch_size: Any, device: Any, where: str = "") -> list[str]:
    """``field: rule; got value`` for a ``distributed`` setting the family cannot run: a batch the
    processes cannot share equally, more CUDA processes than GPUs."""
    if value is None:
        return []
    try:
        setup = Distributed.model_validate(value)
    except pydantic.ValidationError:
        return []  # the signature's check names it
    prefix = f"{where}." if where else ""
    out = []
    if isinstance(batch_size, int) and batch_size % setup.world:
        out.append(f"{prefix}batch_size: must be divisible by distributed.nproc_per_node * nnodes = "
                   f"{setup.world} (each process trains on batch_size / {setup.world} blocks of "
                   f"every global batch); got {batch_size}")  # fmt: skip
    gpus = torch.cuda.device_count() if device in ("cuda", "auto") else 0
    if device == "cuda" or (device == "auto" and gpus):
        if setup.nproc_per_node > gpus:
            out.append(f"{prefix}distributed.nproc_per_node: at most one process per GPU and this "
                       f"machine has {gpus}; got {setup.nproc_per_node}")  # fmt: skip
    return out


# ---------------------------------------------------------------- this process's share


@dataclass(frozen=True)
class Ranks:
    """This worker's place among ``world`` (what :func:`~collapselab.models.torch_lm.train` asks)."""

    rank: int
    world: int

    def share(self, batch: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's rows of a global batch and the weight of its mean loss: ``rows * world /
        batch rows``, so the all-reduce's mean over ranks is the global batch's mean. A rank left
        without rows (a short last batch) still runs one row, weighted 0: every rank must take
        part in each step's all-reduce."""
        rows = batch[self.rank :: self.world]
        if rows.shape[0] == 0:
            return batch[:1], 0.0
        return rows, rows.shape[0] * self.world / batch.shape[0]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a (weighted) loss: the global one."""
        total = value.detach().clone()
        torch.distributed.all_reduce(total)
        return total / self.world


# ---------------------------------------------------------------- the coordinator


def fit_across(model: TorchLM, data: np.ndarray, seeds: np.ndarray, setup: Distributed
               ) -> list[tuple[dict[str, torch.Tensor], Trained]]:  # fmt: skip
    """Train one network per chain of ``data`` under torchrun; per chain, the fitted state dict
    (CPU) and what the trainer reported."""
    from collapselab.models.torch_lm import Trained

    what = workarea.label()
    with workarea.scratch("fit") as folder:
        np.save(folder / "data.npy", data)
        job = {"model": model.clone(), "seeds": [int(s) for s in seeds], "strategy": setup.strategy}
        (folder / "job.pkl").write_bytes(pickle.dumps(job))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nnodes={setup.nnodes}", f"--nproc_per_node={setup.nproc_per_node}",
               "--max_restarts=0", f"--log-dir={folder / 'torchrun'}",  # its logs go with it
               "-m", __name__, str(folder)]  # fmt: skip
        # the workers import the family as this process does (a plugin by import path too)
        paths = [p or os.getcwd() for p in sys.path]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
        log = folder / "torchrun.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=_die_with_parent)  # fmt: skip
            try:
                code = proc.wait()
            except BaseException:  # Ctrl-C: torchrun stops its workers on SIGTERM
                _stop(proc)
                raise
        if code != 0:
            raise RunError(failure(what, setup, code, log.read_text(errors="replace")))
        result = torch.load(folder / RESULT, map_location="cpu", weights_only=True)
    if "numerical" in result:
        raise NumericalError(result["numerical"])
    return [(state, Trained(**report)) for state, report in result["chains"]]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the loop's process dies (Linux), so a killed
    loop leaves no training behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def failure(what: str, setup: Distributed, code: int, log: str) -> str:
    """The message for a failed torchrun: which worker, how it ended, its error."""
    head = f"{what} failed: the fit across {setup.world} processes (torchrun, {setup.strategy})"
    root = log.rpartition("Root Cause")[2]
    rank = re.search(r"^\s*rank\s*:\s*(\d+)", root, re.M)
    exit_ = re.search(r"^\s*exitcode\s*:\s*(-?\d+)", root, re.M)
    if rank and exit_:
        status = int(exit_.group(1))
        how = f"exited with {status}"
        if status < 0:
            how += f" ({_signal_name(-status)})"
        lines = [ln.strip() for ln in root.split("traceback :", 1)[-1].splitlines()]
        error = next((ln for ln in reversed(lines) if ln and not ln.startswith("=")), "")
        why = f": worker rank {rank.group(1)} {how}"
        if status > 0 and error:
            why += f": {error}"
    else:
        how = f"{code} ({_signal_name(-code)})" if code < 0 else str(code)
        tail = "\n".join(log.strip().splitlines()[-5:])
        why = f": torchrun exited with {how}" + (f"; its last output:\n{tail}" if tail else "")
    kept = ("; nothing of it was kept, earlier generations are committed: rerun with --resume "
            "to continue") if workarea.current() is not None else ""  # fmt: skip
    return head + why + kept


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# ---------------------------------------------------------------- a worker


def wrap(net: torch.nn.Module, strategy: str, dev: torch.device) -> torch.nn.Module:
    """``net`` under DDP, or sharded in place by FSDP2 (each layer of its layer lists, then the
    whole)."""
    if strategy == "ddp":
        ids = [dev.index] if dev.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    layers = [m for lst in net.modules() if isinstance(lst, torch.nn.ModuleList) for m in lst]
    for layer in layers:
        fully_shard(layer)
    fully_shard(net)
    return net


def full_state(net: torch.nn.Module, strategy: str) -> dict[str, torch.Tensor]:
    """The whole state dict on CPU, under the plain network's names (complete on rank 0)."""
    if strategy == "ddp":
        return {k: v.detach().cpu() for k, v in net.module.state_dict().items()}  # type: ignore[operator]
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {k: v.detach() for k, v in get_model_state_dict(net, options=opts).items()}


def work(folder: Path) -> None:
    """One torchrun worker: every chain's fit; rank 0 writes the result."""
    import dataclasses

    from collapselab.models.torch_lm import resolve_device, train
    from collapselab.store import write_atomic

    job = pickle.loads((folder / "job.pkl").read_bytes())
    model, seeds, strategy = job["model"], job["seeds"], job["strategy"]
    data = np.load(folder / "data.npy")
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    dev = resolve_device(model.device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(dev)
    torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        context = model._prepare(data)
        cfg = model._training()
        chains: list[Any] = []
        result: dict[str, Any] = {"chains": chains}
        try:
            for c, seed in enumerate(seeds):
                gen = torch.Generator().manual_seed(seed)
                torch.manual_seed(seed + ranks.rank)  # dropout masks: each rank its own
                net = wrap(model._new_net(gen, context).to(dev), strategy, dev)
                x = torch.from_numpy(model._with_bos(data[c]))  # (n, L) on CPU, every rank
                done = train(net, x, model._loss, cfg, gen, dev, ranks)
                chains.append((full_state(net, strategy), dataclasses.asdict(done)))
        except NumericalError as exc:  # every rank sees the same reduced loss
            result = {"numerical": str(exc)}
        if ranks.rank == 0:
            write_atomic(folder / RESULT, lambda f: torch.save(result, f))
    finally:
        torch.distributed.destroy_process_group()


def main() -> None:
    from torch.distributed.elastic.multiprocessing.errors import record

    record(work)(Path(sys.argv[1]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the result is written: skip tearing down torch (a second on a busy machine)


if __name__ == "__main__":
    main()
