"""Element-wise arithmetic between tensors: handlers of the core tier.

``a + b``, ``a - b``, ``a * b``, ``a / b`` as operators, functions, methods (in place too) or
ATen: :meth:`Builder.combine` decides what they mean from the operands (a residual addition of
two activations makes ``SUM`` nodes, a product of two ``PRODUCT`` nodes, a parameter added or
multiplied is a bias, a scale or a positional table, a constant keeps the neurons).
"""

from __future__ import annotations

import operator
from typing import Any

import torch

from ..builder import META, Act, EdgeBlock, Heads, Lazy, Param
from ..vocab import EdgeType, NodeType
from .common import arg, node_shape
from .registry import register
from .values import MaskedParam

_arg = arg

__all__ = ["ADD_FUNCTIONS", "ARITHMETIC_FUNCTIONS", "gating_product", "mask_mul"]

#: Python callables of the four operations -> the operation
ARITHMETIC_FUNCTIONS: dict[Any, str] = {
    operator.add: "add", operator.iadd: "add", torch.add: "add",
    operator.sub: "sub", operator.isub: "sub", torch.sub: "sub",
    operator.mul: "mul", operator.imul: "mul", torch.mul: "mul",
    operator.truediv: "div", operator.itruediv: "div", torch.div: "div",
}
ADD_FUNCTIONS = frozenset(f for f, op in ARITHMETIC_FUNCTIONS.items() if op == "add")
#: method and ATen names -> the operation (``rsub`` is ATen's ``other - self``)
_NAMES = {"add": "add", "add_": "add", "sub": "sub", "sub_": "sub", "mul": "mul", "mul_": "mul", "div": "div",
          "div_": "div"}


@register(functions=tuple(ARITHMETIC_FUNCTIONS), core=True)
def arithmetic_function(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.combine(args[0], args[1], ARITHMETIC_FUNCTIONS[w.op], w.label)


@register(methods=tuple(_NAMES), core=True)
def arithmetic_method(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.combine(args[0], args[1], _NAMES[w.op], w.label)


@register(aten=(*_NAMES, "rsub"), core=True)
def arithmetic_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.combine(args[0], args[1], _NAMES.get(w.op, "sub"), w.label)


@register(aten=("eq", "ne", "lt", "le", "gt", "ge"), core=True)
def compare_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """A mask or positions computed from token ids (RoBERTa's position ids) are constants."""
    if isinstance(args[0], Lazy) and args[0].act is None:
        return META
    return NotImplemented

# ----------------------------------------------------------------------------- idioms (first tier)


@register(aten=("addcmul", "addcmul_"), functions=(torch.addcmul,), methods=("addcmul", "addcmul_"))
def addcmul(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``input + value * t1 * t2`` (an affine per-channel scale and shift, ``addcmul(beta, alpha,
    x)``): a product then a sum; ``value`` is in the structural signature."""
    x, t1, t2 = args[0], _arg(args, kwargs, 1, "tensor1"), _arg(args, kwargs, 2, "tensor2")
    label = w.b.where_label(node.name)
    return w.b.combine(x, w.b.combine(t1, t2, "mul", label), "add", label)


def _position_mask(v: Any, src: Any) -> bool:
    """An input not turned into neurons, broadcast along the features (its last axis has size 1):
    per-position data such as DINOv2's ``bool_masked_pos.unsqueeze(-1)``, not features."""
    shape = node_shape(src)
    return isinstance(v, Lazy) and v.act is None and not v.as_tokens and shape is not None and len(shape) > 0 \
        and shape[-1] == 1


def mask_mul(args: tuple, node: torch.fx.Node) -> Any:
    """``x * mask`` with a per-position mask from an input: the neurons of ``x`` (a parameter: a
    :class:`MaskedParam`); NotImplemented for any other product."""
    for i in (0, 1):
        if _position_mask(args[i], node.args[i]):
            other = args[1 - i]
            if isinstance(other, (Act, Heads)):
                return other
            if isinstance(other, Param):
                return MaskedParam(other)
    return NotImplemented


def gating_product(w: Any, node: torch.fx.Node, a: Any, g: Any) -> Any:
    """``x * gate`` with a one-channel ``gate [B, 1, H, W]`` broadcast over the ``C`` channels of
    ``x [B, C, H, W]`` (attention gates: MONAI's ``AttentionUnet``, Attention U-Net's ``psi``,
    Oktay et al. 2018): ``C`` new ``PRODUCT`` neurons, each fed by ``PRODUCT`` edges from its
    channel of ``x`` and from the single channel of ``gate`` (which thus gates them all);
    NotImplemented for any other product."""
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


@register(aten=("mul", "mul_"), functions=(operator.mul, torch.mul), methods=("mul", "mul_"))
def product_idioms(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """The idioms of ``a * b``: a per-position mask (:func:`mask_mul`), then a one-channel gate
    broadcast over the channels (:func:`gating_product`); other products go to the core
    :meth:`Builder.combine`."""
    if len(args) < 2 or len(node.args) < 2:
        return NotImplemented
    res = mask_mul(args, node)
    return gating_product(w, node, args[0], args[1]) if res is NotImplemented else res


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
