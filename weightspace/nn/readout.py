"""Readouts of the graph metanetwork: invariant (graph) and equivariant (node, edge)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._utils import mlp, reset_all

__all__ = ["GraphReadout", "NodeReadout", "EdgeReadout"]


class GraphReadout(nn.Module):
    r"""Permutation-invariant pooling of node and edge states into one vector per graph.

    As in Graph Metanetworks (Lim et al., ICLR 2024): symmetric pooling followed by an MLP. Nodes
    are pooled by mean and max, edges by mean (edges belong to the graph of their source node).

    .. math::
        z_g = \mathrm{MLP}\big([\operatorname{mean}_{i\in g} h_i, \max_{i\in g} h_i,
              \operatorname{mean}_{(i,j)\in g} e_{ij}]\big)

    Args:
        hidden: width ``D`` of node/edge states.
        out: width of the graph embedding.

    Shapes:
        - input: ``h [N, D]``, ``e [E, D]``, ``edge_index [2, E]``, ``batch [N]``, ``num_graphs B``
        - output: ``[B, out]``
    """

    def __init__(self, hidden: int, out: int) -> None:
        super().__init__()
        self.hidden, self.out = hidden, out
        self.mlp = mlp([3 * hidden, 2 * hidden, out])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_all(self)

    def forward(self, h: Tensor, e: Tensor, edge_index: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        D = h.shape[-1]
        ones = h.new_ones(h.shape[0])
        n_cnt = h.new_zeros(num_graphs).index_add_(0, batch, ones).clamp_min(1)[:, None]
        h_mean = h.new_zeros(num_graphs, D).index_add_(0, batch, h) / n_cnt
        h_max = h.new_full((num_graphs, D), float("-inf")).scatter_reduce(
            0, batch[:, None].expand(-1, D), h, reduce="amax", include_self=True)
        h_max = torch.nan_to_num(h_max, neginf=0.0)
        eb = batch[edge_index[0]]
        e_cnt = e.new_zeros(num_graphs).index_add_(0, eb, e.new_ones(eb.shape[0])).clamp_min(1)[:, None]
        e_mean = e.new_zeros(num_graphs, D).index_add_(0, eb, e) / e_cnt
        return self.mlp(torch.cat([h_mean, h_max, e_mean], dim=-1))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.hidden}, out={self.out})"


class NodeReadout(nn.Module):
    r"""Per-neuron (permutation-equivariant) prediction head: an MLP on each node state.

    Shapes:
        - input: ``h [N, D]``
        - output: ``[N, out]``
    """

    def __init__(self, hidden: int, out: int) -> None:
        super().__init__()
        self.hidden, self.out = hidden, out
        self.mlp = mlp([hidden, hidden, out])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_all(self)

    def forward(self, h: Tensor) -> Tensor:
        return self.mlp(h)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.hidden}, out={self.out})"


class EdgeReadout(nn.Module):
    r"""Per-weight (permutation-equivariant) prediction head on ``[e_ij, h_i, h_j]``.

    Used by tasks that emit one value per weight (nowcasting, generation); with
    ``out = KH*KW`` it returns an ``edge_attr``-shaped tensor.

    Shapes:
        - input: ``h [N, D]``, ``e [E, D]``, ``edge_index [2, E]``
        - output: ``[E, out]``
    """

    def __init__(self, hidden: int, out: int) -> None:
        super().__init__()
        self.hidden, self.out = hidden, out
        self.mlp = mlp([3 * hidden, hidden, out])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_all(self)

    def forward(self, h: Tensor, e: Tensor, edge_index: Tensor) -> Tensor:
        src, dst = edge_index
        return self.mlp(torch.cat([e, h[src], h[dst]], dim=-1))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.hidden}, out={self.out})"
