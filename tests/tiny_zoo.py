"""A CI-sized heterogeneous digits CNN zoo (or any config), generated once per test session and shared by the
task and CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import model_zoo

TINY = {
    "name": "predict_tiny",
    "size": 12,
    "seed": 1,
    "chunk_size": 12,
    "data": {"name": "digits", "flatten": False},
    "arch": {"_target_": "model_zoo.archs.SmallCNN", "in_channels": 1, "num_classes": 10, "channels": 4,
             "layers": 2, "kernel_size": 3, "strides": 2},
    "space": {
        "lr": {"log_uniform": [1e-3, 5e-2]},
        "optimizer": {"choice": ["adam", "sgd"]},
        "init_std": {"log_uniform": [1e-2, 0.3]},
        "batch_size": 64,
        "arch": {"choice": [
            {"_target_": "model_zoo.archs.SmallCNN", "in_channels": 1, "num_classes": 10, "channels": 4, "layers": 2,
             "kernel_size": 3, "strides": 2},
            {"_target_": "model_zoo.archs.SmallCNN", "in_channels": 1, "num_classes": 10, "channels": 6, "layers": 2,
             "kernel_size": 5, "strides": 2},
        ]},
    },
    "trainer": {"epochs": 1},
}


def tiny_zoo(factory: pytest.TempPathFactory, config: dict | None = None, name: str = "predict_tiny_zoo") -> Path:
    """The folder of a zoo generated from ``config`` (default :data:`TINY`) on first use in this session."""
    out = factory.getbasetemp() / name
    try:
        model_zoo.load(out)
    except Exception:
        model_zoo.generate(TINY if config is None else config, out, progress=False)
    return out
