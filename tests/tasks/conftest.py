"""Shared fixtures of the task tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Small ops on a shared CPU run far faster single-threaded (no OpenMP spinning)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
