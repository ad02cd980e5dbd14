"""Generators trained once per session on the tiny zoo (:mod:`tests.diffusion.tiny`), shared by the tests."""

import pytest
import torch

from weightspace.diffusion import WeightDiffusion

from ..tiny_zoo import tiny_zoo
from .tiny import GRAPH, PDIFF, PROBE_GRAPH, TINY, A


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    return tiny_zoo(tmp_path_factory, TINY, "diffusion_tiny_zoo")


@pytest.fixture(scope="session")
def pdiff(zoo):
    torch.set_num_threads(1)
    return WeightDiffusion.fit(zoo, "pdiff", arch=A, config=PDIFF, progress=False)


@pytest.fixture(scope="session")
def graph(zoo):
    torch.set_num_threads(1)
    return WeightDiffusion.fit(zoo, "graph", config=GRAPH, progress=False)


@pytest.fixture(scope="session")
def graph_probe(zoo):
    torch.set_num_threads(1)
    return WeightDiffusion.fit(zoo, "graph", config=PROBE_GRAPH, progress=False)
