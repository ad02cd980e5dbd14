"""Deprecated: ``weightspace.tasks.diffusion_baselines`` moved to :mod:`weightspace.diffusion.baselines`; this alias goes in the next release."""

import warnings

from weightspace.diffusion.baselines import *  # noqa: F401,F403
from weightspace.diffusion.baselines import __all__  # noqa: F401

warnings.warn("weightspace.tasks.diffusion_baselines moved to weightspace.diffusion.baselines", DeprecationWarning, stacklevel=2)
