"""Activations, element-wise functions and operations that keep every neuron (dropout, pooling,
copies): handlers of the core tier.

An activation is recorded on the nodes whose output it transforms (``node_act``); a second one
on the same nodes gets a copy of them (``IDENTITY`` edges). ``PReLU``'s learned slopes are node
features (:func:`prelu`). Element-wise functions without parameters (``x ** 2``, ``rsqrt``;
pieces of decomposed activations and normalizations) and pooling/dropout keep the neurons of
their input (padding: :func:`weightspace.graph.ops.shape.pad`): their arguments are in the
structural signature (:mod:`weightspace.graph.signature`).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..builder import META, Act, EdgeBlock, Heads, Lazy, Meta, NodeBlock, Param, Stat
from ..vocab import WEIGHT, Activation, EdgeType, NodeType
from .common import arg, first_tracked, in_shape
from .registry import register
from .values import tracked

_tracked = tracked

__all__ = ["ACT_ATEN", "ACT_FUNCTIONS", "ACT_METHODS", "ACT_MODULES", "ELEMENTWISE_ATEN", "ELEMENTWISE_FUNCTIONS",
           "IDENTITY_ATEN", "IDENTITY_FUNCTIONS", "IDENTITY_METHODS", "IDENTITY_MODULES", "apply_activation", "prelu"]

ACT_MODULES: dict[type, Activation] = {
    nn.ReLU: Activation.RELU, nn.LeakyReLU: Activation.LEAKY_RELU, nn.ELU: Activation.ELU, nn.SELU: Activation.SELU,
    nn.GELU: Activation.GELU, nn.SiLU: Activation.SILU, nn.Mish: Activation.MISH, nn.Tanh: Activation.TANH,
    nn.Sigmoid: Activation.SIGMOID, nn.Softplus: Activation.SOFTPLUS, nn.Hardtanh: Activation.HARDTANH,
    nn.Hardswish: Activation.HARDSWISH, nn.Hardsigmoid: Activation.HARDSIGMOID, nn.ReLU6: Activation.RELU6,
    nn.Softmax: Activation.SOFTMAX, nn.LogSoftmax: Activation.LOG_SOFTMAX, nn.CELU: Activation.CELU,
    nn.Softsign: Activation.SOFTSIGN, nn.Tanhshrink: Activation.TANHSHRINK,
}

ACT_FUNCTIONS: dict[Any, Activation] = {
    F.relu: Activation.RELU, torch.relu: Activation.RELU, F.relu_: Activation.RELU,
    F.leaky_relu: Activation.LEAKY_RELU, F.elu: Activation.ELU, F.selu: Activation.SELU, F.gelu: Activation.GELU,
    F.silu: Activation.SILU, F.mish: Activation.MISH, torch.tanh: Activation.TANH, F.tanh: Activation.TANH,
    torch.sigmoid: Activation.SIGMOID, F.sigmoid: Activation.SIGMOID, F.softplus: Activation.SOFTPLUS,
    F.hardtanh: Activation.HARDTANH, F.hardswish: Activation.HARDSWISH, F.hardsigmoid: Activation.HARDSIGMOID,
    F.relu6: Activation.RELU6, F.softmax: Activation.SOFTMAX, torch.softmax: Activation.SOFTMAX,
    F.log_softmax: Activation.LOG_SOFTMAX, torch.log_softmax: Activation.LOG_SOFTMAX, F.celu: Activation.CELU,
    F.softsign: Activation.SOFTSIGN, F.tanhshrink: Activation.TANHSHRINK,
}

ACT_METHODS: dict[str, Activation] = {
    "relu": Activation.RELU, "relu_": Activation.RELU, "sigmoid": Activation.SIGMOID, "tanh": Activation.TANH,
    "softmax": Activation.SOFTMAX, "log_softmax": Activation.LOG_SOFTMAX,
}

ACT_ATEN: dict[str, Activation] = {
    "relu": Activation.RELU, "relu_": Activation.RELU, "leaky_relu": Activation.LEAKY_RELU, "elu": Activation.ELU,
    "selu": Activation.SELU, "gelu": Activation.GELU, "silu": Activation.SILU, "mish": Activation.MISH,
    "tanh": Activation.TANH, "sigmoid": Activation.SIGMOID, "softplus": Activation.SOFTPLUS,
    "hardtanh": Activation.HARDTANH, "hardswish": Activation.HARDSWISH, "hardsigmoid": Activation.HARDSIGMOID,
    "relu6": Activation.RELU6, "_softmax": Activation.SOFTMAX, "softmax": Activation.SOFTMAX,
    "_log_softmax": Activation.LOG_SOFTMAX, "log_softmax": Activation.LOG_SOFTMAX, "celu": Activation.CELU,
    "softsign": Activation.SOFTSIGN,
}
# in place (``nn.LeakyReLU(inplace=True)`` and friends under ``torch.export``): the same activation
ACT_ATEN.update({f"{n}_": ACT_ATEN[n] for n in ("leaky_relu", "elu", "selu", "celu", "silu", "mish", "hardtanh",
                                                 "hardswish", "hardsigmoid", "relu6", "gelu", "sigmoid", "tanh")})

#: modules that keep the neurons of their input (their settings are in the structural signature)
IDENTITY_MODULES = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.MaxPool1d, nn.MaxPool2d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.LPPool1d, nn.LPPool2d, nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d,
    nn.Upsample,
)

IDENTITY_FUNCTIONS = {
    F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    F.interpolate, torch.clone, torch.detach,
}

IDENTITY_METHODS = {"contiguous", "clone", "detach", "float", "double", "half", "to", "type_as", "cpu", "cuda"}

IDENTITY_ATEN = {
    "type_as", "dropout", "feature_dropout", "dropout_", "feature_dropout_", "clone", "alias", "_to_copy", "to",
    "detach", "contiguous", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "max_pool2d_with_indices", "lift_fresh_copy", "upsample_nearest2d",
}

#: element-wise functions of one activation: no parameter, no new neuron (pieces of decomposed
#: activations and normalizations); also the ``Tensor`` methods of these names
ELEMENTWISE_ATEN = {"pow", "rsqrt", "sqrt", "exp", "log", "neg", "abs", "square", "reciprocal", "erf", "cos", "sin",
                    "clamp", "clamp_min", "clamp_max"}
ELEMENTWISE_FUNCTIONS = {torch.pow, torch.rsqrt, torch.sqrt, torch.exp, torch.log, torch.neg, torch.abs,
                         torch.square, torch.reciprocal, torch.erf, operator.pow, operator.neg, operator.abs}


def apply_activation(w: Any, x: Any, act: Activation, label: str) -> Any:
    """Record activation ``act`` on the neurons of ``x`` (a raw input or a constant passes
    through). A module whose type name says GELU or SiLU/Swish (a decomposed activation traced
    through) names what it computes."""
    if isinstance(x, (Lazy, Meta)):
        return x
    kind = (w.b._kind or "").lower()
    if "gelu" in kind:
        act = Activation.GELU
    elif "silu" in kind or "swish" in kind:
        act = Activation.SILU
    return w.b.set_activation(w.b.as_act(x, what="activation"), act, label)


@register(modules=tuple(ACT_MODULES), exact=True, core=True)
def activation_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    if isinstance(mod, (nn.Softmax, nn.LogSoftmax)) and mod.dim is None:
        raise w.b.fail("Softmax without an explicit dim")
    return apply_activation(w, args[0] if args else kwargs.get("input"), ACT_MODULES[type(mod)], path)


@register(functions=tuple(ACT_FUNCTIONS), core=True)
def activation_function(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return apply_activation(w, args[0] if args else kwargs.get("input"), ACT_FUNCTIONS[w.op], w.label)


@register(methods=tuple(ACT_METHODS), core=True)
def activation_method(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return apply_activation(w, args[0], ACT_METHODS[w.op], w.label)


@register(aten=tuple(ACT_ATEN), core=True)
def activation_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return apply_activation(w, args[0], ACT_ATEN[w.op], w.label)


@register(modules=IDENTITY_MODULES, core=True)
def identity_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    return args[0] if args else kwargs.get("input")


@register(functions=tuple(IDENTITY_FUNCTIONS), methods=tuple(IDENTITY_METHODS), core=True)
def identity(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return args[0] if args else kwargs.get("input")


@register(aten=tuple(IDENTITY_ATEN), core=True)
def identity_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    return (args[0], META) if w.op.endswith("with_indices") else args[0]


@register(aten=tuple(ELEMENTWISE_ATEN), functions=tuple(ELEMENTWISE_FUNCTIONS), methods=tuple(ELEMENTWISE_ATEN),
          core=True)
def elementwise(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``x ** 2``, ``torch.rsqrt(v + eps)``, ...: the same neurons."""
    return first_tracked(args)


@register(functions=(torch.special.expit,), aten=("special_expit",), core=True)
def expit(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``torch.special.expit``: the logistic sigmoid under another name."""
    return apply_activation(w, args[0] if args else kwargs.get("input"), Activation.SIGMOID, w.label)

# ----------------------------------------------------------------------------- PReLU


def prelu(w: Any, node: torch.fx.Node, x: Any, a: Any, label: str) -> Any:
    """``PReLU(x) = max(0, x) + a * min(0, x)`` (He et al. 2015, "Delving deep into rectifiers")
    with learned slopes ``a`` along the channel axis (axis 1; the only axis of a 1-D input): marks
    ``x``'s neurons with :attr:`Activation.PRELU` and stores the slopes.

    One slope per channel (``num_parameters = C``) is the ``weight`` feature of the channel's
    neuron. One slope shared by every channel (``num_parameters = 1``, the default) is stored once,
    as the ``weight`` feature of a new ``NodeType.ACT_PARAM`` node joined by an ``ACT_PARAM`` edge
    to every channel's neuron (whose ``weight`` feature is then reserved and 0): the scalar has one
    slot in the graph, so decoding reads it back bit-exactly and no copies can disagree. Neurons
    that already hold an activation or a ``weight`` feature (a norm's scale) are first copied
    (``IDENTITY`` edges), so a ``PRELU`` neuron's ``weight`` is always its slope.

    Shapes: ``x [B, C, ...]`` or ``[C]``; ``a [1]`` or ``[C]``.
    """
    b = w.b
    if isinstance(x, Meta):
        return x
    if not isinstance(a, Param):
        raise b.fail("prelu with a slope that is not a parameter of the model (a computed tensor)")
    n = math.prod(a.shape)
    shape = in_shape(node)
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


@register(modules=(nn.PReLU,), core=True)
def prelu_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    """``nn.PReLU`` (``num_parameters`` is in the structural signature)."""
    return prelu(w, node, args[0] if args else kwargs.get("input"), w.b.param(f"{path}.weight"), path)


@register(functions=tuple({F.prelu, torch.prelu}), aten=("prelu", "_prelu_kernel"), core=True)
def prelu_call(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``F.prelu(x, weight)`` / ``aten.prelu`` on a parameter of the model."""
    return prelu(w, node, args[0], arg(args, kwargs, 1, "weight"), w.label)

# ----------------------------------------------------------------------------- idioms (first tier)


@register(functions=(torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max, torch.log1p, torch.expm1,
                     torch.sign, torch.log2))
def elementwise_with_arguments(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
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
