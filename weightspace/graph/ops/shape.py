"""Shape operations: handlers of the core tier.

Reshapes, transposes, permutations, concatenation, splits, indexing, reductions and broadcasting
move the axes of a tensor without new neurons: the builder tracks which axis holds the features
(:class:`~weightspace.graph.builder.Act`) or the heads and units of attention
(:class:`~weightspace.graph.builder.Heads`) through them (:meth:`Builder.reshape`,
:meth:`Builder.transpose`, :meth:`Builder.move_axes`, :meth:`Builder.cat`, :meth:`Builder.split`,
:meth:`Builder.index`, :meth:`Builder.reduce`). A 2-D parameter transposed on its way into a
matrix product is a :class:`~weightspace.graph.ops.common.Transposed`.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import nn

from ..builder import META, Act, Heads, Lazy, Meta, Param, Stat
from .common import arg, in_shape, node_shape
from .linear import transposed_param
from .registry import register

__all__ = ["CAT_FUNCTIONS", "view"]

CAT_FUNCTIONS = (torch.cat, torch.concat, torch.concatenate)


def view(w: Any, node: torch.fx.Node, x: Any, shape_args: tuple) -> Any:
    """``x.view(*shape)`` / ``x.reshape(shape)`` / ``torch.reshape(x, shape)``: from the static
    shapes when known; without them only ``view(B, -1)`` (flatten) is understood."""
    b = w.b
    shape_in, shape_out = in_shape(node), node_shape(node)
    if shape_in is not None and shape_out is not None:
        return b.reshape(x, shape_in, shape_out)
    shape = shape_args[0] if len(shape_args) == 1 and isinstance(shape_args[0], (tuple, list)) else shape_args
    if len(shape) == 2 and shape[1] == -1:
        return b.reshape(x, None, None, 1, -1)
    if isinstance(x, (Lazy, Meta)):
        return x
    raise b.fail("view/reshape needs shapes; pass example_input")


# ----------------------------------------------------------------------------- modules


@register(modules=(nn.Flatten,), core=True)
def flatten_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    x = args[0] if args else kwargs.get("input")
    return w.b.reshape(x, in_shape(node), node_shape(node), mod.start_dim, mod.end_dim)


@register(modules=(nn.Unflatten,), core=True)
def unflatten_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    x = args[0] if args else kwargs.get("input")
    return w.b.reshape(x, in_shape(node), node_shape(node))


# ----------------------------------------------------------------------------- functions and methods


@register(functions=(operator.getitem,), core=True)
def getitem(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.index(args[0], args[1])


@register(functions=CAT_FUNCTIONS, aten=("cat",), core=True)
def cat(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.cat(list(args[0]), arg(args, kwargs, 1, "dim", 0), w.label)


@register(functions=(torch.flatten,), methods=("flatten",), core=True)
def flatten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.reshape(args[0], in_shape(node), node_shape(node), arg(args, kwargs, 1, "start_dim", 0),
                       arg(args, kwargs, 2, "end_dim", -1))


@register(functions=(torch.reshape,), core=True)
def reshape_function(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return view(w, node, args[0], args[1:])


@register(methods=("view", "reshape"), core=True)
def view_method(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return view(w, node, args[0], args[1:])


@register(methods=("reshape_as", "view_as"), core=True)
def view_as_method(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.reshape(args[0], in_shape(node), node_shape(node))


@register(functions=(torch.transpose,), methods=("transpose",), core=True)
def transpose(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.transpose(args[0], args[1], args[2])


@register(functions=(torch.permute,), core=True)
def permute_function(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.move_axes(args[0], list(args[1]))


@register(methods=("permute",), core=True)
def permute_method(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    dims = list(args[1]) if len(args) == 2 and isinstance(args[1], (tuple, list)) else list(args[1:])
    return w.b.move_axes(args[0], dims)


@register(functions=(torch.linalg.vector_norm,), aten=("linalg_vector_norm",), core=True)
def vector_norm(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """A norm over some axes: a reduction (GRN's spatial norm)."""
    return w.b.reduce(args[0], arg(args, kwargs, 2, "dim"), arg(args, kwargs, 3, "keepdim", False))


@register(functions=(torch.mean, torch.sum, torch.amax), methods=("mean", "sum", "amax"),
          aten=("mean", "sum", "amax"), core=True)
def reduce(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.reduce(args[0], arg(args, kwargs, 1, "dim"), arg(args, kwargs, 2, "keepdim", False))


@register(functions=(torch.unsqueeze,), methods=("unsqueeze",), aten=("unsqueeze",), core=True)
def unsqueeze(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.unsqueeze(args[0], args[1])


@register(functions=(torch.squeeze,), methods=("squeeze",), core=True)
def squeeze(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.squeeze(args[0], arg(args, kwargs, 1, "dim"), in_shape(node))


@register(methods=("expand", "expand_as"), aten=("expand", "expand_as"), core=True)
def expand(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """Broadcasting keeps the neurons (a class token expanded over the batch)."""
    return args[0] if isinstance(args[0], (Param, Act, Lazy, Heads, Stat)) else META


@register(methods=("repeat",), aten=("repeat",), core=True)
def repeat(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    if isinstance(args[0], Heads):
        raise w.b.fail("repeating a tensor split into attention heads")
    return args[0] if isinstance(args[0], (Param, Act, Lazy, Stat)) else META


# ----------------------------------------------------------------------------- ATen


@register(aten=("split", "split_with_sizes", "chunk"), core=True)
def split_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.split(args[0], args[1], arg(args, kwargs, 2, "dim", 0), chunk=w.op == "chunk")


@register(aten=("view", "reshape", "_unsafe_view", "flatten", "unflatten", "reshape_as", "view_as"), core=True)
def reshape_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.reshape(args[0], in_shape(node), node_shape(node))


@register(aten=("transpose",), core=True)
def transpose_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return transposed_param(args) or w.b.transpose(args[0], args[1], args[2])


@register(aten=("t",), core=True)
def t_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return transposed_param(args) or w.b.transpose(args[0], -2, -1)


@register(aten=("permute",), core=True)
def permute_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return transposed_param(args) or w.b.move_axes(args[0], list(args[1]))


@register(aten=("select",), core=True)
def select_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    shape = in_shape(node)
    if shape is None:
        raise w.b.fail("select without shapes")
    d = args[1] % len(shape)
    return w.b.index(args[0], tuple([slice(None)] * d + [0]))


@register(aten=("slice",), core=True)
def slice_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    shape = in_shape(node)
    if shape is None:
        raise w.b.fail("slice without shapes")
    d = arg(args, kwargs, 1, "dim", 0) % len(shape)
    start = arg(args, kwargs, 2, "start", None)
    end = arg(args, kwargs, 3, "end", None)
    step = arg(args, kwargs, 4, "step", 1)
    end = None if end is not None and end >= shape[d] else end
    sl = slice(start if start else None, end, step if step != 1 else None)
    return w.b.index(args[0], tuple([slice(None)] * d + [sl]))


@register(aten=("squeeze",), core=True)
def squeeze_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.squeeze(args[0], args[1] if len(args) > 1 else None, in_shape(node))
