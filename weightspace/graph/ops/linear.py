"""Linear maps, convolutions and embedding lookups: handlers of the core tier.

A ``Linear`` ``W [out, in]`` makes ``out`` new neurons and one ``LINEAR`` edge per weight
(``FLATTEN`` after a flattened feature map: the edge holds the channel's block of weights); a
``Conv1d``/``Conv2d`` one ``CONV`` edge per (output, input) channel pair holding its ``kh x kw``
kernel; an embedding table ``E [V, D]`` ``V`` ``VOCAB`` nodes and ``D`` units joined by
``EMBEDDING`` edges. Biases are node features (:meth:`Builder.linear`, :meth:`Builder.conv`,
:meth:`Builder.embedding`). Matrix products with a parameter (``x @ W.T``, ``x @ W``,
``addmm``) are linear layers.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..builder import META, Param
from ..errors import UnsupportedModuleError
from .common import Transposed, arg
from .registry import register

__all__ = ["RECURRENT_REASON", "transposed_param"]

#: why recurrent layers are refused (``nn.RNN``/``nn.LSTM``/``nn.GRU``, ``aten.lstm``, ...)
RECURRENT_REASON = (
    "recurrent module {} is not supported: its weights act at every time step on a hidden state fed back "
    "from the previous step, and a parameter graph is a graph of neurons without cycles (unrolling it would "
    "make the graph depend on the sequence length); see docs/design-notes/converter-coverage.md")


def transposed_param(args: tuple) -> Transposed | None:
    """``W.T`` (``t``, ``transpose``, ``permute``, ``numpy_T`` of a 2-D parameter) on its way into
    a matrix product (``x @ W.T`` written out, e.g. Falcon's linear layers), else None."""
    if args and isinstance(args[0], Param) and len(args[0].shape) == 2:
        return Transposed(args[0])
    return None


# ----------------------------------------------------------------------------- modules


@register(modules=(nn.RNNBase,), core=True)
def recurrent_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    """Refused: see :data:`RECURRENT_REASON`."""
    raise UnsupportedModuleError(RECURRENT_REASON.format(type(mod).__name__), path=path, kind=type(mod).__name__)


@register(modules=(nn.Linear,), core=True)
def linear_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    x = args[0] if args else kwargs.get("input")
    return w.b.linear(x, w.b.param(f"{path}.weight"), w.b.param(f"{path}.bias"), label=path)


@register(modules=(nn.Conv1d, nn.Conv2d), core=True)
def conv_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    x = args[0] if args else kwargs.get("input")
    return w.b.conv(x, w.b.param(f"{path}.weight"), w.b.param(f"{path}.bias"), mod.groups, label=path)


@register(modules=(nn.Embedding,), core=True)
def embedding_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    x = args[0] if args else kwargs.get("input")
    return w.b.embedding(x, w.b.param(f"{path}.weight"), label=path)


# ----------------------------------------------------------------------------- functions


@register(functions=(getattr,), core=True)
def get_attribute(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``W.T``/``W.mT`` of a 2-D parameter; any other attribute (``x.shape``) is a constant."""
    if isinstance(args[0], Param) and args[1] in ("T", "mT") and len(args[0].shape) == 2:
        return Transposed(args[0])
    return META


@register(functions=(F.linear,), core=True)
def linear_function(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.linear(args[0], arg(args, kwargs, 1, "weight"), arg(args, kwargs, 2, "bias"), w.label)


@register(functions=(F.conv1d, F.conv2d), core=True)
def conv_function(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.conv(args[0], arg(args, kwargs, 1, "weight"), arg(args, kwargs, 2, "bias"),
                    arg(args, kwargs, 6, "groups", 1), w.label)


@register(functions=(F.embedding,), core=True)
def embedding_function(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.embedding(args[0], arg(args, kwargs, 1, "weight"), w.label)


@register(functions=(operator.matmul, torch.matmul, torch.mm), core=True)
def matmul_function(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``x @ W.T`` or ``x @ W`` with a parameter ``W``: as the ATen ``matmul``."""
    if isinstance(args[1], (Transposed, Param)):
        return w.call_aten(node, "matmul", args, kwargs)
    return NotImplemented


# ----------------------------------------------------------------------------- ATen


@register(aten=("linear",), core=True)
def linear_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.linear(args[0], args[1], arg(args, kwargs, 2, "bias"), w.label)


@register(aten=("numpy_T",), core=True)
def numpy_t_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return transposed_param(args) or NotImplemented


@register(aten=("matmul", "mm"), core=True)
def matmul_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``x @ W.T`` (weight stored ``[out, in]``) or ``x @ W`` (stored ``[in, out]``)."""
    p = args[1]
    if isinstance(p, Transposed):
        return w.b.linear(args[0], p.param, None, w.label)
    if isinstance(p, Param) and len(p.shape) == 2:
        return w.b.linear(args[0], p, None, w.label, transposed=True)
    return NotImplemented


@register(aten=("addmm",), core=True)
def addmm_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``bias + x @ W`` with ``W`` stored ``[in, out]`` (e.g. transformers' ``Conv1D``)."""
    return w.b.linear(args[1], args[2], args[0], w.label, transposed=True)


@register(aten=("conv1d", "conv2d"), core=True)
def conv_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.conv(args[0], args[1], arg(args, kwargs, 2, "bias"), arg(args, kwargs, 6, "groups", 1), w.label)


@register(aten=("convolution",), core=True)
def convolution_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    if args[6]:
        raise w.b.fail("transposed convolutions are not supported")
    return w.b.conv(args[0], args[1], args[2], args[8], w.label)


@register(aten=("embedding",), core=True)
def embedding_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.embedding(args[1], args[0], w.label)

# ----------------------------------------------------------------------------- idioms (first tier)


@register(aten=("lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell"))
def recurrent(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """Recurrent layers are refused with the reason (:data:`RECURRENT_REASON`)."""
    raise w.b.fail(RECURRENT_REASON.format(f"aten.{node.target.name().split('::')[-1].split('.')[0]}"))
