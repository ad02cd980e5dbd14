"""``to_graph`` / ``from_graph``: a module's weights to a parameter graph and back."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from .errors import NonFiniteWeightsError
from .param_graph import ParameterGraph
from .spec import GraphSpec

__all__ = ["to_graph", "from_graph"]


def to_graph(model: nn.Module, example_input: Any = None, *, allow_nonfinite: bool = False) -> ParameterGraph:
    """Convert ``model`` into a :class:`ParameterGraph`, losslessly.

    Args:
        model: any module ``torch.fx.symbolic_trace`` can trace, or, with ``example_input``,
            that ``torch.export`` can trace.
        example_input: a tensor (or tuple of tensors) for the forward pass; gives shapes to the
            trace and enables ``torch.export`` when symbolic tracing fails.
        allow_nonfinite: store NaN/inf weights instead of raising.

    Raises:
        UnsupportedModuleError: naming the module path that cannot be represented.
        NonFiniteWeightsError: naming the first parameter with NaN/inf values.

    For many checkpoints of one architecture build :class:`GraphSpec` once and call
    :meth:`GraphSpec.to_graph`.
    """
    spec = GraphSpec.from_module(model, example_input)
    with torch.no_grad():
        return spec.to_graph(model.state_dict(), allow_nonfinite=allow_nonfinite)


def from_graph(g: ParameterGraph, model: nn.Module, *, spec: GraphSpec | None = None, example_input: Any = None,
               allow_nonfinite: bool = False) -> nn.Module:
    """Write the weights held by ``g`` into ``model`` — all or nothing — and return ``model``.

    Raises:
        ArchitectureMismatchError: ``g`` comes from another architecture: names the first
            mismatching parameter, wiring or activation, or the first difference of the
            structural signature (module path, operation, field, the graph's value and the
            model's: a stride, padding, pooling, eps, activation parameter or constant);
            ``model`` is left untouched.
        NonFiniteWeightsError: the graph holds NaN/inf values, unless ``allow_nonfinite``.
    """
    if g.x is not None and g.x.dim() != 2:
        raise ValueError("from_graph takes a graph of one checkpoint; index the [T, ...] stack first")
    spec = spec if spec is not None else GraphSpec.from_module(model, example_input)
    state = spec.to_state_dict(g)
    if not allow_nonfinite:
        for name in spec.names:
            if not bool(torch.isfinite(state[name]).all()):
                raise NonFiniteWeightsError(
                    f"the graph holds NaN or inf values for {name!r}; pass allow_nonfinite=True to write them"
                )
    # keep the module versions (``_metadata``): modules that migrate old checkpoints read them on load
    state = OrderedDict(state)
    state._metadata = getattr(model.state_dict(keep_vars=True), "_metadata", None)  # type: ignore[attr-defined]
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    return model
