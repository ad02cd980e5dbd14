"""Test helper: a graph in the dense layout graphs were saved in before true-size kernels."""

from __future__ import annotations

import weightspace as ws


def dense_layout(g: ws.ParameterGraph) -> ws.ParameterGraph:
    """``g`` with ``edge_attr [.., E, KH*KW]`` and ``edge_kernel [E, 2]`` stored in place of
    ``edge_values`` and ``kernel_runs`` (what a graph saved by an older version holds)."""
    fields = {k: v for k, v in g.items() if k not in ("edge_values", "kernel_runs")}
    out = ws.ParameterGraph(edge_attr=g.edge_attr.clone(), **fields)
    out.edge_kernel = g.edge_kernel.clone()
    assert not out.true_size
    return out
