"""One torch thread for tiny-model test modules: faster, and robust to a busy 2-core machine.

Use in a module with ``from tests.models.torch_threads import one_torch_thread  # noqa: F401``.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
