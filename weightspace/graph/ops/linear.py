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

from ..builder import META, Act, EdgeBlock, Heads, Lazy, NodeBlock, Param
from ..errors import UnsupportedModuleError
from ..vocab import BIAS, WEIGHT, EdgeType, NodeType
from .common import Transposed, arg
from .registry import register
from .values import Folded, Grid

__all__ = ["CONV3D_REASON", "RECURRENT_REASON", "check_parametrizations", "conv_transpose", "parametrized",
           "transposed_param"]

#: why recurrent layers are refused (``nn.RNN``/``nn.LSTM``/``nn.GRU``, ``aten.lstm``, ...)
RECURRENT_REASON = (
    "recurrent module {} is not supported: its weights act at every time step on a hidden state fed back "
    "from the previous step, and a parameter graph is a graph of neurons without cycles (unrolling it would "
    "make the graph depend on the sequence length); see docs/design-notes/converter-coverage.md")

#: why 3-D convolutions are refused
CONV3D_REASON = (
    "{} is not supported: the parameter graph stores every edge's kernel as a 2-D grid (kh x kw), so a "
    "3-D kernel (kd x kh x kw) has no place in it; build the network 2-D (e.g. MONAI's spatial_dims=2) or "
    "convert it with its 3-D layers left out")


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


@register(modules=(nn.ConvTranspose1d, nn.ConvTranspose2d), core=True)
def conv_transpose_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple,
                          kwargs: dict) -> Any:
    """``nn.ConvTranspose1d/2d`` (its ``output_size`` argument, if given, is a size from the input)."""
    p = w.b.param
    return conv_transpose(w, args[0] if args else kwargs.get("input"), p(f"{path}.weight"), p(f"{path}.bias"),
                          mod.groups, path)


@register(modules=(nn.Conv3d, nn.ConvTranspose3d), core=True)
def conv3d_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    """Refused: see :data:`CONV3D_REASON`."""
    raise UnsupportedModuleError(CONV3D_REASON.format(type(mod).__name__), path=path, kind=type(mod).__name__)


# ----------------------------------------------------------------------------- transposed convolutions


def conv_transpose(w: Any, x: Any, weight: Any, bias: Any, groups: int, label: str) -> Act:
    """A transposed convolution (``nn.ConvTranspose1d/2d``, ``F.conv_transpose1d/2d``, ATen
    ``conv_transpose1d/2d`` and ``convolution(..., transposed=True)``; weight
    ``[in, out/groups, (kh,) kw]``) as ``CONV`` edges from each input channel ``c`` to each output
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


@register(functions=(F.conv_transpose1d, F.conv_transpose2d), core=True)
def conv_transpose_function(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)``."""
    return conv_transpose(w, args[0], arg(args, kwargs, 1, "weight"), arg(args, kwargs, 2, "bias"),
                          arg(args, kwargs, 6, "groups", 1), w.label)


@register(functions=(F.conv3d, F.conv_transpose3d), core=True)
def conv3d_function(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """Refused: see :data:`CONV3D_REASON`."""
    raise w.b.fail(CONV3D_REASON.format(getattr(node.target, "__name__", str(node.target))))


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


@register(aten=("conv_transpose1d", "conv_transpose2d"), core=True)
def conv_transpose_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``aten.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)``."""
    return conv_transpose(w, args[0], args[1], arg(args, kwargs, 2, "bias"), arg(args, kwargs, 6, "groups", 1),
                          w.label)


@register(aten=("conv3d", "conv_transpose3d"), core=True)
def conv3d_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """Refused: see :data:`CONV3D_REASON`."""
    raise w.b.fail(CONV3D_REASON.format(f"aten.{w.op}"))


@register(aten=("convolution", "_convolution"), core=True)
def convolution_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``aten.convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding,
    groups)`` (``_convolution`` begins alike): :meth:`Builder.conv`, or :func:`conv_transpose`
    when ``transposed``."""
    groups = arg(args, kwargs, 8, "groups", 1)
    if arg(args, kwargs, 6, "transposed", False):
        return conv_transpose(w, args[0], args[1], args[2], groups, w.label)
    return w.b.conv(args[0], args[1], args[2], groups, w.label)


@register(aten=("embedding",), core=True)
def embedding_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return w.b.embedding(args[1], args[0], w.label)

# ----------------------------------------------------------------------------- idioms (first tier)


@register(aten=("lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell"))
def recurrent(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """Recurrent layers are refused with the reason (:data:`RECURRENT_REASON`)."""
    raise w.b.fail(RECURRENT_REASON.format(f"aten.{node.target.name().split('::')[-1].split('.')[0]}"))
