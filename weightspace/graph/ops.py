"""Operation handlers beside the builder's tables: one registry from an ATen name, a function or a
``Tensor`` method to a handler, consulted by :mod:`weightspace.graph.trace` before its own tables.

Adding an operation is one handler here and one test. A handler is called as
``handler(walker, node, args, kwargs)`` with the traced values of the arguments (``Act``,
``Heads``, ``Param``, ``Meta``, ...; see :mod:`weightspace.graph.builder`) and returns the value
of the result, or :data:`NotImplemented` to leave the operation to the tables. ``walker`` exposes
the :class:`~weightspace.graph.builder.Builder` as ``walker.b``, ``walker.call_aten`` (the ATen
table) and ``walker.scores`` (attention written with matrix products).

The handlers cover idioms of third-party model code: ``where``/``masked_fill`` masks, a single
feature picked out of an activation only for its shape (BART), parameter vectors reshaped into
heads (DeBERTa's ``q_bias``), tables indexed by relative position (Swin, LeViT), fused q/k/v
projections split into three or more axes (BLOOM's ``[B, N, heads, 3, d]``, timm's
``[B, N, 3, heads, d]``), interleaved rotary embeddings built with ``stack`` (GPT-J), attention
written with ``einsum`` (CvT) or ``baddbmm`` (BLOOM's ALiBi), attention with one head whose head
axis has size 1, splits along the tokens (CvT), features merged with the batch axis and unfolded
back (MobileViT), ``normalize`` and element-wise functions of parameters (Swin V2), functional
norms, ``addcmul`` and resampling; recurrent layers are refused with the reason. The design note
``docs/design-notes/converter-coverage.md`` lists how each is represented.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .builder import ACT_ATEN, META, Act, EdgeBlock, Heads, Lazy, Meta, NodeBlock, Param, Stat, aten_name
from .errors import UnsupportedModuleError
from .vocab import BIAS, WEIGHT, Activation, EdgeType, NodeType

__all__ = ["ATEN", "FUNCTIONS", "METHODS", "MODULES", "PRODUCTS", "SCORE_TYPES", "TRACKED_TYPES", "Folded", "Grid", "Stacked",
           "Unusable", "node_shape", "one_head", "register", "unfold_or_act"]

#: why recurrent layers are refused (``nn.RNN``/``nn.LSTM``/``nn.GRU``, ``aten.lstm``, ...)
RECURRENT_REASON = (
    "recurrent module {} is not supported: its weights act at every time step on a hidden state fed back "
    "from the previous step, and a parameter graph is a graph of neurons without cycles (unrolling it would "
    "make the graph depend on the sequence length); see docs/design-notes/converter-coverage.md")

#: names of matrix products written other than ``matmul``/``bmm`` (handled here, not as scores)
PRODUCTS = frozenset({"einsum", "baddbmm"})

Handler = Callable[[Any, torch.fx.Node, tuple, dict], Any]

#: ATen name (``"where"``) -> handler
ATEN: dict[str, Handler] = {}
#: Python callable (``torch.where``) -> handler
FUNCTIONS: dict[Any, Handler] = {}
#: ``Tensor`` method name (``"masked_fill"``) -> handler
METHODS: dict[str, Handler] = {}
#: ``nn.Module`` type (exact) -> handler, called as ``handler(walker, node, module, path, args, kwargs)``
MODULES: dict[type, Callable[..., Any]] = {}


def register(aten: tuple[str, ...] = (), functions: tuple[Any, ...] = (), methods: tuple[str, ...] = (),
             modules: tuple[type, ...] = ()):
    """Register a handler for ATen names, functions, ``Tensor`` methods and module types (a module
    handler takes ``(walker, node, module, path, args, kwargs)``)."""

    def deco(fn: Handler) -> Handler:
        for n in aten:
            ATEN[n] = fn
        for f in functions:
            FUNCTIONS[f] = fn
        for m in methods:
            METHODS[m] = fn
        for t in modules:
            MODULES[t] = fn
        return fn

    return deco


# ----------------------------------------------------------------------------- values


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


def node_shape(node: Any) -> tuple[int, ...] | None:
    """The static shape of a traced node's value, if known."""
    if not isinstance(node, torch.fx.Node):
        return None
    tm = node.meta.get("tensor_meta")
    if tm is not None and hasattr(tm, "shape"):
        return tuple(int(d) for d in tm.shape)
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        try:
            return tuple(int(d) for d in val.shape)
        except Exception:  # noqa: BLE001 - symbolic sizes
            return None
    return None


def _in_shape(node: torch.fx.Node) -> tuple[int, ...] | None:
    return node_shape(node.args[0]) if node.args else None


#: value types of the walker that stand for activations or parameters besides the builder's (attention
#: scores, transposed weights); :mod:`weightspace.graph.trace` adds its own at import
TRACKED_TYPES: list[type] = []
#: value types of attention scores (added by :mod:`weightspace.graph.trace`)
SCORE_TYPES: list[type] = []


def _tracked(v: Any) -> bool:
    return isinstance(v, (Act, Heads, Lazy, Param, Stat, Grid, Stacked, Folded, MaskedParam, *TRACKED_TYPES))


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


# ----------------------------------------------------------------------------- masks


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


# ----------------------------------------------------------------------------- indexing


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


# ----------------------------------------------------------------------------- parameters reshaped


_PARAM_VIEWS = ("view", "reshape", "_unsafe_view", "permute", "transpose", "t", "numpy_T")


@register(aten=_PARAM_VIEWS, methods=("view", "reshape", "permute", "transpose"))
def param_view(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """A parameter vector viewed with other axes (DeBERTa's ``q_bias[None, None, :]`` split into
    heads): its scalars keep their order, so it stays the same parameter. Reshapes that reorder
    the scalars of a matrix are left to the tables (``W.T`` in a matrix product)."""
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


# ----------------------------------------------------------------------------- fused projections


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


# ----------------------------------------------------------------------------- interleaved rotary


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


# ----------------------------------------------------------------------------- attention


def _einsum_operands(args: tuple) -> tuple[str, list]:
    eq = args[0]
    ops = list(args[1]) if len(args) == 2 and isinstance(args[1], (tuple, list)) else list(args[1:])
    return eq.replace(" ", ""), ops


@register(aten=("einsum",), functions=(torch.einsum,))
def einsum(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``einsum`` written as a batched matrix product (CvT's attention): ``...ik,...jk->...ij``
    is ``a @ b^T``, ``...ij,...jk->...ik`` is ``a @ b``; handed to the attention-score logic."""
    eq, ops = _einsum_operands(args)
    if len(ops) != 2 or not any(_tracked(o) for o in ops):
        return NotImplemented
    m = re.fullmatch(r"([a-z]*)([a-z])([a-z]),([a-z]*)([a-z])([a-z])->([a-z]*)([a-z])([a-z])", eq)
    if m is None:
        raise w.b.fail(f"einsum {eq!r} is not a batched matrix product")
    p1, i1, k1, p2, j2, k2, po, io, jo = m.groups()
    if not (p1 == p2 == po):
        raise w.b.fail(f"einsum {eq!r} is not a batched matrix product")
    a, b = ops
    if not all(isinstance(o, (Act, Heads, *SCORE_TYPES)) for o in ops):
        raise w.b.fail(f"einsum {eq!r} of {type(a).__name__} and {type(b).__name__}: only attention written "
                       "as batched matrix products of activations is supported")
    if k1 == k2 and io == i1 and jo == j2:  # a @ b^T
        return w.scores("matmul", (a, w.b.transpose(b, -1, -2)), {}) or _no_product(w, f"einsum {eq!r}")
    if k1 == j2 and io == i1 and jo == k2:  # a @ b
        return w.scores("matmul", (a, b), {}) or _no_product(w, f"einsum {eq!r}")
    raise w.b.fail(f"einsum {eq!r} is not a batched matrix product")


def _no_product(w: Any, what: str) -> Any:
    raise w.b.fail(f"matrix product ({what}) of activations other than attention scores")


@register(aten=("baddbmm",), methods=("baddbmm",), functions=(torch.baddbmm,))
def baddbmm(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``input * beta + (batch1 @ batch2) * alpha`` (BLOOM's ALiBi: a constant per-head linear
    bias added to the scores): attention scores plus a constant."""
    bias, b1, b2 = args[0], _arg(args, kwargs, 1, "batch1"), _arg(args, kwargs, 2, "batch2")
    if not (_tracked(b1) or _tracked(b2)):
        return NotImplemented
    res = w.scores("matmul", (b1, b2), {})
    if res is None:
        _no_product(w, "baddbmm")
    if _tracked(bias):
        raise w.b.fail("baddbmm adding a tracked tensor to attention scores")
    return res


def one_head(t: Any) -> Any:
    """An activation used as the queries, keys or values of attention with a single head (its
    head axis has size 1, so no reshape split its features): one head."""
    if isinstance(t, Act) and t.block == 1 and t.ndim is not None and t.ndim >= 3:
        return Heads(t.nodes[None, :], t.feat - 1 if t.feat - 1 >= -t.ndim else t.feat + 1, t.feat, t.ndim, t.layer)
    return t


@register(aten=("scaled_dot_product_attention",), functions=(torch.nn.functional.scaled_dot_product_attention,))
def sdpa(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``scaled_dot_product_attention(q, k, v, attn_mask)``: a tracked ``attn_mask`` is a per-head
    score bias (:meth:`Builder.score_bias`); one head may stay an activation."""
    q, k, v = args[0], _arg(args, kwargs, 1, "key"), _arg(args, kwargs, 2, "value")
    mask = _arg(args, kwargs, 3, "attn_mask")
    single = isinstance(q, Act)
    if single:
        q, k, v = one_head(q), one_head(k), one_head(v)
    label = w.b.where_label(node.name)
    res = w.b.attention(q, k, v, label)
    if isinstance(mask, (Act, Param, Heads, Stat)):
        w.b.score_bias(q, mask)
    if single:
        return Act(res.nodes.reshape(-1), args[0].feat, args[0].ndim, res.layer)
    return res


# ----------------------------------------------------------------------------- splits


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


# ----------------------------------------------------------------------------- functional norms, addcmul


@register(functions=(torch.nn.functional.group_norm,))
def group_norm(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``F.group_norm(x, groups, weight, bias, eps)`` on a module's own parameters (fused
    norm + activation modules of other libraries)."""
    shape = _in_shape(node)
    return w.b.norm(args[0], "group_norm", _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias"),
                    w.b.where_label(node.name), channel_first=True, in_ndim=len(shape) if shape else None)


@register(aten=("rms_norm",), functions=tuple(f for f in (getattr(torch.nn.functional, "rms_norm", None),) if f))
def rms_norm(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``F.rms_norm(x, normalized_shape, weight, eps)`` over the last axis."""
    shape = _arg(args, kwargs, 1, "normalized_shape")
    if len(shape) != 1:
        raise w.b.fail("rms_norm over more than the last axis is not supported")
    return w.b.norm(args[0], "rms_norm", _arg(args, kwargs, 2, "weight"), None, w.b.where_label(node.name),
                    size=int(shape[0]))


@register(aten=("addcmul", "addcmul_"), functions=(torch.addcmul,), methods=("addcmul", "addcmul_"))
def addcmul(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``input + value * t1 * t2`` (an affine per-channel scale and shift, ``addcmul(beta, alpha,
    x)``): a product then a sum; ``value`` is in the structural signature."""
    x, t1, t2 = args[0], _arg(args, kwargs, 1, "tensor1"), _arg(args, kwargs, 2, "tensor2")
    label = w.b.where_label(node.name)
    return w.b.combine(x, w.b.combine(t1, t2, "mul", label), "add", label)


@register(aten=("lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell"))
def recurrent(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """Recurrent layers are refused with the reason (:data:`RECURRENT_REASON`)."""
    raise w.b.fail(RECURRENT_REASON.format(f"aten.{node.target.name().split('::')[-1].split('.')[0]}"))


@register(functions=(torch.nn.functional.normalize,))
def normalize(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``F.normalize(x, p, dim)`` over the features (or each head's units): a parameter-free
    normalization, the same neurons (``p`` and ``eps`` are in the structural signature)."""
    x, dim = args[0], _arg(args, kwargs, 2, "dim", 1)
    if isinstance(x, Heads) and dim % x.ndim == x.ndim + x.feat:
        return x
    if isinstance(x, Act) and x.block == 1 and (dim == x.feat or x.ndim is not None and dim % x.ndim == x.ndim + x.feat):
        return x
    if not _tracked(x):
        return NotImplemented
    raise w.b.fail(f"normalize along axis {dim}, which is not the feature axis")


@register(functions=(torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max, torch.log1p, torch.expm1,
                     torch.sign, torch.log2))
def elementwise(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """An element-wise function of one tensor with constant arguments (its arguments are in the
    structural signature): the same neurons, or the same parameter (``clamp(logit_scale)``)."""
    x = args[0] if args else kwargs.get("input")
    if isinstance(x, (Act, Heads, Lazy, Stat, Param)):
        if any(_tracked(a) for a in list(args[1:]) + list(kwargs.values())):
            raise w.b.fail(f"{getattr(node.target, '__name__', node.target)} with tensor-valued bounds")
        return x
    return NotImplemented


@register(aten=("upsample_bilinear2d", "upsample_bicubic2d", "_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa",
                "upsample_nearest1d", "upsample_linear1d", "_upsample_nearest_exact2d", "upsample_nearest2d"))
def resample(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """Spatial resampling (``F.interpolate`` under torch.export): every channel on its own, the same
    neurons; mode, sizes and ``align_corners`` are in the structural signature."""
    x = args[0]
    if isinstance(x, Act):
        if x.ndim is not None and x.ndim + x.feat != 1:
            raise w.b.fail("resampling a tensor whose channels are not on axis 1")
        return x
    return NotImplemented


# ----------------------------------------------------------------------------- per-position masks from inputs


@dataclass
class MaskedParam:
    """A parameter times a per-position mask from an input (``mask_token * mask``): added to
    activations, a learned token put in place of the masked positions."""

    param: Param


def _position_mask(v: Any, src: Any) -> bool:
    """An input not turned into neurons, broadcast along the features (its last axis has size 1):
    per-position data such as DINOv2's ``bool_masked_pos.unsqueeze(-1)``, not features."""
    shape = node_shape(src)
    return isinstance(v, Lazy) and v.act is None and not v.as_tokens and shape is not None and len(shape) > 0 \
        and shape[-1] == 1


@register(aten=("mul", "mul_"), functions=(operator.mul, torch.mul), methods=("mul", "mul_"))
def mask_mul(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``x * mask`` with a per-position mask from an input: the neurons of ``x`` (a parameter: a
    :class:`MaskedParam`)."""
    if len(args) < 2 or len(node.args) < 2:
        return NotImplemented
    for i in (0, 1):
        if _position_mask(args[i], node.args[i]):
            other = args[1 - i]
            if isinstance(other, (Act, Heads)):
                return other
            if isinstance(other, Param):
                return MaskedParam(other)
    return NotImplemented


@register(aten=("add", "add_"), functions=(operator.add, torch.add), methods=("add", "add_"))
def masked_token_add(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``x * (1 - mask) + token * mask`` (DINOv2, BEiT, MAE): a learned token put in place of the
    masked positions, a ``TOKEN`` table of one position."""
    if len(args) < 2:
        return NotImplemented
    a, b = args[0], args[1]
    if isinstance(a, MaskedParam) or isinstance(b, MaskedParam):
        m, x = (a, b) if isinstance(a, MaskedParam) else (b, a)
        if not isinstance(x, Act):
            raise w.b.fail(f"masked parameter {m.param.name!r} added to {type(x).__name__}")
        return w.b.table(x, m.param, EdgeType.TOKEN, w.b.where_label(node.name))
    return NotImplemented


# ============================================================================= PReLU
# ``nn.PReLU``, ``F.prelu``, ``aten.prelu`` / ``aten._prelu_kernel``: ``max(0, x) + a * min(0, x)``
# with learned slopes ``a`` along the channel axis (axis 1; the only axis of a 1-D input).


def _prelu(w: Any, node: torch.fx.Node, x: Any, a: Any, label: str) -> Any:
    """Mark ``x``'s neurons with :attr:`Activation.PRELU` and store the slopes ``a``.

    One slope per channel (``num_parameters = C``) is the ``weight`` feature of the channel's
    neuron. One slope shared by every channel (``num_parameters = 1``, the default) is stored once,
    as the ``weight`` feature of a new ``NodeType.ACT_PARAM`` node joined by an ``ACT_PARAM`` edge
    to every channel's neuron (whose ``weight`` feature is then reserved and 0): the scalar has one
    slot in the graph, so decoding reads it back bit-exactly and no copies can disagree. Neurons
    that already hold an activation or a ``weight`` feature (a norm's scale) are first copied
    (``IDENTITY`` edges), so a ``PRELU`` neuron's ``weight`` is always its slope.
    """
    b = w.b
    if isinstance(x, Meta):
        return x
    if not isinstance(a, Param):
        raise b.fail("prelu with a slope that is not a parameter of the model (a computed tensor)")
    n = math.prod(a.shape)
    shape = _in_shape(node)
    if isinstance(x, Lazy):
        if shape is None:
            raise b.fail("prelu applied to the raw input; pass example_input so that its size is known")
        x = b.materialize(x, shape[1] if len(shape) > 1 else shape[0], 1 - len(shape) if len(shape) > 1 else -1,
                          len(shape))
    x = b.as_act(x, what="prelu")
    if x.block != 1:
        raise b.fail("prelu applied to a flattened feature map")
    if n > 1 and x.ndim is not None and x.ndim > 1 and x.ndim + x.feat != 1:
        raise b.fail(f"prelu with {n} slopes acts on axis 1, but the features are on axis {x.ndim + x.feat}")
    C = len(x)
    if n not in (1, C):
        raise b.fail(f"prelu weight {a.name!r} has {n} slopes for {C} channels (expected 1 or {C})")
    busy = any(b.s.node_act[i] != 0 or b.s.node_slots[i] & (1 << WEIGHT) for i in x.nodes.tolist())
    if busy:
        x = b.copy_group(x, label)
    b.use(a, "prelu")
    if n == C:  # one slope per channel (a single channel included)
        b.s.node_blocks.append(NodeBlock(x.nodes.clone(), WEIGHT, a.name, torch.arange(C)))
    else:
        slope = b.new_nodes(1, NodeType.ACT_PARAM, x.layer, pos=True, label=f"{label}:slope")
        b.s.node_blocks.append(NodeBlock(slope.clone(), WEIGHT, a.name, torch.zeros(1, dtype=torch.long)))
        b.s.node_slots[int(slope)] |= 1 << WEIGHT
        b.add_edges(EdgeBlock(slope.repeat(C), x.nodes.clone(), EdgeType.ACT_PARAM, 1, 1))
    for i in x.nodes.tolist():
        b.s.node_slots[i] |= 1 << WEIGHT
        b.s.node_act[i] = int(Activation.PRELU)
    return x


@register(modules=(torch.nn.PReLU,))
def prelu_module(w: Any, node: torch.fx.Node, mod: torch.nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    """``nn.PReLU`` (``num_parameters`` is in the structural signature)."""
    return _prelu(w, node, args[0] if args else kwargs.get("input"), w.b.param(f"{path}.weight"), path)


@register(aten=("prelu", "_prelu_kernel"), functions=(torch.nn.functional.prelu, torch.prelu))
def prelu(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``F.prelu(x, weight)`` / ``aten.prelu`` on a parameter of the model."""
    x, a = args[0], _arg(args, kwargs, 1, "weight")
    if not _tracked(x) and not _tracked(a):
        return NotImplemented
    return _prelu(w, node, x, a, w.b.where_label(node.name))


# ============================================================================= transposed convolutions
# ``nn.ConvTranspose1d/2d``, ``F.conv_transpose1d/2d``, ``aten.conv_transpose1d/2d`` and
# ``aten.convolution(..., transposed=True)``. Weight ``[in, out/groups, (kh,) kw]``.


def conv_transpose(w: Any, x: Any, weight: Any, bias: Any, groups: int, label: str) -> Act:
    """A transposed convolution as ``CONV`` edges from each input channel ``c`` to each output
    channel ``o`` of its group, holding the kernel ``W[c, o mod (out/groups)]`` rotated by 180
    degrees (flipped along every spatial axis).

    Why the flip: a transposed convolution with stride ``s`` is a convolution, with the flipped and
    in/out-swapped kernel and padding ``dilation*(k-1) - padding``, of the input dilated by ``s``
    (``s-1`` zeros between samples). Stored that way, every ``CONV`` edge holds a kernel in the
    orientation in which it is correlated with its input, so a stride-1 ``ConvTranspose2d`` and the
    ``Conv2d`` computing the same function give the same graph. Edges come in the order of a
    convolution's (output channel, then input channel of its group). Stride, padding,
    ``output_padding``, dilation and groups are in the structural signature (``from_graph``
    refuses a model that differs in any of them).

    Shapes: ``x [B, C_in, (H,) W]`` -> ``[B, C_out, (H',) W']``; edges ``C_out * C_in / groups``.
    """
    b = w.b
    if not isinstance(weight, Param):
        raise b.fail("transposed convolution with a weight that is not a parameter of the model")
    b.use(weight, "conv_transpose")
    b.use(bias, "conv_transpose")
    dims = len(weight.shape) - 2
    if dims not in (1, 2):
        raise b.fail(f"only 1-D and 2-D transposed convolutions are supported (weight {weight.name!r} is "
                     f"{weight.shape}): the graph stores 2-D kernels; a 3-D one has no place in it")
    cin, out_per_group = weight.shape[:2]
    kh, kw = (1, weight.shape[2]) if dims == 1 else (weight.shape[2], weight.shape[3])
    if isinstance(x, Lazy):
        x = b.materialize(x, cin, -(dims + 1), dims + 2)
    if isinstance(x, (Grid, Folded)):
        raise b.fail("transposed convolution of units reshaped into a channel-first map (e.g. a Linear "
                     "layer's output viewed as [C, H, W]): the graph has one node per channel, and those "
                     "units would each be one position of a channel")
    x = b.as_act(x, what="transposed convolution")
    if x.block != 1:
        raise b.fail("transposed convolution applied to a flattened tensor")
    if x.ndim is not None and x.ndim + x.feat != 1:
        raise b.fail("transposed convolution input's channel axis is not axis 1")
    if len(x) != cin:
        raise b.fail(f"transposed convolution expects {cin} channels, the input has {len(x)}")
    in_per_group = cin // groups
    out_c = out_per_group * groups
    layer = x.layer + 1
    out = b.new_nodes(out_c, NodeType.HIDDEN, layer, label=label)
    o = torch.arange(out_c).repeat_interleave(in_per_group)  # edge e = (o, ci): output-major, as conv
    c = (o // out_per_group) * in_per_group + torch.arange(in_per_group).repeat(out_c)
    j = o % out_per_group
    K = kh * kw
    flipped = torch.arange(K - 1, -1, -1)  # kernel slot k holds W[..., K-1-k] (row-major flip of both axes)
    index = (c * out_per_group + j)[:, None] * K + flipped[None, :]
    b.add_edges(EdgeBlock(x.nodes[c], out[o], EdgeType.CONV, kh, kw, weight.name, index))
    if bias is not None:
        if not isinstance(bias, Param):
            raise b.fail("transposed convolution with a bias that is not a parameter of the model")
        b.s.node_blocks.append(NodeBlock(out.clone(), BIAS, bias.name, torch.arange(out_c)))
        for i in out.tolist():
            b.s.node_slots[i] |= 1 << BIAS
    return Act(out, -(dims + 1), dims + 2, layer)


@register(modules=(torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d))
def conv_transpose_module(w: Any, node: torch.fx.Node, mod: torch.nn.Module, path: str, args: tuple,
                          kwargs: dict) -> Any:
    """``nn.ConvTranspose1d/2d`` (its ``output_size`` argument, if given, is a size from the input)."""
    p = w.b.param
    return conv_transpose(w, args[0] if args else kwargs.get("input"), p(f"{path}.weight"), p(f"{path}.bias"),
                          mod.groups, path)


@register(aten=("conv_transpose1d", "conv_transpose2d"),
          functions=(torch.nn.functional.conv_transpose1d, torch.nn.functional.conv_transpose2d))
def conv_transpose_call(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)``."""
    return conv_transpose(w, args[0], _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias"),
                          _arg(args, kwargs, 6, "groups", 1), w.b.where_label(node.name))


@register(aten=("convolution", "_convolution"))
def convolution(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``aten.convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding,
    groups)`` with ``transposed=True``; ordinary convolutions are left to the tables."""
    if not _arg(args, kwargs, 6, "transposed", False):
        return NotImplemented
    return conv_transpose(w, args[0], args[1], args[2], _arg(args, kwargs, 8, "groups", 1),
                          w.b.where_label(node.name))


# ============================================================================= instance norm (ATen)
# ``nn.InstanceNorm1d/2d`` as a module is handled by the norm tables; under ``torch.export`` it is
# ``aten.instance_norm(x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps,
# cudnn_enabled)``.


@register(aten=("instance_norm",))
def instance_norm(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """Instance normalization: per-channel ``weight``/``shift`` node features when affine, running
    statistics when tracked (``use_input_stats``, ``momentum`` and ``eps`` are in the structural
    signature)."""
    x, weight, bias, rm, rv = (list(args) + [None] * 5)[:5]
    if not _tracked(x):
        return NotImplemented
    nbt = None
    if isinstance(rm, Param) and rm.name.endswith("running_mean"):
        nbt = w.b.param(rm.name[: -len("running_mean")] + "num_batches_tracked")
    shape = _in_shape(node)
    return w.b.norm(x, "instance_norm", weight, bias, w.b.where_label(node.name),
                    running_mean=rm if isinstance(rm, Param) else None,
                    running_var=rv if isinstance(rv, Param) else None, num_batches=nbt, channel_first=True,
                    in_ndim=len(shape) if shape else None)


# ============================================================================= in-place activations (ATen)
# ``nn.LeakyReLU(inplace=True)`` and friends under ``torch.export``: ``aten.leaky_relu_``, ``aten.elu_``, ...
# the same activation as the out-of-place operation (its arguments are in the structural signature).

_INPLACE_ACTIVATIONS = ("leaky_relu_", "elu_", "selu_", "celu_", "silu_", "mish_", "hardtanh_", "hardswish_",
                        "hardsigmoid_", "relu6_", "gelu_", "sigmoid_", "tanh_")


@register(aten=_INPLACE_ACTIVATIONS)
def inplace_activation(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``aten.<activation>_``: the out-of-place activation's handling."""
    name = node.target.name().split("::")[-1].split(".")[0]
    if name[:-1] not in ACT_ATEN:
        return NotImplemented
    return w.call_aten(node, name[:-1], args, kwargs)


# ============================================================================= 3-D convolutions (refused)

#: why 3-D convolutions are refused
CONV3D_REASON = (
    "{} is not supported: the parameter graph stores every edge's kernel as a 2-D grid (kh x kw), so a "
    "3-D kernel (kd x kh x kw) has no place in it; build the network 2-D (e.g. MONAI's spatial_dims=2) or "
    "convert it with its 3-D layers left out")


@register(modules=(torch.nn.Conv3d, torch.nn.ConvTranspose3d), aten=("conv3d", "conv_transpose3d"),
          functions=(torch.nn.functional.conv3d, torch.nn.functional.conv_transpose3d))
def conv3d(w: Any, node: torch.fx.Node, *rest: Any) -> Any:
    """3-D convolutions are refused with the reason (:data:`CONV3D_REASON`)."""
    what = type(rest[0]).__name__ if isinstance(rest[0], torch.nn.Module) else getattr(
        node.target, "__name__", str(node.target))
    raise w.b.fail(CONV3D_REASON.format(what))


# ============================================================================= broadcast gating products
# ``x * gate`` with a one-channel ``gate [B, 1, H, W]`` broadcast over the ``C`` channels of
# ``x [B, C, H, W]`` (attention gates: MONAI's ``AttentionUnet``, Attention U-Net's ``psi``).


@register(aten=("mul", "mul_"), functions=(operator.mul, torch.mul), methods=("mul", "mul_"))
def broadcast_product(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """An element-wise product of an activation with ``C`` features and one with a single feature
    on the same axis: ``C`` new ``PRODUCT`` neurons, each fed by ``PRODUCT`` edges from its
    feature of the first and from the single feature of the second (which thus gates them all).
    Other products go to :func:`mask_mul` and then to the builder's tables."""
    res = mask_mul(w, node, args, kwargs)
    if res is not NotImplemented or len(args) < 2:
        return res
    a, g = args[0], args[1]
    if not (isinstance(a, Act) and isinstance(g, Act)) or a.block != 1 or g.block != 1:
        return NotImplemented
    if len(a) == 1 and len(g) > 1:
        a, g = g, a
    if len(g) != 1 or len(a) == 1 or (a.feat, a.ndim) != (g.feat, g.ndim):
        return NotImplemented
    b = w.b
    layer = max(a.layer, g.layer) + 1
    out = b.new_nodes(len(a), NodeType.PRODUCT, layer, label=b.where_label(node.name))
    b.add_edges(EdgeBlock(a.nodes.clone(), out, EdgeType.PRODUCT, 1, 1))
    b.add_edges(EdgeBlock(g.nodes.repeat(len(a)), out.clone(), EdgeType.PRODUCT, 1, 1))
    return Act(out, a.feat, a.ndim, layer)


# ============================================================================= channel padding
# ``F.pad`` / ``aten.constant_pad_nd`` / ``aten.pad`` whose pad widths reach the feature (channel)
# axis (MONAI's ``ChannelPad``, the zero-padded shortcut of HighResNet's residual blocks).


@register(aten=("constant_pad_nd", "pad"), functions=(torch.nn.functional.pad,))
def channel_pad(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """Zero channels added (or channels cropped by negative widths) along the feature axis: every
    added channel is a new ``HIDDEN`` neuron with no incoming edge and no parameter (its value is
    0), placed before or after the input's neurons. Padding with another value, or in another
    mode, along the features is refused (the graph cannot hold a constant neuron). Padding that
    leaves the feature axis alone keeps the neurons."""
    x, pad = args[0], _arg(args, kwargs, 1, "pad")
    if not isinstance(x, Act) or x.ndim is None or not isinstance(pad, (tuple, list)):
        return NotImplemented
    from_end = -x.feat - 1
    if len(pad) < 2 * from_end + 2:
        return NotImplemented
    left, right = int(pad[2 * from_end]), int(pad[2 * from_end + 1])
    if left == right == 0:
        return NotImplemented
    b = w.b
    name = aten_name(node.target)
    mode = "constant" if name == "constant_pad_nd" else _arg(args, kwargs, 2, "mode", "constant")
    value = _arg(args, kwargs, 2 if name == "constant_pad_nd" else 3, "value", 0.0)
    if mode != "constant" or value not in (None, 0, 0.0):
        raise b.fail(f"padding of the feature axis in mode {mode!r} with value {value!r}: only zero padding "
                     "(new channels that hold 0) can be represented")
    if x.block != 1:
        raise b.fail("padding the features of a flattened feature map")
    nodes = x.nodes
    nodes = nodes[max(-left, 0): len(nodes) - max(-right, 0)]
    label = b.where_label(node.name)
    parts = []
    if left > 0:
        parts.append(b.new_nodes(left, NodeType.HIDDEN, x.layer, label=f"{label}:pad_before"))
    parts.append(nodes)
    if right > 0:
        parts.append(b.new_nodes(right, NodeType.HIDDEN, x.layer, label=f"{label}:pad_after"))
    return Act(torch.cat(parts), x.feat, x.ndim, x.layer)


