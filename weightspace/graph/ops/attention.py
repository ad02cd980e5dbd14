"""Attention: handlers of the core tier.

``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``/``nn.TransformerEncoder`` and
``scaled_dot_product_attention`` on projections split into heads (:meth:`Builder.mha`,
:meth:`Builder.attention`): query/key/value units are ``ATTN_Q``/``ATTN_K``/``ATTN_V`` nodes,
``ATTN_QK`` edges pair query and key units of a head, ``ATTN_HEAD`` edges join a head's keys to
its values. Attention written with matrix products (``q @ k.transpose(-2, -1)``, softmax,
``@ v``) is recognised by the walker (``Walker.scores``), ``einsum``/``baddbmm`` by the idiom
handlers.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..builder import META, Act, Heads, Lazy, Param, Stat
from ..errors import UnsupportedModuleError
from .activations import ACT_FUNCTIONS, ACT_MODULES
from .common import SCORE_TYPES, arg
from .norms import module_norm
from .registry import register
from .values import tracked

_arg = arg
_tracked = tracked

__all__ = ["PRODUCTS", "encoder_layer", "one_head"]


@register(modules=(nn.MultiheadAttention,), core=True)
def mha_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    x = args[0] if args else kwargs.get("input")
    q = x if x is not None else kwargs.get("query")
    k = args[1] if len(args) > 1 else kwargs.get("key")
    v = args[2] if len(args) > 2 else kwargs.get("value")
    return (w.b.mha(mod, path, q, k, v), META)


@register(modules=(nn.TransformerEncoderLayer,), core=True)
def encoder_layer_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    return encoder_layer(w, mod, path, args[0] if args else kwargs.get("input"))


@register(modules=(nn.TransformerEncoder,), core=True)
def encoder_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    x = args[0] if args else kwargs.get("input")
    for i, layer in enumerate(mod.layers):
        x = encoder_layer(w, layer, f"{path}.layers.{i}", x)
    if mod.norm is not None:
        x = module_norm(w, mod.norm, f"{path}.norm", x, None)
    return x


def encoder_layer(w: Any, layer: nn.TransformerEncoderLayer, path: str, x: Any) -> Any:
    """A ``TransformerEncoderLayer``: self-attention and a two-layer MLP, each with a residual
    addition and a ``LayerNorm`` before (``norm_first``) or after."""
    b = w.b
    act = layer.activation
    kind = ACT_MODULES.get(type(act)) if isinstance(act, nn.Module) else ACT_FUNCTIONS.get(act)
    if kind is None:
        raise UnsupportedModuleError("unsupported activation in TransformerEncoderLayer", path=path,
                                     kind=type(layer).__name__)

    def sa(h: Any) -> Any:
        return b.mha(layer.self_attn, f"{path}.self_attn", h, h, h)

    def ff(h: Any) -> Any:
        h = b.linear(h, b.param(f"{path}.linear1.weight"), b.param(f"{path}.linear1.bias"), f"{path}.linear1")
        h = b.set_activation(h, kind, f"{path}.activation")
        return b.linear(h, b.param(f"{path}.linear2.weight"), b.param(f"{path}.linear2.bias"), f"{path}.linear2")

    if isinstance(x, Lazy):
        x = b.materialize(x, layer.self_attn.embed_dim, -1, None)
    if layer.norm_first:
        x = b.combine(x, sa(module_norm(w, layer.norm1, f"{path}.norm1", x, None)), "add", f"{path}.add1")
        x = b.combine(x, ff(module_norm(w, layer.norm2, f"{path}.norm2", x, None)), "add", f"{path}.add2")
    else:
        x = module_norm(w, layer.norm1, f"{path}.norm1", b.combine(x, sa(x), "add", f"{path}.add1"), None)
        x = module_norm(w, layer.norm2, f"{path}.norm2", b.combine(x, ff(x), "add", f"{path}.add2"), None)
    return x


@register(aten=("scaled_dot_product_attention",), functions=(F.scaled_dot_product_attention,), core=True)
def sdpa_heads(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.attention(args[0], args[1], args[2], w.label)

# ----------------------------------------------------------------------------- idioms (first tier)


#: names of matrix products written other than ``matmul``/``bmm`` (handled here, not as scores)
PRODUCTS = frozenset({"einsum", "baddbmm"})


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
