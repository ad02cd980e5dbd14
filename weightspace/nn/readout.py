"""Readouts of the graph metanetwork: invariant (graph) and equivariant (node, edge)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._utils import reset_all
from .mlp import MLP

__all__ = ["GraphReadout", "NodeReadout", "EdgeReadout"]


class GraphReadout(nn.Module):
    r"""Permutation-invariant pooling of node and edge states into one vector per graph.

    As in Graph Metanetworks (Lim et al., ICLR 2024): symmetric pooling followed by an MLP. Nodes
    are pooled by mean and max, edges by mean (edges belong to the graph of their source node).
    With ``layer_bins = K > 0`` the readout also keeps *where* in the network the states are, as
    the invariant layers of NFN (Zhou et al., NeurIPS 2023) concatenate per-layer pools: every
    node is put in one of ``K`` bins by its relative depth in its own network
    (:math:`\lfloor K\,\ell_i / (\ell_{max}+1) \rfloor`), node and edge states (an edge by its
    target) are mean-pooled per bin, and the ``K`` pools are concatenated. Depth is preserved by
    hidden-neuron permutations, so the readout stays invariant; relative depth lets networks of
    different depths share bins.

    .. math::
        z_g = \mathrm{MLP}\big([\operatorname{mean}_{i\in g} h_i, \max_{i\in g} h_i,
              \operatorname{mean}_{(i,j)\in g} e_{ij}, (\operatorname{mean}_{i\in g, b_i=k} h_i,
              \operatorname{mean}_{(i,j)\in g, b_j=k} e_{ij})_{k<K}]\big)

    Args:
        hidden: width ``D`` of node/edge states.
        out: width of the graph embedding.
        layer_bins: relative-depth bins ``K`` (0: global pools only).

    Shapes:
        - input: ``h [N, D]``, ``e [E, D]``, ``edge_index [2, E]``, ``batch [N]``, ``num_graphs B``,
          ``node_layer [N]`` (needed when ``layer_bins > 0``)
        - output: ``[B, out]``
    """

    def __init__(self, hidden: int, out: int, layer_bins: int = 0) -> None:
        super().__init__()
        self.hidden, self.out, self.layer_bins = hidden, out, int(layer_bins)
        self.mlp = MLP([(3 + 2 * self.layer_bins) * hidden, 2 * hidden, out])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_all(self)

    @staticmethod
    def _mean(values: Tensor, index: Tensor, size: int) -> Tensor:
        out = values.new_zeros(size, values.shape[-1]).index_add_(0, index, values)
        cnt = values.new_zeros(size).index_add_(0, index, values.new_ones(index.shape[0])).clamp_min(1)
        return out / cnt[:, None]

    def _slots(self, batch: Tensor, num_graphs: int, node_layer: Tensor | None, dtype: torch.dtype) -> Tensor:
        """``[N]`` readout slot ``graph * K + bin`` of every node (``layer_bins = K > 0``)."""
        if node_layer is None:
            raise ValueError("GraphReadout(layer_bins > 0) needs node_layer")
        K = self.layer_bins
        depth = node_layer.to(dtype)
        top = depth.new_zeros(num_graphs).scatter_reduce(0, batch, depth, reduce="amax", include_self=True)
        bins = torch.div(depth * K, top[batch] + 1, rounding_mode="floor").long().clamp_(0, K - 1)
        return batch * K + bins

    def _finish(self, h: Tensor, batch: Tensor, num_graphs: int, slot: Tensor | None, e_mean: Tensor,
                e_bins: Tensor | None) -> Tensor:
        """The MLP on the node pools and the given edge means (``[B, D]``, ``[B*K, D]``)."""
        D = h.shape[-1]
        h_mean = self._mean(h, batch, num_graphs)
        h_max = h.new_full((num_graphs, D), float("-inf")).scatter_reduce(
            0, batch[:, None].expand(-1, D), h, reduce="amax", include_self=True)
        h_max = torch.nan_to_num(h_max, neginf=0.0)
        parts = [h_mean, h_max, e_mean]
        if slot is not None:
            K = self.layer_bins
            parts.append(self._mean(h, slot, num_graphs * K).reshape(num_graphs, K * D))
            parts.append(e_bins.reshape(num_graphs, K * D))
        return self.mlp(torch.cat(parts, dim=-1))

    def forward(self, h: Tensor, e: Tensor, edge_index: Tensor, batch: Tensor, num_graphs: int,
                node_layer: Tensor | None = None) -> Tensor:
        slot = self._slots(batch, num_graphs, node_layer, h.dtype) if self.layer_bins > 0 else None
        e_mean = self._mean(e, batch[edge_index[0]], num_graphs)
        e_bins = self._mean(e, slot[edge_index[1]], num_graphs * self.layer_bins) if slot is not None else None
        return self._finish(h, batch, num_graphs, slot, e_mean, e_bins)

    def edge_pools(self, batch: Tensor, num_graphs: int, node_layer: Tensor | None, hidden: int,
                   dtype: torch.dtype) -> EdgePools:
        """An accumulator of the edge pools, fed chunk by chunk (no ``[E, D]`` tensor needed);
        ``readout.pooled(h, pools)`` then equals ``readout(h, e, ...)``."""
        slot = self._slots(batch, num_graphs, node_layer, dtype) if self.layer_bins > 0 else None
        return EdgePools(batch, num_graphs, slot, num_graphs * self.layer_bins, hidden, dtype)

    def pooled(self, h: Tensor, pools: EdgePools) -> Tensor:
        """``[B, out]`` from node states and the accumulated edge pools of :meth:`edge_pools`."""
        e_mean, e_bins = pools.means()
        return self._finish(h, pools.batch, pools.num_graphs, pools.slot, e_mean, e_bins)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.hidden}, out={self.out}, layer_bins={self.layer_bins})"


class NodeReadout(nn.Module):
    r"""Per-neuron (permutation-equivariant) prediction head: an MLP on each node state.

    Shapes:
        - input: ``h [N, D]``
        - output: ``[N, out]``
    """

    def __init__(self, hidden: int, out: int) -> None:
        super().__init__()
        self.hidden, self.out = hidden, out
        self.mlp = MLP([hidden, hidden, out])
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
        self.mlp = MLP([3 * hidden, hidden, out])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_all(self)

    def forward(self, h: Tensor, e: Tensor, edge_index: Tensor) -> Tensor:
        src, dst = edge_index
        return self.mlp(torch.cat([e, h[src], h[dst]], dim=-1))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.hidden}, out={self.out})"


class EdgePools:
    """Running per-graph (and per-bin) sums of edge states, added chunk by chunk (not public)."""

    def __init__(self, batch: Tensor, num_graphs: int, slot: Tensor | None, num_slots: int, hidden: int,
                 dtype: torch.dtype) -> None:
        self.batch, self.num_graphs, self.slot = batch, num_graphs, slot
        self.sum = batch.new_zeros(num_graphs, hidden, dtype=dtype)
        self.cnt = batch.new_zeros(num_graphs, dtype=torch.long)
        if slot is not None:
            self.bin_sum = batch.new_zeros(num_slots, hidden, dtype=dtype)
            self.bin_cnt = batch.new_zeros(num_slots, dtype=torch.long)

    def add(self, e: Tensor, src: Tensor, dst: Tensor) -> None:
        """Edge states ``e [C, D]`` of the edges ``src -> dst`` (``[C]`` each, int64)."""
        if self.num_graphs == 1:
            self.sum[0] += e.sum(0)
            self.cnt[0] += e.shape[0]
        else:
            g = self.batch.index_select(0, src)
            self.sum.index_add_(0, g, e)
            self.cnt += torch.bincount(g, minlength=self.num_graphs)
        if self.slot is not None:
            k = self.slot.index_select(0, dst)
            self.bin_sum.index_add_(0, k, e)
            self.bin_cnt += torch.bincount(k, minlength=self.bin_cnt.shape[0])

    def means(self) -> tuple[Tensor, Tensor | None]:
        e_mean = self.sum / self.cnt.clamp_min(1).to(self.sum.dtype)[:, None]
        if self.slot is None:
            return e_mean, None
        return e_mean, self.bin_sum / self.bin_cnt.clamp_min(1).to(self.bin_sum.dtype)[:, None]
