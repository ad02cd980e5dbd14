"""Deprecated: ``weightspace.tasks.diffusion_ddpm`` moved to :mod:`weightspace.diffusion.ddpm`; this alias goes in the next release."""

import warnings

from weightspace.diffusion.ddpm import *  # noqa: F401,F403
from weightspace.diffusion.ddpm import __all__  # noqa: F401

warnings.warn("weightspace.tasks.diffusion_ddpm moved to weightspace.diffusion.ddpm", DeprecationWarning, stacklevel=2)
