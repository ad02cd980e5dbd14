"""Tracing: walk a module's traced computation and build the structure of its parameter graph.

``torch.fx.symbolic_trace`` needs no example input and serves plain models; with an example input
its shapes are propagated too. When symbolic tracing fails and an example input is given,
``torch.export.export(..., strict=False)`` traces the model to ATen operations instead. Each traced
operation is handed to :class:`~weightspace.graph.builder.Builder`; an operation that touches an
activation or a parameter and that the builder does not model raises
:class:`~weightspace.graph.errors.UnsupportedModuleError` naming the module path.
"""

from __future__ import annotations

import contextlib
import logging
import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.node import map_aggregate
from torch.nn.utils import parametrize

from . import ops
from .builder import (
    ACT_ATEN,
    ACT_FUNCTIONS,
    ACT_METHODS,
    ACT_MODULES,
    IDENTITY_ATEN,
    IDENTITY_FUNCTIONS,
    IDENTITY_METHODS,
    IDENTITY_MODULES,
    META,
    Act,
    Builder,
    Heads,
    Lazy,
    Meta,
    Param,
    Stat,
    Structure,
    aten_name,
)
from .errors import UnsupportedModuleError
from .signature import IGNORED_FIELDS, fields, plain, tensor_digest
from .vocab import WEIGHT, Activation, NodeType

log = logging.getLogger(__name__)

_ADD = {operator.add, operator.iadd, torch.add}
_SUB = {operator.sub, operator.isub, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul}
_DIV = {operator.truediv, operator.itruediv, torch.div}
_CAT = {torch.cat, torch.concat, torch.concatenate}
_REDUCE_FN = {torch.mean: "mean", torch.sum: "sum", torch.amax: "amax"}
_REDUCE_METHODS = {"mean", "sum", "amax"}


def state_layout(model: nn.Module) -> tuple[dict[str, str], dict[str, tuple[int, ...]], dict[str, torch.Tensor]]:
    """State-dict keys -> canonical key (tied tensors map to their first key), shapes, tensors."""
    sd = model.state_dict(keep_vars=True)
    canonical: dict[str, str] = {}
    first: dict[int, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    for k, t in sd.items():
        c = first.setdefault(id(t), k)
        canonical[k] = c
        if c == k:
            tensors[k] = t
    shapes = {k: tuple(t.shape) for k, t in tensors.items()}
    return canonical, shapes, tensors


_shape = ops.node_shape  # the static shape of a traced node's value, if known


def _where(node: torch.fx.Node) -> tuple[str, str | None]:
    stack = node.meta.get("nn_module_stack")
    if stack:
        path, kind = list(stack.values())[-1]
        kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
        return (path or "<model>"), kind.rsplit(".", 1)[-1]
    return "<model>", None


class _Walker:
    """Dispatches traced nodes to the builder."""

    def __init__(self, b: Builder, gm: torch.fx.GraphModule | None):
        self.b = b
        self.gm = gm
        self.env: dict[torch.fx.Node, Any] = {}
        self.constants_seen: set[torch.fx.Node] = set()
        self.node_order: dict[torch.fx.Node, int] | None = None

    # -- helpers --------------------------------------------------------------------------
    def val(self, a: Any) -> Any:
        return map_aggregate(a, lambda n: self.env[n] if isinstance(n, torch.fx.Node) else n)

    def _in_shape(self, node: torch.fx.Node) -> tuple[int, ...] | None:
        src = node.args[0] if node.args else None
        return _shape(src) if isinstance(src, torch.fx.Node) else None

    @staticmethod
    def _touches(v: Any) -> bool:
        found = False

        def visit(x: Any) -> Any:
            nonlocal found
            if isinstance(x, (Act, Heads, Lazy, Param, Stat, _Transposed, _Scores, ops.Grid, ops.Stacked, ops.Folded, ops.MaskedParam)):
                found = True
            return x

        map_aggregate(v, visit)
        return found

    def unsupported(self, what: str) -> UnsupportedModuleError:
        return self.b.fail(f"operation {what} is not supported by the converter")

    # -- attention written with matrix products ------------------------------------------
    def scores(self, name: str, args: tuple, kwargs: dict) -> Any:
        """Attention written out: ``q @ k^T`` (heads of queries, heads of keys with units on the
        second-last axis) gives :class:`_Scores`; masking, scaling, softmax and dropout keep
        them; ``scores @ v`` is :meth:`Builder.attention`. None when the operation is not one
        of these."""
        if name in ops.PRODUCTS:  # other spellings of a matrix product, handled in weightspace.graph.ops
            return None
        found = [a for a in _flat(args, kwargs) if isinstance(a, _Scores)]
        if name in ("matmul", "bmm") and len(args) >= 2:
            a, v = args[0], args[1]
            if isinstance(a, Heads) and isinstance(v, Heads):
                if a.feat != -1 or v.feat != -2:
                    raise self.b.fail("matrix product of attention heads other than queries x keys^T")
                return _Scores(a, v)
            if (isinstance(a, Act) and isinstance(v, Act) and a.feat == -1 and v.feat == -2
                    and a.block == v.block == 1 and a.ndim is not None and a.ndim >= 3 and v.ndim == a.ndim):
                # one head: its head axis has size 1, so no reshape split the features
                return _Scores(ops.one_head(a), Heads(v.nodes[None, :], -3, -2, v.ndim, v.layer), single=True)
            if isinstance(a, _Scores) and (isinstance(v, Heads) or a.single and isinstance(v, Act)):
                res = self.b.attention(a.q, a.k, ops.one_head(v) if a.single else v, self.b.where_label(name))
                for bias in a.biases:
                    self.b.score_bias(a.q, bias)
                for scale in a.scales:
                    self.b.score_scale(a.q, scale, self.b.where_label(name))
                return Act(res.nodes.reshape(-1), v.feat, v.ndim, res.layer) if a.single else res
        if not found:
            return None
        others = [a for a in _flat(args, kwargs) if isinstance(a, (Act, Heads, Lazy, Param, Stat, _Transposed))]
        if others and name in ("add", "add_") and len(found) == 1 and len(others) == 1 \
                and isinstance(others[0], Act):
            s = found[0]  # a per-head bias looked up from a parameter table (relative position bias)
            return _Scores(s.q, s.k, s.single, s.biases + [others[0]], s.scales)
        if others and name in ("mul", "mul_") and len(found) == 1 and len(others) == 1 \
                and isinstance(others[0], Param) and math.prod(others[0].shape) == found[0].q.nodes.shape[0]:
            s = found[0]  # a learned per-head scale of the scores (Swin V2's logit scale)
            return _Scores(s.q, s.k, s.single, s.biases, s.scales + [others[0]])
        if others:
            raise self.b.fail(f"attention scores combined ('{name or 'matmul'}') with "
                              f"{type(others[0]).__name__} (a learned bias or another use of the scores)")
        return found[0]  # masks, scaling, softmax, dropout: the same scores

    # -- structural signature (see weightspace.graph.signature) ---------------------------
    def record(self, op: str, pairs: list[tuple[str, Any]], path: str | None = None) -> None:
        self.b.s.signature.append((path if path is not None else self.b._where, op, fields(pairs)))

    def record_module(self, path: str, mod: nn.Module) -> None:
        """A leaf module's hyperparameters (its ``__constants__``; dropout's ``p`` is not one)."""
        if isinstance(mod, _DROPOUT_MODULES):
            return
        names = [n for n in getattr(type(mod), "__constants__", ()) if n not in IGNORED_FIELDS]
        pairs = [(n, getattr(mod, n, None)) for n in names]
        if isinstance(mod, nn.MultiheadAttention):
            pairs.append(("num_heads", mod.num_heads))
        if isinstance(mod, nn.TransformerEncoderLayer):
            act = mod.activation
            pairs.append(("activation", type(act).__name__ if isinstance(act, nn.Module)
                          else getattr(act, "__name__", repr(act))))
            pairs += [(f"{n}.{k}", getattr(getattr(mod, n), k, None)) for n in ("norm1", "norm2") for k in ("eps",)]
            if isinstance(act, nn.Module):
                pairs += [(f"activation.{n}", getattr(act, n, None)) for n in getattr(type(act), "__constants__", ())
                          if n not in IGNORED_FIELDS]
        self.record(type(mod).__name__, pairs, path)

    def record_call(self, name: str, args: tuple, kwargs: dict, skip: bool = False) -> None:
        """A function or method applied to activations or parameters: its plain arguments."""
        if skip or not self._touches((args, kwargs)):
            return
        pairs = [(f"arg{i}", a) for i, a in enumerate(args)] + sorted(kwargs.items())
        self.record(name, pairs)

    def record_aten(self, target: Any, name: str, args: tuple, kwargs: dict) -> None:
        """An ATen operation on activations or parameters: its plain arguments by schema name
        (defaults filled in), except sizes taken from the example input."""
        if name in _DROPOUT_ATEN or name in _NO_OP_ATEN or not self._touches((args, kwargs)):
            return
        schema = getattr(target, "_schema", None)
        if schema is None:  # pragma: no cover - every aten overload has a schema
            self.record(name, [(f"arg{i}", a) for i, a in enumerate(args)] + sorted(kwargs.items()))
            return
        pairs = []
        for i, arg in enumerate(schema.arguments):
            if name in _SIZED_ATEN and arg.name in _SIZED_ATEN[name]:
                continue
            if i < len(args) and not arg.kwarg_only:
                v = args[i]
            elif arg.name in kwargs:
                v = kwargs[arg.name]
            elif arg.has_default_value():
                v = arg.default_value
            else:
                continue
            pairs.append((arg.name, v))
        self.record(f"aten.{name}", pairs)

    def record_constants(self, node: torch.fx.Node) -> None:
        """Constants computed inside ``forward`` that feed an operation on activations or
        parameters (relative-position buckets and their clamp distance, masks): every operation
        on the way, with its plain arguments (sizes from the example input left out), once, in
        the order they were computed."""
        found: list[torch.fx.Node] = []
        stack = list(node.all_input_nodes)
        while stack:  # the constant-valued operations upstream of ``node`` not recorded yet
            n = stack.pop()
            if n in self.constants_seen or n.op not in ("call_function", "call_method") \
                    or not isinstance(self.env.get(n), Meta):
                continue
            self.constants_seen.add(n)
            found.append(n)
            stack.extend(n.all_input_nodes)
        if not found:
            return
        if self.node_order is None:
            self.node_order = {n: i for i, n in enumerate(node.graph.nodes)}
        for n in sorted(found, key=self.node_order.__getitem__):
            self._record_constant(n)

    def _record_constant(self, n: torch.fx.Node) -> None:
        name = aten_name(n.target)
        args, kwargs = n.args, n.kwargs
        path = _where(n)[0]
        if name is None:
            label = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
            self.record(f"constant.{label}", [(f"arg{i}", a) for i, a in enumerate(args)] + sorted(kwargs.items()),
                        path)
            return
        if name in _NO_OP_ATEN or name in _DROPOUT_ATEN:
            return
        schema = getattr(n.target, "_schema", None)
        sized = _SIZED_ATEN.get(name, set()) | _CREATION_SIZED.get(name, set())
        pairs = []
        for i, arg in enumerate(schema.arguments if schema is not None else ()):
            if arg.name in sized:
                continue
            if i < len(args) and not arg.kwarg_only:
                pairs.append((arg.name, args[i]))
            elif arg.name in kwargs:
                pairs.append((arg.name, kwargs[arg.name]))
        self.record(f"constant.aten.{name}", pairs, path)

    def record_tensor(self, name: str, t: Any) -> None:
        """A tensor of the model outside its state dict (a non-persistent buffer, a constant)."""
        if isinstance(t, torch.Tensor):
            self.b.s.signature.append((name, "tensor", (("shape", plain(tuple(t.shape))), ("dtype", str(t.dtype)),
                                                          ("digest", tensor_digest(t)))))

    # -- main loop ------------------------------------------------------------------------
    def run(self, graph: torch.fx.Graph, placeholders: dict[str, Any]) -> Any:
        b = self.b
        out: Any = None
        for node in graph.nodes:
            b._where, b._kind = _where(node)
            if node.op == "placeholder":
                self.env[node] = placeholders[node.name]
                continue
            if node.op == "get_attr":
                p = b.param(str(node.target))
                if p is None:
                    self.record_tensor(str(node.target), _get_attr(self.gm, str(node.target)))
                self.env[node] = p if p is not None else META
                continue
            if node.op == "output":
                out = self.val(node.args[0])
                break
            args, kwargs = self.val(node.args), self.val(node.kwargs)
            dead = next((a for a in _flat(args, kwargs) if isinstance(a, ops.Unusable)), None)
            if dead is not None:
                if node.target in (getattr, "size", "dim") or aten_name(node.target) in ("sym_size", "size"):
                    self.env[node] = META  # only its shape is read
                    continue
                raise dead.error
            folded = next((a for a in _flat(args, kwargs) if isinstance(a, ops.Folded)), None)
            if folded is not None:
                op = aten_name(node.target) or (node.target if isinstance(node.target, str) else
                                                getattr(node.target, "__name__", ""))
                if op not in ops.FOLDED_OPS:
                    raise folded.error or b.fail(f"{op} of features merged with other axes")
            if node.op == "call_module":
                mod = self.gm.get_submodule(node.target)
                b._where, b._kind = str(node.target), type(mod).__name__
                self.record_module(str(node.target), mod)
                res = self.call_module(node, mod, str(node.target), args, kwargs)
            elif node.op == "call_method":
                self.record_call(str(node.target), args, kwargs)
                res = self.scores(str(node.target), args, kwargs)
                if res is None:
                    h = ops.METHODS.get(str(node.target))
                    res = h(self, node, args, kwargs) if h is not None else NotImplemented
                if res is None or res is NotImplemented:
                    res = self.call_method(node, str(node.target), args, kwargs)
            else:
                name = aten_name(node.target)
                if name is not None:
                    self.record_aten(node.target, name, args, kwargs)
                    res = self.scores(name, args, kwargs)
                    if res is None:
                        h = ops.ATEN.get(name)
                        res = h(self, node, args, kwargs) if h is not None else NotImplemented
                    if res is None or res is NotImplemented:
                        res = self.call_aten(node, name, args, kwargs)
                else:
                    fn = node.target
                    self.record_call(getattr(fn, "__name__", str(fn)), args, kwargs, skip=fn in _DROPOUT_FUNCTIONS)
                    res = self.scores(_MATMUL_FUNCTIONS.get(fn) or ("add" if fn in _ADD else getattr(fn, "__name__", "")),
                                      args, kwargs)
                    if res is None:
                        h = ops.FUNCTIONS.get(fn) if _hashable(fn) else None
                        res = h(self, node, args, kwargs) if h is not None else NotImplemented
                    if res is None or res is NotImplemented:
                        res = self.call_function(node, node.target, args, kwargs)
            if node.op == "call_module" or self._touches((args, kwargs)):
                self.record_constants(node)
            shape = _shape(node)
            if isinstance(res, Act) and shape is not None:
                if res.ndim is None:
                    res.ndim = len(shape)
                feat_size = shape[res.ndim + res.feat] if -res.feat <= len(shape) else None
                if res.block == 1 and feat_size is not None and feat_size != len(res):
                    raise b.fail(
                        f"internal shape check failed: {len(res)} nodes for a feature axis of size {feat_size}"
                    )
            self.env[node] = res
        return out

    # -- nn.Module leaves -----------------------------------------------------------------
    def call_module(self, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
        b = self.b
        p = lambda n: b.param(f"{path}.{n}")  # noqa: E731
        x = args[0] if args else kwargs.get("input")
        if parametrize.is_parametrized(mod):
            return self.weight_normed(mod, path, x)
        handler = ops.MODULES.get(type(mod))
        if handler is not None:
            return handler(self, node, mod, path, args, kwargs)
        if isinstance(mod, nn.RNNBase):
            raise UnsupportedModuleError(ops.RECURRENT_REASON.format(type(mod).__name__), path=path,
                                         kind=type(mod).__name__)
        if isinstance(mod, nn.Linear):
            return b.linear(x, p("weight"), p("bias"), label=path)
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            return b.conv(x, p("weight"), p("bias"), mod.groups, label=path)
        if isinstance(mod, _NORM_TYPES):
            return self.module_norm(mod, path, x, self._in_shape(node))
        if isinstance(mod, nn.Embedding):
            return b.embedding(x, p("weight"), label=path)
        if isinstance(mod, nn.MultiheadAttention):
            q = x if x is not None else kwargs.get("query")
            k = args[1] if len(args) > 1 else kwargs.get("key")
            v = args[2] if len(args) > 2 else kwargs.get("value")
            return (b.mha(mod, path, q, k, v), META)
        if isinstance(mod, nn.TransformerEncoderLayer):
            return self.encoder_layer(mod, path, x)
        if isinstance(mod, nn.TransformerEncoder):
            for i, layer in enumerate(mod.layers):
                x = self.encoder_layer(layer, f"{path}.layers.{i}", x)
            if mod.norm is not None:
                x = self.module_norm(mod.norm, f"{path}.norm", x, None)
            return x
        for cls, act in ACT_MODULES.items():
            if type(mod) is cls:
                if isinstance(mod, (nn.Softmax, nn.LogSoftmax)) and mod.dim is None:
                    raise b.fail("Softmax without an explicit dim")
                return self.activation(x, act, path)
        if isinstance(mod, IDENTITY_MODULES):
            return x
        if isinstance(mod, nn.Flatten):
            return b.reshape(x, self._in_shape(node), _shape(node), mod.start_dim, mod.end_dim)
        if isinstance(mod, nn.Unflatten):
            return b.reshape(x, self._in_shape(node), _shape(node))
        raise UnsupportedModuleError(
            f"module type {type(mod).__name__} is not supported by the converter", path=path,
            kind=type(mod).__name__,
        )

    def weight_normed(self, mod: nn.Module, path: str, x: Any) -> Any:
        """A ``Linear``/``Conv`` under ``weight_norm`` (``W = g * v / ||v||`` per output unit): the
        stored direction ``v`` (``original1``) are the layer's edges, the stored magnitude ``g``
        (``original0``, one per output unit) the ``weight`` feature of its output nodes."""
        b = self.b
        p = lambda n: b.param(f"{path}.{n}")  # noqa: E731
        _check_parametrizations(mod, path, "fx")
        v, g = p("parametrizations.weight.original1"), p("parametrizations.weight.original0")
        if isinstance(mod, nn.Linear):
            y = b.linear(x, v, p("bias"), label=path)
        else:
            y = b.conv(x, v, p("bias"), mod.groups, label=path)
        b.use(g, "weight_norm")
        self.record("parametrization", [("weight", "weight_norm"), ("dim", 0)], path)
        return b.write_nodes(y, [(WEIGHT, g)], f"{path}:weight_norm")

    def activation(self, x: Any, act: Activation, label: str) -> Any:
        if isinstance(x, (Lazy, Meta)):
            return x
        kind = (self.b._kind or "").lower()  # a decomposed activation module names what it computes
        if "gelu" in kind:
            act = Activation.GELU
        elif "silu" in kind or "swish" in kind:
            act = Activation.SILU
        return self.b.set_activation(self.b.as_act(x, what="activation"), act, label)

    def module_norm(self, mod: nn.Module, path: str, x: Any, in_shape: tuple | None) -> Any:
        b = self.b
        p = lambda n: b.param(f"{path}.{n}")  # noqa: E731
        if isinstance(x, Lazy):
            x = self._materialize_for_norm(mod, x, in_shape)
        if isinstance(mod, nn.LayerNorm) or (hasattr(nn, "RMSNorm") and isinstance(mod, nn.RMSNorm)):
            if len(mod.normalized_shape) != 1:
                raise b.fail("LayerNorm over more than the last axis is not supported")
            kind = "layer_norm" if isinstance(mod, nn.LayerNorm) else "rms_norm"
            return b.norm(x, kind, p("weight"), p("bias"), label=path)
        kind = type(mod).__name__
        return b.norm(x, kind, p("weight"), p("bias"), label=path, running_mean=p("running_mean"),
                      running_var=p("running_var"), num_batches=p("num_batches_tracked"), channel_first=True)

    def _materialize_for_norm(self, mod: nn.Module, x: Lazy, in_shape: tuple | None) -> Act:
        b = self.b
        if isinstance(mod, nn.LayerNorm) or (hasattr(nn, "RMSNorm") and isinstance(mod, nn.RMSNorm)):
            return b.materialize(x, mod.normalized_shape[-1], -1, len(in_shape) if in_shape else None)
        n = getattr(mod, "num_features", None) or getattr(mod, "num_channels", None)
        if in_shape is not None:
            nd = len(in_shape)
        elif isinstance(mod, (nn.BatchNorm2d, nn.InstanceNorm2d)):
            nd = 4
        elif isinstance(mod, nn.InstanceNorm1d):
            nd = 3
        else:
            nd = 2
        return b.materialize(x, n, 1 - nd, nd)

    def encoder_layer(self, layer: nn.TransformerEncoderLayer, path: str, x: Any) -> Any:
        b = self.b
        act = layer.activation
        if isinstance(act, nn.Module):
            kind = ACT_MODULES.get(type(act))
        else:
            kind = ACT_FUNCTIONS.get(act)
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
            x = b.combine(x, sa(self.module_norm(layer.norm1, f"{path}.norm1", x, None)), "add", f"{path}.add1")
            x = b.combine(x, ff(self.module_norm(layer.norm2, f"{path}.norm2", x, None)), "add", f"{path}.add2")
        else:
            x = self.module_norm(layer.norm1, f"{path}.norm1", b.combine(x, sa(x), "add", f"{path}.add1"), None)
            x = self.module_norm(layer.norm2, f"{path}.norm2", b.combine(x, ff(x), "add", f"{path}.add2"), None)
        return x

    # -- functions ------------------------------------------------------------------------
    def call_function(self, node: torch.fx.Node, fn: Any, args: tuple, kwargs: dict) -> Any:
        b = self.b
        label = node.name
        if fn is getattr and isinstance(args[0], Param) and args[1] in ("T", "mT") and len(args[0].shape) == 2:
            return _Transposed(args[0])
        if fn is getattr or not self._touches((args, kwargs)):
            return META  # sizes, masks, constants: no neuron is involved
        if fn in (operator.matmul, torch.matmul, torch.mm) and isinstance(args[1], (_Transposed, Param)):
            return self.call_aten(node, "matmul", args, kwargs)
        if fn is operator.getitem:
            return b.index(args[0], args[1])
        if fn in ACT_FUNCTIONS:
            return self.activation(args[0] if args else kwargs.get("input"), ACT_FUNCTIONS[fn], label)
        if fn in IDENTITY_FUNCTIONS:
            return args[0] if args else kwargs.get("input")
        if fn in _ELEMENTWISE_FUNCTIONS:  # x ** 2, torch.rsqrt(v + eps), ...: the same neurons
            return _first_tracked(args)
        if fn in _ADD:
            return b.combine(args[0], args[1], "add", label)
        if fn in _SUB:
            return b.combine(args[0], args[1], "sub", label)
        if fn in _MUL:
            return b.combine(args[0], args[1], "mul", label)
        if fn in _DIV:
            return b.combine(args[0], args[1], "div", label)
        if fn is F.linear:
            return b.linear(args[0], _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias"), label)
        if fn in (F.conv1d, F.conv2d):
            return b.conv(args[0], _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias"),
                          _arg(args, kwargs, 6, "groups", 1), label)
        if fn is F.layer_norm:
            shape = _arg(args, kwargs, 1, "normalized_shape")
            if len(shape) != 1:
                raise b.fail("layer_norm over more than the last axis is not supported")
            return b.norm(args[0], "layer_norm", _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias"),
                          label, size=int(shape[0]))
        if fn is F.batch_norm:
            return b.norm(args[0], "batch_norm", _arg(args, kwargs, 3, "weight"), _arg(args, kwargs, 4, "bias"),
                          label, running_mean=_arg(args, kwargs, 1, "running_mean"),
                          running_var=_arg(args, kwargs, 2, "running_var"), channel_first=True,
                          in_ndim=len(self._in_shape(node)) if self._in_shape(node) else None)
        if fn is F.scaled_dot_product_attention:
            return b.attention(args[0], args[1], args[2], label)
        if fn is F.embedding:
            return b.embedding(args[0], _arg(args, kwargs, 1, "weight"), label)
        if fn in _CAT:
            return b.cat(list(args[0]), _arg(args, kwargs, 1, "dim", 0), label)
        if fn is torch.flatten:
            return b.reshape(args[0], self._in_shape(node), _shape(node), _arg(args, kwargs, 1, "start_dim", 0),
                             _arg(args, kwargs, 2, "end_dim", -1))
        if fn is torch.reshape:
            return self._view(node, args[0], args[1:])
        if fn is torch.transpose:
            return b.transpose(args[0], args[1], args[2])
        if fn is torch.permute:
            return b.move_axes(args[0], list(args[1]))
        if fn is torch.linalg.vector_norm:
            return b.reduce(args[0], _arg(args, kwargs, 2, "dim"), _arg(args, kwargs, 3, "keepdim", False))
        if fn in _REDUCE_FN:
            return b.reduce(args[0], _arg(args, kwargs, 1, "dim"), _arg(args, kwargs, 2, "keepdim", False))
        if fn is torch.unsqueeze:
            return b.unsqueeze(args[0], args[1])
        if fn is torch.squeeze:
            return b.squeeze(args[0], _arg(args, kwargs, 1, "dim"), self._in_shape(node))
        if not self._touches((args, kwargs)):
            return META
        raise self.unsupported(getattr(fn, "__name__", str(fn)))

    def _view(self, node: torch.fx.Node, x: Any, shape_args: tuple) -> Any:
        b = self.b
        in_shape, out_shape = self._in_shape(node), _shape(node)
        if in_shape is not None and out_shape is not None:
            return b.reshape(x, in_shape, out_shape)
        shape = shape_args[0] if len(shape_args) == 1 and isinstance(shape_args[0], (tuple, list)) else shape_args
        if len(shape) == 2 and shape[1] == -1:
            return b.reshape(x, None, None, 1, -1)
        if isinstance(x, (Lazy, Meta)):
            return x
        raise b.fail("view/reshape needs shapes; pass example_input")

    def call_method(self, node: torch.fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        b = self.b
        x = args[0]
        label = node.name
        if name in ("size", "dim", "numel", "__len__") or not self._touches((args, kwargs)):
            return META
        if name in ACT_METHODS:
            return self.activation(x, ACT_METHODS[name], label)
        if name in IDENTITY_METHODS:
            return x
        if name in _ELEMENTWISE_ATEN:
            return _first_tracked(args)
        if name in ("view", "reshape"):
            return self._view(node, x, args[1:])
        if name in ("reshape_as", "view_as"):
            return b.reshape(x, self._in_shape(node), _shape(node))
        if name == "flatten":
            return b.reshape(x, self._in_shape(node), _shape(node), _arg(args, kwargs, 1, "start_dim", 0),
                             _arg(args, kwargs, 2, "end_dim", -1))
        if name == "transpose":
            return b.transpose(x, args[1], args[2])
        if name == "permute":
            dims = list(args[1]) if len(args) == 2 and isinstance(args[1], (tuple, list)) else list(args[1:])
            return b.move_axes(x, dims)
        if name in _REDUCE_METHODS:
            return b.reduce(x, _arg(args, kwargs, 1, "dim"), _arg(args, kwargs, 2, "keepdim", False))
        if name in ("expand", "expand_as"):
            return x if isinstance(x, (Param, Act, Lazy, Heads, Stat)) else META
        if name == "repeat":
            if isinstance(x, Heads):
                raise b.fail("repeating a tensor split into attention heads")
            return x if isinstance(x, (Param, Act, Lazy, Stat)) else META
        if name == "unsqueeze":
            return b.unsqueeze(x, args[1])
        if name == "squeeze":
            return b.squeeze(x, _arg(args, kwargs, 1, "dim"), self._in_shape(node))
        if name in ("add", "add_"):
            return b.combine(x, args[1], "add", label)
        if name in ("sub", "sub_"):
            return b.combine(x, args[1], "sub", label)
        if name in ("mul", "mul_"):
            return b.combine(x, args[1], "mul", label)
        if name in ("div", "div_"):
            return b.combine(x, args[1], "div", label)
        if not self._touches((args, kwargs)):
            return META
        raise self.unsupported(f"Tensor.{name}")

    # -- ATen (torch.export) --------------------------------------------------------------
    def call_aten(self, node: torch.fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        b = self.b
        # label new neurons by the module that made them (e.g. "encoder.layer.0.attention.self.query")
        label = b._where if b._where != "<model>" else node.name
        if not self._touches((args, kwargs)) or name in _NO_OP_ATEN:
            return META
        if name in _COMPARE_ATEN and isinstance(args[0], Lazy) and args[0].act is None:
            return META  # a mask or positions computed from token ids (e.g. RoBERTa's position ids)
        if name in ACT_ATEN:
            return self.activation(args[0], ACT_ATEN[name], label)
        if name in _ELEMENTWISE_ATEN:
            return _first_tracked(args)
        if name in IDENTITY_ATEN:
            res = args[0]
            return (res, META) if name.endswith("with_indices") else res
        if name == "linear":
            return b.linear(args[0], args[1], _arg(args, kwargs, 2, "bias"), label)
        if name in ("numpy_T", "t", "transpose", "permute") and isinstance(args[0], Param) \
                and len(args[0].shape) == 2:
            return _Transposed(args[0])  # ``x @ W.T`` written out (e.g. Falcon's linear layers)
        if name in ("matmul", "mm") and isinstance(args[1], (_Transposed, Param)):
            w = args[1]
            if isinstance(w, _Transposed):
                return b.linear(args[0], w.param, None, label)
            if len(w.shape) == 2:  # x @ W with W stored [in, out]
                return b.linear(args[0], w, None, label, transposed=True)
        if name == "addmm":  # bias + x @ W with W stored [in, out] (e.g. transformers' Conv1D)
            return b.linear(args[1], args[2], args[0], label, transposed=True)
        if name in ("split", "split_with_sizes", "chunk"):
            return b.split(args[0], args[1], _arg(args, kwargs, 2, "dim", 0), chunk=name == "chunk")
        if name in ("conv1d", "conv2d"):
            return b.conv(args[0], args[1], _arg(args, kwargs, 2, "bias"), _arg(args, kwargs, 6, "groups", 1), label)
        if name == "convolution":
            if args[6]:
                raise b.fail("transposed convolutions are not supported")
            return b.conv(args[0], args[1], args[2], args[8], label)
        if name in ("_native_batch_norm_legit_no_training", "batch_norm", "_native_batch_norm_legit"):
            if name == "batch_norm":
                x, w, bias, rm, rv = args[:5]
            else:
                x, w, bias, rm, rv = args[:5]
            nbt = None
            if isinstance(rm, Param) and rm.name.endswith("running_mean"):
                nbt = b.param(rm.name[: -len("running_mean")] + "num_batches_tracked")
            in_shape = self._in_shape(node)
            res = b.norm(x, "batch_norm", w, bias, label, running_mean=rm, running_var=rv, num_batches=nbt,
                         channel_first=True, in_ndim=len(in_shape) if in_shape else None)
            return res if name == "batch_norm" else (res, META, META)
        if name in ("layer_norm", "native_layer_norm"):
            shape = args[1]
            if len(shape) != 1:
                raise b.fail("layer_norm over more than the last axis is not supported")
            res = b.norm(args[0], "layer_norm", _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias"),
                         label, size=int(shape[0]))
            return res if name == "layer_norm" else (res, META, META)
        if name == "scaled_dot_product_attention":
            return b.attention(args[0], args[1], args[2], label)
        if name in ("group_norm", "native_group_norm"):
            w, bias = (args[2], args[3]) if name == "group_norm" else (args[1], args[2])
            in_shape = self._in_shape(node)
            res = b.norm(args[0], "group_norm", w, bias, label, channel_first=True,
                         in_ndim=len(in_shape) if in_shape else None)
            return res if name == "group_norm" else (res, META, META)
        if name == "embedding":
            return b.embedding(args[1], args[0], label)
        if name in ("add", "add_"):
            return b.combine(args[0], args[1], "add", label)
        if name in ("sub", "sub_", "rsub"):
            return b.combine(args[0], args[1], "sub", label)
        if name in ("mul", "mul_"):
            return b.combine(args[0], args[1], "mul", label)
        if name in ("div", "div_"):
            return b.combine(args[0], args[1], "div", label)
        if name == "linalg_vector_norm":  # a norm over some axes: a reduction (GRN's spatial norm)
            return b.reduce(args[0], _arg(args, kwargs, 2, "dim"), _arg(args, kwargs, 3, "keepdim", False))
        if name in ("view", "reshape", "_unsafe_view", "flatten", "unflatten", "reshape_as", "view_as"):
            return b.reshape(args[0], self._in_shape(node), _shape(node))
        if name == "transpose":
            return b.transpose(args[0], args[1], args[2])
        if name == "t":
            return b.transpose(args[0], -2, -1)
        if name == "permute":
            return b.move_axes(args[0], list(args[1]))
        if name in ("mean", "sum", "amax"):
            return b.reduce(args[0], _arg(args, kwargs, 1, "dim"), _arg(args, kwargs, 2, "keepdim", False))
        if name == "cat":
            return b.cat(list(args[0]), _arg(args, kwargs, 1, "dim", 0), label)
        if name == "select":
            in_shape = self._in_shape(node)
            nd = len(in_shape) if in_shape else None
            if nd is None:
                raise b.fail("select without shapes")
            d = args[1] % nd
            return b.index(args[0], tuple([slice(None)] * d + [0]))
        if name == "slice":
            in_shape = self._in_shape(node)
            if in_shape is None:
                raise b.fail("slice without shapes")
            d = _arg(args, kwargs, 1, "dim", 0) % len(in_shape)
            start = _arg(args, kwargs, 2, "start", None)
            end = _arg(args, kwargs, 3, "end", None)
            step = _arg(args, kwargs, 4, "step", 1)
            end = None if end is not None and end >= in_shape[d] else end
            sl = slice(start if start else None, end, step if step != 1 else None)
            return b.index(args[0], tuple([slice(None)] * d + [sl]))
        if name in ("expand", "expand_as"):
            return args[0] if isinstance(args[0], (Param, Act, Lazy, Heads, Stat)) else META
        if name == "repeat":
            if isinstance(args[0], Heads):
                raise b.fail("repeating a tensor split into attention heads")
            return args[0] if isinstance(args[0], (Param, Act, Lazy, Stat)) else META
        if name == "unsqueeze":
            return b.unsqueeze(args[0], args[1])
        if name == "squeeze":
            return b.squeeze(args[0], args[1] if len(args) > 1 else None, self._in_shape(node))
        if not self._touches((args, kwargs)):
            return META
        raise self.unsupported(f"aten.{name}")


# element-wise functions of one activation: no parameter, no new neuron (pieces of decomposed
# activations and normalizations)
_ELEMENTWISE_ATEN = {"pow", "rsqrt", "sqrt", "exp", "log", "neg", "abs", "square", "reciprocal", "erf", "cos",
                     "sin", "clamp", "clamp_min", "clamp_max"}
_COMPARE_ATEN = {"eq", "ne", "lt", "le", "gt", "ge"}
_ELEMENTWISE_FUNCTIONS = {torch.pow, torch.rsqrt, torch.sqrt, torch.exp, torch.log, torch.neg, torch.abs,
                          torch.square, torch.reciprocal, torch.erf, operator.pow, operator.neg, operator.abs}


class _Scores:
    """Attention scores ``q @ k^T`` of query heads ``q`` and key heads ``k``; ``single``: one head
    held as activations; ``biases``: per-head score biases added to them."""

    def __init__(self, q: Heads, k: Heads, single: bool = False, biases: list | None = None,
                 scales: list | None = None):
        self.q, self.k, self.single, self.biases, self.scales = q, k, single, list(biases or []), list(scales or [])


def _hashable(fn: Any) -> bool:
    try:
        hash(fn)
    except TypeError:
        return False
    return True


def _flat(args: tuple, kwargs: dict) -> list:
    out: list = []
    map_aggregate((args, kwargs), lambda v: out.append(v) or v)
    return out


_MATMUL_FUNCTIONS = {torch.matmul: "matmul", operator.matmul: "matmul", torch.bmm: "bmm"}
ops.SCORE_TYPES.append(_Scores)
ops.TRACKED_TYPES.append(_Scores)


class _Transposed:
    """A 2-D parameter transposed (``W.T``) on its way into a matrix product."""

    def __init__(self, param: Param):
        self.param = param


ops.TRACKED_TYPES.append(_Transposed)


def _first_tracked(args: tuple) -> Any:
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


#: sizes of tensors created inside ``forward`` (from the example input under torch.export)
_CREATION_SIZED = {"arange": {"end"}, "full": {"size"}, "zeros": {"size"}, "ones": {"size"}, "empty": {"size"},
                   "rand": {"size"}, "randn": {"size"}, "ones_like": set(), "zeros_like": set()}
_NO_OP_ATEN = {"_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size", "_assert_async"}

# not in the structural signature: dropout acts only in training
_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout}
_DROPOUT_ATEN = {"dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "native_dropout",
                 "dropout_", "feature_dropout_", "alpha_dropout_", "feature_alpha_dropout_"}  # in place: nn.Dropout(inplace=True)
#: ATen arguments that hold sizes of the example input under torch.export (left out of the signature)
_SIZED_ATEN = {"view": {"size"}, "reshape": {"shape"}, "_unsafe_view": {"size"}, "expand": {"size"},
               "slice": {"start", "end"}, "select": {"index"}, "unflatten": {"sizes"}, "repeat": {"repeats"},
               "new_zeros": {"size"}, "new_ones": {"size"}, "new_empty": {"size"}, "new_full": {"size"}}


def _check_parametrizations(model: nn.Module, root: str | None, tracer: str) -> None:
    """Refuse parametrizations the converter cannot represent, naming the module and the
    parametrization: every one but ``weight_norm`` (``dim=0``) of a ``Linear``/``Conv1d``/``Conv2d``
    weight under symbolic tracing. ``spectral_norm`` keeps power-iteration vectors (``_u``, ``_v``)
    and ``orthogonal`` a ``base`` that have no place on the neurons or connections of the layer."""
    mods = [(root, model)] if root is not None else list(model.named_modules())
    for path, mod in mods:
        if not parametrize.is_parametrized(mod):
            continue
        where = path or "<model>"
        for tensor, plist in mod.parametrizations.items():
            kinds = [type(q).__name__ for q in plist]
            name = f"{'+'.join(kinds)} on {tensor!r}"
            ok = (tensor == "weight" and kinds == ["_WeightNorm"] and getattr(plist[0], "dim", None) == 0
                  and isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d)))
            if not ok:
                raise UnsupportedModuleError(
                    f"parametrization {name} is not supported (only weight_norm with dim=0 on a Linear or "
                    "Conv weight is); remove it before converting (torch.nn.utils.parametrize."
                    "remove_parametrizations(module, name, leave_parametrized=True)) or convert the layer "
                    "without it", path=where, kind=type(mod).__name__)
            if tracer == "export":
                raise UnsupportedModuleError(
                    f"parametrization {name} is only supported under torch.fx symbolic tracing; convert without "
                    "example_input (or tracer='fx')", path=where, kind=type(mod).__name__)


def _get_attr(gm: torch.fx.GraphModule | None, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part, None)
    return obj

_NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _as_tuple(example_input: Any) -> tuple:
    """Positional inputs; a dict (keyword inputs, e.g. a tokenizer's output) stays one element."""
    if example_input is None:
        return ()
    return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)


def trace_structure(model: nn.Module, example_input: Any = None, tracer: str = "auto"
                    ) -> tuple[Structure, dict[str, str], dict]:
    """Trace ``model`` and return its graph structure, the state-dict key -> canonical key map and
    the canonical tensors.

    ``tracer``: ``"auto"`` (symbolic tracing, ``torch.export`` if that fails and an example input
    is given), ``"fx"`` or ``"export"`` (needs ``example_input``).
    """
    if tracer not in ("auto", "fx", "export"):
        raise ValueError(f"tracer must be 'auto', 'fx' or 'export', got {tracer!r}")
    canonical, shapes, tensors = state_layout(model)
    _check_integer_buffers(tensors)
    _check_parametrizations(model, None, "fx")
    b = Builder(model, canonical, shapes)
    inputs = _as_tuple(example_input)
    if tracer == "auto" and len(inputs) == 1 and isinstance(inputs[0], dict):
        tracer = "export"  # keyword inputs (e.g. a tokenizer's output): only export takes them
    if tracer == "export":
        if not inputs:
            raise ValueError("tracer='export' needs example_input")
        return _trace_export(model, b, inputs, canonical, tensors)
    root = model
    if _is_leaf_type(model):
        # fx traces *through* the root module; wrap a bare leaf (e.g. a TransformerEncoderLayer)
        # so that it is seen as one call, and strip the wrapper's prefix from parameter names.
        root = _wrap(model)
        b.strip_prefix = "inner."
    try:
        with _eval_mode(model), _type_tests_on_proxies() as type_tests:
            gm = torch.fx.symbolic_trace(root)
    except Exception as exc:  # noqa: BLE001 - any tracing failure falls back or is reported
        if not inputs or tracer == "fx":
            raise UnsupportedModuleError(
                f"torch.fx.symbolic_trace cannot trace this model ({type(exc).__name__}: {exc}); "
                "pass example_input=... so that torch.export can trace it",
                path=type(model).__name__,
            ) from exc
        log.info("symbolic tracing failed (%s); tracing with torch.export", exc)
        return _trace_export(model, b, inputs, canonical, tensors)
    if type_tests and not inputs:
        raise UnsupportedModuleError(
            "forward tests torch.jit.isinstance on a traced tensor, which is False for the fx Proxy that symbolic "
            "tracing passes, so the traced graph may follow another branch than the forward pass; pass "
            "example_input=... (the trace is then checked against the forward pass, and torch.export used if "
            "they differ)", path=type_tests[0].removeprefix(b.strip_prefix) or type(model).__name__)
    if inputs:
        disagreement = _fx_disagrees(model, gm, inputs)
        if disagreement is not None:
            if tracer == "fx":
                raise UnsupportedModuleError(
                    f"torch.fx.symbolic_trace records another computation than the forward pass ({disagreement}); "
                    "trace with tracer='auto' or 'export'", path=type(model).__name__)
            log.info("the symbolic trace differs from the forward pass (%s); tracing with torch.export", disagreement)
            return _trace_export(model, b, inputs, canonical, tensors)
    placeholders = {}
    for i, n in enumerate(n for n in gm.graph.nodes if n.op == "placeholder"):
        lazy = Lazy(i, n.name)
        b.inputs.append(lazy)
        placeholders[n.name] = lazy
    b.s.signature.append(("<model>", "tracer", (("name", "fx"),)))
    out = _Walker(b, gm).run(gm.graph, placeholders)
    _finish(b, out, canonical)
    return b.s, canonical, tensors


@contextlib.contextmanager
def _type_tests_on_proxies():
    """While symbolic tracing: the module paths where ``torch.jit.isinstance`` is asked about an fx
    ``Proxy`` (directly or inside a list/tuple/dict); its answer there is not the forward pass's."""
    found: list[str] = []
    original = torch.jit.isinstance

    def watched(obj: Any, target_type: Any) -> Any:
        proxies: list[torch.fx.Proxy] = []
        map_aggregate(obj, lambda v: proxies.append(v) if isinstance(v, torch.fx.Proxy) else v)
        if proxies:
            stack = getattr(proxies[0].tracer, "module_stack", None) or {}
            found.append(next(reversed(stack), "") if stack else "")
        return original(obj, target_type)

    torch.jit.isinstance = watched
    try:
        yield found
    finally:
        torch.jit.isinstance = original


def _fx_disagrees(model: nn.Module, gm: torch.fx.GraphModule, inputs: tuple) -> str | None:
    """Run the symbolic trace ``gm`` on ``inputs`` with shape propagation, and the model itself
    (same random seed, evaluation mode, no gradients); None when the outputs agree, else what went
    wrong. Symbolic tracing follows the branches a ``Proxy`` takes, which can differ from the real
    forward pass (``torch.jit.isinstance(x, torch.Tensor)`` is False for a ``Proxy``, MONAI's
    ``UpCat``), so the traced graph is trusted only if it computes what the model computes."""
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad(), _eval_mode(model), torch.random.fork_rng():  # no BatchNorm statistics touched
        copies = lambda: [t.clone() if isinstance(t, torch.Tensor) else t for t in inputs]  # noqa: E731 - in-place forwards
        torch.manual_seed(0)
        try:
            traced = ShapeProp(gm).propagate(*copies())
        except Exception as exc:  # noqa: BLE001 - a failing trace is a disagreement, reported by name
            where = _failing_module(exc)
            return f"running it fails{where}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        torch.manual_seed(0)
        try:
            real = model(*copies())
        except Exception as exc:  # noqa: BLE001
            return f"the model's own forward pass fails: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    got, want = _leaves(traced), _leaves(real)
    if len(got) != len(want):
        return f"{len(got)} output tensors, the model returns {len(want)}"
    for i, (a, c) in enumerate(zip(got, want)):
        if a.shape != c.shape or a.dtype != c.dtype or not torch.allclose(a, c, rtol=1e-4, atol=1e-5, equal_nan=True):
            return f"output {i} differs"
    return None


def _failing_module(exc: Exception) -> str:
    """`` at 'path'``: the module of the node whose shape propagation failed (named in the message)."""
    text = str(exc)
    if "target=" not in text:
        return ""
    return f" at {text.split('target=', 1)[1].split(']', 1)[0].split('(', 1)[0]!r}"


def _leaves(out: Any) -> list[torch.Tensor]:
    """Every tensor of a (nested) output, in order."""
    found: list[torch.Tensor] = []
    map_aggregate(out, lambda v: found.append(v) if isinstance(v, torch.Tensor) else v)
    if not found and hasattr(out, "to_tuple"):
        return _leaves(out.to_tuple())
    return [t.float() if t.is_floating_point() else t for t in found]


def _check_integer_buffers(tensors: dict[str, torch.Tensor]) -> None:
    """Refuse, before tracing, a state dict holding an integer or boolean tensor of one or more
    dimensions (e.g. MONAI's ``relative_position_index``, a persistent buffer): the graph stores
    floating-point values and 0-d counters (``num_batches_tracked``) only."""
    for k, t in tensors.items():
        if not t.is_floating_point() and not t.is_complex() and t.dim() > 0:
            raise UnsupportedModuleError(
                f"buffer {k!r} ({t.dtype}, shape {tuple(t.shape)}) is saved in the state dict, but a parameter "
                "graph stores floating-point tensors and 0-d counters only, so it cannot be written back; a "
                "buffer registered with persistent=False is a constant of the structural signature instead",
                path=k.rsplit(".", 1)[0])


def _trace_export(model: nn.Module, b: Builder, inputs: tuple, canonical: dict, tensors: dict):
    _check_parametrizations(model, None, "export")
    kwargs = {}
    if isinstance(inputs, tuple) and len(inputs) == 1 and isinstance(inputs[0], dict):
        kwargs, inputs = dict(inputs[0]), ()
    config = getattr(model, "config", None)
    if getattr(config, "use_cache", None):  # Hugging Face models: no key/value cache objects in the output
        kwargs.setdefault("use_cache", False)
    try:
        with _eval_mode(model):
            ep = torch.export.export(model, inputs, kwargs=kwargs or None, strict=False)
    except Exception as exc:
        raise UnsupportedModuleError(
            f"neither torch.fx.symbolic_trace nor torch.export can trace this model: {exc}",
            path=type(model).__name__,
        ) from exc
    sig = ep.graph_signature
    placeholders: dict[str, Any] = {}
    b.s.signature.append(("<model>", "tracer", (("name", "export"),)))
    walker = _Walker(b, None)
    constants = getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {}
    k = 0
    for n in ep.graph.nodes:
        if n.op != "placeholder":
            continue
        if n.name in sig.inputs_to_parameters:
            placeholders[n.name] = b.param(sig.inputs_to_parameters[n.name]) or META
        elif n.name in sig.inputs_to_buffers:
            buf = sig.inputs_to_buffers[n.name]
            placeholders[n.name] = b.param(buf) or META
            if b.param(buf) is None:  # a non-persistent buffer: its values are part of the function
                walker.record_tensor(buf, ep.constants.get(buf, _get_attr(model, buf)))
        elif n.name in constants:
            placeholders[n.name] = META
            walker.record_tensor("<constant>", ep.constants.get(constants[n.name]))
        elif n.name in getattr(sig, "user_inputs", []) and not isinstance(n.meta.get("val"), (bool, int, float)):
            lazy = Lazy(k, n.name)
            k += 1
            b.inputs.append(lazy)
            placeholders[n.name] = lazy
        else:
            placeholders[n.name] = META
    out = walker.run(ep.graph, placeholders)
    _finish(b, out, canonical)
    return b.s, canonical, tensors


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode for the duration of a traced forward; every module's flag is restored after."""
    modes = {m: m.training for m in model.modules()}
    # train(True) first: modules that cache tensors derived from their parameters in evaluation
    # mode (LeViT's attention-bias cache) drop them when switched to training, so that the trace
    # reads the parameters and not a stale copy; and again after, so that nothing computed
    # while tracing stays cached
    model.train(True)
    model.eval()
    try:
        yield
    finally:
        model.train(True)
        for m, t in modes.items():
            m.training = t


class _Wrap1(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: Any) -> Any:
        return self.inner(x)


class _Wrap3(_Wrap1):
    def forward(self, q: Any, k: Any, v: Any) -> Any:
        return self.inner(q, k, v)


def _wrap(model: nn.Module) -> nn.Module:
    import inspect

    params = inspect.signature(model.forward).parameters.values()
    required = [p for p in params if p.default is inspect.Parameter.empty and p.kind == p.POSITIONAL_OR_KEYWORD]
    return _Wrap3(model) if len(required) == 3 else _Wrap1(model)


def _is_leaf_type(model: nn.Module) -> bool:
    mod = type(model).__module__
    return (mod.startswith("torch.nn") or mod.startswith("torch.ao.nn")) and not isinstance(model, nn.Sequential)


def _finish(b: Builder, out: Any, canonical: dict[str, str]) -> None:
    """Mark output neurons and check that every parameter and buffer found a place."""
    pos = 0

    def mark(v: Any) -> Any:
        nonlocal pos
        if isinstance(v, ops.Unusable):
            raise v.error
        if isinstance(v, Act):
            for i in v.nodes.tolist():
                b.s.node_type[i] = int(NodeType.OUTPUT)
                b.s.node_pos[i] = pos
                pos += 1
            b.s.groups.setdefault("output", v.nodes)
        return v

    map_aggregate(out, mark)
    missing = [c for c in dict.fromkeys(canonical.values()) if c not in b.used]
    if missing:
        raise UnsupportedModuleError(
            f"{len(missing)} parameter(s)/buffer(s) are not used by an operation the converter models "
            f"(first: {missing[0]!r}); nothing may be dropped silently. If the forward pass reads it only for "
            "some inputs (e.g. a mask token used when bool_masked_pos is given), pass an example_input that "
            "takes that path (the converter then models it or names the operation it cannot)",
            path=missing[0].rsplit(".", 1)[0],
        )
