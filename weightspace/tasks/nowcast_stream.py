"""Deprecated: moved to :mod:`weightspace.nowcast.stream` (this shim goes away in the next release)."""

import warnings

warnings.warn("weightspace.tasks.nowcast_stream moved to weightspace.nowcast.stream", DeprecationWarning,
              stacklevel=2)

from weightspace.nowcast.stream import BLOCK_MIN, CHUNK, StreamIndex, predict_stream  # noqa: E402

__all__ = ["StreamIndex", "predict_stream", "CHUNK", "BLOCK_MIN"]
