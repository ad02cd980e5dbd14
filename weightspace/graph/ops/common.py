"""Helpers shared by the op handlers: static shapes of traced nodes, argument access, and the
walker's value types that are not the builder's (a transposed weight, attention scores)."""

from __future__ import annotations

from typing import Any

import torch
from torch.fx.node import map_aggregate

from ..builder import META, Act, Heads, Lazy, Param, Stat

__all__ = ["SCORE_TYPES", "TRACKED_TYPES", "Transposed", "arg", "first_tracked", "flat", "in_shape", "node_shape"]


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


def in_shape(node: torch.fx.Node) -> tuple[int, ...] | None:
    """The static shape of a traced node's first argument, if known."""
    src = node.args[0] if node.args else None
    return node_shape(src) if isinstance(src, torch.fx.Node) else None


def arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    """Argument ``i`` (positional) or ``name`` (keyword) of a call."""
    return args[i] if len(args) > i else kwargs.get(name, default)


def flat(args: tuple, kwargs: dict) -> list:
    """Every leaf value of a call's arguments."""
    out: list = []
    map_aggregate((args, kwargs), lambda v: out.append(v) or v)
    return out


class Transposed:
    """A 2-D parameter transposed (``W.T``) on its way into a matrix product."""

    def __init__(self, param: Param):
        self.param = param


#: value types of the walker that stand for activations or parameters besides the builder's (attention
#: scores, transposed weights); :mod:`weightspace.graph.trace` adds its scores at import
TRACKED_TYPES: list[type] = [Transposed]
#: value types of attention scores (added by :mod:`weightspace.graph.trace`)
SCORE_TYPES: list[type] = []


def first_tracked(args: tuple) -> Any:
    """The first argument that is an activation (or a statistic of one), else the first parameter
    (a parameter through a fixed function before use, e.g. Swin V2's ``clamp(logit_scale).exp()``;
    the function is in the structural signature), else META."""
    for a in args:
        if isinstance(a, (Act, Heads, Lazy, Stat)):
            return a
    for a in args:
        if isinstance(a, Param):
            return a
    return META
