r"""Parameter nowcasting: predict where an optimizer's trajectory goes, and train a predictor for it.

Follows NiNo (Knyazev et al., "Accelerating Training with Neuron Interaction and Nowcasting
Networks", ICLR 2025, https://arxiv.org/abs/2409.04434): the last ``context`` snapshots of a
network's parameters become the features of its parameter graph (neurons are nodes, weights are
edges, :class:`~weightspace.GraphSpec`), a graph network predicts the change of every parameter for
``horizons`` future snapshot spacings at once, and training jumps there
(:mod:`weightspace.tasks.nowcast_hook`).

Normalization (per group ``l``: a parameter tensor — a layer's weight, its bias, ... — split by role
where it packs several maps, so the query, key and value blocks of a fused attention projection are
three groups, as NiNo's per-layer scaling treats separate layers; see :func:`_normalization_groups`;
undone after):

.. math::
    \mu_l, \sigma_l = \operatorname{mean}, \operatorname{std}\ \text{of}\ \{\theta^{(k)}_p : p \in l,\ k < c\},
    \qquad s_l = \operatorname{mean}\,|\theta^{(k)}_p - \theta^{(k-1)}_p| \\
    \text{features}_p = \big[(\theta^{(c-1)}_p - \mu_l)/\sigma_l,\ (\theta^{(k)}_p - \theta^{(k-1)}_p)/s_l\ (k=1..c-1),
    \ \log(s_l/\sigma_l),\ \beta_p\big], \qquad
    \hat\theta^{(c-1+h)}_p = \theta^{(c-1)}_p + s_l\,\hat\delta_{p,h}

where :math:`\beta_p` is the least-squares slope over the context (in units of :math:`s_l`). The
prediction :math:`\hat\delta_{p,h}` is Linefit (the fitted line extrapolated ``h`` spacings) plus a
learned correction whose last layer starts at zero, so an untrained nowcaster is Linefit.

Three kinds share this interface and the meta-training loop, so baselines run in the same harness:

* ``"graph"`` — the nowcaster, built so that a jump costs a few passes over the parameters: each
  parameter is encoded on its own (``param_hidden`` numbers, plus an embedding of its edge type or
  node column); every neuron averages the encodings of its incoming weights, outgoing weights and
  own node parameters; :class:`_NodeLayer` message passing runs on neurons only, messages weighted
  by per-weight scalars (one sparse product per layer, index tensors cached per architecture by
  :meth:`NowcastLayout.graph_index`); each parameter's output reads its own encoding plus the states
  of its two neurons (its own neuron for a bias / norm parameter) — equivariant to hidden-neuron
  permutations. NiNo updates a state per edge in every layer instead, which costs ``O(D^2)`` per
  weight and layer. One window (a jump of the hook) is computed in chunks of parameters, dense
  weight tensors as matrix products (:mod:`weightspace.tasks.nowcast_stream`), so memory stays
  bounded on models with tens of millions of parameters; on a small model the hook runs the same
  function prepared once per architecture (:mod:`weightspace.tasks.nowcast_plan`).
* ``"mlp"`` — a per-parameter MLP on the same features, no graph (WNN-like; Jang et al., ICML 2023).
* ``"linefit"`` — per-parameter linear extrapolation over the context, no parameters.

Meta-training (:func:`meta_train`) samples windows of ``context`` snapshots at several strides from
dense zoo trajectories (:func:`load_trajectories`), regresses the normalized future deltas with an
L1 loss divided by the horizon, and checkpoints (safetensors + JSON) so that it resumes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from weightspace.graph import GraphSpec
from weightspace.graph.vocab import NODE_FEATURES, Activation, EdgeType, NodeType

if TYPE_CHECKING:  # pragma: no cover
    from .nowcast_plan import JumpPlan

log = logging.getLogger(__name__)

__all__ = [
    "Nowcaster",
    "NowcastConfig",
    "NowcastLayout",
    "Trajectory",
    "MetaTrainConfig",
    "load_trajectories",
    "meta_train",
    "window_features",
    "KINDS",
]

KINDS = ("graph", "mlp", "linefit")
FORMAT = "weightspace.nowcaster/2"
_OLD_FORMATS = ("weightspace.nowcaster/1",)  # per-parameter kinds of /1 load unchanged
_FIXED = 3  # features besides the c-1 differences: last value, log step scale, slope
_VOCAB_ROWS = 64  # embedding rows: edge types below 32, node-slot columns from 32 (room to grow)
_CHANNELS = 3  # per-parameter scalars that weight a message: 1, normalized value, slope
if (len(EdgeType) > _VOCAB_ROWS // 2 or len(NODE_FEATURES) > _VOCAB_ROWS // 2
        or max(len(NodeType), len(Activation)) > _VOCAB_ROWS):  # pragma: no cover - vocabulary guard
    raise RuntimeError("the graph vocabulary outgrew the nowcaster's embedding tables; raise _VOCAB_ROWS")


# ----------------------------------------------------------------------------- layout
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
        slot_tensor: ``[P]`` int32, its normalization group (:func:`_normalization_groups`): the
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
        tensor, groups = _normalization_groups(spec, edge, owner)
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

    def graph_index(self, copies: int, device: torch.device | str = "cpu") -> _GraphIndex:
        """The graph nowcaster's index tensors for ``copies`` block-diagonal copies, built once and cached."""
        key = (int(copies), str(torch.device(device)))
        hit = self.cache.get(key)
        if hit is None:
            # plain tensors even when first asked for under inference mode (training reuses them)
            with torch.inference_mode(False), torch.no_grad():
                hit = self.cache[key] = _GraphIndex.build(self.repeat(copies), torch.device(device))
        return hit


def _normalization_groups(spec: GraphSpec, edge: Tensor, owner: Tensor) -> tuple[Tensor, int]:
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
            role = torch.where(e, etype[w.clamp_max(E - 1)], _VOCAB_ROWS + ntype[w.clamp_max(ntype.numel() - 1)])
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


def _csr(rows: Tensor, cols: Tensor, num_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(order, crow, col)``: the entries ``(rows, cols)`` sorted by row, as CSR index arrays."""
    order = torch.argsort(rows * (int(cols.max()) + 1 if cols.numel() else 1) + cols, stable=True)
    crow = torch.zeros(num_rows + 1, dtype=torch.long)
    crow[1:] = torch.bincount(rows, minlength=num_rows).cumsum(0)
    return order, crow, cols[order]


def _sparse(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def _slot_ends(lay: NowcastLayout, which: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """For every parameter (or those at flat positions ``which``): ``(edge, owner, src, dst, kind)`` —
    whether it is a weight entry, its edge or node id, the edge's two ends (the node itself for a
    node parameter) and its embedding row (edge type, or ``_VOCAB_ROWS // 2 +`` node column)."""
    sel = (lambda t: t) if which is None else (lambda t: t.index_select(0, which))  # noqa: E731
    edge, owner = sel(lay.slot_edge), sel(lay.slot_owner).long()
    if not lay.num_edges:
        return edge, owner, owner, owner, _VOCAB_ROWS // 2 + sel(lay.slot_col).long()
    e = owner.clamp_max(lay.num_edges - 1)
    src = torch.where(edge, lay.edge_index[0].long()[e], owner)
    dst = torch.where(edge, lay.edge_index[1].long()[e], owner)
    kind = torch.where(edge, lay.edge_type.long()[e], _VOCAB_ROWS // 2 + sel(lay.slot_col).long())
    return edge, owner, src, dst, kind


def _message_csr(src: Tensor, dst: Tensor, pe: Tensor, N: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CSR ``(order, crow, col, take)`` of the message matrix ``[2N, 2·C·N]`` over the weight entries at
    positions ``pe``: row ``dst`` (forward) / ``N + src`` (backward), column ``(dir·C + c)·N + other end``;
    ``take`` picks each entry's channel value from a flat ``[len(src), C]`` table. Entries are grouped by
    channel, forward then backward within each (so per-entry scales repeat ``C`` times in that order)."""
    C = _CHANNELS
    s, d = src[pe], dst[pe]
    rows = torch.cat([s_ for _ in range(C) for s_ in (d, N + s)])
    cols = torch.cat([x for ch in range(C) for x in (ch * N + s, (C + ch) * N + d)])
    take = torch.cat([x for ch in range(C) for x in (pe * C + ch, pe * C + ch)])
    order, crow, col = _csr(rows, cols, 2 * N)
    return order, crow, col, take[order]


def _context_rows(edge: Tensor, owner: Tensor, src: Tensor, dst: Tensor, N: int) -> tuple[Tensor, Tensor]:
    """Rows of the readout's context table ``[3N+1, D]`` for every parameter: source and ``N +``
    destination of a weight entry; ``2N +`` its node and the zero row ``3N`` for a node parameter."""
    return (torch.where(edge, src, 2 * N + owner), torch.where(edge, N + dst, torch.full_like(owner, 3 * N)))


@dataclass(frozen=True, eq=False)
class _GraphIndex:
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
    def build(cls, lay: NowcastLayout, device: torch.device) -> _GraphIndex:
        N, P, C = lay.num_nodes, lay.num_params, _CHANNELS
        p = torch.arange(P)
        edge, owner, src, dst, kind = _slot_ends(lay)
        ep = p[edge]
        np_ = p[~edge]
        # aggregation [3N, P]: incoming (dst), outgoing (N + src), own node slots (2N + owner)
        rows = torch.cat([dst[edge], N + src[edge], 2 * N + owner[~edge]])
        cols = torch.cat([ep, ep, np_])
        cnt = torch.bincount(rows, minlength=3 * N).clamp_min(1).float()
        order, crow, col = _csr(rows, cols, 3 * N)
        agg = _sparse(crow, col, (1.0 / cnt)[rows[order]], (3 * N, P))
        # message passing [2N, 2CN]
        deg_in = torch.bincount(dst[edge], minlength=N).clamp_min(1).float()
        deg_out = torch.bincount(src[edge], minlength=N).clamp_min(1).float()
        order, mp_crow, mp_col, take = _message_csr(src, dst, ep, N)
        scale = torch.cat([1.0 / deg_in[dst[edge]], 1.0 / deg_out[src[edge]]] * C)
        ctx_a, ctx_b = _context_rows(edge, owner, src, dst, N)
        out = cls(N, P, lay.node_type, lay.node_act, kind, agg, mp_crow, mp_col, take, scale[order], ctx_a, ctx_b)
        if device.type == "cpu":
            return out
        return cls(N, P, *(getattr(out, f).to(device) for f in ("node_type", "node_act", "kind", "agg", "mp_crow",
                                                                 "mp_col", "mp_take", "mp_scale", "ctx_a", "ctx_b")))


# ----------------------------------------------------------------------------- features
def _group_sum(values: Tensor, group: Tensor, num: int) -> Tensor:
    """Sum of ``values [B, P]`` over the parameters of each group -> ``[B, num]``."""
    if values.shape[0] == 1:  # a 1-D scatter (index_add_ along dim 1 takes a slow path on CPU)
        return values.new_zeros(num).index_add_(0, group, values[0])[None]
    return values.new_zeros(values.shape[0], num).index_add_(1, group, values)


def group_stats(window: Tensor, tensor_id: Tensor, num_tensors: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-group statistics of a window ``[B, c, P]``: ``(mu, sigma, step)``, each ``[B, num_tensors]``
    (mean and standard deviation of all the group's values in the window, mean absolute step)."""
    window = window.float()
    B, c, P = window.shape
    G = num_tensors
    cnt = window.new_zeros(G).index_add_(0, tensor_id, window.new_ones(P)).clamp_min(1)
    mean_r = window.mean(1)  # per parameter, over the window (torch.var_mean over dim 1 is slow on CPU)
    var_r = (window - mean_r[:, None]).square_().mean(1)
    mu = _group_sum(mean_r, tensor_id, G) / cnt  # [B, G]
    mu_p = mu.index_select(1, tensor_id)
    var = _group_sum(var_r + (mean_r - mu_p) ** 2, tensor_id, G) / cnt  # mean of (theta - mu)^2
    step = _group_sum((window[:, 1:] - window[:, :-1]).abs_().mean(1), tensor_id, G) / cnt
    return mu, *_finish_stats(var, step)


def _finish_stats(var: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
    """``(sigma, step)`` from a group's variance and mean absolute step, floored away from zero."""
    sigma = var.sqrt() + 1e-12
    return sigma, torch.maximum(step, 1e-7 * sigma) + 1e-20


def _slope_weights(c: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """``[c-1]`` weights of the least-squares slope over ``k = 0..c-1`` applied to the differences
    ``d_j = theta_{j+1} - theta_j``: ``sum_k kc_k theta_k = sum_j d_j sum_{k>j} kc_k`` (``kc`` centred), so a
    parameter that did not move gets exactly 0 rather than a rounding residue, which the floor of a still
    group's step scale (1e-7 sigma) would blow up to a feature of order 1 (its size depended on the BLAS
    kernel: thread count, CPU)."""
    kc = torch.arange(c, dtype=dtype, device=device) - (c - 1) / 2
    return torch.flip(torch.cumsum(torch.flip(kc, (0,)), 0), (0,))[1:] / (kc * kc).sum()


def param_features(window: Tensor, tensor_id: Tensor | int, mu: Tensor, sigma: Tensor, step: Tensor,
                   features: bool = True) -> tuple[Tensor | None, Tensor, Tensor]:
    """Per-parameter features of a window ``[B, c, P]`` given its groups' statistics (:func:`group_stats`).

    Works on any slice of the parameters (with the slice's ``tensor_id``, or one ``int`` when the
    slice lies in one tensor), which is how :mod:`weightspace.tasks.nowcast_stream` bounds memory on
    large models. Returns as :func:`window_features`.
    """
    window = window.float()
    B, c, P = window.shape
    if isinstance(tensor_id, int):
        pick = lambda x: x[:, tensor_id: tensor_id + 1].expand(B, P)  # noqa: E731
    else:
        pick = lambda x: x.index_select(1, tensor_id)  # noqa: E731
    s = pick(step)  # [B, P]
    lastv = window[:, -1]
    mean_r = window.mean(1)
    # least-squares line through theta_k at k = 0..c-1, in units of s (slope from the differences)
    dw = window[:, 1:] - window[:, :-1]
    slope = torch.tensordot(_slope_weights(c, window.dtype, window.device), dw, dims=([0], [1])) / s
    at_last = (mean_r - lastv) / s + slope * ((c - 1) / 2)
    line = torch.stack([at_last, slope], dim=-1)
    if not features:
        return None, s, line
    last = (lastv - pick(mu)) / pick(sigma)
    logscale = pick(torch.log(step / sigma).clamp(-20, 5))
    d = dw / s[:, None]
    # built feature-major ([B, F, P]: contiguous copies; stacking along the last axis interleaves slowly)
    # and returned as its [B, P, F] view, which matrix products read without a copy
    feats = torch.stack([last, *d.unbind(1), logscale, slope], dim=1).clamp_(-50, 50)
    return feats.transpose(1, 2), s, line


def window_features(window: Tensor, tensor_id: Tensor, num_tensors: int, features: bool = True
                    ) -> tuple[Tensor | None, Tensor, Tensor]:
    """Normalized per-parameter features of a context window.

    Every statistic is a per-parameter reduction over the window followed by one sum per group
    (:func:`group_stats`, then :func:`param_features`), so this costs a few passes over the window.

    Args:
        window: ``[B, c, P]`` snapshots, oldest first (``c >= 2``).
        tensor_id: ``[P]`` normalization group of each parameter.
        num_tensors: number of groups.
        features: ``False`` skips the feature tensor (``None`` is returned; Linefit needs only the line).

    Returns:
        ``(features [B, P, c+2], scale [B, P], linefit [B, P, 2])`` where ``scale`` is the step scale
        :math:`s_l` broadcast to parameters and ``linefit`` holds the fitted line's ``(value at the
        last snapshot minus the last snapshot, slope)`` in units of ``scale``.
    """
    mu, sigma, step = group_stats(window, tensor_id, num_tensors)
    return param_features(window, tensor_id, mu, sigma, step, features)


def _linefit_deltas(line: Tensor, horizons: int) -> Tensor:
    """``[B, P, H]``: the fitted line at ``h = 1..H`` spacings past the last snapshot (scaled units)."""
    h = torch.arange(1, horizons + 1, dtype=line.dtype, device=line.device)
    return line[..., :1] + line[..., 1:] * h


# ----------------------------------------------------------------------------- model
@dataclass(frozen=True)
class NowcastConfig:
    """Architecture of a nowcaster.

    Attributes:
        kind: ``"graph"`` (the nowcaster), ``"mlp"`` (per-parameter, no graph) or ``"linefit"``.
        context: snapshots in a window (``c``).
        horizons: predicts ``1..horizons`` snapshot spacings ahead at once.
        hidden: width of node states (graph kind) or of the per-parameter MLP (mlp kind).
        layers: message-passing layers (graph kind) or hidden layers (mlp kind).
        param_hidden: width of the graph kind's per-parameter encodings (its cost per parameter).
    """

    kind: str = "graph"
    context: int = 5
    horizons: int = 16
    hidden: int = 32
    layers: int = 2
    param_hidden: int = 8

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown nowcaster kind {self.kind!r}; choose one of {KINDS}")
        if self.context < 2:
            raise ValueError(f"context must be at least 2 snapshots, got {self.context}")
        if self.horizons < 1:
            raise ValueError(f"horizons must be at least 1, got {self.horizons}")


def _mlp(dims: Sequence[int]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(len(dims) - 1):
        mods.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            mods.append(nn.SiLU())
    return nn.Sequential(*mods)


class _NodeLayer(nn.Module):
    r"""One message-passing layer of the graph nowcaster, on neurons only (cheap per weight).

    .. math::
        m^{\rightarrow}_j = \operatorname{mean}_{i \to j} \sum_c v_c(w_{ij})\, U_c h_i, \qquad
        m^{\leftarrow}_i = \operatorname{mean}_{i \to j} \sum_c v_c(w_{ij})\, V_c h_j, \qquad
        h'_i = h_i + \mathrm{MLP}\big([\mathrm{LN}(h_i), m^{\rightarrow}_i, m^{\leftarrow}_i]\big)

    with per-weight scalars :math:`v = (1, \text{normalized value}, \text{slope})`, so the weights modulate
    the messages (as in NFN/DWS linear layers) and one sparse matrix product per layer costs
    ``C·D_m`` multiply-adds per weight. Equivariant to hidden-neuron permutations.

    Shapes: ``h [N, D]``, ``S`` sparse ``[2N, 2·C·N]`` (:class:`_GraphIndex`) -> ``[N, D]``.
    """

    def __init__(self, hidden: int, msg: int, channels: int) -> None:
        super().__init__()
        self.msg_dim, self.channels = msg, channels
        self.msg = nn.Linear(hidden, 2 * channels * msg)
        self.norm = nn.LayerNorm(hidden)
        self.update = _mlp([hidden + 2 * msg, 2 * hidden, hidden])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.msg.reset_parameters()
        self.norm.reset_parameters()
        for m in self.update:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        nn.init.zeros_(self.update[-1].weight)

    def forward(self, h: Tensor, S: Tensor) -> Tensor:
        N = h.shape[0]
        m = self.msg(h).view(N, 2 * self.channels, self.msg_dim).transpose(0, 1).reshape(-1, self.msg_dim)
        agg = S @ m  # [2N, Dm]
        return self.combine(h, agg[:N], agg[N:])

    def combine(self, h: Tensor, fwd: Tensor, bwd: Tensor) -> Tensor:
        """The update from the aggregated forward and backward messages ``[N, Dm]`` each."""
        return h + self.update(torch.cat([self.norm(h), fwd, bwd], dim=-1))


class Nowcaster(nn.Module):
    r"""Predicts future parameters from a window of past snapshots (NiNo-style; see module docs).

    Build one with a :class:`NowcastConfig` (or keyword arguments), load the shipped checkpoint with
    :meth:`pretrained`, or a saved one with :meth:`load`; :meth:`attach` plugs it into a training
    loop (:class:`~weightspace.tasks.nowcast_hook.NowcastHook`).

    Args:
        config: the architecture; keyword arguments override its fields.

    Shapes:
        - :meth:`predict`: ``window [c, P]`` or ``[B, c, P]`` -> deltas ``[H, P]`` / ``[B, H, P]``
          (``theta_future - theta_last`` for ``1..H`` snapshot spacings ahead).
        - :meth:`forward`: ``features [B, P, c+2]``, ``linefit [B, P, 2]`` -> scaled deltas ``[B, P, H]``.
    """

    def __init__(self, config: NowcastConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = config or NowcastConfig()
        if overrides:
            cfg = NowcastConfig(**{**asdict(cfg), **overrides})
        self.config = cfg
        c, D, H = cfg.context, cfg.hidden, cfg.horizons
        fin = c - 1 + _FIXED
        if cfg.kind == "mlp":
            self.encode = _mlp([fin] + [D] * (cfg.layers + 1))
            self.head = _mlp([D, D, H])
        elif cfg.kind == "graph":
            De, Dm = cfg.param_hidden, max(1, D // 2)
            self.encode = nn.Linear(fin, De)
            self.kind_emb = nn.Embedding(_VOCAB_ROWS, De)
            self.node_in = nn.Linear(3 * De, D)
            self.node_type_emb = nn.Embedding(_VOCAB_ROWS, D)
            self.act_emb = nn.Embedding(_VOCAB_ROWS, D)
            self.convs = nn.ModuleList([_NodeLayer(D, Dm, _CHANNELS) for _ in range(cfg.layers)])
            self.ctx = nn.Linear(D, 3 * De)
            self.mid = nn.Linear(De, De)
            self.head = nn.Sequential(nn.Linear(De, H))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        for name in ("head",):  # start as Linefit
            head = getattr(self, name, None)
            if head is not None:
                nn.init.zeros_(head[-1].weight)
                nn.init.zeros_(head[-1].bias)
        for name in ("kind_emb", "node_type_emb", "act_emb"):
            emb = getattr(self, name, None)
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.1)

    # ------------------------------------------------------------------ properties
    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def context(self) -> int:
        return self.config.context

    @property
    def horizons(self) -> int:
        return self.config.horizons

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        c = self.config
        return (f"{self.__class__.__name__}(kind={c.kind!r}, context={c.context}, horizons={c.horizons}, "
                f"hidden={c.hidden}, layers={c.layers}, params={n})")

    # ------------------------------------------------------------------ forward
    def forward(self, layout: NowcastLayout, features: Tensor, linefit: Tensor, horizon: int | None = None) -> Tensor:
        """Scaled deltas ``[B, P, H]`` (or ``[B, P]`` for one ``horizon`` in ``1..H``) for windows of ``B``
        copies of one architecture.

        ``layout`` describes one copy; the copies are processed as one block-diagonal graph.
        """
        H = self.config.horizons
        if horizon is None:
            base = _linefit_deltas(linefit, H)
        else:
            if not 1 <= horizon <= H:
                raise ValueError(f"horizon must lie in [1, {H}], got {horizon}")
            base = linefit[..., 0] + linefit[..., 1] * horizon
        if self.kind == "linefit":
            return base
        B, P, _ = features.shape
        if self.kind == "mlp":
            y = self.head[:-1](self.encode(features))
        else:
            y = self._graph_readout(layout, features)
        last = self.head[-1]
        if horizon is None:
            return base + last(y)
        return base + (y @ last.weight[horizon - 1] + last.bias[horizon - 1])

    def _graph_readout(self, layout: NowcastLayout, features: Tensor) -> Tensor:
        """Per-parameter states ``[B, P, De]`` before the horizon head (see :class:`_GraphIndex`)."""
        B, P, F = features.shape
        De = self.config.param_hidden
        gi = layout.graph_index(B, features.device)
        N = gi.num_nodes
        x = features.reshape(B * P, F)
        z = torch.mm(x, self.encode.weight.t()).add_((self.kind_emb.weight + self.encode.bias).index_select(0, gi.kind))
        agg = gi.agg @ nn.functional.silu(z)  # [3N, De]: mean over incoming, outgoing, own slots
        h = self.node_in(agg.view(3, N, De).transpose(0, 1).reshape(N, 3 * De))
        h = h + self.node_type_emb(gi.node_type) + self.act_emb(gi.node_act)
        if len(self.convs):
            chans = torch.stack([torch.ones_like(x[:, 0]), x[:, 0], x[:, -1]], dim=-1).reshape(-1)
            S = _sparse(gi.mp_crow, gi.mp_col, chans.index_select(0, gi.mp_take) * gi.mp_scale,
                        (2 * N, 2 * _CHANNELS * N))
            for conv in self.convs:
                h = conv(h, S)
        R = self.ctx(h).view(N, 3, De).transpose(0, 1).reshape(3 * N, De)
        R = torch.cat([R, R.new_zeros(1, De)])
        y = R.index_select(0, gi.ctx_a).add_(R.index_select(0, gi.ctx_b)).add_(z)
        y = nn.functional.silu(y, inplace=True)
        y = nn.functional.silu(self.mid(y), inplace=True)
        return y.view(B, P, De)

    def predict(self, spec: GraphSpec | NowcastLayout | JumpPlan, window: Tensor | Sequence[Tensor],
                horizon: int | None = None) -> Tensor:
        """Deltas ``theta(last + h spacings) - theta(last)`` for ``h = 1..horizons`` (or only ``horizon``).

        Runs under ``torch.inference_mode`` in eval mode; the index tensors of ``spec`` are built on the
        first call and cached on its layout. One window (``[c, P]`` or a sequence of ``c`` rows) is
        predicted in chunks of parameters (:mod:`weightspace.tasks.nowcast_stream`: memory beyond the
        window and the output stays bounded on models with tens of millions of parameters); a batch
        ``[B, c, P]`` in one pass over all of them (:meth:`forward`).

        Args:
            spec: the architecture's :class:`~weightspace.GraphSpec` (or its layout), or a
                :class:`~weightspace.tasks.nowcast_plan.JumpPlan` of it: a window ``[c, P]`` (or ``c`` rows)
                and one ``horizon`` then take the plan's prepared path (the hook's jump), anything
                else the plan's layout.
            window: ``[c, P]`` or ``[B, c, P]`` flat snapshots (``spec.flatten``), oldest first,
                evenly spaced, or a sequence of ``c`` tensors ``[P]`` (e.g. a ring buffer's rows, read
                in place); ``c`` may differ from the training context (Linefit features adapt;
                learned kinds need ``c == context``).
            horizon: one horizon in ``1..horizons``; only its column is computed.

        Returns:
            ``[H, P]`` / ``[B, H, P]``, or ``[P]`` / ``[B, P]`` for one ``horizon``, in the window's dtype.
        """
        if not isinstance(spec, (NowcastLayout, GraphSpec)):  # a JumpPlan
            plan, spec = spec, spec.layout
            if (plan.nowcaster is self and horizon is not None
                    and (not isinstance(window, Tensor) or window.dim() == 2)):
                return plan(window, horizon)
        layout = spec if isinstance(spec, NowcastLayout) else NowcastLayout.from_spec(spec)
        rows = None if isinstance(window, Tensor) else list(window)
        if rows is not None:
            if not rows or any(r.dim() != 1 for r in rows):
                raise ValueError("a window given as a sequence holds c tensors of shape [P]")
            shape, ref = (len(rows), rows[0].shape[0]), rows[0]
        else:
            if window.dim() not in (2, 3):
                raise ValueError(f"window must be [c, P] or [B, c, P], got shape {tuple(window.shape)}")
            shape, ref = tuple(window.shape[-2:]), window
        if shape[-1] != layout.num_params or (rows is not None and any(r.shape[0] != shape[1] for r in rows)):
            raise ValueError(f"window has {shape[-1]} parameters, the architecture stores {layout.num_params}")
        if self.kind != "linefit" and shape[0] != self.context:
            raise ValueError(f"this nowcaster reads windows of {self.context} snapshots, got {shape[0]}")
        if shape[0] < 2:
            raise ValueError(f"a window needs at least 2 snapshots, got {shape[0]}")
        if horizon is not None and not 1 <= horizon <= self.horizons:
            raise ValueError(f"horizon must lie in [1, {self.horizons}], got {horizon}")
        dev = self._device(ref.device)
        was = self.training
        if was:  # (toggling walks every submodule: skipped when already in eval mode)
            self.eval()
        try:
            with torch.inference_mode():
                if rows is not None or window.dim() == 2:
                    from .nowcast_stream import predict_stream

                    out = predict_stream(self, layout, rows if rows is not None else window, horizon)
                else:
                    if layout.slot_tensor.device != dev:
                        layout = layout.cache.setdefault(("to", str(dev)), layout.to(dev))
                    wf = window.to(dev, torch.float32)
                    feats, s, line = window_features(wf, layout.slot_tensor, layout.num_tensors,
                                                     self.kind != "linefit")
                    d = self(layout, feats, line, horizon)  # [B, P, H] or [B, P]
                    out = d * s if horizon is not None else (d * s[..., None]).transpose(1, 2)
        finally:
            if was:
                self.train()
        return out.to(ref.device, ref.dtype)

    def _device(self, default: torch.device) -> torch.device:
        for p in self.parameters():
            return p.device
        return default

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, info: dict | None = None) -> Path:
        """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (config, format, ``info``)."""
        base = _base(path)
        base.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = base.with_name(base.name + ".tmp.safetensors")
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        os.replace(tmp, base.with_suffix(".safetensors"))
        os.chmod(base.with_suffix(".safetensors"), 0o644)
        meta = {"format": FORMAT, "config": asdict(self.config), "info": info or {}}
        _write_json(base.with_suffix(".json"), meta)
        return base.with_suffix(".safetensors")

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Nowcaster:
        """Load a nowcaster written by :meth:`save` (``path`` with or without suffix), in eval mode."""
        base = _base(path)
        cfg_path = base.with_suffix(".json")
        if not cfg_path.exists():
            raise FileNotFoundError(f"no nowcaster config at {cfg_path}")
        meta = json.loads(cfg_path.read_text())
        fmt = meta.get("format")
        if fmt != FORMAT and fmt not in _OLD_FORMATS:
            raise ValueError(f"{cfg_path}: not a nowcaster checkpoint (format {fmt!r})")
        if fmt != FORMAT and meta["config"].get("kind") == "graph":
            raise ValueError(f"{cfg_path}: a graph nowcaster of the older format {fmt!r}; re-make it with "
                             "`weightspace nowcast` (the graph architecture changed)")
        model = cls(NowcastConfig(**meta["config"]))
        w = base.with_suffix(".safetensors")
        if model.kind != "linefit" or w.exists():
            state = load_file(str(w), device=str(map_location))
            model.load_state_dict(state)
        model.info = meta.get("info", {})
        return model.to(map_location).eval()

    @classmethod
    def pretrained(cls, name: str = "nowcaster") -> Nowcaster:
        """The nowcaster shipped in ``weightspace/checkpoints`` (made by ``weightspace nowcast``)."""
        root = resources.files("weightspace") / "checkpoints"
        with resources.as_file(root / f"{name}.json") as p:
            return cls.load(p)

    # ------------------------------------------------------------------ hook
    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer, **kwargs: Any):
        """Accelerate ``model``'s training by ``optimizer`` with periodic jumps; see
        :class:`~weightspace.tasks.nowcast_hook.NowcastHook` for the arguments. Returns the handle."""
        from .nowcast_hook import NowcastHook

        return NowcastHook(self, model, optimizer, **kwargs)


def _base(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True, eq=False)
class Trajectory:
    """One run's evenly spaced snapshots: ``flat [T, P]`` (float32) of architecture ``spec``."""

    spec: GraphSpec
    flat: Tensor
    every: int
    name: str = ""


def load_trajectories(paths: Sequence[str | os.PathLike], max_runs: int | None = None) -> list[Trajectory]:
    """Dense trajectories of every run of the zoos at ``paths`` (``model_zoo`` store).

    Keeps each run's checkpoints on its densest even grid of steps (``dense_every``).
    """
    import model_zoo

    out: list[Trajectory] = []
    for path in paths:
        zoo = model_zoo.load(path)
        specs: dict[str, GraphSpec] = {}
        n = len(zoo) if max_runs is None else min(len(zoo), max_runs)
        for i in range(n):
            key = json.dumps(zoo.arch_config(i), sort_keys=True)
            if key not in specs:
                specs[key] = zoo.graph_spec(i)
            spec = specs[key]
            steps = torch.tensor(zoo.steps(i))
            if len(steps) < 3:
                continue
            every = int(torch.diff(steps).clamp_min(1).min())
            keep = (steps % every == 0).nonzero().squeeze(1)
            flat = spec.flatten(zoo.trajectory(i), allow_nonfinite=True)[keep].float()
            good = torch.isfinite(flat).all(-1)
            if not bool(good.all()):  # cut a run that diverged at its first non-finite snapshot
                flat = flat[: int((~good).nonzero()[0])]
            if flat.shape[0] >= 3:
                out.append(Trajectory(spec, flat, every, f"{Path(path).name}/{i}"))
    log.info("loaded %d trajectories from %d zoos", len(out), len(paths))
    return out


# ----------------------------------------------------------------------------- meta-training
@dataclass(frozen=True)
class MetaTrainConfig:
    """Meta-training schedule (AdamW with cosine decay, as NiNo, at a small scale).

    Attributes:
        steps: optimizer steps.
        batch: windows per step (of one run, i.e. one architecture).
        lr, weight_decay, clip: AdamW learning rate, weight decay, gradient-norm clip.
        strides: spacings (in stored snapshots) between the window's snapshots; sampled per step.
        val_fraction: runs held out for the logged validation loss.
        log_every, save_every: steps between log lines / checkpoints.
        seed: sampling seed (the sample of step ``k`` depends only on ``seed`` and ``k``).
    """

    steps: int = 2000
    batch: int = 4
    lr: float = 3e-3
    weight_decay: float = 1e-2
    clip: float = 1.0
    strides: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    val_fraction: float = 0.1
    log_every: int = 50
    save_every: int = 250
    seed: int = 0


def _sample(traj: Trajectory, c: int, H: int, stride: int, batch: int, gen: torch.Generator
            ) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(window [B, c, P], target [B, H, P], mask [B, H])`` from random starts; None if too short."""
    T = traj.flat.shape[0]
    span = (c - 1) * stride
    if T <= span + stride:
        return None
    starts = torch.randint(0, T - span - stride, (batch,), generator=gen)
    k = torch.arange(c) * stride
    win = traj.flat[starts[:, None] + k]  # [B, c, P]
    last = starts + span
    fut = last[:, None] + torch.arange(1, H + 1) * stride  # [B, H]
    mask = fut < T
    tgt = traj.flat[fut.clamp_max(T - 1)] - traj.flat[last][:, None]
    return win, tgt, mask


def _loss(model: Nowcaster, traj: Trajectory, win: Tensor, tgt: Tensor, mask: Tensor) -> Tensor:
    lay = NowcastLayout.from_spec(traj.spec)
    feats, s, line = window_features(win, lay.slot_tensor, lay.num_tensors)
    pred = model(lay, feats, line)  # [B, P, H]
    err = (pred - tgt.transpose(1, 2) / s[..., None]).abs()  # scaled units
    h = torch.arange(1, model.horizons + 1, dtype=err.dtype)
    err = err.mean(1) / h  # [B, H]
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp_min(1)


def _opt_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    sd = opt.state_dict()
    tensors, rest = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        rest["state"][str(pid)] = []
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = v.detach().cpu().reshape(-1) if v.dim() == 0 else v.detach().cpu()
            rest["state"][str(pid)].append([k, v.dim() == 0])
    return tensors, rest


def _opt_load(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], rest: dict) -> None:
    state = {}
    for pid, keys in rest["state"].items():
        state[int(pid)] = {k: (tensors[f"opt.{pid}.{k}"].reshape(()) if scalar else tensors[f"opt.{pid}.{k}"])
                           for k, scalar in keys}
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def meta_train(model: Nowcaster, trajectories: Sequence[Trajectory], out: str | os.PathLike,
               cfg: MetaTrainConfig | None = None, *, progress: bool = True, info: dict | None = None
               ) -> dict[str, Any]:
    """Meta-train ``model`` on windows of ``trajectories``; resumable from ``out``.

    Writes ``<out>/last.safetensors|json`` (training state) every ``save_every`` steps,
    ``<out>/metrics.jsonl`` (``train/loss``, ``val/loss``, ``val/linefit_loss``) every ``log_every``
    steps, and the final nowcaster to ``<out>/nowcaster.safetensors|json``. Rerunning with the same
    arguments continues from the last saved step; a step with a non-finite loss or gradient is
    skipped (logged), never applied.

    Returns:
        Summary: steps, final ``val/loss`` and ``val/linefit_loss``, seconds.
    """
    cfg = cfg or MetaTrainConfig()
    if model.kind == "linefit":
        raise ValueError("linefit has no parameters to meta-train")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trajs = list(trajectories)
    if len(trajs) < 2:
        raise ValueError(f"meta-training needs at least 2 trajectories, got {len(trajs)}")
    perm = torch.randperm(len(trajs), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    n_val = max(1, int(round(cfg.val_fraction * len(trajs))))
    val = [trajs[i] for i in perm[:n_val]]
    train = [trajs[i] for i in perm[n_val:]]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, elapsed = 0, 0.0
    last = out / "last.json"
    if last.exists():
        meta = json.loads(last.read_text())
        if meta["config"] != json.loads(json.dumps(asdict(model.config))):
            raise ValueError(f"{out} holds a run of another nowcaster config; choose a new folder")
        tensors = load_file(str(out / "last.safetensors"))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        _opt_load(opt, {k: v for k, v in tensors.items() if k.startswith("opt.")}, meta["opt"])
        start, elapsed = int(meta["step"]), float(meta["seconds"])
        log.info("resuming meta-training at step %d from %s", start, out)
    c, H = model.context, model.horizons
    val_gen = torch.Generator().manual_seed(cfg.seed + 1)
    val_batches = []
    for j in range(16):
        tr = val[j % len(val)]
        b = _sample(tr, c, H, cfg.strides[j % len(cfg.strides)], cfg.batch, val_gen)
        if b is not None:
            val_batches.append((tr, *b))
    linefit = Nowcaster(NowcastConfig(kind="linefit", context=c, horizons=H))

    def evaluate(m: Nowcaster) -> float:
        m.eval()
        with torch.no_grad():
            vals = [float(_loss(m, tr, *b)) for tr, *b in val_batches]
        m.train()
        return sum(vals) / max(1, len(vals))

    lf_val = evaluate(linefit)
    metrics = (out / "metrics.jsonl").open("a")
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc="meta-train", unit="step")
    t0 = time.perf_counter()
    running, n_run, skipped = 0.0, 0, 0
    model.train()
    step = start
    val_loss = float("nan")
    for step in range(start, cfg.steps):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        batch = None
        while batch is None:
            tr = train[int(torch.randint(len(train), (1,), generator=gen))]
            stride = cfg.strides[int(torch.randint(len(cfg.strides), (1,), generator=gen))]
            batch = _sample(tr, c, H, stride, cfg.batch, gen)
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = _loss(model, tr, *batch)
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            skipped += 1
            log.warning("step %d: non-finite loss, skipped", step)
        else:
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            if torch.isfinite(gnorm):
                opt.step()
                running += loss.item()
                n_run += 1
            else:
                skipped += 1
                log.warning("step %d: non-finite gradient, skipped", step)
        bar.update(1)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            val_loss = evaluate(model)
            rec = {"step": done, "train/loss": running / max(1, n_run), "val/loss": val_loss,
                   "val/linefit_loss": lf_val, "lr": lr, "skipped": skipped}
            metrics.write(json.dumps(rec) + "\n")
            metrics.flush()
            log.info("step %d train/loss %.4f val/loss %.4f (linefit %.4f)", done, rec["train/loss"], val_loss, lf_val)
            bar.set_postfix(loss=f"{rec['train/loss']:.3f}", val=f"{val_loss:.3f}")
            running, n_run = 0.0, 0
        if done % cfg.save_every == 0 or done == cfg.steps:
            tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
            ot, orest = _opt_tensors(opt)
            tensors.update(ot)
            save_file(tensors, str(out / "last.tmp.safetensors"))
            os.replace(out / "last.tmp.safetensors", out / "last.safetensors")
            _write_json(last, {"step": done, "config": asdict(model.config), "opt": orest,
                               "seconds": elapsed + time.perf_counter() - t0, "meta_train": asdict(cfg)})
    bar.close()
    metrics.close()
    seconds = elapsed + time.perf_counter() - t0
    if not math.isfinite(val_loss):
        val_loss = evaluate(model)
    summary = {"steps": cfg.steps, "val/loss": val_loss, "val/linefit_loss": lf_val, "seconds": round(seconds, 1),
               "train_runs": len(train), "val_runs": len(val), "skipped_steps": skipped,
               "meta_train": asdict(cfg), **(info or {})}
    model.save(out / "nowcaster", info=summary)
    return summary
