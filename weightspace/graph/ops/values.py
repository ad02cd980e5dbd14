"""Values of the walker beside the builder's (:mod:`weightspace.graph.builder`): what a traced
tensor is when it is not an activation on one feature axis or a parameter as stored (features
split into three or more axes, merged with other axes, heads stacked for interleaving, a
parameter times a per-position mask, a value that may only be measured)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..builder import Act, Heads, Lazy, Param, Stat
from ..errors import UnsupportedModuleError
from .common import TRACKED_TYPES

__all__ = ["FOLDED_OPS", "Folded", "Grid", "MaskedParam", "Stacked", "Unusable", "tracked", "unfold_or_act"]


@dataclass
class Unusable:
    """A value the graph cannot represent (one feature picked out of an activation). Code that
    only reads its shape (BART's ``embed_positions(inputs_embeds[:, :, -1])``) passes; any
    operation on its values raises ``error``, which names the module and the operation."""

    error: UnsupportedModuleError


@dataclass
class Grid:
    """An activation whose feature axis was split into three or more axes (a fused q/k/v
    projection viewed as ``[B, N, heads, 3, d]`` or ``[B, N, 3, heads, d]``): ``nodes`` has one
    dimension per split axis, ``axes[i]`` is the position (from the start) of ``nodes``'
    dimension ``i`` in a tensor of rank ``ndim``. Selecting one entry of an axis removes it; with
    two axes left it is :class:`Heads`, with one an :class:`Act`."""

    nodes: Tensor
    axes: list[int]
    ndim: int
    layer: int


@dataclass
class Folded:
    """An activation whose feature axis a reshape merged with other axes (MobileViT's unfolding of
    ``[B, C, H, W]`` into patches: ``[B*C*h, p, w, p]``): ``ids`` has the tensor's shape and holds,
    at every element, the index into ``nodes`` of the neuron it belongs to. Reshapes and
    permutations apply to ``ids``; when the neuron index again varies along one axis only, it is
    an :class:`Act` with that feature axis (its neurons in the order the axis holds them)."""

    nodes: Tensor
    ids: Tensor
    layer: int
    #: the refusal raised if anything but a reshape or permutation reads it
    error: UnsupportedModuleError | None = None


#: operations a :class:`Folded` value may go through
FOLDED_OPS = frozenset({"view", "reshape", "_unsafe_view", "permute", "transpose", "contiguous", "clone", "alias"})


def unfold_or_act(nodes: Tensor, ids: Tensor, layer: int, error: UnsupportedModuleError | None = None) -> Any:
    """An :class:`Act` if the neuron index of ``ids`` varies along one axis only, else a :class:`Folded`."""
    for a in range(ids.dim()):
        rows = ids.movedim(a, -1).reshape(-1, ids.shape[a])
        if bool((rows == rows[:1]).all()) and rows.shape[0] > 0:
            order = rows[0]
            if order.unique().numel() == order.numel() == nodes.numel():
                return Act(nodes[order], a - ids.dim(), ids.dim(), layer)
    return Folded(nodes, ids, layer, error)


@dataclass
class Stacked:
    """Attention heads stacked along a new last axis (``torch.stack((-x2, x1), dim=-1)``, GPT-J's
    ``rotate_every_two``), waiting for the ``flatten`` that interleaves them into one unit axis."""

    items: list[Heads]


@dataclass
class MaskedParam:
    """A parameter times a per-position mask from an input (``mask_token * mask``): added to
    activations, a learned token put in place of the masked positions."""

    param: Param


def tracked(v: Any) -> bool:
    """Whether ``v`` stands for activations or parameters (not a constant)."""
    return isinstance(v, (Act, Heads, Lazy, Param, Stat, Grid, Stacked, Folded, MaskedParam, *TRACKED_TYPES))
