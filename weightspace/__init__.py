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

# capabilities, imported on first use so that `import weightspace` stays light
_LAZY = {
    "load_predictor": "weightspace.tasks.predict",
    "Nowcaster": "weightspace.tasks.nowcast",
    "load_hypernetwork": "weightspace.tasks.hyper",
}

__all__ = [
    "GraphSpec",
    "ParameterGraph",
    "to_graph",
    "from_graph",
    "to_networkx",
    "UnsupportedModuleError",
    "ArchitectureMismatchError",
    "NonFiniteWeightsError",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'weightspace' has no attribute {name!r}")
