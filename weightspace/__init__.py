"""weightspace: trained neural networks as data.

The top-level namespace holds the converter's public API (:func:`to_graph`, :func:`from_graph`,
:class:`GraphSpec`, :class:`ParameterGraph`, :func:`to_networkx`) and the most used names of the
capabilities, which live in their own subpackages and are imported on first use:

* :mod:`weightspace.predict` - predict a network's accuracy from its weights (:class:`Predictor`);
* :mod:`weightspace.nowcast` - jump training ahead (:class:`Nowcaster`, ``nowcaster.attach``);
* :mod:`weightspace.hyper` - weights for unseen architectures (:class:`GHN`, :class:`GraphHyperNetwork`);
* :mod:`weightspace.diffusion` - generate new weights (:class:`WeightDiffusion`);
* :mod:`weightspace.nn` - metanetwork layers and models.

Every trained model saves with ``save_pretrained(dir)`` and loads with ``from_pretrained(dir_or_name)``
(:mod:`weightspace.pretrained`); :func:`list_checkpoints` names the shipped ones.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs; at run time names load on first use
    from .graph import (  # noqa: F401
        ArchitectureMismatchError,
        GraphSpec,
        NonFiniteWeightsError,
        ParameterGraph,
        UnsupportedModuleError,
        from_graph,
        to_graph,
        to_networkx,
    )
    from .pretrained import CheckpointError, list_checkpoints  # noqa: F401

#: public names and the module that defines each, imported on first use so that ``import weightspace``
#: costs nothing (the command line's help never loads torch)
_LAZY = {
    "GraphSpec": "weightspace.graph",
    "ParameterGraph": "weightspace.graph",
    "to_graph": "weightspace.graph",
    "from_graph": "weightspace.graph",
    "to_networkx": "weightspace.graph",
    "UnsupportedModuleError": "weightspace.graph",
    "ArchitectureMismatchError": "weightspace.graph",
    "NonFiniteWeightsError": "weightspace.graph",
    "CheckpointError": "weightspace.pretrained",
    "list_checkpoints": "weightspace.pretrained",
    "Predictor": "weightspace.predict",
    "load_predictor": "weightspace.predict",
    "Nowcaster": "weightspace.nowcast",
    "GraphHyperNetwork": "weightspace.hyper",
    "GHN": "weightspace.hyper",
    "load_hypernetwork": "weightspace.hyper",
    "WeightDiffusion": "weightspace.diffusion",
}
_SUBPACKAGES = ("graph", "predict", "nowcast", "hyper", "diffusion", "nn", "cli", "examples", "archs", "pretrained")

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'weightspace' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))
