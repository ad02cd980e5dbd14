"""Shared fixtures: one small digits MLP zoo generated once per test session."""

from __future__ import annotations

import pytest

import model_zoo

SMALL = {
    "name": "small",
    "size": 12,
    "seed": 3,
    "chunk_size": 4,
    "data": {"name": "digits", "flatten": True},
    "arch": {"_target_": "model_zoo.archs.MLP", "in_features": 64, "num_outputs": 10, "depth": 1, "width": 16},
    "space": {
        "lr": {"log_uniform": [1e-3, 3e-2]},
        "optimizer": {"choice": ["adam", "sgd", "rmsprop"]},
        "l2": {"log_uniform": [1e-8, 1e-3]},
        "dropout": {"uniform": [0.0, 0.3]},
        "init_std": {"log_uniform": [1e-2, 0.3]},
        "train_fraction": {"uniform": [0.3, 1.0]},
        "batch_size": 64,
    },
    "trainer": {"epochs": 2, "checkpoints": [0, 1, 2]},
}


@pytest.fixture(scope="session")
def small_config() -> dict:
    import copy

    return copy.deepcopy(SMALL)


@pytest.fixture(scope="session")
def small_zoo(tmp_path_factory: pytest.TempPathFactory) -> model_zoo.Zoo:
    out = tmp_path_factory.mktemp("zoo") / "small"
    zoo = model_zoo.generate(SMALL, out, progress=False)
    assert zoo is not None
    return zoo
