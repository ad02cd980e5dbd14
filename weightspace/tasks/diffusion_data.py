"""Deprecated: ``weightspace.tasks.diffusion_data`` moved to :mod:`weightspace.diffusion.data`; this alias goes in the next release."""

import warnings

from weightspace.diffusion.data import *  # noqa: F401,F403
from weightspace.diffusion.data import __all__  # noqa: F401

warnings.warn("weightspace.tasks.diffusion_data moved to weightspace.diffusion.data", DeprecationWarning, stacklevel=2)
