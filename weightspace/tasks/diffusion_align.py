"""Deprecated: ``weightspace.tasks.diffusion_align`` moved to :mod:`weightspace.diffusion.align`; this alias goes in the next release."""

import warnings

from weightspace.diffusion.align import *  # noqa: F401,F403
from weightspace.diffusion.align import __all__  # noqa: F401

warnings.warn("weightspace.tasks.diffusion_align moved to weightspace.diffusion.align", DeprecationWarning, stacklevel=2)
