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

from ..builder import META, Lazy
from .registry import register

__all__ = ["ADD_FUNCTIONS", "ARITHMETIC_FUNCTIONS"]

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
