"""Deprecated: ``weightspace.tasks.diffusion`` moved to :mod:`weightspace.diffusion.generator`; this alias goes in the next release."""

import warnings

from weightspace.diffusion.generator import *  # noqa: F401,F403
from weightspace.diffusion.generator import __all__  # noqa: F401

warnings.warn("weightspace.tasks.diffusion moved to weightspace.diffusion.generator", DeprecationWarning, stacklevel=2)
