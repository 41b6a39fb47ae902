"""Run these tests single-threaded.

Their tensors are tiny, so intra-op threads only add synchronisation; on a loaded 2-core machine a second
thread slows small solves down by up to 100x. The previous setting is restored after each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _single_thread_session() -> Iterator[None]:
    # Module- and session-scoped fixtures (a model fitted once for several tests) are set up before any
    # function-scoped fixture, so the per-test setting below would come too late for them.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
