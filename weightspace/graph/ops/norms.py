"""Normalizations: handlers of the core tier.

A normalization keeps the neurons of its input and stores its per-neuron parameters as node
features (``weight``, ``shift``; BatchNorm's running statistics ``running_mean``/``running_var``;
:meth:`Builder.norm`). Its ``eps`` and kind are in the structural signature. The functional forms
(``F.layer_norm``, ``F.batch_norm``, ATen ``native_layer_norm``, ...) on a module's own
parameters give the same nodes and features as the module forms.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..builder import META, Act, Heads, Lazy, Param
from .common import arg, in_shape
from .registry import register
from .values import tracked

_arg = arg
_in_shape = in_shape
_tracked = tracked

__all__ = ["NORM_MODULES", "module_norm"]

#: normalization modules handled by :func:`module_norm`
NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d,
                nn.InstanceNorm2d) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def _last_axis_norm(mod: nn.Module) -> bool:
    return isinstance(mod, nn.LayerNorm) or (hasattr(nn, "RMSNorm") and isinstance(mod, nn.RMSNorm))


def module_norm(w: Any, mod: nn.Module, path: str, x: Any, shape: tuple | None) -> Any:
    """A normalization module applied to ``x`` (``shape``: the input's static shape, if known)."""
    b = w.b

    def p(n: str) -> Param | None:
        return b.param(f"{path}.{n}")

    if isinstance(x, Lazy):
        x = _materialize_for_norm(b, mod, x, shape)
    if _last_axis_norm(mod):
        if len(mod.normalized_shape) != 1:
            raise b.fail("LayerNorm over more than the last axis is not supported")
        kind = "layer_norm" if isinstance(mod, nn.LayerNorm) else "rms_norm"
        return b.norm(x, kind, p("weight"), p("bias"), label=path)
    return b.norm(x, type(mod).__name__, p("weight"), p("bias"), label=path, running_mean=p("running_mean"),
                  running_var=p("running_var"), num_batches=p("num_batches_tracked"), channel_first=True)


def _materialize_for_norm(b: Any, mod: nn.Module, x: Lazy, shape: tuple | None) -> Act:
    if _last_axis_norm(mod):
        return b.materialize(x, mod.normalized_shape[-1], -1, len(shape) if shape else None)
    n = getattr(mod, "num_features", None) or getattr(mod, "num_channels", None)
    if shape is not None:
        nd = len(shape)
    elif isinstance(mod, (nn.BatchNorm2d, nn.InstanceNorm2d)):
        nd = 4
    elif isinstance(mod, nn.InstanceNorm1d):
        nd = 3
    else:
        nd = 2
    return b.materialize(x, n, 1 - nd, nd)


@register(modules=NORM_MODULES, core=True)
def norm_module(w: Any, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
    return module_norm(w, mod, path, args[0] if args else kwargs.get("input"), in_shape(node))


@register(functions=(F.layer_norm,), core=True)
def layer_norm_function(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    shape = arg(args, kwargs, 1, "normalized_shape")
    if len(shape) != 1:
        raise w.b.fail("layer_norm over more than the last axis is not supported")
    return w.b.norm(args[0], "layer_norm", arg(args, kwargs, 2, "weight"), arg(args, kwargs, 3, "bias"), w.label,
                    size=int(shape[0]))


@register(functions=(F.batch_norm,), core=True)
def batch_norm_function(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    shape = in_shape(node)
    return w.b.norm(args[0], "batch_norm", arg(args, kwargs, 3, "weight"), arg(args, kwargs, 4, "bias"), w.label,
                    running_mean=arg(args, kwargs, 1, "running_mean"), running_var=arg(args, kwargs, 2, "running_var"),
                    channel_first=True, in_ndim=len(shape) if shape else None)


@register(aten=("_native_batch_norm_legit_no_training", "batch_norm", "_native_batch_norm_legit"), core=True)
def batch_norm_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    b = w.b
    x, weight, bias, rm, rv = args[:5]
    nbt = None
    if isinstance(rm, Param) and rm.name.endswith("running_mean"):
        nbt = b.param(rm.name[: -len("running_mean")] + "num_batches_tracked")
    shape = in_shape(node)
    res = b.norm(x, "batch_norm", weight, bias, w.label, running_mean=rm, running_var=rv, num_batches=nbt,
                 channel_first=True, in_ndim=len(shape) if shape else None)
    return res if w.op == "batch_norm" else (res, META, META)


@register(aten=("layer_norm", "native_layer_norm"), core=True)
def layer_norm_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    shape = args[1]
    if len(shape) != 1:
        raise w.b.fail("layer_norm over more than the last axis is not supported")
    res = w.b.norm(args[0], "layer_norm", arg(args, kwargs, 2, "weight"), arg(args, kwargs, 3, "bias"), w.label,
                   size=int(shape[0]))
    return res if w.op == "layer_norm" else (res, META, META)


@register(aten=("group_norm", "native_group_norm"), core=True)
def group_norm_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    weight, bias = (args[2], args[3]) if w.op == "group_norm" else (args[1], args[2])
    shape = in_shape(node)
    res = w.b.norm(args[0], "group_norm", weight, bias, w.label, channel_first=True,
                   in_ndim=len(shape) if shape else None)
    return res if w.op == "group_norm" else (res, META, META)

@register(aten=("instance_norm",), core=True)
def instance_norm_aten(w: Any, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """``aten.instance_norm(x, weight, bias, running_mean, running_var, use_input_stats, momentum,
    eps, cudnn_enabled)`` (``nn.InstanceNorm1d/2d`` under ``torch.export``): per-channel
    ``weight``/``shift`` node features when affine, running statistics when tracked
    (``use_input_stats``, ``momentum`` and ``eps`` are in the structural signature)."""
    x, weight, bias, rm, rv = (list(args) + [None] * 5)[:5]
    nbt = None
    if isinstance(rm, Param) and rm.name.endswith("running_mean"):
        nbt = w.b.param(rm.name[: -len("running_mean")] + "num_batches_tracked")
    shape = in_shape(node)
    return w.b.norm(x, "instance_norm", weight, bias, w.label,
                    running_mean=rm if isinstance(rm, Param) else None,
                    running_var=rv if isinstance(rv, Param) else None, num_batches=nbt, channel_first=True,
                    in_ndim=len(shape) if shape else None)

# ----------------------------------------------------------------------------- idioms (first tier)


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
