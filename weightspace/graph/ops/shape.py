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

import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..builder import META, Act, EdgeBlock, Heads, Lazy, Meta, Param, Stat
from ..errors import UnsupportedModuleError
from ..vocab import EdgeType, NodeType
from .common import arg, in_shape, node_shape
from .linear import transposed_param
from .registry import register
from .values import Folded, Grid, Stacked, Unusable, tracked, unfold_or_act

_arg = arg
_in_shape = in_shape
_tracked = tracked

__all__ = ["CAT_FUNCTIONS", "column_table", "pad", "reshape_view"]

CAT_FUNCTIONS = (torch.cat, torch.concat, torch.concatenate)


def reshape_view(w: Any, node: torch.fx.Node, x: Any, shape_args: tuple) -> Any:
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
def getitem_basic(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.index(args[0], args[1])


@register(functions=CAT_FUNCTIONS, aten=("cat",), core=True)
def cat(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.cat(list(args[0]), arg(args, kwargs, 1, "dim", 0), w.label)


@register(functions=(torch.flatten,), methods=("flatten",), core=True)
def flatten_axes(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.reshape(args[0], in_shape(node), node_shape(node), arg(args, kwargs, 1, "start_dim", 0),
                       arg(args, kwargs, 2, "end_dim", -1))


@register(functions=(torch.reshape,), core=True)
def reshape_function(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return reshape_view(w, node, args[0], args[1:])


@register(methods=("view", "reshape"), core=True)
def view_method(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return reshape_view(w, node, args[0], args[1:])


@register(methods=("reshape_as", "view_as"), core=True)
def view_as_method(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.reshape(args[0], in_shape(node), node_shape(node))


@register(functions=(torch.transpose,), methods=("transpose",), core=True)
def transpose_axes(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
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

@register(functions=(F.pad,), aten=("constant_pad_nd", "pad"), core=True)
def pad(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``F.pad`` / ATen ``constant_pad_nd`` / ``pad``. Padding that leaves the feature axis alone
    (spatial padding; widths, mode and value are in the structural signature) keeps the neurons.
    Zero channels added (or channels cropped by negative widths) along the feature axis (MONAI's
    ``ChannelPad``, the zero-padded shortcut of HighResNet's residual blocks): every added channel
    is a new ``HIDDEN`` neuron with no incoming edge and no parameter (its value is 0), placed
    before or after the input's neurons. Padding the features with another value or in another
    mode is refused (the graph cannot hold a constant neuron).

    Shapes: ``x [..., C, ...]`` -> ``[..., left + C + right, ...]`` on the feature axis."""
    x, widths = args[0], arg(args, kwargs, 1, "pad")
    if not isinstance(x, Act) or x.ndim is None or not isinstance(widths, (tuple, list)):
        return x
    from_end = -x.feat - 1  # pad widths come in pairs from the last axis backwards
    if len(widths) < 2 * from_end + 2:
        return x
    left, right = int(widths[2 * from_end]), int(widths[2 * from_end + 1])
    if left == right == 0:
        return x
    b = w.b
    constant_nd = w.op == "constant_pad_nd"
    mode = "constant" if constant_nd else arg(args, kwargs, 2, "mode", "constant")
    value = arg(args, kwargs, 2 if constant_nd else 3, "value", 0.0)
    if mode != "constant" or value not in (None, 0, 0.0):
        raise b.fail(f"padding of the feature axis in mode {mode!r} with value {value!r}: only zero padding "
                     "(new channels that hold 0) can be represented")
    if x.block != 1:
        raise b.fail("padding the features of a flattened feature map")
    nodes = x.nodes[max(-left, 0): len(x.nodes) - max(-right, 0)]
    parts = []
    if left > 0:
        parts.append(b.new_nodes(left, NodeType.HIDDEN, x.layer, label=f"{w.label}:pad_before"))
    parts.append(nodes)
    if right > 0:
        parts.append(b.new_nodes(right, NodeType.HIDDEN, x.layer, label=f"{w.label}:pad_after"))
    return Act(torch.cat(parts), x.feat, x.ndim, x.layer)

# ----------------------------------------------------------------------------- idioms (first tier)


def _pick(w: Any, cond: Any, a: Any, b: Any) -> Any:
    """``where(cond, a, b)`` with a constant condition: a mask filling some entries of one tensor
    with a constant keeps that tensor's neurons."""
    a = META if a is None or isinstance(a, (int, float, bool)) else a
    b = META if b is None or isinstance(b, (int, float, bool)) else b
    if _tracked(cond):
        raise w.b.fail("where/masked_fill with a condition computed from activations or parameters")
    if isinstance(a, Meta) and isinstance(b, Meta):
        return META
    if isinstance(b, Meta):
        return a
    if isinstance(a, Meta):
        return b
    if isinstance(a, Param) and isinstance(b, Act) or isinstance(b, Param) and isinstance(a, Act):
        # a learned token put in place of some positions (DINOv2's mask_token where
        # bool_masked_pos is set): a table of one position, as a class token
        p, x = (a, b) if isinstance(a, Param) else (b, a)
        return w.b.table(x, p, EdgeType.TOKEN, w.b.where_label("where"))
    raise w.b.fail(f"where choosing between two tracked tensors ({type(a).__name__} and {type(b).__name__})")


@register(aten=("where",), functions=(torch.where,))
def where(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``torch.where(cond, a, b)``."""
    if len(args) < 3:
        return NotImplemented
    return _pick(w, args[0], args[1], args[2])


@register(methods=("where",))
def where_method(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``a.where(cond, b)``."""
    return _pick(w, _arg(args, kwargs, 1, "condition"), args[0], _arg(args, kwargs, 2, "other"))


@register(aten=("masked_fill", "masked_fill_"), methods=("masked_fill", "masked_fill_"))
def masked_fill(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``x.masked_fill(mask, value)``: the neurons of ``x``."""
    return _pick(w, _arg(args, kwargs, 1, "mask"), args[0], _arg(args, kwargs, 2, "value"))


@register(aten=("select",))
def select(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``x.select(dim, i)``: an entry of a split feature axis (:class:`Grid`, :class:`Heads`), or
    of another axis. One feature of an activation is :class:`Unusable`."""
    x, dim, i = args[0], args[1], args[2]
    if isinstance(x, Grid):
        return _grid_select(w, x, dim, i)
    if isinstance(x, Heads):
        d = dim % x.ndim
        if d == x.ndim + x.head:  # one head: a group of features
            f = x.ndim + x.feat
            nf = f - 1 if f > d else f
            return Act(x.nodes[i], nf - (x.ndim - 1), x.ndim - 1, x.layer)
        return NotImplemented
    if isinstance(x, Act):
        try:
            return w.call_aten(node, "select", args, kwargs)
        except UnsupportedModuleError as err:
            return Unusable(err)
    return NotImplemented


@register(aten=("unbind",), functions=(torch.unbind,), methods=("unbind",))
def unbind(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``x.unbind(dim)`` of a :class:`Grid` or :class:`Heads` (``q, k, v = qkv.unbind(0)``)."""
    x, dim = args[0], _arg(args, kwargs, 1, "dim", 0)
    if isinstance(x, Grid):
        d = dim % x.ndim
        if d not in x.axes:
            raise w.b.fail("unbind along an axis that is not part of the split features")
        n = x.nodes.shape[x.axes.index(d)]
        return tuple(_grid_select(w, x, d, i) for i in range(n))
    if isinstance(x, Heads):
        d = dim % x.ndim
        if d == x.ndim + x.head:
            return tuple(select(w, node, (x, d, i), {}) for i in range(x.nodes.shape[0]))
    if _tracked(x):
        raise w.b.fail(f"unbind of {type(x).__name__} along axis {dim}")
    return NotImplemented


def _grid_select(w: Any, x: Grid, dim: int, i: int) -> Any:
    d = dim % x.ndim
    nd = x.ndim - 1
    if d in x.axes:
        k = x.axes.index(d)
        nodes = x.nodes.select(k, i)
        axes = [a - (a > d) for j, a in enumerate(x.axes) if j != k]
    else:
        nodes, axes = x.nodes, [a - (a > d) for a in x.axes]
    if len(axes) >= 3:
        return Grid(nodes, axes, nd, x.layer)
    if len(axes) == 2:
        if axes[0] > axes[1]:
            raise w.b.fail("split features whose unit axis comes before their head axis")
        return Heads(nodes, axes[0] - nd, axes[1] - nd, nd, x.layer)
    return Act(nodes.reshape(-1), axes[0] - nd, nd, x.layer)


@register(functions=(operator.getitem,))
def getitem(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``x[idx]`` (symbolic tracing): one feature of an activation is :class:`Unusable`; entries
    of split features (:class:`Grid`); a parameter table indexed by computed indices."""
    x, idx = args[0], args[1]
    raw = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    if isinstance(x, Act) and any(isinstance(e, torch.fx.Node) and node_shape(e) is not None for e in raw):
        # a tensor of indices (advanced indexing), not an integer computed from sizes
        return _index_positions(w, x, [None if e == slice(None) else META for e in raw], _in_shape(node),
                                node_shape(node))
    if isinstance(x, Act):
        try:
            return w.b.index(x, idx)
        except UnsupportedModuleError as err:
            return Unusable(err)
    if isinstance(x, Grid):
        return _grid_index(w, x, idx if isinstance(idx, tuple) else (idx,))
    if isinstance(x, Param):
        idx = idx if isinstance(idx, tuple) else (idx,)
        if any(isinstance(i, Meta) for i in idx):
            return index(w, node, (x, [None if i == slice(None) else i for i in idx]), {})
    return NotImplemented


def _grid_index(w: Any, x: Grid, idx: tuple) -> Any:
    """Basic indexing of split features: integers select, full slices keep an axis."""
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    expanded: list[Any] = []
    for i in idx:
        expanded += [slice(None)] * (x.ndim - n_real) if i is Ellipsis else [i]
    picks = []
    for d, i in enumerate(expanded):
        if isinstance(i, int):
            picks.append((d, i))
        elif i != slice(None):
            raise w.b.fail(f"indexing features split into several axes with {i!r}")
    out: Any = x
    for d, i in reversed(picks):  # from the last axis, so that earlier positions stay valid
        out = _grid_select(w, out, d, i) if isinstance(out, Grid) else w.b.index(
            out, tuple([slice(None)] * d + [i]))
    return out


@register(aten=("index", "index_select"))
def index(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """A 2-D parameter table ``[rows, heads]`` indexed along its rows by computed indices
    (Swin's ``relative_position_bias_table[relative_position_index]``): an embedding lookup with
    computed indices — the rows become ``POSITION`` nodes, the columns units of the result."""
    x = args[0]
    if isinstance(x, Act) and node.target is not torch.ops.aten.index_select.default:
        return _index_positions(w, x, list(args[1]), _in_shape(node), node_shape(node))
    if not isinstance(x, Param):
        return NotImplemented
    if node.target is torch.ops.aten.index_select.default:
        idx, dim = args[2], args[1]
        indices = [None] * dim + [idx]
    else:
        indices = list(args[1])
    if len(x.shape) == 2 and len(indices) == 1 and isinstance(indices[0], Meta):
        return w.b.embedding(META, x, w.b.where_label(node.name))
    if len(x.shape) == 2 and len(indices) == 2 and indices[0] is None and isinstance(indices[1], Meta):
        return column_table(w.b, x, w.b.where_label(node.name), node_shape(node))
    raise w.b.fail(f"parameter {x.name!r} of shape {x.shape} indexed other than along its rows by computed "
                   "indices")


def _index_positions(w: Any, x: Act, indices: list, in_shape: tuple | None, out_shape: tuple | None) -> Any:
    """An activation with features on its last axis indexed by computed indices on axes before
    it (Swin V2's bias MLP output ``[positions, heads][index]``): the same neurons."""
    if (in_shape is not None and out_shape is not None and x.feat == -1 and x.block == 1
            and len(indices) < len(in_shape) and all(isinstance(i, Meta) or i is None for i in indices)):
        return Act(x.nodes, -1, len(out_shape), x.layer)
    raise w.b.fail("advanced indexing of activations other than by computed positions on axes before the features")


def column_table(b: Any, p: Param, label: str, out_shape: tuple | None) -> Act:
    """A table ``[units, rows]`` indexed along its second axis by computed indices (LeViT's
    ``attention_biases[:, attention_bias_idxs]``): as :meth:`Builder.embedding` with computed
    indices, the rows become ``POSITION`` nodes and the units new nodes, edge ``(row v, unit h)``
    holding ``p[h, v]``; the units are the result's first axis."""
    b.use(p, "embedding")
    U, R = p.shape
    rows = b.new_nodes(R, NodeType.POSITION, 0, pos=True, label=f"{label}:rows")
    units = b.new_nodes(U, NodeType.HIDDEN, 1, label=label)
    src = rows.repeat(U)
    dst = units.repeat_interleave(R)
    # edge (v, h) is number h*R + v and holds p[h, v], flat position h*R + v: contiguous
    b.add_edges(EdgeBlock(src, dst, EdgeType.EMBEDDING, 1, 1, p.name))
    if out_shape is None:
        raise b.fail(f"parameter table {p.name!r} indexed without shapes; pass example_input")
    return Act(units, -len(out_shape), len(out_shape), 1)


# ``view``/``reshape``/``permute``/``transpose`` of a parameter reach it through :func:`view`,
# :func:`permute` and :func:`transpose`
@register(aten=("t", "numpy_T"))
def param_view(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """A parameter vector viewed with other axes (DeBERTa's ``q_bias[None, None, :]`` split into
    heads): its scalars keep their order, so it stays the same parameter. Reshapes that reorder
    the scalars of a matrix are left to the core handlers (``W.T`` in a matrix product)."""
    p = args[0]
    if not isinstance(p, Param):
        return NotImplemented
    name = node.target if isinstance(node.target, str) else str(node.target).split(".")[1]
    in_shape, out_shape = _in_shape(node), node_shape(node)
    if in_shape is None or out_shape is None:
        return NotImplemented
    real_in = [s for s in in_shape if s != 1]
    if name in ("view", "reshape", "_unsafe_view"):
        if len(real_in) <= 1 or real_in == [s for s in out_shape if s != 1]:
            return p
        return NotImplemented
    if len(p.shape) == 2:
        return NotImplemented
    nd = len(in_shape)
    if name == "permute":
        perm = list(args[1]) if len(args) == 2 and isinstance(args[1], (tuple, list)) else list(args[1:])
    elif name == "transpose":
        perm = list(range(nd))
        a, b = args[1] % nd, args[2] % nd
        perm[a], perm[b] = perm[b], perm[a]
    else:
        perm = list(range(nd))[::-1]
    perm = [q % nd for q in perm]
    order = [q for q in perm if in_shape[q] != 1]
    return p if order == sorted(order) else NotImplemented


@register(aten=("view", "reshape", "_unsafe_view"), methods=("view", "reshape"))
def view(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """A reshape splitting the feature axis of an activation into three or more axes (a fused
    q/k/v projection) gives a :class:`Grid`; a stack of heads flattened gives interleaved
    heads; parameters keep their order (:func:`param_view`)."""
    x = args[0]
    if isinstance(x, Param):
        return param_view(w, node, args, kwargs)
    in_shape, out_shape = _in_shape(node), node_shape(node)
    if isinstance(x, Stacked):
        return _flatten_stacked(w, x, in_shape, out_shape)
    if isinstance(x, Folded):
        if out_shape is None:
            raise w.b.fail("reshape of folded features without shapes; pass example_input")
        return unfold_or_act(x.nodes, x.ids.reshape(out_shape), x.layer, x.error)
    if not isinstance(x, (Act, Grid)) or in_shape is None or out_shape is None:
        return NotImplemented
    if isinstance(x, Grid):
        raise w.b.fail(f"reshape {in_shape} -> {out_shape} of features split into several axes")
    if x.block != 1:
        return NotImplemented
    nd = len(in_shape)
    f = nd + x.feat
    before = in_shape[:f]
    after = in_shape[f + 1:]
    # the axes before and after the features stay as they are; the features split into k axes
    k = len(out_shape) - len(before) - len(after)
    if k < 3 or tuple(out_shape[: len(before)]) != tuple(before) or (
            after and tuple(out_shape[-len(after):]) != tuple(after)):
        return _fold(w, x, in_shape, out_shape)
    sizes = out_shape[len(before): len(before) + k] if k > 0 else ()
    real = [j for j, s in enumerate(sizes) if s != 1]
    if k < 3 or len(real) < 3:
        return _fold(w, x, in_shape, out_shape)
    nodes = x.nodes.reshape([sizes[j] for j in real])
    return Grid(nodes, [len(before) + j for j in real], len(out_shape), x.layer)


def _fold(w: Any, x: Act, in_shape: tuple, out_shape: tuple) -> Any:
    """A reshape the builder's rules do not follow (the features merged with other axes): left to
    them when they can, else tracked element by element (:class:`Folded`)."""
    try:
        return w.b.reshape(x, in_shape, out_shape)
    except UnsupportedModuleError as err:
        if x.block != 1 or math.prod(in_shape) > _FOLD_MAX:
            raise
        error = err
    f = len(in_shape) + x.feat
    ids = torch.arange(len(x)).view([len(x) if d == f else 1 for d in range(len(in_shape))]).expand(in_shape)
    return unfold_or_act(x.nodes, ids.reshape(out_shape), x.layer, error)


#: the largest activation (elements of the example's tensor) tracked element by element when folded
_FOLD_MAX = 1 << 24


@register(aten=("permute",), methods=("permute",))
def permute(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """Permuting a :class:`Grid` moves its axes (timm's ``qkv.permute(2, 0, 3, 1, 4)``)."""
    x = args[0]
    if isinstance(x, Param):
        return param_view(w, node, args, kwargs)
    if isinstance(x, Folded):
        perm = list(args[1]) if len(args) == 2 and isinstance(args[1], (tuple, list)) else list(args[1:])
        return unfold_or_act(x.nodes, x.ids.permute(perm), x.layer, x.error)
    if not isinstance(x, Grid):
        return NotImplemented
    perm = list(args[1]) if len(args) == 2 and isinstance(args[1], (tuple, list)) else list(args[1:])
    perm = [q % x.ndim for q in perm]
    new_pos = [perm.index(a) for a in x.axes]
    order = sorted(range(len(new_pos)), key=lambda j: new_pos[j])
    return Grid(x.nodes.permute(order), [new_pos[j] for j in order], x.ndim, x.layer)


@register(aten=("transpose",), methods=("transpose",), functions=(torch.transpose,))
def transpose(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """Transposing a :class:`Grid`: a permutation."""
    x = args[0]
    if isinstance(x, Param):
        return param_view(w, node, args, kwargs)
    if isinstance(x, Folded):
        return unfold_or_act(x.nodes, x.ids.transpose(args[1], args[2]), x.layer, x.error)
    if not isinstance(x, Grid):
        return NotImplemented
    perm = list(range(x.ndim))
    a, b = args[1] % x.ndim, args[2] % x.ndim
    perm[a], perm[b] = perm[b], perm[a]
    return permute(w, node, (x, perm), {})


@register(aten=("stack",), functions=(torch.stack,))
def stack(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``torch.stack(heads, dim=-1)`` of attention heads with their units on the last axis,
    to be flattened into one interleaved unit axis (GPT-J's ``rotate_every_two``)."""
    items = list(args[0])
    dim = _arg(args, kwargs, 1, "dim", 0)
    if not any(_tracked(v) for v in items):
        return NotImplemented
    if all(isinstance(v, Heads) for v in items):
        ref = items[0]
        if any((v.head, v.feat, v.ndim) != (ref.head, ref.feat, ref.ndim) or v.nodes.shape != ref.nodes.shape
               for v in items):
            raise w.b.fail("stacking attention heads of different layouts")
        if ref.feat == -1 and dim in (-1, ref.ndim):
            return Stacked(items)
    raise w.b.fail("stack of activations other than attention heads along a new last axis "
                   "(an interleaved rotary embedding)")


def _flatten_stacked(w: Any, x: Stacked, in_shape: tuple | None, out_shape: tuple | None) -> Heads:
    if in_shape is None or out_shape is None or tuple(out_shape) != tuple(in_shape[:-2]) + (
            in_shape[-2] * in_shape[-1],):
        raise w.b.fail("stacked attention heads reshaped other than by merging the last two axes")
    ref = x.items[0]
    nodes = torch.stack([v.nodes for v in x.items], dim=-1).reshape(ref.nodes.shape[0], -1)
    return Heads(nodes, ref.head, ref.feat, ref.ndim, max(v.layer for v in x.items))


@register(aten=("flatten",), functions=(torch.flatten,), methods=("flatten",))
def flatten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``flatten(-2)`` of stacked heads (:class:`Stacked`)."""
    if isinstance(args[0], Stacked):
        return _flatten_stacked(w, args[0], _in_shape(node), node_shape(node))
    return NotImplemented


@register(aten=("split", "split_with_sizes", "chunk"), functions=(torch.split, torch.chunk),
          methods=("split", "chunk"))
def split_tokens(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``split``/``chunk`` of an activation along an axis other than its features (CvT splits its
    class token from the patch tokens): every part holds the same neurons."""
    x, sizes = args[0], _arg(args, kwargs, 1, "split_size_or_sections", _arg(args, kwargs, 1, "chunks"))
    dim = _arg(args, kwargs, 2, "dim", 0)
    if not isinstance(x, Act) or x.ndim is None or dim % x.ndim == x.ndim + x.feat:
        return NotImplemented
    if isinstance(sizes, (tuple, list)):
        n = len(sizes)
    else:
        val = node.meta.get("val", node.meta.get("tensor_meta"))
        if not isinstance(val, (tuple, list)):
            raise w.b.fail("split along a non-feature axis without shapes; pass example_input")
        n = len(val)
    return tuple(x for _ in range(n))
