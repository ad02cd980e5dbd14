"""Deprecated: moved to :mod:`weightspace.nowcast` (this shim goes away in the next release)."""

import warnings

warnings.warn("weightspace.tasks.nowcast moved to weightspace.nowcast", DeprecationWarning, stacklevel=2)

from weightspace.nowcast import (  # noqa: E402
    KINDS,
    MetaTrainConfig,
    NowcastConfig,
    Nowcaster,
    NowcastLayout,
    Trajectory,
    group_stats,
    load_trajectories,
    meta_train,
    param_features,
    window_features,
)
from weightspace.nowcast.model import LEGACY_FORMAT as FORMAT  # noqa: E402

__all__ = ["Nowcaster", "NowcastConfig", "NowcastLayout", "Trajectory", "MetaTrainConfig", "load_trajectories",
           "meta_train", "window_features", "group_stats", "param_features", "KINDS", "FORMAT"]
