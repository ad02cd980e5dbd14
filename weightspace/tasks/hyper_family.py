"""Deprecated: moved to :mod:`weightspace.hyper.family` (this shim goes away in the next release)."""

import warnings

warnings.warn("weightspace.tasks.hyper_family moved to weightspace.hyper.family", DeprecationWarning, stacklevel=2)

from weightspace.hyper.family import SPLITS, ArchSpace, config_key, is_held_out  # noqa: E402

__all__ = ["ArchSpace", "SPLITS", "config_key", "is_held_out"]
