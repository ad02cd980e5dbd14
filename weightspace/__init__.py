"""weightspace: trained neural networks as data.

The top-level namespace holds the converter's public API; capabilities live in
``weightspace.tasks`` and metanetwork layers in ``weightspace.nn``.
"""

from .graph import (
    ArchitectureMismatchError,
    GraphSpec,
    NonFiniteWeightsError,
    ParameterGraph,
    UnsupportedModuleError,
    from_graph,
    to_graph,
    to_networkx,
)

__version__ = "0.1.0"

__all__ = [
    "GraphSpec",
    "ParameterGraph",
    "to_graph",
    "from_graph",
    "to_networkx",
    "UnsupportedModuleError",
    "ArchitectureMismatchError",
    "NonFiniteWeightsError",
]
