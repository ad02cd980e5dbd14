"""Fixtures shared by the whole suite."""

import pytest
import torch

#: test folders of the capabilities: many small ops, far faster single-threaded (no OpenMP spinning)
_ONE_THREAD_DIRS = {"tasks", "predict", "nowcast", "hyper", "diffusion"}


@pytest.fixture(autouse=True)
def _one_thread(request):
    if request.path.parent.name not in _ONE_THREAD_DIRS:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def _hydra_schemas():
    """The config dataclasses the verbs' YAML files build on (as ``weightspace`` does before composing)."""
    from weightspace.cli.schemas import register_schemas

    register_schemas()
