"""Deprecated: moved to :mod:`weightspace.nowcast.plan` (this shim goes away in the next release)."""

import warnings

warnings.warn("weightspace.tasks.nowcast_plan moved to weightspace.nowcast.plan", DeprecationWarning, stacklevel=2)

from weightspace.nowcast.plan import PLAN_MAX, JumpPlan  # noqa: E402

__all__ = ["JumpPlan", "PLAN_MAX"]
