"""Deprecated: ``weightspace.tasks.diffusion_metrics`` moved to :mod:`weightspace.diffusion.metrics`; this alias goes in the next release."""

import warnings

from weightspace.diffusion.metrics import *  # noqa: F401,F403
from weightspace.diffusion.metrics import __all__  # noqa: F401

warnings.warn("weightspace.tasks.diffusion_metrics moved to weightspace.diffusion.metrics", DeprecationWarning, stacklevel=2)
