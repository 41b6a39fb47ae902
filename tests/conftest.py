"""Run these tests single-threaded.

Their tensors are tiny, so intra-op threads only add synchronisation; on a loaded 2-core machine a second
thread slows small solves down by up to 100x. The previous setting is restored after each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
