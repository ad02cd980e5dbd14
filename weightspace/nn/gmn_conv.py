"""The edge-updating message-passing layer of the graph metanetwork."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._utils import reset_all

__all__ = ["GMNConv"]


def _mean_into(values: Tensor, index: Tensor, size: int) -> Tensor:
    out = values.new_zeros(size, values.shape[-1]).index_add_(0, index, values)
    cnt = values.new_zeros(size).index_add_(0, index, values.new_ones(index.shape[0]))
    return out / cnt.clamp_min(1)[:, None]


class GMNConv(nn.Module):
    r"""Edge-updating, bidirectional message passing in which edge features modulate messages.

    A layer in the family of Graph Metanetworks (Lim et al., "Graph Metanetworks for Processing
    Diverse Neural Architectures", ICLR 2024) and neural-graph GNNs (Kofinas et al., ICLR 2024),
    kept to GINE-like cost: every per-edge operation is one linear map of the edge state plus
    gathers of node projections (no per-edge MLP on concatenations, a single mean aggregator).

    .. math::
        e'_{ij} &= e_{ij} + \sigma\big(W_e\,\mathrm{LN}(e_{ij}) + (A h)_i + (B h)_j\big) \\
        [\gamma_{ij}, \beta_{ij}] &= W_m\, e'_{ij} \\
        m^{\rightarrow}_{j} &= \operatorname{mean}_{i \to j}\, \sigma\big((1+\gamma_{ij})\odot(U h)_i + \beta_{ij}\big) \\
        m^{\leftarrow}_{i} &= \operatorname{mean}_{i \to j}\, \sigma\big((1+\gamma_{ij})\odot(V h)_j + \beta_{ij}\big) \\
        h'_i &= h_i + \mathrm{MLP}\big([\mathrm{LN}(h_i), m^{\rightarrow}_i, m^{\leftarrow}_i]\big)

    Messages flow along the network's connections (forward) and against them (backward), so a
    neuron hears both its fan-in and its fan-out. Every operation is applied per node or per edge
    and aggregated by a symmetric mean, so the layer is equivariant to node permutations.

    Args:
        hidden: width ``D`` of node and edge states.
        dropout: dropout on the node update.

    Shapes:
        - input: ``h [N, D]``, ``e [E, D]``, ``edge_index [2, E]``
        - output: ``(h' [N, D], e' [E, D])``
    """

    def __init__(self, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden, self.dropout = hidden, dropout
        self.edge_norm = nn.LayerNorm(hidden)
        self.edge_lin = nn.Linear(hidden, hidden)
        self.node_to_edge = nn.Linear(hidden, 2 * hidden, bias=False)
        self.film = nn.Linear(hidden, 2 * hidden)
        self.node_msg = nn.Linear(hidden, 2 * hidden)
        self.node_norm = nn.LayerNorm(hidden)
        self.update = nn.Sequential(nn.Linear(3 * hidden, 2 * hidden), nn.SiLU(), nn.Dropout(dropout),
                                    nn.Linear(2 * hidden, hidden))
        self.act = nn.SiLU()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_all(self)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        nn.init.zeros_(self.update[-1].weight)

    #: without gradients, graphs with more edges than this are processed in chunks of this many
    #: edges (same result): the per-edge temporaries stay bounded, and cache-sized, on big graphs
    #: (a language model's); measured 2x faster than chunks of 2**20 on a 4.7M-edge graph
    chunk_edges: int = 1 << 16

    def forward(self, h: Tensor, e: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        if not torch.is_grad_enabled() and e.shape[0] > self.chunk_edges:
            return self._forward_chunked(h, e, edge_index)
        src, dst = edge_index
        a, b = self.node_to_edge(h).chunk(2, dim=-1)
        e = e + self.act(self.edge_lin(self.edge_norm(e)) + a[src] + b[dst])
        gamma, beta = self.film(e).chunk(2, dim=-1)
        gamma = gamma + 1.0
        u, v = self.node_msg(h).chunk(2, dim=-1)
        n = h.shape[0]
        fwd = _mean_into(self.act(torch.addcmul(beta, gamma, u[src])), dst, n)
        bwd = _mean_into(self.act(torch.addcmul(beta, gamma, v[dst])), src, n)
        h = h + self.update(torch.cat([self.node_norm(h), fwd, bwd], dim=-1))
        return h, e

    def _forward_chunked(self, h: Tensor, e: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self.node_to_edge(h).chunk(2, dim=-1)
        u, v = self.node_msg(h).chunk(2, dim=-1)
        n, D = h.shape
        fwd, bwd = h.new_zeros(n, D), h.new_zeros(n, D)
        e_out = torch.empty_like(e)
        for s in range(0, e.shape[0], self.chunk_edges):
            src, dst = edge_index[0, s : s + self.chunk_edges], edge_index[1, s : s + self.chunk_edges]
            ec = e[s : s + self.chunk_edges]
            ec = ec + self.act(self.edge_lin(self.edge_norm(ec)) + a[src] + b[dst])
            gamma, beta = self.film(ec).chunk(2, dim=-1)
            gamma = gamma + 1.0
            fwd.index_add_(0, dst, self.act(torch.addcmul(beta, gamma, u[src])))
            bwd.index_add_(0, src, self.act(torch.addcmul(beta, gamma, v[dst])))
            e_out[s : s + self.chunk_edges] = ec
        ones = h.new_ones(edge_index.shape[1])
        fwd = fwd / h.new_zeros(n).index_add_(0, edge_index[1], ones).clamp_min(1)[:, None]
        bwd = bwd / h.new_zeros(n).index_add_(0, edge_index[0], ones).clamp_min(1)[:, None]
        h = h + self.update(torch.cat([self.node_norm(h), fwd, bwd], dim=-1))
        return h, e_out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.hidden}, dropout={self.dropout})"
