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

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..builder import META, Lazy
from ..errors import UnsupportedModuleError
from .activations import ACT_FUNCTIONS, ACT_MODULES
from .norms import module_norm
from .registry import register

__all__ = ["encoder_layer"]


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
def sdpa(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.attention(args[0], args[1], args[2], w.label)
