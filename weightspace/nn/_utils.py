"""Small helpers shared by the metanetwork layers (not public)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from weightspace.graph.vocab import PERMUTABLE_NODE_TYPES


def reset_all(module: nn.Module) -> None:
    """Call ``reset_parameters`` on every sub-module that has one."""
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()


def symlog(x: Tensor) -> Tensor:
    """``sign(x) * log1p(|x|)``: compresses large magnitudes, keeps sign and small values."""
    return torch.sign(x) * torch.log1p(x.abs())


def permutable_mask(node_type: Tensor) -> Tensor:
    """``[N]`` bool: nodes whose members may be permuted (hidden, sum, attention units, ...)."""
    allowed = torch.tensor(sorted(int(t) for t in PERMUTABLE_NODE_TYPES), device=node_type.device)
    return torch.isin(node_type, allowed)


def graph_index(batch) -> Tensor:
    """``[N]`` graph id of every node (zeros for an unbatched graph)."""
    b = getattr(batch, "batch", None)
    if b is None:
        return torch.zeros(batch.num_nodes, dtype=torch.long, device=batch.edge_index.device)
    return b


def num_graphs(batch) -> int:
    n = getattr(batch, "num_graphs", None)
    return int(n) if n is not None and getattr(batch, "batch", None) is not None else 1


def batch_grid(batch) -> tuple[int, int]:
    """The grid ``(KH, KW)`` of ``batch.edge_attr``: the largest ``kernel_shape`` row (graphs of a
    batch made by ``Batch.from_data_list`` may have different grids; the dense view uses the largest)."""
    ks = batch.kernel_shape.reshape(-1, 2)
    return int(ks[:, 0].max()), int(ks[:, 1].max())
