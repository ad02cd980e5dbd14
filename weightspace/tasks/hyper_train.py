"""Deprecated: moved to :mod:`weightspace.hyper.train` (this shim goes away in the next release)."""

import warnings

warnings.warn("weightspace.tasks.hyper_train moved to weightspace.hyper.train", DeprecationWarning, stacklevel=2)

from weightspace.hyper.train import (  # noqa: E402
    HyperTrainConfig,
    TargetCache,
    accuracy,
    steps_to_target,
    train_hypernetwork,
    zero_shot_accuracy,
)

__all__ = ["HyperTrainConfig", "TargetCache", "train_hypernetwork", "accuracy", "zero_shot_accuracy",
           "steps_to_target"]
