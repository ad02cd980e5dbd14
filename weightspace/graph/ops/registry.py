"""The op registry: how the converter finds the handler of a traced operation.

A traced operation is written one of four ways, and each has a key: an ``nn.Module`` leaf (its
type), a Python function (``F.linear``, ``operator.add``), a ``Tensor`` method (``"view"``) or an
ATen operator under ``torch.export`` (``"linear"`` for ``aten.linear.default``). A handler is
registered under any number of keys with :func:`register`:

.. code-block:: python

    @register(aten=("hardtanh",), functions=(F.hardtanh,), core=True)
    def hardtanh(w, node, args, kwargs):
        return apply_activation(w, args[0], Activation.HARDTANH, w.label)

``w`` is the walker (:class:`weightspace.graph.trace.Walker`): ``w.b`` the
:class:`~weightspace.graph.builder.Builder`, ``w.label`` the label of new neurons, ``w.call_aten``
the ATen dispatch; ``node`` the traced ``torch.fx.Node`` (its static shapes through
:func:`~weightspace.graph.ops.common.node_shape`); ``args``/``kwargs`` the traced values of the
arguments (``Act``, ``Heads``, ``Param``, ``Meta``, ...). It returns the traced value of the
result, or :data:`NotImplemented` to pass the operation on. Module handlers are called as
``handler(w, node, module, path, args, kwargs)`` and match the module's type or, unless
registered with ``exact=True``, any subclass (the most specific registered class of its MRO wins).

Two tiers, one registry each, consulted in this order for every operation:

1. **idioms** (``core=False``): handlers of third-party idioms (masks, parameter tables indexed by
   position, fused q/k/v split in three axes, ...). They see every operation first and pass what
   is not theirs on with :data:`NotImplemented`.
2. **core** (``core=True``): the semantics of the operation itself (linear/conv, norms,
   attention, activations, shape ops, arithmetic). They run after the walker's common checks: an
   operation that touches no activation or parameter is a constant (``META``) and never reaches
   them.

A key has at most one handler per tier: registering a second raises at import, so that which
handler runs never depends on the order modules are imported in.

An operation that no handler takes and that touches an activation or a parameter is refused with
:class:`~weightspace.graph.errors.UnsupportedModuleError` naming it and the module that runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["CORE", "IDIOMS", "Handler", "ModuleHandler", "Registry", "register"]

Handler = Callable[[Any, torch.fx.Node, tuple, dict], Any]
ModuleHandler = Callable[[Any, torch.fx.Node, nn.Module, str, tuple, dict], Any]


@dataclass
class Registry:
    """Handlers by key: ATen name, Python callable, ``Tensor`` method name, module type."""

    aten: dict[str, Handler] = field(default_factory=dict)
    functions: dict[Any, Handler] = field(default_factory=dict)
    methods: dict[str, Handler] = field(default_factory=dict)
    #: module type -> (handler, exact): ``exact`` handlers match that type only, not subclasses
    modules: dict[type, tuple[ModuleHandler, bool]] = field(default_factory=dict)

    def function(self, fn: Any) -> Handler | None:
        """The handler of a Python callable (None for unhashable callables, e.g. bound methods of
        unhashable objects)."""
        try:
            return self.functions.get(fn)
        except TypeError:
            return None

    def module(self, mod: nn.Module) -> ModuleHandler | None:
        """The handler of the most specific registered class in ``type(mod).__mro__``."""
        for cls in type(mod).__mro__:
            entry = self.modules.get(cls)
            if entry is not None and (not entry[1] or cls is type(mod)):
                return entry[0]
        return None


#: third-party idioms, consulted first
IDIOMS = Registry()
#: the semantics of each operation, after the walker's common checks (one handler per key)
CORE = Registry()


def register(aten: tuple[str, ...] = (), functions: tuple[Any, ...] = (), methods: tuple[str, ...] = (),
             modules: tuple[type, ...] = (), exact: bool = False, core: bool = False):
    """Register a handler under ATen names, functions, ``Tensor`` method names and module types,
    in the idiom tier or (``core=True``) the core tier; see the module docstring."""
    reg = CORE if core else IDIOMS

    def put(table: dict, key: Any, value: Any, fn: Callable) -> None:
        if key in table:
            old = table[key][0] if isinstance(table[key], tuple) else table[key]
            raise RuntimeError(f"two {'core' if core else 'idiom'} handlers for {key!r}: "
                               f"{old.__module__}.{old.__qualname__} and {fn.__module__}.{fn.__qualname__}")
        table[key] = value

    def deco(fn: Any) -> Any:
        for n in aten:
            put(reg.aten, n, fn, fn)
        for f in functions:
            put(reg.functions, f, fn, fn)
        for m in methods:
            put(reg.methods, m, fn, fn)
        for t in modules:
            put(reg.modules, t, (fn, exact), fn)
        return fn

    return deco
