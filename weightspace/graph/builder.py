"""The semantics of each operation on the parameter graph's structure.

:mod:`weightspace.graph.trace` walks a traced computation and the op handlers
(:mod:`weightspace.graph.ops`) call :class:`Builder` methods for each operation. Every tensor
flowing through the network is tracked as the *group of graph nodes* along its feature axis
(:class:`Act`), so connectivity is what the computation does — skip connections, concatenations
and nested blocks included — not the order of ``named_parameters()``. Each parametric operation
adds nodes and edges and records, for every node or edge feature, which scalar of which parameter
it holds. :mod:`weightspace.graph.spec` turns those records into gather/scatter index maps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .errors import UnsupportedModuleError
from .vocab import BIAS, RUNNING_MEAN, RUNNING_VAR, SHIFT, WEIGHT, Activation, EdgeType, NodeType

log = logging.getLogger(__name__)

_I32 = torch.int32

# ----------------------------------------------------------------------------- values


@dataclass
class Act:
    """An activation tensor, seen as the graph nodes along its feature axis.

    ``feat`` is the feature axis counted from the end (negative), ``ndim`` the rank when known.
    ``block`` > 1 after flattening a channel-first map: each channel owns ``block`` consecutive
    features (``None``: not known yet, fixed by the consuming linear layer).
    """

    nodes: Tensor
    feat: int
    ndim: int | None
    layer: int
    block: int | None = 1
    #: nodes along the last axis when the features are on another one and a layer applied along
    #: the last axis made them (token-mixing units), else None
    tok: Tensor | None = None

    def __len__(self) -> int:
        return int(self.nodes.numel())


@dataclass
class Heads:
    """An activation whose feature axis was split into ``(heads, units per head)`` (multi-head
    attention written with ``view``/``transpose``): ``nodes[h, i]`` is unit ``i`` of head ``h``;
    ``head`` and ``feat`` are the two axes counted from the end."""

    nodes: Tensor
    head: int
    feat: int
    ndim: int
    layer: int


@dataclass
class Lazy:
    """A network input whose nodes are made by its first parametric consumer (which knows their
    number and layout)."""

    index: int
    name: str
    act: Act | None = None
    as_tokens: bool = False


@dataclass
class Param:
    """A parameter or buffer from the state dict (canonical name) as it enters an operation."""

    name: str
    shape: tuple[int, ...]


@dataclass
class Stat:
    """A per-example statistic over the features of ``nodes`` kept broadcastable along the
    feature axis (``x.pow(2).mean(-1, keepdim=True)`` and what follows it in a normalization
    written out by hand, e.g. transformers' ``LlamaRMSNorm``). Combined element-wise with the
    activation it was computed from, it leaves that activation's neurons as they are: like a
    normalization module, it is structure, not a parameter."""

    nodes: Tensor


class Meta:
    """Anything that is not an activation or a parameter: sizes, constants, masks."""

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "Meta"


META = Meta()


@dataclass
class EdgeBlock:
    """Edges added by one operation, holding parameter ``param``: edge ``e`` holds the flat
    positions ``index[e]`` (row-major over its true kernel ``kh x kw``), or, when ``index`` is None,
    the contiguous range ``offset + e*kh*kw + [0, kh*kw)`` — the case of every dense layer, whose
    edges are enumerated in the weight's memory order. Structural edges (``param`` None) carry
    ``value`` at the kernel centre."""

    src: Tensor
    dst: Tensor
    etype: int | Tensor  # one type, or one per edge
    kh: int
    kw: int
    param: str | None = None
    index: Tensor | None = None
    value: float = 1.0
    offset: int = 0
    dst_range: tuple[int, int] = (0, -1)  # (min, max) of ``dst``, set by Builder.add_edges


@dataclass
class NodeBlock:
    """Node features written by one parameter: ``param.flatten()[index[i]]`` goes to column
    ``col`` of node ``nodes[i]``."""

    nodes: Tensor
    col: int
    param: str
    index: Tensor


@dataclass
class Structure:
    """What tracing found: nodes, edges and where every parameter scalar goes."""

    node_type: list[int] = field(default_factory=list)
    node_layer: list[int] = field(default_factory=list)
    node_pos: list[int] = field(default_factory=list)
    node_act: list[int] = field(default_factory=list)
    node_slots: list[int] = field(default_factory=list)  # bitmask of used feature columns
    edge_blocks: list[EdgeBlock] = field(default_factory=list)
    node_blocks: list[NodeBlock] = field(default_factory=list)
    scalars: list[str] = field(default_factory=list)
    groups: dict[str, Tensor] = field(default_factory=dict)
    #: structural signature entries ``(path, op, ((field, value), ...))``, see
    #: :mod:`weightspace.graph.signature`
    signature: list[tuple] = field(default_factory=list)

    @property
    def num_nodes(self) -> int:
        return len(self.node_type)


def aten_name(target: Any) -> str | None:
    """``aten.relu.default`` -> ``relu``; None for anything that is not an aten overload."""
    name = getattr(target, "name", None)
    if not callable(name):
        return None
    try:
        full = target.name()  # e.g. "aten::relu" for OpOverload
    except Exception:  # pragma: no cover
        return None
    if not full.startswith("aten::"):
        return None
    return full[len("aten::") :].split(".")[0]


# ----------------------------------------------------------------------------- builder


class Builder:
    """Interprets a traced graph and accumulates a :class:`Structure`.

    Args:
        model: the module being converted.
        canonical: state-dict key -> canonical key (tied tensors share one canonical key).
        shapes: state-dict key -> shape.
    """

    def __init__(self, model: nn.Module, canonical: dict[str, str], shapes: dict[str, tuple[int, ...]]):
        self.model = model
        self.canonical = canonical
        self.shapes = shapes
        self.s = Structure()
        self.used: dict[str, str] = {}
        self.inputs: list[Lazy] = []
        self._input_pos = 0
        self._where = "<model>"
        self._kind: str | None = None
        self.strip_prefix = ""  # set when the root module was wrapped to be traced as a leaf
        self.tables: dict[str, tuple[Tensor, Tensor]] = {}  # embedding weight -> (row nodes, unit nodes)
        self.rotary_nodes: set[int] = set()  # units mixed by a rotary position embedding
        #: parameter -> (input nodes or None, nodes holding it) of its first use, for layers applied
        #: more than once (shared weights, e.g. ALBERT's one layer run at every depth)
        self.homes: dict[str, tuple[Tensor | None, Tensor]] = {}

    # -- errors / bookkeeping -------------------------------------------------------------
    def fail(self, message: str) -> UnsupportedModuleError:
        return UnsupportedModuleError(message, path=self._where, kind=self._kind)

    def where_label(self, fallback: str) -> str:
        """The path of the module running the current operation (``fallback`` at the top level)."""
        return self._where if self._where != "<model>" else fallback

    def use(self, p: Param | None, op: str) -> None:
        if p is None:
            return
        if not isinstance(p, Param):
            raise self.fail(f"{op}: expected a parameter of the model, got a computed tensor")
        if p.name in self.used:
            raise self.fail(
                f"parameter {p.name!r} is used by two operations ({self.used[p.name]} and {op}); "
                "shared weights are supported only for a whole Linear layer, normalization or embedding "
                "applied again"
            )
        self.used[p.name] = op

    def param(self, name: str | None) -> Param | None:
        if name is not None and self.strip_prefix and name.startswith(self.strip_prefix):
            name = name[len(self.strip_prefix):]
        if name is None or name not in self.canonical:
            return None
        c = self.canonical[name]
        return Param(c, self.shapes[c])

    # -- nodes ----------------------------------------------------------------------------
    def new_nodes(self, n: int, ntype: NodeType, layer: int, pos: bool = False, label: str | None = None) -> Tensor:
        start = self.s.num_nodes
        self.s.node_type += [int(ntype)] * n
        self.s.node_layer += [layer] * n
        self.s.node_pos += list(range(n)) if pos else [-1] * n
        self.s.node_act += [0] * n
        self.s.node_slots += [0] * n
        ids = torch.arange(start, start + n)
        if label is not None:
            key, k = label, 1
            while key in self.s.groups:
                k += 1
                key = f"{label}#{k}"
            self.s.groups[key] = ids
        return ids

    def add_edges(self, block: EdgeBlock) -> None:
        block.src, block.dst = block.src.to(_I32), block.dst.to(_I32)  # node ids < 2**31; half the memory
        if block.dst.numel():
            block.dst_range = (int(block.dst.min()), int(block.dst.max()))
        self.s.edge_blocks.append(block)

    def _slots_free(self, nodes: Tensor, cols: list[int]) -> bool:
        mask = sum(1 << c for c in cols)
        slots = self.s.node_slots
        return not any(slots[i] & mask for i in nodes.tolist())

    def copy_group(self, x: Act, label: str) -> Act:
        """New nodes fed one-to-one from ``x`` (``IDENTITY`` edges), used when a second
        per-neuron operation would overwrite the features of ``x``'s nodes."""
        new = self.new_nodes(len(x), NodeType.HIDDEN, x.layer + 1, label=label)
        self.add_edges(EdgeBlock(x.nodes.clone(), new, EdgeType.IDENTITY, 1, 1))
        return Act(new, x.feat, x.ndim, x.layer + 1, x.block)

    def write_nodes(self, x: Act, entries: list[tuple[int, Param | None]], label: str) -> Act:
        """Store per-neuron vectors (bias, norm scale/shift, running stats) on ``x``'s nodes."""
        entries = [(c, p) for c, p in entries if p is not None]
        if not entries:
            return x
        if x.block not in (1,):
            raise self.fail("a per-neuron parameter is applied to a flattened feature map")
        if not self._slots_free(x.nodes, [c for c, _ in entries]):
            x = self.copy_group(x, label)
        n = len(x)
        for col, p in entries:
            if math.prod(p.shape) != n:
                raise self.fail(f"parameter {p.name!r} has {math.prod(p.shape)} values for {n} neurons")
            self.s.node_blocks.append(NodeBlock(x.nodes.clone(), col, p.name, torch.arange(n)))
        slots = self.s.node_slots
        mask = sum(1 << c for c, _ in entries)
        for i in x.nodes.tolist():
            slots[i] |= mask
        return x

    def set_activation(self, x: Act, act: Activation, label: str) -> Act:
        if x.tok is not None:  # the units of a layer along the last axis are the ones activated
            nodes = x.tok.tolist()
            current = {self.s.node_act[i] for i in nodes}
            if current in ({0}, {int(act)}):
                for i in nodes:
                    self.s.node_act[i] = int(act)
                return x
            raise self.fail("two activations applied to the units of a layer along a non-feature axis")
        nodes = x.nodes.tolist()
        current = {self.s.node_act[i] for i in nodes}
        if current == {int(act)}:
            return x
        if current != {0}:
            x = self.copy_group(x, label)
            nodes = x.nodes.tolist()
        for i in nodes:
            self.s.node_act[i] = int(act)
        return x

    # -- inputs ---------------------------------------------------------------------------
    def materialize(self, v: Lazy, n: int, feat: int, ndim: int | None) -> Act:
        if v.as_tokens:
            raise self.fail(f"input {v.name!r} is used both as token ids and as features")
        if v.act is not None:
            if len(v.act) != n:
                raise self.fail(f"input {v.name!r} is used with {len(v.act)} and with {n} features")
            return v.act
        nodes = self.new_nodes(n, NodeType.INPUT, 0, label=f"input:{v.name}")
        for k, i in enumerate(nodes.tolist()):
            self.s.node_pos[i] = self._input_pos + k
        self._input_pos += n
        v.act = Act(nodes, feat, ndim, 0)
        return v.act

    def as_act(self, v: Any, like: Act | None = None, what: str = "operation") -> Act:
        if isinstance(v, Act):
            return v
        if isinstance(v, Lazy):
            if v.act is not None:
                return v.act
            if like is not None:
                return self.materialize(v, len(like), like.feat, like.ndim)
            raise self.fail(
                f"{what} is applied to the raw input {v.name!r} before any layer fixes its size; "
                "pass example_input"
            )
        if isinstance(v, Heads):
            raise self.fail(f"{what} on activations split into attention heads is not supported yet")
        raise self.fail(f"{what} expects an activation, got {type(v).__name__}")

    # -- axis helpers ---------------------------------------------------------------------
    def _feat_pos(self, x: Act) -> int:
        if x.ndim is None:
            raise self.fail("this operation needs the tensor's rank; pass example_input so shapes are known")
        return x.ndim + x.feat

    def _norm_dim(self, d: int, ndim: int) -> int:
        return d + ndim if d < 0 else d

    # -- parametric ops -------------------------------------------------------------------
    def linear(self, x: Any, w: Param, b: Param | None, label: str, etype: EdgeType = EdgeType.LINEAR,
               ntype: NodeType = NodeType.HIDDEN, transposed: bool = False) -> Act:
        if isinstance(w, Param) and self.used.get(w.name) == "embedding" and not transposed:
            return self.tied_linear(x, w, b, label)
        if isinstance(w, Param) and w.name in self.homes and self.used.get(w.name) == "linear":
            return self.shared_linear(x, w, b, label)
        if isinstance(x, Meta) and isinstance(w, Param) and len(w.shape) == 2 and not transposed:
            # a layer applied to a constant table (Swin V2's position-bias MLP on relative
            # coordinates): the table's features are POSITION nodes; its values are in the signature
            x = Act(self.new_nodes(w.shape[1], NodeType.POSITION, 0, pos=True, label=f"{label}:constant"),
                    -1, None, 0)
        self.use(w, "linear")
        self.use(b, "linear")
        if not isinstance(w, Param) or len(w.shape) != 2:
            raise self.fail(f"linear weight must be a 2-D parameter of the model, got {w}")
        out_f, in_f = w.shape[::-1] if transposed else w.shape
        if isinstance(x, Lazy):
            x = self.materialize(x, in_f, -1, None)
        x = self.as_act(x, what="linear")
        if x.feat != -1:
            return self.axis_linear(x, w, b, label, transposed)
        C = len(x)
        block = x.block
        if block is None:
            if in_f % C:
                raise self.fail(f"linear layer expects {in_f} features but the flattened input has {C} channels")
            block = in_f // C
        if C * block != in_f:
            raise self.fail(f"linear layer expects {in_f} input features, the input has {C * block}")
        layer = x.layer + 1
        out = self.new_nodes(out_f, ntype, layer, label=label)
        out32, in32 = out.to(_I32), x.nodes.to(_I32)
        if block > 1 and etype == EdgeType.LINEAR:
            etype = EdgeType.FLATTEN
        if etype == EdgeType.LINEAR and C and self.s.node_type[int(x.nodes[0])] in (NodeType.ATTN_V, NodeType.ATTN_OUT):
            etype = EdgeType.ATTN_OUT
        if transposed:
            # W[in, out]: edges enumerated in the weight's memory order, edge (c, j) holds W[c, j] at
            # flat position c*out + j, contiguous
            if block != 1:
                raise self.fail("a transposed linear weight after a flattened map is not supported")
            self.add_edges(EdgeBlock(in32.repeat_interleave(out_f), out32.repeat(C), etype, 1, 1, w.name))
        else:
            # edge (j, c) holds W[j, c*block:(c+1)*block]: flat positions (j*C + c)*block + k, contiguous
            self.add_edges(EdgeBlock(in32.repeat(out_f), out32.repeat_interleave(C), etype, 1, block, w.name))
            if block == 1:
                self.homes[w.name] = (x.nodes, out)
        y = Act(out, -1, x.ndim, layer)
        if b is not None:
            self.s.node_blocks.append(NodeBlock(out.clone(), BIAS, b.name, torch.arange(out_f)))
            for i in out.tolist():
                self.s.node_slots[i] |= 1 << BIAS
            self.homes[b.name] = (None, out)
        return y

    def axis_linear(self, x: Act, w: Param, b: Param | None, label: str, transposed: bool = False) -> Act:
        """A linear layer applied along the last axis while the features lie on another one
        (MLP-Mixer token mixing, ``fc(x.transpose(1, 2))``): it mixes the positions of that axis,
        the same weights for every feature.

        The positions it reads become ``POSITION`` nodes (or, when an earlier such layer made
        them, that layer's units, which turn ``HIDDEN``: hidden units of a token MLP), joined from
        the features by ``AXIS`` edges; its weights are ``LINEAR`` edges from them to its units
        (``POSITION`` nodes with their index: they are positions of the axis unless another such
        layer reads them), its bias their node feature; the result's features are new nodes fed
        by ``IDENTITY`` edges from the input's features and ``AXIS`` edges from the units."""
        if transposed or x.block != 1:
            raise self.fail("linear layer applied along an axis other than the last of a flattened map")
        out_f, in_f = w.shape
        if x.tok is not None and len(x.tok) == in_f:
            src = x.tok
            for i in src.tolist():  # units read by another layer along the axis: hidden units
                self.s.node_type[i] = int(NodeType.HIDDEN)
                self.s.node_pos[i] = -1
            layer = max(x.layer, int(self.s.node_layer[int(src[0])])) + 1 if in_f else x.layer + 1
        else:
            src = self.new_nodes(in_f, NodeType.POSITION, x.layer + 1, pos=True, label=f"{label}:positions")
            C = len(x)
            self.add_edges(EdgeBlock(x.nodes.repeat_interleave(in_f), src.repeat(C), EdgeType.AXIS, 1, 1))
            layer = x.layer + 2
        units = self.new_nodes(out_f, NodeType.POSITION, layer, pos=True, label=label)
        self.add_edges(EdgeBlock(src.to(_I32).repeat(out_f), units.to(_I32).repeat_interleave(in_f),
                                 EdgeType.LINEAR, 1, 1, w.name))
        if b is not None:
            self.s.node_blocks.append(NodeBlock(units.clone(), BIAS, b.name, torch.arange(out_f)))
            for i in units.tolist():
                self.s.node_slots[i] |= 1 << BIAS
        feats = self.new_nodes(len(x), NodeType.HIDDEN, layer + 1, label=f"{label}:features")
        self.add_edges(EdgeBlock(x.nodes.clone(), feats, EdgeType.IDENTITY, 1, 1))
        self.add_edges(EdgeBlock(units.repeat_interleave(len(x)), feats.repeat(out_f), EdgeType.AXIS, 1, 1))
        return Act(feats, x.feat, x.ndim, layer + 1, 1, units)

    def tied_linear(self, x: Any, w: Param, b: Param | None, label: str) -> Act:
        """A linear layer whose weight ``[V, D]`` is an embedding table already in the graph (tied
        input/output embeddings, e.g. GPT-2's ``lm_head`` and ``wte``). Its weights stay on the
        embedding's edges, stored once; ``TIED`` edges join row ``v`` of the table to output ``v``
        and unit ``d`` of the table's embedding to input unit ``d`` of this layer."""
        rows, units = self.tables[w.name]
        self.used[w.name] = "embedding+tied linear"
        self.use(b, "linear")
        V, D = w.shape
        if isinstance(x, Lazy):
            raise self.fail(f"tied weight {w.name!r} applied to a raw input")
        x = self.as_act(x, what="linear")
        if x.feat != -1 or x.block != 1 or len(x) != D:
            raise self.fail(f"tied weight {w.name!r} of shape {w.shape} applied to {len(x)} features")
        layer = x.layer + 1
        out = self.new_nodes(V, NodeType.HIDDEN, layer, label=label)
        self.add_edges(EdgeBlock(rows.clone(), out, EdgeType.TIED, 1, 1))
        self.add_edges(EdgeBlock(units.clone(), x.nodes.clone(), EdgeType.TIED, 1, 1))
        if b is not None:
            self.s.node_blocks.append(NodeBlock(out.clone(), BIAS, b.name, torch.arange(V)))
            for i in out.tolist():
                self.s.node_slots[i] |= 1 << BIAS
        return Act(out, -1, x.ndim, layer)

    def conv(self, x: Any, w: Param, b: Param | None, groups: int, label: str) -> Act:
        self.use(w, "conv")
        self.use(b, "conv")
        dims = len(w.shape) - 2
        if dims not in (1, 2):
            raise self.fail(f"only 1-D and 2-D convolutions are supported (weight {w.name!r} is {w.shape})")
        out_c, in_per_group = w.shape[:2]
        kh, kw = (1, w.shape[2]) if dims == 1 else (w.shape[2], w.shape[3])
        if isinstance(x, Lazy):
            x = self.materialize(x, in_per_group * groups, -(dims + 1), dims + 2)
        x = self.as_act(x, what="convolution")
        if x.block != 1:
            raise self.fail("convolution applied to a flattened tensor")
        if x.ndim is not None and x.ndim + x.feat != 1:
            raise self.fail("convolution input's channel axis is not axis 1")
        C = len(x)
        if C != in_per_group * groups:
            raise self.fail(f"convolution expects {in_per_group * groups} channels, the input has {C}")
        out_per_group = out_c // groups
        layer = x.layer + 1
        out = self.new_nodes(out_c, NodeType.HIDDEN, layer, label=label)
        dst = out.repeat_interleave(in_per_group)
        if groups == 1:
            src = x.nodes.repeat(out_c)
        else:
            o = torch.arange(out_c).repeat_interleave(in_per_group)
            src = x.nodes[(o // out_per_group) * in_per_group + torch.arange(in_per_group).repeat(out_c)]
        # edge (o, c) holds W[o, c]: flat positions (o*in_per_group + c)*K + k, contiguous
        self.add_edges(EdgeBlock(src, dst, EdgeType.CONV, kh, kw, w.name))
        if b is not None:
            self.s.node_blocks.append(NodeBlock(out.clone(), BIAS, b.name, torch.arange(out_c)))
            for i in out.tolist():
                self.s.node_slots[i] |= 1 << BIAS
        return Act(out, -(dims + 1), dims + 2, layer)

    def norm(self, x: Any, kind: str, weight: Param | None, bias: Param | None, label: str,
             running_mean: Param | None = None, running_var: Param | None = None,
             num_batches: Param | None = None, channel_first: bool = False, size: int | None = None,
             in_ndim: int | None = None) -> Act:
        if isinstance(weight, Param) and weight.name in self.homes and self.used.get(weight.name) == kind:
            return self.shared_norm(x, kind, weight, bias, label)
        for p in (weight, bias, running_mean, running_var, num_batches):
            self.use(p, kind)
        if isinstance(x, Lazy):
            n = size if size is not None else (math.prod(weight.shape) if weight is not None else None)
            if n is None:
                raise self.fail(f"{kind} without parameters applied to the raw input; pass example_input")
            if channel_first:  # (B, C, ...): the channel axis is 1
                nd = in_ndim if in_ndim is not None else 2
                x = self.materialize(x, n, 1 - nd, nd)
            else:
                x = self.materialize(x, n, -1, in_ndim)
        x = self.as_act(x, what=kind)
        if channel_first and x.ndim is not None and x.ndim + x.feat != 1:
            raise self.fail(f"{kind} normalises axis 1, but the features are on axis {x.ndim + x.feat}")
        if not channel_first and x.feat != -1:
            raise self.fail(f"{kind} normalises the last axis, but the features are on another axis")
        if num_batches is not None:
            self.s.scalars.append(num_batches.name)
        y = self.write_nodes(
            x,
            [(WEIGHT, weight), (SHIFT, bias), (RUNNING_MEAN, running_mean), (RUNNING_VAR, running_var)],
            label,
        )
        if isinstance(weight, Param):
            self.homes[weight.name] = (None, y.nodes)
        return y

    def embedding(self, idx: Any, w: Param, label: str) -> Act:
        if isinstance(w, Param) and w.name in self.tables and self.used.get(w.name) == "embedding":
            return self.shared_embedding(idx, w, label)
        self.use(w, "embedding")
        V, D = w.shape
        ndim = None
        if isinstance(idx, Lazy):
            if idx.act is not None:
                raise self.fail(f"input {idx.name!r} is used both as features and as token ids")
            idx.as_tokens = True
        elif not isinstance(idx, Meta):
            raise self.fail("embedding indices must be a network input")
        # rows looked up by token ids are vocabulary; rows looked up by computed indices (position
        # or segment ids made inside the model) are positions
        rows = NodeType.POSITION if isinstance(idx, Meta) else NodeType.VOCAB
        vocab = self.new_nodes(V, rows, 0, pos=True, label=f"{label}:rows")
        out = self.new_nodes(D, NodeType.HIDDEN, 1, label=label)
        src = vocab.to(_I32).repeat_interleave(D)
        dst = out.to(_I32).repeat(V)
        self.add_edges(EdgeBlock(src, dst, EdgeType.EMBEDDING, 1, 1, w.name))  # E[v, d] at v*D + d
        self.tables[w.name] = (vocab, out)
        return Act(out, -1, ndim, 1)

    def table(self, x: Act, p: Param, etype: EdgeType, label: str) -> Act:
        """A raw parameter added to (``POSITION``) or concatenated with (``TOKEN``) the
        activations: one input node per position, edges to every feature carry its values."""
        self.use(p, "positional table" if etype == EdgeType.POSITION else "learned token")
        shape = p.shape
        feat = len(shape) + x.feat
        if feat < 0 or shape[feat] != len(x):
            raise self.fail(f"parameter {p.name!r} of shape {shape} does not match {len(x)} features")
        C = len(x)
        flat = torch.arange(math.prod(shape)).reshape(shape).movedim(feat, -1).reshape(-1, C)
        T = flat.shape[0]
        pos = self.new_nodes(T, NodeType.POSITION, 0, pos=True, label=f"{label}:positions")
        src = pos.repeat_interleave(C)
        dst = x.nodes.repeat(T)
        contiguous = bool(torch.equal(flat.reshape(-1), torch.arange(flat.numel())))
        self.add_edges(EdgeBlock(src, dst, etype, 1, 1, p.name, None if contiguous else flat.reshape(-1, 1)))
        return x

    def mha(self, mod: nn.MultiheadAttention, prefix: str, q: Any, k: Any, v: Any) -> Act:
        """Per-head attention structure: q/k/v/out projections as typed edges; ``ATTN_QK`` pairs
        query unit i with key unit i, ``ATTN_HEAD`` joins keys and values of the same head."""
        E, H = mod.embed_dim, mod.num_heads
        dh = E // H
        if mod.bias_k is not None or mod.bias_v is not None or mod.add_zero_attn:
            raise self.fail("MultiheadAttention with add_bias_kv/add_zero_attn is not supported")
        p = self.param
        inputs = [q, k, v]
        first = next((a for a in inputs if isinstance(a, Act)), None)
        if mod._qkv_same_embed_dim:
            w = p(f"{prefix}.in_proj_weight")
            self.use(w, "attention")
            weights = [(w, i * E * E, E) for i in range(3)]
        else:
            ws = [p(f"{prefix}.{n}_proj_weight") for n in "qkv"]
            for w in ws:
                self.use(w, "attention")
            weights = [(w, 0, w.shape[1]) for w in ws]
        b = p(f"{prefix}.in_proj_bias")
        self.use(b, "attention")
        acts = []
        for a, (_w, _, in_f) in zip(inputs, weights):
            if isinstance(a, Lazy):
                a = self.materialize(a, in_f, -1, None) if first is None else self.as_act(a, like=first)
            acts.append(self.as_act(a, what="attention"))
        layer = max(a.layer for a in acts) + 1
        heads = []
        for i, (a, (w, offset, in_f), ntype, etype, name) in enumerate(
            zip(acts, weights, (NodeType.ATTN_Q, NodeType.ATTN_K, NodeType.ATTN_V),
                (EdgeType.ATTN_Q, EdgeType.ATTN_K, EdgeType.ATTN_V), "qkv")
        ):
            if len(a) != in_f or a.feat != -1 or a.block != 1:
                raise self.fail(f"attention {name} input has {len(a)} features, expected {in_f}")
            nodes = self.new_nodes(E, ntype, layer, label=f"{prefix}.{name}")
            dst = nodes.repeat_interleave(in_f)
            src = a.nodes.repeat(E)
            self.add_edges(EdgeBlock(src, dst, etype, 1, 1, w.name, offset=offset))
            if b is not None:
                self.s.node_blocks.append(NodeBlock(nodes.clone(), BIAS, b.name, torch.arange(E) + i * E))
                for j in nodes.tolist():
                    self.s.node_slots[j] |= 1 << BIAS
            heads.append(nodes)
        qn, kn, vn = heads
        self.add_edges(EdgeBlock(qn.clone(), kn.clone(), EdgeType.ATTN_QK, 1, 1))
        h = torch.arange(H)
        i = torch.arange(dh)
        kk = (h[:, None, None] * dh + i[None, :, None]).expand(H, dh, dh).reshape(-1)
        vv = (h[:, None, None] * dh + i[None, None, :]).expand(H, dh, dh).reshape(-1)
        self.add_edges(EdgeBlock(kn[kk], vn[vv], EdgeType.ATTN_HEAD, 1, 1))
        vact = Act(vn, -1, acts[2].ndim, layer)
        return self.linear(vact, p(f"{prefix}.out_proj.weight"), p(f"{prefix}.out_proj.bias"),
                           label=f"{prefix}.out_proj", etype=EdgeType.ATTN_OUT)

    # -- structural ops -------------------------------------------------------------------
    def combine(self, a: Any, b: Any, op: str, label: str) -> Any:
        """``a + b``, ``a - b``, ``a * b``, ``a / b`` between activations, parameters and constants."""
        a = META if isinstance(a, (int, float, bool)) or a is None else a
        b = META if isinstance(b, (int, float, bool)) or b is None else b
        if isinstance(a, Meta) and isinstance(b, Meta):
            return META
        if isinstance(a, Stat) or isinstance(b, Stat):
            return self._combine_stat(a, b, op)
        if isinstance(a, Heads) and isinstance(b, Heads) and op in ("add", "sub"):
            return self.rotary(a, b)
        if isinstance(a, Heads) or isinstance(b, Heads):
            h, other = (a, b) if isinstance(a, Heads) else (b, a)
            if isinstance(other, Meta) and not (op == "div" and h is b):
                return h  # scaling by a constant, or by the cos/sin tables of a rotary embedding
            if isinstance(other, Param) and op == "add":
                return self.head_bias(h, other, label)
            raise self.fail(f"'{op}' between attention heads and {type(other).__name__} is not supported yet")
        if isinstance(a, Act) and isinstance(b, Act) and a.nodes.data_ptr() == b.nodes.data_ptr() \
                and torch.equal(a.nodes, b.nodes):
            return a  # an element-wise function of one activation (e.g. a decomposed GELU): same neurons
        if (op in ("add", "sub") and isinstance(a, Act) and isinstance(b, Act) and len(a) == len(b)
                and a.block == b.block == 1 and (a.feat, a.ndim) == (b.feat, b.ndim)
                and torch.equal(a.nodes.sort().values, b.nodes.sort().values)):
            # the same neurons reordered: a rotary embedding of one unsplit head (multi-query keys)
            nd = (a.ndim or 2) + 1
            one = lambda t: Heads(t.nodes[None, :], -2, -1, nd, t.layer)  # noqa: E731
            return Act(self.rotary(one(a), one(b)).nodes[0], a.feat, a.ndim, max(a.layer, b.layer))
        if op in ("add", "sub") and isinstance(a, (Act, Lazy)) and isinstance(b, (Act, Lazy)):
            if isinstance(a, Lazy) and isinstance(b, Lazy):
                if a is b or a.act is not None or b.act is not None:
                    pass
                else:
                    raise self.fail("adding two raw inputs; pass example_input")
            first = a if isinstance(a, Act) else (b if isinstance(b, Act) else None)
            a = self.as_act(a, like=first if first is not None else self.as_act(b), what=op)
            b = self.as_act(b, like=a, what=op)
            if len(a) != len(b) or a.block != b.block:
                raise self.fail(f"{op} of activations with {len(a)} and {len(b)} features")
            layer = max(a.layer, b.layer) + 1
            out = self.new_nodes(len(a), NodeType.SUM, layer, label=label)
            self.add_edges(EdgeBlock(a.nodes.clone(), out, EdgeType.RESIDUAL, 1, 1))
            self.add_edges(EdgeBlock(b.nodes.clone(), out.clone(), EdgeType.RESIDUAL, 1, 1,
                                     value=-1.0 if op == "sub" else 1.0))
            return Act(out, a.feat, a.ndim, layer, a.block)
        if op == "mul" and isinstance(a, Act) and isinstance(b, Act):
            if len(a) != len(b):
                raise self.fail(f"product of activations with {len(a)} and {len(b)} features")
            layer = max(a.layer, b.layer) + 1
            out = self.new_nodes(len(a), NodeType.PRODUCT, layer, label=label)
            self.add_edges(EdgeBlock(a.nodes.clone(), out, EdgeType.PRODUCT, 1, 1))
            self.add_edges(EdgeBlock(b.nodes.clone(), out.clone(), EdgeType.PRODUCT, 1, 1))
            return Act(out, a.feat, a.ndim, layer, a.block)
        if isinstance(a, Param) and isinstance(b, Meta) or isinstance(b, Param) and isinstance(a, Meta):
            # a parameter shifted or scaled by a constant before use (Gemma's RMSNorm: x * (1 + w)):
            # the graph keeps the parameter, the constant is part of the structural signature
            return a if isinstance(a, Param) else b
        x, other = (a, b) if isinstance(a, (Act, Lazy)) else (b, a)
        if isinstance(x, Lazy) and isinstance(other, Meta):
            return x
        if isinstance(other, Meta):
            if op == "div" and x is b:
                raise self.fail("dividing by an activation is not supported")
            return x
        if isinstance(other, Param):
            x = self.as_act(x, what=op)
            if op not in ("add", "mul") or x.block != 1:
                raise self.fail(f"parameter {other.name!r} used in '{op}' with an activation")
            n_nonunit = [d for d in other.shape if d != 1]
            if math.prod(other.shape) == len(x) and len(n_nonunit) <= 1:
                self.use(other, op)
                col = BIAS if op == "add" else WEIGHT
                return self.write_nodes(x, [(col, other)], label)
            if op == "add":
                return self.table(x, other, EdgeType.POSITION, label)
            raise self.fail(f"parameter {other.name!r} of shape {other.shape} multiplies the activations")
        raise self.fail(f"unsupported operands for '{op}'")

    def _combine_stat(self, a: Any, b: Any, op: str) -> Any:
        """A normalization written out element-wise: the statistic with constants stays a
        statistic; the activation it was computed from, scaled or shifted by it, keeps its
        neurons."""
        st, other = (a, b) if isinstance(a, Stat) else (b, a)
        if isinstance(other, Meta):
            return st
        if isinstance(other, Stat):
            if torch.equal(other.nodes, st.nodes):
                return st
        elif isinstance(other, Act) and other.block == 1 and torch.equal(other.nodes, st.nodes):
            if op == "div" and other is b:
                raise self.fail("dividing a statistic by the activations it was computed from")
            return other
        elif isinstance(other, Heads) and torch.equal(other.nodes.reshape(-1), st.nodes):
            if op == "div" and other is b:
                raise self.fail("dividing a statistic by the attention heads it was computed from")
            return other
        raise self.fail(f"a statistic over the features of one activation is combined ('{op}') with "
                        f"{type(other).__name__} of other neurons")

    def rotary(self, a: Heads, b: Heads) -> Heads:
        """``a + b`` where ``b`` holds the same head units as ``a`` reordered inside each head: a
        rotary position embedding (``q*cos + rotate_half(q)*sin``), a fixed, parameter-free mixing
        inside each head. The units become ``ROTARY_Q/K``-to-be: a ``ROTARY`` edge joins each pair
        of units the embedding mixes, and each unit keeps its index inside its head in ``node_pos``
        (only whole heads may be permuted)."""
        if (a.head, a.feat, a.ndim) != (b.head, b.feat, b.ndim) or a.nodes.shape != b.nodes.shape:
            raise self.fail("adding attention heads of different layouts")
        if torch.equal(a.nodes, b.nodes):
            return a
        if not torch.equal(a.nodes.sort(1).values, b.nodes.sort(1).values):
            raise self.fail("adding different attention heads (only a rotary embedding's reordering of "
                            "the same heads is supported)")
        rising = lambda h: bool((h.nodes[:, 1:] > h.nodes[:, :-1]).all())  # noqa: E731
        keep, other = (b, a) if rising(b) and not rising(a) else (a, b)
        diff = other.nodes > keep.nodes  # one edge per mixed pair (keeps feed-forward graphs acyclic)
        self.add_edges(EdgeBlock(other.nodes[diff].clone(), keep.nodes[diff].clone(), EdgeType.ROTARY, 1, 1))
        for row in keep.nodes.tolist():
            for j, i in enumerate(row):
                self.s.node_pos[i] = j
        self.rotary_nodes.update(keep.nodes.reshape(-1).tolist())
        return Heads(keep.nodes, keep.head, keep.feat, keep.ndim, max(a.layer, b.layer))

    def cat(self, items: list[Any], dim: int, label: str) -> Any:
        heads = [v for v in items if isinstance(v, Heads)]
        if heads:
            return self._cat_heads(items, dim)
        acts = [v for v in items if isinstance(v, Act)]
        if not acts:
            if all(isinstance(v, Meta) for v in items):
                return META
            raise self.fail("concatenation of raw inputs or parameters only; pass example_input")
        ref = acts[0]
        ndim = ref.ndim
        along_feat = (dim < 0 and dim == ref.feat) or (ndim is not None and self._norm_dim(dim, ndim) == ndim + ref.feat)
        if ndim is None and dim >= 0 and not along_feat:
            raise self.fail("concatenation axis is ambiguous without shapes; pass example_input")
        if along_feat:
            parts = [self.as_act(v, like=ref, what="concatenation") for v in items]
            if len({p.block for p in parts}) != 1:
                raise self.fail("concatenating flattened maps with different spatial sizes")
            nodes = torch.cat([p.nodes for p in parts])
            layer = max(p.layer for p in parts)
            if nodes.unique().numel() != nodes.numel():
                # slices of one activation side by side (Swin's patch merging: space to depth): the
                # features of the result are new neurons, each a copy of the channel it came from
                new = self.new_nodes(nodes.numel(), NodeType.HIDDEN, layer + 1, label=label)
                self.add_edges(EdgeBlock(nodes.clone(), new, EdgeType.IDENTITY, 1, 1))
                return Act(new, ref.feat, ndim, layer + 1, ref.block)
            return Act(nodes, ref.feat, ndim, layer, ref.block)
        out = ref
        distinct: list[Act] = []
        for v in acts:
            if not any(torch.equal(v.nodes, u.nodes) for u in distinct):
                distinct.append(v)
        if len(distinct) > 1:
            # tokens of different activations in one sequence (CvT's class token beside the
            # convolved patch tokens): feature i of the result is a new neuron fed by feature i of each
            if any(len(u) != len(ref) or u.block != ref.block for u in distinct):
                raise self.fail("concatenating activations with different features along a non-feature axis")
            layer = max(u.layer for u in distinct) + 1
            new = self.new_nodes(len(ref), NodeType.HIDDEN, layer, label=label)
            for u in distinct:
                self.add_edges(EdgeBlock(u.nodes.clone(), new.clone(), EdgeType.IDENTITY, 1, 1))
            out = Act(new, ref.feat, ndim, layer, ref.block)
        for v in items:
            if isinstance(v, Act):
                continue
            elif isinstance(v, Param):
                out = self.table(out, v, EdgeType.TOKEN, label)
            elif isinstance(v, Meta):
                continue
            else:
                raise self.fail("concatenating a raw input with activations")
        return out

    def _cat_heads(self, items: list[Any], dim: int) -> Heads:
        """Concatenate pieces of attention heads along the unit axis (e.g. rotate_half)."""
        if not all(isinstance(v, Heads) for v in items):
            raise self.fail("concatenating attention heads with other tensors")
        ref = items[0]
        nd = ref.ndim
        if any((v.head, v.feat, v.ndim) != (ref.head, ref.feat, nd) for v in items):
            raise self.fail("concatenating attention heads of different layouts")
        d = self._norm_dim(dim, nd)
        if d == nd + ref.feat:
            nodes = torch.cat([v.nodes for v in items], 1)
        elif d == nd + ref.head:
            nodes = torch.cat([v.nodes for v in items], 0)
        else:
            raise self.fail("concatenating attention heads along a non-feature axis")
        return Heads(nodes, ref.head, ref.feat, nd, max(v.layer for v in items))

    def _index_heads(self, x: Heads, idx: tuple) -> Heads:
        """Basic indexing of a tensor split into heads: slices of the head or unit axis select
        heads or units; ``None`` adds an axis; integers on other axes drop them."""
        nd = x.ndim
        h, f = nd + x.head, nd + x.feat
        n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
        expanded: list[Any] = []
        for i in idx:
            expanded += [slice(None)] * (nd - n_real) if i is Ellipsis else [i]
        expanded += [slice(None)] * (nd - sum(1 for i in expanded if i is not None))
        nodes, out_dim, in_dim, new_h, new_f = x.nodes, 0, 0, None, None
        for i in expanded:
            if i is None:
                out_dim += 1
                continue
            if in_dim in (h, f):
                if not isinstance(i, slice):
                    raise self.fail("indexing selects a single attention head or unit")
                if i != slice(None):
                    nodes = nodes[i] if in_dim == h else nodes[:, i]
                if in_dim == h:
                    new_h = out_dim
                else:
                    new_f = out_dim
            elif not isinstance(i, (slice, int, Meta)):
                raise self.fail("advanced indexing of attention heads is not supported")
            if isinstance(i, slice):
                out_dim += 1
            in_dim += 1
        return Heads(nodes, new_h - out_dim, new_f - out_dim, out_dim, x.layer)

    def reshape(self, x: Any, in_shape: tuple | None, out_shape: tuple | None, start: int | None = None,
                end: int | None = None) -> Any:
        """view/reshape/flatten: follow the feature axis through merged and split dims."""
        if isinstance(x, (Lazy, Meta)):
            return x
        if isinstance(x, Heads):
            return self._reshape_heads(x, in_shape, out_shape)
        x = self.as_act(x, what="reshape")
        if in_shape is None or out_shape is None:
            if start is None:
                raise self.fail("reshape needs shapes; pass example_input")
            # flatten(start, end) without shapes
            ndim = x.ndim
            if ndim is None:
                if x.feat == -1 and (end in (-1, None)):
                    if x.block == 1 and start is not None:
                        return x  # (B, C) style: flattening trailing dims ending at the features
                raise self.fail("flatten needs the tensor's rank; pass example_input")
            f = ndim + x.feat
            s = self._norm_dim(start, ndim)
            e = self._norm_dim(-1 if end is None else end, ndim)
            new_ndim = ndim - (e - s)
            if f < s:
                return Act(x.nodes, f - new_ndim, new_ndim, x.layer, x.block)
            if f > e:
                return Act(x.nodes, x.feat, new_ndim, x.layer, x.block)
            if f == s:
                block = None if e > s else x.block
                if x.block != 1 and e > s:
                    raise self.fail("flattening an already flattened map")
                return Act(x.nodes, s - new_ndim, new_ndim, x.layer, block)
            raise self.fail("flatten merges the feature axis behind other axes (strided features)")
        in_shape, out_shape = tuple(in_shape), tuple(out_shape)
        ndim = len(in_shape)
        f = ndim + x.feat
        for gi, gj in _chunks(in_shape, out_shape):
            if f in gi:
                real_i = [d for d in gi if d < len(in_shape) and (in_shape[d] != 1 or d == f)]
                real_j = [d for d in gj if d < len(out_shape) and out_shape[d] != 1]
                real_j = real_j or [d for d in gj if d < len(out_shape)][:1]
                if real_i == [f] and len(real_j) == 1:
                    k = real_j[0]
                    return Act(x.nodes, k - len(out_shape), len(out_shape), x.layer, x.block)
                if real_i and real_i[0] == f and len(real_j) == 1:
                    if x.block != 1:
                        raise self.fail("flattening an already flattened map")
                    block = math.prod(in_shape[d] for d in real_i[1:])
                    k = real_j[0]
                    return Act(x.nodes, k - len(out_shape), len(out_shape), x.layer, block)
                if real_i == [f] and len(real_j) == 2 and x.block == 1:  # split into attention heads
                    H, d = out_shape[real_j[0]], out_shape[real_j[1]]
                    n = len(out_shape)
                    return Heads(x.nodes.reshape(H, d), real_j[0] - n, real_j[1] - n, n, x.layer)
                raise self.fail(
                    f"reshape {in_shape} -> {out_shape} splits or strides the feature axis {f}"
                )
        raise self.fail(f"reshape {in_shape} -> {out_shape} loses the feature axis")

    def _reshape_heads(self, x: Heads, in_shape: tuple | None, out_shape: tuple | None) -> Any:
        """Merge ``(heads, units)`` back into one feature axis, or move them through a reshape of
        the other axes."""
        if in_shape is None or out_shape is None:
            raise self.fail("reshaping attention heads needs shapes; pass example_input")
        n_in, n_out = len(in_shape), len(out_shape)
        h, f = n_in + x.head, n_in + x.feat
        where: dict[int, int] = {}
        for gi, gj in _chunks(tuple(in_shape), tuple(out_shape)):
            real_i = [d for d in gi if d < n_in and (in_shape[d] != 1 or d in (h, f))]
            real_j = [d for d in gj if d < n_out and out_shape[d] != 1] or [d for d in gj if d < n_out][:1]
            if h in gi and f in gi:
                if real_i == [h, f] and len(real_j) == 1:
                    k = real_j[0]
                    return Act(x.nodes.reshape(-1), k - n_out, n_out, x.layer)
                raise self.fail(f"reshape {in_shape} -> {out_shape} mixes attention heads with other axes")
            if h in gi and len(real_i) == 2 and real_i[0] == h and f not in gi and len(real_j) == 1:
                # (heads, r) -> heads*r: every head repeated r times (grouped-query attention's
                # repeat_kv: a key/value head shared by r query heads)
                r = in_shape[real_i[1]]
                x = Heads(x.nodes.repeat_interleave(r, 0), x.head, x.feat, x.ndim, x.layer)
                where[h] = real_j[0]
                continue
            if h in gi and f not in gi and len(real_i) > 1 and real_i[-1] == h and len(real_j) == 1:
                # batch axes merged into the head axis ([B, H, ...] -> [B*H, ...], BLOOM): the
                # merged axis runs over the heads, example by example
                where[h] = real_j[0]
                continue
            if h in gi and f not in gi and real_i == [h] and len(real_j) == 2 \
                    and out_shape[real_j[-1]] == x.nodes.shape[0]:
                where[h] = real_j[-1]  # [B*H, ...] -> [B, H, ...]: the heads split back off the batch
                continue
            for axis in (h, f):
                if axis in gi:
                    if real_i != [axis] or len(real_j) != 1:
                        raise self.fail(f"reshape {in_shape} -> {out_shape} splits an attention-head axis")
                    where[axis] = real_j[0]
        return Heads(x.nodes, where[h] - n_out, where[f] - n_out, n_out, x.layer)

    def attention(self, q: Any, k: Any, v: Any, label: str) -> Heads:
        """``softmax(q k^T) v`` per head (``scaled_dot_product_attention``): the projections'
        units become ``ATTN_Q/K/V`` neurons (``ROTARY_Q/K`` after a rotary embedding), ``ATTN_QK``
        edges pair query and key unit ``i`` of a head, ``ATTN_HEAD`` edges join a head's keys to
        its values; the result lives on the values.

        Grouped-query attention (``r`` query heads share one key/value head, whether the key/value
        heads were repeated or not): query head ``h`` pairs with key head ``h // r``, and each query
        head gets its own result units (``ATTN_OUT``), fed by ``ATTN_GROUP`` edges from the shared
        value units and by ``ATTN_HEAD`` edges from the head's query units."""
        if isinstance(q, Heads):  # a single key/value head (multi-query attention) may stay unsplit
            k, v = (Heads(t.nodes[None, :], q.head, q.feat, q.ndim, t.layer)
                    if isinstance(t, Act) and t.feat == -1 and t.block == 1 else t for t in (k, v))
        if not all(isinstance(t, Heads) for t in (q, k, v)):
            raise self.fail("attention inputs must be projections split into heads")
        kd, vd = self._distinct_heads(k.nodes), self._distinct_heads(v.nodes)
        (H, dq), (Hk, dk), (Hv, dv) = q.nodes.shape, kd.shape, vd.shape
        if Hk != Hv or dq != dk or H % Hk:
            raise self.fail(f"attention with {H} query heads of {dq} units, {Hk} key heads of {dk} and {Hv} "
                            f"value heads")
        ids = torch.cat([q.nodes.reshape(-1), kd.reshape(-1), vd.reshape(-1)])
        if ids.unique().numel() != ids.numel():
            raise self.fail("attention whose query, key and value units are not distinct neurons")
        rot = torch.tensor(sorted(self.rotary_nodes), dtype=torch.long)
        for nodes, ntype, rtype, etype in ((q.nodes, NodeType.ATTN_Q, NodeType.ROTARY_Q, EdgeType.ATTN_Q),
                                           (kd, NodeType.ATTN_K, NodeType.ROTARY_K, EdgeType.ATTN_K),
                                           (vd, NodeType.ATTN_V, NodeType.ATTN_V, EdgeType.ATTN_V)):
            flat = nodes.reshape(-1)
            rotated = torch.isin(flat, rot)  # a partial rotary embedding rotates only some units of a head
            self._retype(flat, ntype, etype)
            for i in flat[rotated].tolist():
                self.s.node_type[i] = int(rtype)
        r = H // Hk
        group = torch.arange(H) // r
        kq = kd[group]  # the key units each query unit is paired with
        self.add_edges(EdgeBlock(q.nodes.reshape(-1).clone(), kq.reshape(-1).clone(), EdgeType.ATTN_QK, 1, 1))
        kk = kd[:, :, None].expand(Hk, dk, dv).reshape(-1)
        vv = vd[:, None, :].expand(Hk, dk, dv).reshape(-1)
        self.add_edges(EdgeBlock(kk, vv, EdgeType.ATTN_HEAD, 1, 1))
        layer = max(q.layer, k.layer, v.layer)
        if r == 1:
            return Heads(vd, q.head, q.feat, q.ndim, layer)
        out = self.new_nodes(H * dv, NodeType.ATTN_OUT, layer + 1, label=f"{label}:heads").reshape(H, dv)
        self.add_edges(EdgeBlock(vd[group].reshape(-1).clone(), out.reshape(-1).clone(), EdgeType.ATTN_GROUP, 1, 1))
        qq = q.nodes[:, :, None].expand(H, dq, dv).reshape(-1)
        oo = out[:, None, :].expand(H, dq, dv).reshape(-1)
        self.add_edges(EdgeBlock(qq, oo, EdgeType.ATTN_HEAD, 1, 1))
        return Heads(out, q.head, q.feat, q.ndim, layer + 1)

    def _distinct_heads(self, nodes: Tensor) -> Tensor:
        """The heads of a key/value tensor whose heads may have been repeated ``r`` times each
        (``repeat_kv``): ``[H, d]`` -> ``[H / r, d]``."""
        H = nodes.shape[0]
        for r in range(1, H + 1):
            if H % r == 0 and torch.equal(nodes, nodes[::r].repeat_interleave(r, 0)):
                if r > 1 or nodes.reshape(-1).unique().numel() == nodes.numel():
                    return nodes[::r]
        raise self.fail("attention heads repeated in a pattern other than grouped-query attention")

    def _retype(self, nodes: Tensor, ntype: NodeType, etype: EdgeType) -> None:
        """Give freshly projected neurons an attention role, and their incoming weights the
        matching edge type."""
        for i in nodes.tolist():
            self.s.node_type[i] = int(ntype)
        lo, hi = int(nodes.min()), int(nodes.max())
        dense = hi - lo + 1 == nodes.numel()  # the usual case: one projection's consecutive neurons
        for eb in self.s.edge_blocks:
            if eb.param is None or eb.dst_range[1] < lo or eb.dst_range[0] > hi:
                continue
            if dense and lo <= eb.dst_range[0] and eb.dst_range[1] <= hi:
                eb.etype = int(etype)
                continue
            hit = (eb.dst >= lo) & (eb.dst <= hi) if dense else torch.isin(eb.dst, nodes)
            if bool(hit.all()):
                eb.etype = int(etype)
            elif bool(hit.any()):  # a fused projection (q, k and v from one weight): type edge by edge
                types = eb.etype.clone() if isinstance(eb.etype, Tensor) else torch.full_like(eb.dst, int(eb.etype))
                types[hit] = int(etype)
                eb.etype = types

    def split(self, x: Any, sizes: Any, dim: int, chunk: bool = False) -> Any:
        """``split``/``chunk`` along the feature axis: sub-groups of the same neurons."""
        if isinstance(x, (Lazy, Meta)):
            raise self.fail("splitting a raw input; pass example_input")
        if isinstance(x, Heads):
            return self._split_heads(x, sizes, dim, chunk)
        x = self.as_act(x, what="split")
        if x.ndim is None or self._norm_dim(dim, x.ndim) != x.ndim + x.feat:
            raise self.fail("split along an axis other than the features is not supported")
        n = len(x)
        if chunk:
            step = -(-n // int(sizes))
            sizes = [min(step, n - i) for i in range(0, n, step)]
        elif isinstance(sizes, int):
            sizes = [min(sizes, n - i) for i in range(0, n, sizes)]
        parts, start = [], 0
        for sz in sizes:
            parts.append(Act(x.nodes[start : start + sz], x.feat, x.ndim, x.layer, x.block))
            start += sz
        return tuple(parts)

    def _split_heads(self, x: Heads, sizes: Any, dim: int, chunk: bool) -> tuple:
        """``split``/``chunk`` of a tensor split into heads, along its unit or head axis."""
        d = self._norm_dim(dim, x.ndim)
        if d == x.ndim + x.feat:
            axis = 1
        elif d == x.ndim + x.head:
            axis = 0
        else:
            raise self.fail("splitting attention heads along a non-feature axis")
        n = x.nodes.shape[axis]
        if chunk:
            step = -(-n // int(sizes))
            sizes = [min(step, n - i) for i in range(0, n, step)]
        elif isinstance(sizes, int):
            sizes = [min(sizes, n - i) for i in range(0, n, sizes)]
        parts = torch.split(x.nodes, list(sizes), dim=axis)
        return tuple(Heads(p, x.head, x.feat, x.ndim, x.layer) for p in parts)

    def move_axes(self, x: Any, perm: list[int]) -> Any:
        if isinstance(x, (Lazy, Meta)):
            return x
        if isinstance(x, Heads):
            nd = x.ndim
            perm = [self._norm_dim(p, nd) for p in perm]
            return Heads(x.nodes, perm.index(nd + x.head) - nd, perm.index(nd + x.feat) - nd, nd, x.layer)
        x = self.as_act(x, what="permute")
        ndim = x.ndim if x.ndim is not None else len(perm)
        if len(perm) != ndim:
            raise self.fail("permutation rank does not match the tensor")
        f = ndim + x.feat
        perm = [self._norm_dim(p, ndim) for p in perm]
        return Act(x.nodes, perm.index(f) - ndim, ndim, x.layer, x.block)

    def transpose(self, x: Any, d0: int, d1: int) -> Any:
        if isinstance(x, (Lazy, Meta)):
            return x
        if isinstance(x, Heads):
            perm = list(range(x.ndim))
            a, b = self._norm_dim(d0, x.ndim), self._norm_dim(d1, x.ndim)
            perm[a], perm[b] = perm[b], perm[a]
            return self.move_axes(x, perm)
        x = self.as_act(x, what="transpose")
        if x.ndim is None:
            if d0 < 0 and d1 < 0:
                f = x.feat
                f = d1 if f == d0 else (d0 if f == d1 else f)
                return Act(x.nodes, f, None, x.layer, x.block)
            raise self.fail("transpose needs the tensor's rank; pass example_input")
        ndim = x.ndim
        a, b = self._norm_dim(d0, ndim), self._norm_dim(d1, ndim)
        perm = list(range(ndim))
        perm[a], perm[b] = perm[b], perm[a]
        return self.move_axes(x, perm)

    def reduce(self, x: Any, dims: Any, keepdim: bool) -> Any:
        if isinstance(x, Stat):
            return x
        if isinstance(x, Heads) and keepdim and dims is not None:
            ds = {self._norm_dim(d, x.ndim) for d in ([dims] if isinstance(dims, int) else dims)}
            if ds == {x.ndim + x.feat}:  # a statistic over each head's units (Swin V2's normalize(q))
                return Stat(x.nodes.reshape(-1))
        if isinstance(x, (Lazy, Meta)):
            return META if isinstance(x, Meta) else x
        x = self.as_act(x, what="reduction")
        if dims is None:
            raise self.fail("reduction over all axes mixes every neuron")
        dims = [dims] if isinstance(dims, int) else list(dims)
        if x.ndim is None:
            if all(d < 0 for d in dims) and x.feat not in dims and keepdim:
                return x
            if dims == [x.feat] and keepdim and x.block == 1:
                return Stat(x.nodes)
            raise self.fail("reduction needs the tensor's rank; pass example_input")
        ndim = x.ndim
        dims = {self._norm_dim(d, ndim) for d in dims}
        f = ndim + x.feat
        if f in dims:
            if keepdim and dims == {f} and x.block == 1:
                return Stat(x.nodes)  # a normalization's statistic, e.g. mean(x^2) in an RMSNorm
            raise self.fail("reduction over the feature axis mixes neurons")
        if keepdim:
            return x
        new_f = f - sum(1 for d in dims if d < f)
        new_ndim = ndim - len(dims)
        return Act(x.nodes, new_f - new_ndim, new_ndim, x.layer, x.block)

    def index(self, x: Any, idx: Any) -> Any:
        if isinstance(x, (tuple, list)):
            return x[idx]
        if isinstance(x, Meta):
            return META
        if isinstance(x, Lazy):
            return x
        idx = idx if isinstance(idx, tuple) else (idx,)
        if isinstance(x, Heads):
            return self._index_heads(x, idx)
        if isinstance(x, Param):
            return self._index_param(x, idx)
        x = self.as_act(x, what="indexing")
        if x.ndim is None:
            raise self.fail("indexing an activation needs shapes; pass example_input")
        ndim = x.ndim
        f = ndim + x.feat
        n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
        expanded: list[Any] = []
        for i in idx:
            if i is Ellipsis:
                expanded += [slice(None)] * (ndim - n_real)
            else:
                expanded.append(i)
        expanded += [slice(None)] * (ndim - sum(1 for i in expanded if i is not None))
        out_dim, in_dim, new_f, nodes = 0, 0, None, x.nodes
        for i in expanded:
            if i is None:
                out_dim += 1
                continue
            if in_dim == f:
                if isinstance(i, slice):
                    if i != slice(None):
                        if x.block != 1:
                            raise self.fail("slicing a flattened map")
                        nodes = nodes[i]
                    new_f = out_dim
                else:
                    raise self.fail("indexing selects single features")
            if isinstance(i, slice):
                out_dim += 1
            elif not isinstance(i, int | Meta):
                raise self.fail("advanced indexing of activations is not supported")
            in_dim += 1
        return Act(nodes, new_f - out_dim, out_dim, x.layer, x.block)

    def _index_param(self, p: Param, idx: tuple) -> Param:
        """A raw parameter sliced along its leading axes (a learned positional table cut to the
        sequence length, ``pos[:, : x.shape[1]]``): the graph keeps the whole table, every
        position a node, so the slice is structure. Slicing the last (feature) axis, integer or
        advanced indexing is refused."""
        nd = len(p.shape)
        n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
        expanded: list[Any] = []
        for i in idx:
            expanded += [slice(None)] * (nd - n_real) if i is Ellipsis else [i]
        expanded = [i for i in expanded if i is not None]
        if len(expanded) > nd or not all(isinstance(i, slice) for i in expanded):
            raise self.fail(f"parameter {p.name!r} indexed other than by slices of its leading axes")
        if len(expanded) == nd and expanded[-1] != slice(None):
            raise self.fail(f"parameter {p.name!r} sliced along its last (feature) axis")
        for i in expanded:
            if isinstance(i.step, int) and i.step != 1:
                raise self.fail(f"parameter {p.name!r} sliced with a step")
        return p

    def unsqueeze(self, x: Any, dim: int) -> Any:
        if isinstance(x, (Lazy, Meta, Param, Stat)):
            return x
        if isinstance(x, Heads):
            return self._index_heads(x, tuple([slice(None)] * self._norm_dim(dim, x.ndim + 1) + [None]))
        x = self.as_act(x, what="unsqueeze")
        if x.ndim is None:
            if dim < 0 and dim < x.feat:
                return x
            raise self.fail("unsqueeze needs the tensor's rank; pass example_input")
        nd = x.ndim + 1
        d = self._norm_dim(dim, nd)
        f = x.ndim + x.feat
        nf = f + 1 if d <= f else f
        return Act(x.nodes, nf - nd, nd, x.layer, x.block)

    def squeeze(self, x: Any, dim: int | None, in_shape: tuple | None) -> Any:
        if isinstance(x, (Lazy, Meta, Param)):
            return x
        x = self.as_act(x, what="squeeze")
        if in_shape is None:
            raise self.fail("squeeze needs shapes; pass example_input")
        ndim = len(in_shape)
        f = ndim + x.feat
        dims = [d for d in range(ndim) if in_shape[d] == 1] if dim is None else [self._norm_dim(dim, ndim)]
        dims = [d for d in dims if in_shape[d] == 1 and d != f]
        nf = f - sum(1 for d in dims if d < f)
        nd = ndim - len(dims)
        return Act(x.nodes, nf - nd, nd, x.layer, x.block)

    # -- shared weights and attention-score biases -----------------------------------------
    def shared_linear(self, x: Any, w: Param, b: Param | None, label: str) -> Act:
        """A ``Linear`` layer applied again (shared weights: ALBERT runs one layer at every depth).
        Its weights and bias stay on the edges and nodes of its first use, stored once; the new
        output units get ``TIED`` edges from the first use's output units (unit ``j`` to unit
        ``j``), and the new input features ``TIED`` edges from the first use's input features, as
        a tied input/output embedding does. Decoding reads the first use."""
        in_home, out_home = self.homes[w.name]
        if b is not None and (b.name not in self.homes or self.homes[b.name][1] is not out_home):
            raise self.fail(f"linear weight {w.name!r} applied again with another bias than its first use")
        if isinstance(x, Lazy):
            x = self.materialize(x, len(in_home), -1, None)
        x = self.as_act(x, what="linear")
        if x.feat != -1 or x.block != 1 or len(x) != len(in_home):
            raise self.fail(f"shared linear weight {w.name!r} applied again to {len(x)} features along "
                            f"axis {x.feat} (first use: {len(in_home)} features along the last axis)")
        layer = x.layer + 1
        out = self.new_nodes(len(out_home), NodeType.HIDDEN, layer, label=label)
        self.add_edges(EdgeBlock(out_home.clone(), out, EdgeType.TIED, 1, 1))
        keep = in_home != x.nodes  # the same input again needs no edge
        if bool(keep.any()):
            self.add_edges(EdgeBlock(in_home[keep].clone(), x.nodes[keep].clone(), EdgeType.TIED, 1, 1))
        return Act(out, -1, x.ndim, layer)

    def shared_norm(self, x: Any, kind: str, weight: Param, bias: Param | None, label: str) -> Act:
        """A normalization applied again with the parameters of its first use (shared layers): new
        nodes fed one-to-one from ``x`` (``IDENTITY``) and joined by ``TIED`` edges from the nodes
        that hold the parameters; nothing is stored twice."""
        _, home = self.homes[weight.name]
        if bias is not None and self.used.get(bias.name) != kind:
            raise self.fail(f"{kind} weight {weight.name!r} applied again with another bias")
        x = self.as_act(x, what=kind)
        if len(x) != len(home) or x.block != 1:
            raise self.fail(f"shared {kind} of {len(home)} features applied again to {len(x)}")
        y = self.copy_group(x, label)
        self.add_edges(EdgeBlock(home.clone(), y.nodes.clone(), EdgeType.TIED, 1, 1))
        return y

    def shared_embedding(self, idx: Any, w: Param, label: str) -> Act:
        """An embedding table looked up again (an encoder-decoder's shared token embedding): new
        units joined by ``TIED`` edges from the table's units; the table is stored once."""
        _, units = self.tables[w.name]
        if isinstance(idx, Lazy):
            if idx.act is not None:
                raise self.fail(f"input {idx.name!r} is used both as features and as token ids")
            idx.as_tokens = True
        elif not isinstance(idx, Meta):
            raise self.fail("embedding indices must be a network input")
        out = self.new_nodes(len(units), NodeType.HIDDEN, 1, label=label)
        self.add_edges(EdgeBlock(units.clone(), out, EdgeType.TIED, 1, 1))
        return Act(out, -1, None, 1)

    def head_bias(self, h: Heads, p: Param, label: str) -> Heads:
        """A parameter vector added to projections split into heads (DeBERTa's ``q_bias``): the
        bias of those units, in the order of the vector (head by head)."""
        n = h.nodes.numel()
        if math.prod(p.shape) != n:
            raise self.fail(f"parameter {p.name!r} of shape {p.shape} added to {n} attention-head units")
        flat = h.nodes.reshape(-1)
        if not self._slots_free(flat, [BIAS]):
            raise self.fail(f"parameter {p.name!r} added to attention-head units that already have a bias")
        self.use(p, "add")
        self.s.node_blocks.append(NodeBlock(flat.clone(), BIAS, p.name, torch.arange(n)))
        for i in flat.tolist():
            self.s.node_slots[i] |= 1 << BIAS
        return h

    def score_scale(self, q: Heads, p: Param, label: str) -> None:
        """A learned scale of each head's attention scores (Swin V2's ``logit_scale``, one per
        head): a new ``ATTN_SCALE`` node per head holds it as its ``weight`` feature, joined by
        ``ATTN_SCALE`` edges to the query units of its head."""
        H, dq = q.nodes.shape
        self.use(p, "attention-score scale")
        nodes = self.new_nodes(H, NodeType.ATTN_SCALE, 0, pos=True, label=f"{label}:score_scale")
        self.s.node_blocks.append(NodeBlock(nodes.clone(), WEIGHT, p.name, torch.arange(H)))
        for i in nodes.tolist():
            self.s.node_slots[i] |= 1 << WEIGHT
        self.add_edges(EdgeBlock(nodes.repeat_interleave(dq), q.nodes.reshape(-1).clone(), EdgeType.ATTN_SCALE, 1, 1))

    def score_bias(self, q: Heads, bias: Any) -> None:
        """A learned bias added to the attention scores of each head, computed from a parameter
        table looked up by relative position (T5, Swin): ``bias`` holds one unit per query head;
        they become ``ATTN_BIAS`` nodes, each joined by ``ATTN_BIAS`` edges to the query units of
        its head. The table's values stay on the edges of its lookup."""
        if not isinstance(bias, Act) or bias.block != 1:
            raise self.fail(f"attention scores combined with {type(bias).__name__} (only a per-head bias "
                            "looked up from a parameter table is supported)")
        H, dq = q.nodes.shape
        if len(bias) != H:
            raise self.fail(f"an attention-score bias with {len(bias)} units for {H} heads")
        for i in bias.nodes.tolist():
            self.s.node_type[i] = int(NodeType.ATTN_BIAS)
        self.add_edges(EdgeBlock(bias.nodes.repeat_interleave(dq), q.nodes.reshape(-1).clone(),
                                 EdgeType.ATTN_BIAS, 1, 1))

    # -- weight parametrizations ------------------------------------------------------------
    def weight_edges(self, w: Param) -> EdgeBlock:
        """The edge block that holds weight ``w`` (added by :meth:`linear` or :meth:`conv`)."""
        for blk in reversed(self.s.edge_blocks):
            if blk.param == w.name:
                return blk
        raise self.fail(f"internal error: no edges hold {w.name!r}")  # pragma: no cover - linear/conv add one

    def spectral_state(self, w: Param, y: Act, u: Param | None, v: Param | None, label: str) -> None:
        r"""The power-iteration vectors of ``torch.nn.utils.parametrizations.spectral_norm`` on the
        ``Linear``/``Conv`` layer whose stored weight ``w`` (``original``) is on its edges and whose
        output units are ``y``.

        Miyato et al., "Spectral Normalization for Generative Adversarial Networks" (ICLR 2018):
        the effective weight is :math:`W / \sigma` with :math:`\sigma = u^\top W_{mat} v`,
        :math:`W_{mat}` = ``W.reshape(out, -1)``; ``u [out]`` and ``v [in * kh * kw]`` are buffers
        updated by power iteration in training and read as they are in evaluation mode. They get
        one new ``PARAMETRIZATION`` node (the layer's :math:`\sigma`) and ``PARAMETRIZATION``
        edges into it: ``u[o]`` from output unit ``o`` (1x1), ``v[c*K:(c+1)*K]`` from input unit
        ``c`` (the ``kh x kw`` kernel of that channel, ``K = kh*kw``; ``1 x block`` after a
        flattened map). Both permute with the units they are attached to, as ``W``'s rows and
        columns do, so the function is unchanged by a permutation of hidden units."""
        blk = self.weight_edges(w)
        out = y.nodes
        n_out = len(out)
        C = blk.src.numel() // max(n_out, 1)
        inputs = blk.src[:C]
        K = blk.kh * blk.kw
        for p, n in ((u, n_out), (v, C * K)):
            if p is None or math.prod(p.shape) != n:
                raise self.fail(f"spectral_norm of {w.name!r}: expected a power-iteration vector of {n} values, "
                                f"got {p.name + ' of shape ' + str(p.shape) if p is not None else 'none'}")
        self.use(u, "spectral_norm")
        self.use(v, "spectral_norm")
        node = self.new_nodes(1, NodeType.PARAMETRIZATION, y.layer + 1, pos=True, label=f"{label}:spectral_norm")
        self.add_edges(EdgeBlock(out.clone(), node.repeat(n_out), EdgeType.PARAMETRIZATION, 1, 1, u.name))
        self.add_edges(EdgeBlock(inputs.clone(), node.repeat(C), EdgeType.PARAMETRIZATION, blk.kh, blk.kw, v.name))

    def orthogonal_base(self, w: Param, y: Act, base: Param, label: str) -> None:
        r"""The ``base`` buffer of ``torch.nn.utils.parametrizations.orthogonal`` with
        ``use_trivialization=True``: the effective weight is :math:`B\,\phi(A)`, :math:`\phi` the
        map (``matrix_exp``, ``cayley`` or ``householder``) of the stored tensor :math:`A`
        (``original``, on the layer's edges) and :math:`B` the base (Lezcano-Casado, "Trivializations
        for Gradient-Based Optimization on Manifolds", NeurIPS 2019). The map acts on the last two
        axes of the weight, padded to square ``m x m``.

        A convolution ``[O, I, kh, kw]`` has one base ``[m, m]`` (``m = max(kh, kw)``) per kernel:
        a ``PARAMETRIZATION`` edge parallel to each ``CONV`` edge holds it as an ``m x m`` kernel.
        A ``Linear`` ``[out, in]`` has one ``[m, m]`` base over its longer side (the output units
        when ``out >= in``, else the input units): ``m`` new ``PARAMETRIZATION`` basis nodes, and
        ``base[j, k]`` on the edge from basis node ``k`` to unit ``j``."""
        blk = self.weight_edges(w)
        self.use(base, "orthogonal")
        if len(w.shape) == 4:
            m = max(w.shape[2], w.shape[3])
            if tuple(base.shape) != (*w.shape[:2], m, m):
                raise self.fail(f"orthogonal base {base.name!r} has shape {base.shape} for weight {w.shape}")
            self.add_edges(EdgeBlock(blk.src.clone(), blk.dst.clone(), EdgeType.PARAMETRIZATION, m, m, base.name))
            return
        out_f, in_f = w.shape
        m = max(out_f, in_f)
        if tuple(base.shape) != (m, m):
            raise self.fail(f"orthogonal base {base.name!r} has shape {base.shape} for a linear weight {w.shape}")
        if out_f < in_f and blk.kh * blk.kw != 1:
            raise self.fail(f"orthogonal base {base.name!r} runs over the {in_f} flattened input features of "
                            f"{w.name!r}, which are not neurons of the graph; apply orthogonal to a Linear with "
                            "at least as many outputs as inputs there, or pool the map before flattening")
        units = y.nodes if out_f >= in_f else blk.src[:in_f]
        basis = self.new_nodes(m, NodeType.PARAMETRIZATION, 0, pos=True, label=f"{label}:orthogonal_base")
        self.add_edges(EdgeBlock(basis.repeat(m), units.repeat_interleave(m), EdgeType.PARAMETRIZATION, 1, 1,
                                 base.name))


def _chunks(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """Group the axes of a reshape: each pair (input axes, output axes) holds the same elements."""
    out = []
    i = j = 0
    while i < len(in_shape) or j < len(out_shape):
        gi, gj = [i], [j]
        pi = in_shape[i] if i < len(in_shape) else 1
        pj = out_shape[j] if j < len(out_shape) else 1
        while pi != pj:
            if pi < pj:
                i += 1
                gi.append(i)
                pi *= in_shape[i]
            else:
                j += 1
                gj.append(j)
                pj *= out_shape[j]
        out.append((gi, gj))
        i += 1
        j += 1
    return out
