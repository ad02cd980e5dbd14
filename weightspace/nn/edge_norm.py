"""Per-layer weight normalization of parameter-graph edge features."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LayerWeightNorm"]


class LayerWeightNorm(nn.Module):
    r"""Scale every layer's weights by their root mean square and keep the scale as a feature.

    Follows the per-layer normalization of neural-graph GNNs (Kofinas et al., "Graph Neural
    Networks for Learning Equivariant Representations of Neural Networks", ICLR 2024), computed per
    graph so that heterogeneous batches need no dataset statistics. A *layer* is the set of edges
    sharing (graph, depth of the target neuron, edge type); since hidden-neuron permutations keep
    depth and type, the statistics are permutation invariant.

    .. math::
        s_\ell = \sqrt{\operatorname{mean}_{(i,j)\in\ell} \lVert w_{ij}\rVert^2 / F + \epsilon},\quad
        \hat w_{ij} = w_{ij} / s_\ell,\quad \text{out}_{ij} = [\hat w_{ij}, \log s_\ell]

    Args:
        eps: added under the square root.

    Shapes:
        - input: ``edge_attr [E, F]``, ``edge_index [2, E]``, ``edge_type [E]``, ``node_layer [N]``,
          ``batch [N]``
        - output: ``[E, F + 1]``
    """

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps
        self.reset_parameters()

    def reset_parameters(self) -> None:  # no parameters
        pass

    def forward(self, edge_attr: Tensor, edge_index: Tensor, edge_type: Tensor, node_layer: Tensor,
                batch: Tensor) -> Tensor:
        dst = edge_index[1]
        n_types = int(edge_type.max()) + 1 if edge_type.numel() else 1
        n_layers = int(node_layer.max()) + 1 if node_layer.numel() else 1
        key = (batch[dst] * n_layers + node_layer[dst]) * n_types + edge_type
        _, group = torch.unique(key, return_inverse=True)
        G = int(group.max()) + 1 if group.numel() else 0
        sq = edge_attr.pow(2).mean(-1)
        tot = torch.zeros(G, dtype=edge_attr.dtype, device=edge_attr.device).index_add_(0, group, sq)
        cnt = torch.zeros(G, dtype=edge_attr.dtype, device=edge_attr.device).index_add_(
            0, group, torch.ones_like(sq))
        scale = (tot / cnt.clamp_min(1) + self.eps).sqrt()[group]
        return torch.cat([edge_attr / scale[:, None], scale.log()[:, None]], dim=-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(eps={self.eps})"

