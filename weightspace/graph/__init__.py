"""The parameter-graph converter: any traceable PyTorch model <-> ``ParameterGraph``."""

from .convert import from_graph, to_graph
from .errors import ArchitectureMismatchError, NonFiniteWeightsError, UnsupportedModuleError
from .nx import to_networkx
from .param_graph import (
    ParameterGraph,
    batch_graphs,
    pad_kernels,
    register_safe_globals,
    resize_kernel_grid,
    sample_rows,
    unpad_kernels,
)
from .spec import GraphSpec
from .vocab import NODE_FEATURES, PERMUTABLE_NODE_TYPES, Activation, EdgeType, NodeType

register_safe_globals()

__all__ = [
    "GraphSpec",
    "ParameterGraph",
    "to_graph",
    "from_graph",
    "to_networkx",
    "batch_graphs",
    "resize_kernel_grid",
    "pad_kernels",
    "unpad_kernels",
    "sample_rows",
    "UnsupportedModuleError",
    "ArchitectureMismatchError",
    "NonFiniteWeightsError",
    "NodeType",
    "EdgeType",
    "Activation",
    "NODE_FEATURES",
    "PERMUTABLE_NODE_TYPES",
]
