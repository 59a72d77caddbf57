"""LM families whose torchrun worker kills itself mid-fit, for tests/models/test_distributed.py.

A separate, light module: the workers import the family to unpickle it. The loop's process
decides which of its fits dies (``Dying.kill_at_fit``, counted in ``Dying.fits``); that fit's
workers see ``KILL`` in their environment, and the one of that rank SIGKILLs itself at its
``KILL_AT_STEP``-th training step. A config names the family ``tests.models.dying_lm:DyingGPT``.
"""

from __future__ import annotations

import os
import signal
from typing import Any, ClassVar

import numpy as np
import torch

from collapselab.models.gpt import GPT
from collapselab.models.hf import HFCausalLM

KILL = "COLLAPSELAB_TEST_KILL_RANK"
KILL_AT_STEP = 3
_steps = 0  # training forward passes of this worker


class Dying:
    fits: ClassVar[int] = 0  # fits of the loop's process
    kill_at_fit: ClassVar[int] = 0  # that fit's workers are told to die; 0: none

    def fit(self, data: np.ndarray, *, rng: np.random.Generator) -> Any:
        Dying.fits += 1
        if Dying.fits != Dying.kill_at_fit:
            return super().fit(data, rng=rng)  # type: ignore[misc]
        os.environ[KILL] = "1"  # copied into the torchrun child's environment
        try:
            return super().fit(data, rng=rng)  # type: ignore[misc]
        finally:
            del os.environ[KILL]

    def _loss(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        global _steps
        if torch.is_grad_enabled() and os.environ.get(KILL) == os.environ.get("RANK", "-"):
            _steps += 1
            if _steps == KILL_AT_STEP:
                os.kill(os.getpid(), signal.SIGKILL)
        return super()._loss(net, x)  # type: ignore[misc,no-any-return]


class DyingGPT(Dying, GPT):
    pass


class DyingHF(Dying, HFCausalLM):
    pass
