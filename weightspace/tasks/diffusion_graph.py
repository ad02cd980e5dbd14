"""Deprecated: ``weightspace.tasks.diffusion_graph`` moved to :mod:`weightspace.diffusion.graph`; this alias goes in the next release."""

import warnings

from weightspace.diffusion.graph import *  # noqa: F401,F403
from weightspace.diffusion.graph import __all__  # noqa: F401

warnings.warn("weightspace.tasks.diffusion_graph moved to weightspace.diffusion.graph", DeprecationWarning, stacklevel=2)
