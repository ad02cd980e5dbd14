"""Deprecated: moved to :mod:`weightspace.nowcast.lightning` (this shim goes away in the next release)."""

import warnings

warnings.warn("weightspace.tasks.nowcast_lightning moved to weightspace.nowcast.lightning", DeprecationWarning,
              stacklevel=2)

from weightspace.nowcast.lightning import NowcastCallback  # noqa: E402

__all__ = ["NowcastCallback"]
