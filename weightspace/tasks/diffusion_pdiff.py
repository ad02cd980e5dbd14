"""Deprecated: ``weightspace.tasks.diffusion_pdiff`` moved to :mod:`weightspace.diffusion.pdiff`; this alias goes in the next release."""

import warnings

from weightspace.diffusion.pdiff import *  # noqa: F401,F403
from weightspace.diffusion.pdiff import __all__  # noqa: F401

warnings.warn("weightspace.tasks.diffusion_pdiff moved to weightspace.diffusion.pdiff", DeprecationWarning, stacklevel=2)
