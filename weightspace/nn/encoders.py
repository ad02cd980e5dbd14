"""Input encoders of the graph metanetwork: neurons (nodes) and weights (edges)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from weightspace.graph.vocab import ACTIVATION_SLOTS, EDGE_TYPE_SLOTS, NODE_TYPE_SLOTS

from ._utils import permutable_mask, reset_all, symlog
from .edge_norm import LayerWeightNorm

__all__ = ["NeuronEncoder", "WeightEncoder"]


class NeuronEncoder(nn.Module):
    r"""Embeds each neuron from its parameters, type, activation, depth and (if fixed) position.

    Following Graph Metanetworks (Lim et al., ICLR 2024) and neural-graph GNNs (Kofinas et al.,
    ICLR 2024): per-neuron parameters (bias, normalization scale/shift, running statistics,
    compressed by :math:`\operatorname{symlog}`) go through a linear map, to which embeddings of
    the node type, activation and depth are added; non-permutable neurons (inputs, outputs, token
    positions: ``node_pos >= 0`` and a non-permutable type) also get a learned embedding of their
    index, so the metanetwork can tell input pixel 3 from pixel 4 while staying invariant to
    permutations of hidden neurons.

    .. math::
        h_i = W\,\operatorname{symlog}(x_i) + E_{type}[t_i] + E_{act}[a_i] + E_{depth}[\ell_i]
              + \mathbb{1}[i\ \text{fixed}]\, E_{pos}[p_i]

    Args:
        hidden: embedding width ``D``.
        num_features: per-neuron parameter columns (5 for :class:`~weightspace.ParameterGraph`).
        max_positions: size of the position table; larger indices wrap around.
        max_depth: size of the depth table; deeper neurons share the last row.

    Shapes:
        - input: ``x [N, 5]``, ``node_type [N]``, ``node_act [N]``, ``node_layer [N]``, ``node_pos [N]``
        - output: ``[N, D]``
    """

    def __init__(self, hidden: int, num_features: int = 5, max_positions: int = 1024, max_depth: int = 64) -> None:
        super().__init__()
        self.hidden, self.num_features = hidden, num_features
        self.max_positions, self.max_depth = max_positions, max_depth
        self.lin = nn.Linear(num_features, hidden)
        self.type_emb = nn.Embedding(NODE_TYPE_SLOTS, hidden)
        self.act_emb = nn.Embedding(ACTIVATION_SLOTS, hidden)
        self.depth_emb = nn.Embedding(max_depth, hidden)
        self.pos_emb = nn.Embedding(max_positions, hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_all(self)
        for emb in (self.type_emb, self.act_emb, self.depth_emb, self.pos_emb):
            nn.init.normal_(emb.weight, std=0.1)

    def forward(self, x: Tensor, node_type: Tensor, node_act: Tensor, node_layer: Tensor, node_pos: Tensor) -> Tensor:
        h = self.lin(symlog(x)) + self.type_emb(node_type) + self.act_emb(node_act)
        h = h + self.depth_emb(node_layer.clamp(0, self.max_depth - 1))
        fixed = (node_pos >= 0) & ~permutable_mask(node_type)
        pos = self.pos_emb(node_pos.clamp_min(0) % self.max_positions)
        return h + pos * fixed[:, None].to(h.dtype)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(hidden={self.hidden}, max_positions={self.max_positions}, "
                f"max_depth={self.max_depth})")


class WeightEncoder(nn.Module):
    r"""Embeds each edge from its (per-layer normalized) weights and its edge type.

    Kernels arrive centred in a ``KH x KW`` grid (:class:`~weightspace.ParameterGraph`); every
    layer is scaled by its RMS (:class:`LayerWeightNorm`, Kofinas et al., ICLR 2024), the log-scale
    is kept as an extra input, and an edge-type embedding is added (Lim et al., ICLR 2024).

    .. math::
        e_{ij} = W\,[\hat w_{ij}, \log s_\ell] + E_{type}[\tau_{ij}]

    Args:
        hidden: embedding width ``D``.
        edge_dim: ``KH*KW`` of the grid the metanetwork is built for.

    Shapes:
        - input: ``edge_attr [E, KH*KW]``, ``edge_index [2, E]``, ``edge_type [E]``, ``node_layer [N]``,
          ``batch [N]``
        - output: ``[E, D]``
    """

    def __init__(self, hidden: int, edge_dim: int) -> None:
        super().__init__()
        self.hidden, self.edge_dim = hidden, edge_dim
        self.norm = LayerWeightNorm()
        self.lin = nn.Linear(edge_dim + 1, hidden)
        self.type_emb = nn.Embedding(EDGE_TYPE_SLOTS, hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_all(self)
        nn.init.normal_(self.type_emb.weight, std=0.1)

    def forward(self, edge_attr: Tensor, edge_index: Tensor, edge_type: Tensor, node_layer: Tensor,
                batch: Tensor) -> Tensor:
        w = self.norm(edge_attr, edge_index, edge_type, node_layer, batch)
        return self.lin(w) + self.type_emb(edge_type.int())  # graphs store edge types as int8

    def chunked(self, edge_attr: Tensor, edge_index: Tensor, edge_type: Tensor, node_layer: Tensor, batch: Tensor,
                chunk: int) -> _ChunkedWeights:
        """Without gradients: the layer scales in one pass over edge chunks, then a callable giving the
        encoding of edges ``[s, t)`` (equal to ``forward(...)[s:t]``) with no per-edge tensor kept."""
        return _ChunkedWeights(self, edge_attr, edge_index, edge_type, node_layer, batch, chunk)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(hidden={self.hidden}, edge_dim={self.edge_dim})"


class _ChunkedWeights:
    """:class:`WeightEncoder` over edge chunks (no gradients). The layers of
    :class:`LayerWeightNorm` (graph, target depth, edge type) are numbered densely instead of by
    ``torch.unique`` (no sort over the edges); their sums are accumulated chunk by chunk."""

    def __init__(self, enc: WeightEncoder, edge_attr: Tensor, edge_index: Tensor, edge_type: Tensor,
                 node_layer: Tensor, batch: Tensor, chunk: int) -> None:
        self.enc, self.edge_attr, self.edge_index, self.edge_type = enc, edge_attr, edge_index, edge_type
        self.node_layer, self.batch = node_layer, batch
        self.n_types = int(edge_type.max()) + 1 if edge_type.numel() else 1
        self.n_layers = int(node_layer.max()) + 1 if node_layer.numel() else 1
        groups = (int(batch.max()) + 1 if batch.numel() else 1) * self.n_layers * self.n_types
        tot = edge_attr.new_zeros(groups)
        cnt = torch.zeros(groups, dtype=torch.long, device=edge_attr.device)
        for s in range(0, edge_attr.shape[0], chunk):
            key = self._key(s, s + chunk, edge_index[1, s : s + chunk].long())
            tot.index_add_(0, key, edge_attr[s : s + chunk].pow(2).mean(-1))
            cnt += torch.bincount(key, minlength=groups)
        self.scale = (tot / cnt.clamp_min(1).to(tot.dtype) + enc.norm.eps).sqrt()
        self.log_scale = self.scale.log()

    def _key(self, s: int, t: int, dst: Tensor) -> Tensor:
        key = self.batch.index_select(0, dst) * self.n_layers + self.node_layer.index_select(0, dst)
        return key * self.n_types + self.edge_type[s:t].long()

    def __call__(self, s: int, t: int, dst: Tensor, out: Tensor | None = None) -> Tensor:
        """``[t-s, D]`` encodings of edges ``s..t-1`` (``dst``: their int64 targets), into ``out`` if given."""
        key = self._key(s, t, dst)
        w = torch.cat([self.edge_attr[s:t] / self.scale.index_select(0, key)[:, None],
                       self.log_scale.index_select(0, key)[:, None]], dim=-1)
        lin = self.enc.lin
        out = torch.addmm(lin.bias, w, lin.weight.t(), out=out) if out is not None else \
            torch.addmm(lin.bias, w, lin.weight.t())
        return out.add_(self.enc.type_emb.weight.index_select(0, self.edge_type[s:t].long()))
