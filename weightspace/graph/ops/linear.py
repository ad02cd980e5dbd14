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
from torch.nn.utils import parametrize

from ..builder import META, Act, Heads, Param
from ..errors import UnsupportedModuleError
from ..vocab import WEIGHT
from .common import Transposed, arg
from .registry import register

__all__ = ["RECURRENT_REASON", "check_parametrizations", "parametrized", "transposed_param"]

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
    if parametrize.is_parametrized(mod):
        return parametrized(w, mod, path, x)
    return w.b.linear(x, w.b.param(f"{path}.weight"), w.b.param(f"{path}.bias"), label=path)


@register(modules=(nn.Conv1d, nn.Conv2d), core=True)
def conv_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    x = args[0] if args else kwargs.get("input")
    if parametrize.is_parametrized(mod):
        return parametrized(w, mod, path, x)
    return w.b.conv(x, w.b.param(f"{path}.weight"), w.b.param(f"{path}.bias"), mod.groups, label=path)


@register(modules=(nn.Embedding,), core=True)
def embedding_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    x = args[0] if args else kwargs.get("input")
    return w.b.embedding(x, w.b.param(f"{path}.weight"), label=path)


# ----------------------------------------------------------------------------- weight parametrizations


_PARAMETRIZATIONS = {"_WeightNorm": "weight_norm", "_SpectralNorm": "spectral_norm", "_Orthogonal": "orthogonal"}


def check_parametrizations(model: nn.Module, root: str | None, tracer: str) -> tuple[str, Any] | None:
    """Refuse parametrizations the converter cannot represent, naming the module and the
    parametrization. Supported, under symbolic tracing, one per weight of a ``Linear``/``Conv``:
    ``weight_norm`` (``dim=0``; ``Linear``, ``Conv1d``, ``Conv2d``), ``spectral_norm`` (``dim=0``;
    ``Linear``, ``Conv1d``, ungrouped ``Conv2d``: its ``v`` runs over the channels of one group)
    and ``orthogonal`` (``Linear``, ``Conv2d``: a ``Conv1d``'s map mixes channels and kernel
    positions). With ``root`` given, returns the kind and the parametrization module of that
    module's weight."""
    mods = [(root, model)] if root is not None else list(model.named_modules())
    found = None
    for path, mod in mods:
        if not parametrize.is_parametrized(mod):
            continue
        where = path or "<model>"
        for tensor, plist in mod.parametrizations.items():
            kinds = [type(q).__name__ for q in plist]
            name = f"{'+'.join(kinds)} on {tensor!r}"
            kind = _PARAMETRIZATIONS.get(kinds[0]) if len(kinds) == 1 and tensor == "weight" else None
            q = plist[0]
            layers = {"weight_norm": (nn.Linear, nn.Conv1d, nn.Conv2d), "spectral_norm": (nn.Linear, nn.Conv1d, nn.Conv2d),
                      "orthogonal": (nn.Linear, nn.Conv2d)}.get(kind, ())
            ok = (isinstance(mod, layers) and getattr(q, "dim", 0) == 0
                  and not (kind == "spectral_norm" and getattr(mod, "groups", 1) != 1))
            if not ok:
                raise UnsupportedModuleError(
                    f"parametrization {name} is not supported (supported: one weight_norm (dim=0) or spectral_norm "
                    "(dim=0) on a Linear, Conv1d or ungrouped Conv2d weight, or orthogonal on a Linear or Conv2d "
                    "weight); remove it before converting (torch.nn.utils.parametrize.remove_parametrizations("
                    "module, name, leave_parametrized=True)) or convert the layer without it",
                    path=where, kind=type(mod).__name__)
            if tracer == "export":
                raise UnsupportedModuleError(
                    f"parametrization {name} is only supported under torch.fx symbolic tracing; convert without "
                    "example_input (or tracer='fx')", path=where, kind=type(mod).__name__)
            found = (kind, q)
    return found


def parametrized(w: Any, mod: nn.Module, path: str, x: Any) -> Any:
    """A ``Linear``/``Conv`` whose weight is parametrized (``torch.nn.utils.parametrizations``).
    The layer's edges hold the stored tensor, not the effective weight; the parametrization and
    its settings are in the structural signature, its buffers where :class:`Builder` puts them:

    - ``weight_norm`` (``W = g * v / ||v||`` per output unit, Salimans and Kingma 2016): the
      direction ``v`` (``original1``) on the edges, the magnitude ``g`` (``original0``) the
      ``weight`` feature of the output units;
    - ``spectral_norm`` (``W = original / sigma``): ``original`` on the edges, the
      power-iteration vectors ``_u``/``_v`` by :meth:`Builder.spectral_state`;
    - ``orthogonal`` (``W = base @ map(original)``): ``original`` on the edges, ``base`` by
      :meth:`Builder.orthogonal_base`."""
    b = w.b

    def p(n: str) -> Param | None:
        return b.param(f"{path}.parametrizations.weight.{n}")

    kind, q = check_parametrizations(mod, path, "fx")
    if isinstance(x, (Act, Heads)) and x.feat != -1 and isinstance(mod, nn.Linear):
        raise b.fail(f"{kind} on a linear layer applied along an axis other than the last")
    weight = p("original1") if kind == "weight_norm" else p("original")
    first = weight is not None and weight.name not in b.used  # a layer applied again keeps its state on its first use
    bias = b.param(f"{path}.bias")
    if isinstance(mod, nn.Linear):
        y = b.linear(x, weight, bias, label=path)
    else:
        y = b.conv(x, weight, bias, mod.groups, label=path)
    if kind == "weight_norm":
        w.record("parametrization", [("weight", "weight_norm"), ("dim", 0)], path)
        g = p("original0")
        b.use(g, "weight_norm")
        return b.write_nodes(y, [(WEIGHT, g)], f"{path}:weight_norm")
    if kind == "spectral_norm":
        w.record("parametrization", [("weight", "spectral_norm"), ("n_power_iterations", q.n_power_iterations),
                                    ("eps", q.eps), ("dim", q.dim)], path)
        if first:
            b.spectral_state(weight, y, p("0._u"), p("0._v"), path)
        return y
    base = p("0.base")
    w.record("parametrization", [("weight", "orthogonal"), ("orthogonal_map", q.orthogonal_map.name),
                                ("use_trivialization", base is not None)], path)
    if first and base is not None:
        b.orthogonal_base(weight, y, base, path)
    return y


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
