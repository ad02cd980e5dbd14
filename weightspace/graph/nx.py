"""``to_networkx``: a parameter graph as a ``networkx.DiGraph`` with the same features."""

from __future__ import annotations

import networkx as nx

from .param_graph import ParameterGraph

__all__ = ["to_networkx"]


def to_networkx(g: ParameterGraph) -> nx.DiGraph:
    """Nodes carry ``x`` (list of per-neuron parameters), ``node_type``, ``layer``, ``pos``, ``act``;
    edges carry ``edge_attr`` (list), ``edge_type`` and ``kernel`` ``(kh, kw)``.

    Parallel edges (only from ``x + x``-like additions) are merged and counted in ``multiplicity``.
    Graphs holding a stack of checkpoints keep the stack per node/edge (lists of lists).
    """
    G = nx.DiGraph()
    x = g.x.movedim(-2, 0) if g.x.dim() == 3 else g.x
    ea = g.edge_attr.movedim(-2, 0) if g.edge_attr.dim() == 3 else g.edge_attr
    nt, nl, npos, na = (t.tolist() for t in (g.node_type, g.node_layer, g.node_pos, g.node_act))
    xs = x.tolist()
    G.add_nodes_from(
        (i, {"x": xs[i], "node_type": nt[i], "layer": nl[i], "pos": npos[i], "act": na[i]}) for i in range(g.num_nodes)
    )
    src, dst = g.edge_index.tolist()
    et, ek, eas = g.edge_type.tolist(), g.edge_kernel.tolist(), ea.tolist()
    for s, d, t, k, a in zip(src, dst, et, ek, eas):
        if G.has_edge(s, d):
            G[s][d]["multiplicity"] += 1
            continue
        G.add_edge(s, d, edge_attr=a, edge_type=t, kernel=tuple(k), multiplicity=1)
    return G
