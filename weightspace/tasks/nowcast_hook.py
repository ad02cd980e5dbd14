"""Deprecated: moved to :mod:`weightspace.nowcast.hook` (this shim goes away in the next release)."""

import warnings

warnings.warn("weightspace.tasks.nowcast_hook moved to weightspace.nowcast.hook", DeprecationWarning, stacklevel=2)

from weightspace.nowcast.hook import (  # noqa: E402
    HOLD_DEFAULT,
    OPTIMIZER_STATE_CHOICES,
    NowcastHook,
    held_mask,
    horizon_schedule,
)

__all__ = ["NowcastHook", "horizon_schedule", "held_mask", "OPTIMIZER_STATE_CHOICES", "HOLD_DEFAULT"]
