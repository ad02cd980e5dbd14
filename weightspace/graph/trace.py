"""Tracing: walk a module's traced computation and build the structure of its parameter graph.

``torch.fx.symbolic_trace`` needs no example input and serves plain models; with an example input
its shapes are propagated too. When symbolic tracing fails and an example input is given,
``torch.export.export(..., strict=False)`` traces the model to ATen operations instead. Each traced
operation is dispatched to its handler in the op registry (:mod:`weightspace.graph.ops`), which
builds the graph with :class:`~weightspace.graph.builder.Builder`; an operation that touches an
activation or a parameter and that no handler models raises
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

from . import ops
from .builder import (
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
from .vocab import NodeType

log = logging.getLogger(__name__)


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


class Walker:
    """Walks a traced graph and dispatches each operation to its handler in the op registry
    (:mod:`weightspace.graph.ops`), which builds the parameter graph with :class:`Builder`.

    Handlers read ``b`` (the builder), ``label`` (the label of neurons the current operation
    makes: the module running it under ``torch.export``, else the traced node's name) and ``op``
    (the key the operation was dispatched under: ATen or method name, or the Python callable)."""

    def __init__(self, b: Builder, gm: torch.fx.GraphModule | None):
        self.b = b
        self.gm = gm
        self.env: dict[torch.fx.Node, Any] = {}
        self.constants_seen: set[torch.fx.Node] = set()
        self.node_order: dict[torch.fx.Node, int] | None = None
        self.label = "<model>"
        self.op: Any = None

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
            if isinstance(x, (Act, Heads, Lazy, Param, Stat, ops.Transposed, _Scores, ops.Grid, ops.Stacked, ops.Folded, ops.MaskedParam)):
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
        others = [a for a in _flat(args, kwargs) if isinstance(a, (Act, Heads, Lazy, Param, Stat, ops.Transposed))]
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
            if self.only_measured(node, args, kwargs):
                self.env[node] = META  # only its shape is read
                continue
            res = self.dispatch(node, args, kwargs)
            if node.op == "call_module" or self._touches((args, kwargs)):
                self.record_constants(node)
            self.check_shape(node, res)
            self.env[node] = res
        return out

    def only_measured(self, node: torch.fx.Node, args: tuple, kwargs: dict) -> bool:
        """True when the operation only reads the shape of an :class:`~weightspace.graph.ops.Unusable`
        value; raises its error for any other use, and the error of a
        :class:`~weightspace.graph.ops.Folded` value for an operation other than a reshape."""
        dead = next((a for a in _flat(args, kwargs) if isinstance(a, ops.Unusable)), None)
        if dead is not None:
            if node.target in (getattr, "size", "dim") or aten_name(node.target) in ("sym_size", "size"):
                return True
            raise dead.error
        folded = next((a for a in _flat(args, kwargs) if isinstance(a, ops.Folded)), None)
        if folded is not None:
            op = aten_name(node.target) or (node.target if isinstance(node.target, str) else
                                            getattr(node.target, "__name__", ""))
            if op not in ops.FOLDED_OPS:
                raise folded.error or self.b.fail(f"{op} of features merged with other axes")
        return False

    def dispatch(self, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
        """Record the operation in the structural signature and compute its traced value: a leaf
        module by its handler; a method, ATen operator or function as attention scores
        (:meth:`scores`), else by its idiom handler, else by its core handler."""
        b = self.b
        if node.op == "call_module":
            mod = self.gm.get_submodule(node.target)
            b._where, b._kind = str(node.target), type(mod).__name__
            self.record_module(str(node.target), mod)
            return self.call_module(node, mod, str(node.target), args, kwargs)
        if node.op == "call_method":
            name = str(node.target)
            self.record_call(name, args, kwargs)
            res = self.idiom(name, ops.IDIOMS.methods.get(name), node, args, kwargs)
            return self.call_method(node, name, args, kwargs) if res is None else res
        name = aten_name(node.target)
        if name is not None:
            self.record_aten(node.target, name, args, kwargs)
            res = self.idiom(name, ops.IDIOMS.aten.get(name), node, args, kwargs)
            return self.call_aten(node, name, args, kwargs) if res is None else res
        fn = node.target
        self.record_call(getattr(fn, "__name__", str(fn)), args, kwargs, skip=fn in _DROPOUT_FUNCTIONS)
        scores_name = _MATMUL_FUNCTIONS.get(fn) or ("add" if fn in _ADD else getattr(fn, "__name__", ""))
        res = self.idiom(scores_name, ops.IDIOMS.function(fn), node, args, kwargs)
        return self.call_function(node, fn, args, kwargs) if res is None else res

    def idiom(self, name: str, handler: ops.Handler | None, node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
        """Attention scores (:meth:`scores`) or the idiom handler's value; None to go on to the
        core handler."""
        res = self.scores(name, args, kwargs)
        if res is None and handler is not None:
            res = handler(self, node, args, kwargs)
        return None if res is NotImplemented else res

    def check_shape(self, node: torch.fx.Node, res: Any) -> None:
        """An activation's number of neurons equals the size of its feature axis in the traced
        shape (when known); sets its rank when it was not known."""
        shape = _shape(node)
        if isinstance(res, Act) and shape is not None:
            if res.ndim is None:
                res.ndim = len(shape)
            feat_size = shape[res.ndim + res.feat] if -res.feat <= len(shape) else None
            if res.block == 1 and feat_size is not None and feat_size != len(res):
                raise self.b.fail(
                    f"internal shape check failed: {len(res)} nodes for a feature axis of size {feat_size}"
                )

    # -- nn.Module leaves -----------------------------------------------------------------
    def call_module(self, node: torch.fx.Node, mod: nn.Module, path: str, args: tuple, kwargs: dict) -> Any:
        """A leaf module: the handler registered for its type (idioms first, then core)."""
        for reg in (ops.IDIOMS, ops.CORE):
            h = reg.module(mod)
            res = h(self, node, mod, path, args, kwargs) if h is not None else NotImplemented
            if res is not NotImplemented:
                return res
        raise UnsupportedModuleError(
            f"module type {type(mod).__name__} is not supported by the converter", path=path,
            kind=type(mod).__name__,
        )

    # -- functions, methods, ATen: the core handlers --------------------------------------
    def call_function(self, node: torch.fx.Node, fn: Any, args: tuple, kwargs: dict) -> Any:
        self.label, self.op = node.name, fn
        if not self._touches((args, kwargs)):
            return META  # sizes, masks, constants: no neuron is involved
        h = ops.CORE.function(fn)
        res = h(self, node, args, kwargs) if h is not None else NotImplemented
        if res is NotImplemented:
            raise self.unsupported(getattr(fn, "__name__", str(fn)))
        return res

    def call_method(self, node: torch.fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        self.label, self.op = node.name, name
        if name in ("size", "dim", "numel", "__len__") or not self._touches((args, kwargs)):
            return META
        h = ops.CORE.methods.get(name)
        res = h(self, node, args, kwargs) if h is not None else NotImplemented
        if res is NotImplemented:
            raise self.unsupported(f"Tensor.{name}")
        return res

    def call_aten(self, node: torch.fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        """An ATen operation (``torch.export``); new neurons are labelled by the module that made
        them (e.g. ``"encoder.layer.0.attention.self.query"``)."""
        self.label = self.b._where if self.b._where != "<model>" else node.name
        self.op = name
        if not self._touches((args, kwargs)) or name in _NO_OP_ATEN:
            return META
        h = ops.CORE.aten.get(name)
        res = h(self, node, args, kwargs) if h is not None else NotImplemented
        if res is NotImplemented:
            raise self.unsupported(f"aten.{name}")
        return res


class _Scores:
    """Attention scores ``q @ k^T`` of query heads ``q`` and key heads ``k``; ``single``: one head
    held as activations; ``biases``: per-head score biases added to them."""

    def __init__(self, q: Heads, k: Heads, single: bool = False, biases: list | None = None,
                 scales: list | None = None):
        self.q, self.k, self.single, self.biases, self.scales = q, k, single, list(biases or []), list(scales or [])


_MATMUL_FUNCTIONS = {torch.matmul: "matmul", operator.matmul: "matmul", torch.bmm: "bmm"}
_ADD = ops.arithmetic.ADD_FUNCTIONS
_flat = ops.flat
ops.SCORE_TYPES.append(_Scores)
ops.TRACKED_TYPES.append(_Scores)


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


def _get_attr(gm: torch.fx.GraphModule | None, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part, None)
    return obj

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
    ops.check_parametrizations(model, None, "fx")
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
    out = Walker(b, gm).run(gm.graph, placeholders)
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
    ops.check_parametrizations(model, None, "export")
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
    walker = Walker(b, None)
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
