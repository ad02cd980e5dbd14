r"""Where every flat parameter of an architecture sits in its parameter graph, and the index maps
the nowcasters derive from it.

:class:`NowcastLayout` reads, once per :class:`~weightspace.GraphSpec`, whether each flat
parameter is a weight entry (an edge feature) or a node parameter (bias, normalization), which edge
or neuron owns it and which normalization group it belongs to (:func:`normalization_groups`).
:class:`GraphIndex` holds the sparse aggregation and message matrices of the graph nowcaster for
``B`` block-diagonal copies of a layout; the helpers :func:`csr`, :func:`sparse_csr`,
:func:`slot_ends`, :func:`message_csr` and :func:`context_rows` build them and are shared with the
streamed (:mod:`~weightspace.nowcast.stream`) and prepared (:mod:`~weightspace.nowcast.plan`) paths.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from weightspace.graph import GraphSpec
from weightspace.graph.vocab import NODE_FEATURES, Activation, EdgeType, NodeType

from .features import CHANNELS

__all__ = [
    "NowcastLayout",
    "GraphIndex",
    "VOCAB_ROWS",
    "normalization_groups",
    "csr",
    "sparse_csr",
    "slot_ends",
    "message_csr",
    "context_rows",
]

#: embedding rows of the graph nowcaster: edge types below ``VOCAB_ROWS // 2``, node-slot columns from it
VOCAB_ROWS = 64
if (len(EdgeType) > VOCAB_ROWS // 2 or len(NODE_FEATURES) > VOCAB_ROWS // 2
        or max(len(NodeType), len(Activation)) > VOCAB_ROWS):  # pragma: no cover - vocabulary guard
    raise RuntimeError("the graph vocabulary outgrew the nowcaster's embedding tables; raise VOCAB_ROWS")


@dataclass(frozen=True, eq=False)
class NowcastLayout:
    """Where every flat parameter of one architecture (or of ``B`` copies of it) sits in its graph.

    Attributes:
        num_params: ``P`` (all copies).
        num_nodes, num_edges: graph sizes (all copies).
        slot_edge: ``[P]`` bool, the parameter is an edge feature (weight / kernel entry), else a
            node feature (bias, normalization scale/shift, running statistics).
        slot_owner: ``[P]`` int32, its edge id or node id.
        slot_col: ``[P]`` int32, node column (:data:`~weightspace.graph.vocab.NODE_FEATURES`), or
            ``len(NODE_FEATURES)`` for edge slots.
        slot_tensor: ``[P]`` int32, its normalization group (:func:`normalization_groups`): the
            parameter tensor it belongs to, split by role where one tensor packs several maps (the
            query, key and value blocks of a fused attention projection), numbered in flat order.
        num_tensors: number of normalization groups.
        edge_index, edge_type, node_type, node_act: the graph's structure (``edge_index`` int32,
            ``edge_type`` int8, as the spec stores them: no copy).
        shapes: the parameter tensors' shapes in flat order (one copy; empty for repeated layouts).
        cache: index tensors derived once per batch size and device (:meth:`graph_index`).
    """

    num_params: int
    num_nodes: int
    num_edges: int
    slot_edge: Tensor
    slot_owner: Tensor
    slot_col: Tensor
    slot_tensor: Tensor
    num_tensors: int
    edge_index: Tensor
    edge_type: Tensor
    node_type: Tensor
    node_act: Tensor
    shapes: tuple = ()
    cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_spec(cls, spec: GraphSpec) -> NowcastLayout:
        """Read the slot of every flat parameter from ``spec.decode_index`` (the converter's decode map)."""
        cached = spec._cache.get("nowcast_layout")
        if cached is not None:
            return cached
        N, E = spec.num_nodes, spec.num_edges
        Fn = len(NODE_FEATURES)
        F = spec.kernel_shape[0] * spec.kernel_shape[1]
        idx = spec.decode_index  # int32 (int64 past 2**31 slots): index arithmetic stays in its dtype
        edge = idx >= N * Fn
        owner = idx - N * Fn  # edge slots: edge id (x kernel entries), fixed below for node slots
        if F > 1:
            owner = owner.div_(F, rounding_mode="floor")
        nodes = (~edge).nonzero().squeeze(1)  # few: biases and normalization parameters
        owner = owner.to(torch.int32)
        owner[nodes] = (idx[nodes] // Fn).to(torch.int32)
        col = torch.full(edge.shape, Fn, dtype=torch.int32)
        col[nodes] = (idx[nodes] % Fn).to(torch.int32)
        tensor, groups = normalization_groups(spec, edge, owner)
        out = cls(int(edge.numel()), N, E, edge, owner, col, tensor, groups, spec.edge_index,
                  spec.edge_type, spec.node_type.long(), spec.node_act.long(), tuple(tuple(s) for s in spec.shapes))
        spec._cache["nowcast_layout"] = out
        return out

    def repeat(self, copies: int) -> NowcastLayout:
        """``copies`` disjoint copies (block-diagonal), for a batch of windows of one architecture."""
        if copies == 1:
            return self
        r = torch.arange(copies)
        off = lambda n: (r * n)[:, None]  # noqa: E731
        owner = torch.where(self.slot_edge[None], self.slot_owner[None].long() + off(self.num_edges),
                            self.slot_owner[None].long() + off(self.num_nodes)).reshape(-1)
        ei = (self.edge_index.long()[:, None, :] + (r * self.num_nodes)[None, :, None]).reshape(2, -1)
        return NowcastLayout(
            self.num_params * copies, self.num_nodes * copies, self.num_edges * copies,
            self.slot_edge.repeat(copies), owner, self.slot_col.repeat(copies),
            (self.slot_tensor[None] + off(self.num_tensors)).reshape(-1), self.num_tensors * copies,
            ei, self.edge_type.repeat(copies), self.node_type.repeat(copies), self.node_act.repeat(copies))

    def to(self, device: torch.device) -> NowcastLayout:
        if self.slot_owner.device == torch.device(device):
            return self
        kw = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items() if k != "cache"}
        return NowcastLayout(**kw)

    def graph_index(self, copies: int, device: torch.device | str = "cpu") -> GraphIndex:
        """The graph nowcaster's index tensors for ``copies`` block-diagonal copies, built once and cached."""
        key = (int(copies), str(torch.device(device)))
        hit = self.cache.get(key)
        if hit is None:
            # plain tensors even when first asked for under inference mode (training reuses them)
            with torch.inference_mode(False), torch.no_grad():
                hit = self.cache[key] = GraphIndex.build(self.repeat(copies), torch.device(device))
        return hit


def normalization_groups(spec: GraphSpec, edge: Tensor, owner: Tensor) -> tuple[Tensor, int]:
    """``(group [P] int32, number of groups)``: the per-layer normalization groups of the flat parameters.

    A group is one parameter tensor, split by role where the tensor packs several maps: the role of
    a weight entry is its edge type, that of a node parameter its neuron's node type. So the query,
    key and value blocks of a fused attention projection (``in_proj_weight``, GPT-2's ``c_attn``) and
    their biases are normalized apart, as if they were separate layers, each with its own scale and
    step size (NiNo normalizes per layer; packing q, k and v into one group gives the one with the
    smallest steps a scale set by the others). Tensors of one role (every Linear, conv, norm) are one
    group each, as before. Groups are numbered in flat order, so a group's positions are contiguous
    whenever the roles of a tensor are (row blocks, as in a fused projection).
    """
    group = torch.empty(edge.shape, dtype=torch.int32)
    E = spec.num_edges
    etype = spec.edge_type.long() if E else None
    ntype = spec.node_type.long()
    g = o = 0
    for shape in spec.shapes:  # (a fill per tensor: repeat_interleave is slow at this size)
        n = math.prod(shape)
        sl = slice(o, o + n)
        o += n
        if n == 0:
            continue
        e, w = edge[sl], owner[sl].long()
        if bool(e.all()):
            role = etype[w]
        elif not bool(e.any()):
            role = ntype[w]
        else:
            role = torch.where(e, etype[w.clamp_max(E - 1)], VOCAB_ROWS + ntype[w.clamp_max(ntype.numel() - 1)])
        if bool((role == role[0]).all()):
            group[sl] = g
            g += 1
            continue
        change = torch.ones(n, dtype=torch.bool)  # roles in order of first appearance
        change[1:] = role[1:] != role[:-1]
        first = {}
        runs = change.nonzero().squeeze(1).tolist() + [n]
        for a, b in zip(runs[:-1], runs[1:]):
            r = int(role[a])
            if r not in first:
                first[r] = g + len(first)
            group[o - n + a: o - n + b] = first[r]
        g += len(first)
    return group, g


def csr(rows: Tensor, cols: Tensor, num_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(order, crow, col)``: the entries ``(rows, cols)`` sorted by row, as CSR index arrays."""
    order = torch.argsort(rows * (int(cols.max()) + 1 if cols.numel() else 1) + cols, stable=True)
    crow = torch.zeros(num_rows + 1, dtype=torch.long)
    crow[1:] = torch.bincount(rows, minlength=num_rows).cumsum(0)
    return order, crow, cols[order]


def sparse_csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def slot_ends(lay: NowcastLayout, which: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """For every parameter (or those at flat positions ``which``): ``(edge, owner, src, dst, kind)`` —
    whether it is a weight entry, its edge or node id, the edge's two ends (the node itself for a
    node parameter) and its embedding row (edge type, or ``VOCAB_ROWS // 2 +`` node column)."""
    sel = (lambda t: t) if which is None else (lambda t: t.index_select(0, which))  # noqa: E731
    edge, owner = sel(lay.slot_edge), sel(lay.slot_owner).long()
    if not lay.num_edges:
        return edge, owner, owner, owner, VOCAB_ROWS // 2 + sel(lay.slot_col).long()
    e = owner.clamp_max(lay.num_edges - 1)
    src = torch.where(edge, lay.edge_index[0].long()[e], owner)
    dst = torch.where(edge, lay.edge_index[1].long()[e], owner)
    kind = torch.where(edge, lay.edge_type.long()[e], VOCAB_ROWS // 2 + sel(lay.slot_col).long())
    return edge, owner, src, dst, kind


def message_csr(src: Tensor, dst: Tensor, pe: Tensor, N: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CSR ``(order, crow, col, take)`` of the message matrix ``[2N, 2·C·N]`` over the weight entries at
    positions ``pe``: row ``dst`` (forward) / ``N + src`` (backward), column ``(dir·C + c)·N + other end``;
    ``take`` picks each entry's channel value from a flat ``[len(src), C]`` table. Entries are grouped by
    channel, forward then backward within each (so per-entry scales repeat ``C`` times in that order)."""
    C = CHANNELS
    s, d = src[pe], dst[pe]
    rows = torch.cat([s_ for _ in range(C) for s_ in (d, N + s)])
    cols = torch.cat([x for ch in range(C) for x in (ch * N + s, (C + ch) * N + d)])
    take = torch.cat([x for ch in range(C) for x in (pe * C + ch, pe * C + ch)])
    order, crow, col = csr(rows, cols, 2 * N)
    return order, crow, col, take[order]


def context_rows(edge: Tensor, owner: Tensor, src: Tensor, dst: Tensor, N: int) -> tuple[Tensor, Tensor]:
    """Rows of the readout's context table ``[3N+1, D]`` for every parameter: source and ``N +``
    destination of a weight entry; ``2N +`` its node and the zero row ``3N`` for a node parameter."""
    return (torch.where(edge, src, 2 * N + owner), torch.where(edge, N + dst, torch.full_like(owner, 3 * N)))


@dataclass(frozen=True, eq=False)
class GraphIndex:
    """Static indices of the graph nowcaster for one layout (``N`` nodes, ``P`` parameters).

    * ``kind [P]``: embedding row (edge type, or node column for node slots).
    * ``agg``: CSR ``[3N, P]`` averaging parameter encodings into each node's incoming edges,
      outgoing edges and own node slots.
    * ``mp_*``: CSR ``[2N, 2·C·N]`` of a message-passing layer: row ``j`` (forward, ``i → j``) and
      ``N + i`` (backward) pick column ``(dir·C + c)·N + other end`` with value ``v_c(p) / degree``;
      ``mp_take`` picks ``v_c(p)`` from the flat ``[P·C]`` channel values, ``mp_scale`` is ``1/degree``.
    * ``ctx_a``, ``ctx_b [P]``: rows of the readout's context table ``[3N+1, D]`` (source and
      destination of an edge slot; the node's own row and the zero row for a node slot).
    """

    num_nodes: int
    num_params: int
    node_type: Tensor
    node_act: Tensor
    kind: Tensor
    agg: Tensor
    mp_crow: Tensor
    mp_col: Tensor
    mp_take: Tensor
    mp_scale: Tensor
    ctx_a: Tensor
    ctx_b: Tensor

    @classmethod
    def build(cls, lay: NowcastLayout, device: torch.device) -> GraphIndex:
        N, P, C = lay.num_nodes, lay.num_params, CHANNELS
        p = torch.arange(P)
        edge, owner, src, dst, kind = slot_ends(lay)
        ep = p[edge]
        np_ = p[~edge]
        # aggregation [3N, P]: incoming (dst), outgoing (N + src), own node slots (2N + owner)
        rows = torch.cat([dst[edge], N + src[edge], 2 * N + owner[~edge]])
        cols = torch.cat([ep, ep, np_])
        cnt = torch.bincount(rows, minlength=3 * N).clamp_min(1).float()
        order, crow, col = csr(rows, cols, 3 * N)
        agg = sparse_csr(crow, col, (1.0 / cnt)[rows[order]], (3 * N, P))
        # message passing [2N, 2CN]
        deg_in = torch.bincount(dst[edge], minlength=N).clamp_min(1).float()
        deg_out = torch.bincount(src[edge], minlength=N).clamp_min(1).float()
        order, mp_crow, mp_col, take = message_csr(src, dst, ep, N)
        scale = torch.cat([1.0 / deg_in[dst[edge]], 1.0 / deg_out[src[edge]]] * C)
        ctx_a, ctx_b = context_rows(edge, owner, src, dst, N)
        out = cls(N, P, lay.node_type, lay.node_act, kind, agg, mp_crow, mp_col, take, scale[order], ctx_a, ctx_b)
        if device.type == "cpu":
            return out
        return cls(N, P, *(getattr(out, f).to(device) for f in ("node_type", "node_act", "kind", "agg", "mp_crow",
                                                                 "mp_col", "mp_take", "mp_scale", "ctx_a", "ctx_b")))


