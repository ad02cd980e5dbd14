"""Deprecated: moved to :mod:`weightspace.hyper` (this shim goes away in the next release)."""

import warnings

warnings.warn("weightspace.tasks.hyper moved to weightspace.hyper", DeprecationWarning, stacklevel=2)

from weightspace.hyper.model import LEGACY_FORMAT as FORMAT  # noqa: E402
from weightspace.hyper.model import (  # noqa: E402
    GraphHyperNetwork,
    HyperNetworkConfig,
    HyperTarget,
    default_checkpoint,
    load_hypernetwork,
    recalibrate_batchnorm,
)

__all__ = ["GraphHyperNetwork", "HyperNetworkConfig", "HyperTarget", "load_hypernetwork", "recalibrate_batchnorm",
           "default_checkpoint", "FORMAT"]
