"""Fixtures of the hypernetwork tests: the digits data, a small untrained hypernetwork, the shipped one."""

from __future__ import annotations

import pytest
import torch

from model_zoo import load_dataset
from weightspace.hyper import GraphHyperNetwork, load_hypernetwork


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def small_hyper():
    torch.manual_seed(0)
    return GraphHyperNetwork(hidden=16, layers=1).eval()


@pytest.fixture(scope="module")
def shipped():
    return load_hypernetwork()
