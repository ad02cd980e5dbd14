"""``to_networkx``: a parameter graph as a ``networkx.DiGraph`` with the same features."""

from __future__ import annotations

import gc
import operator
from itertools import repeat

import networkx as nx
import numpy as np

from .edge_codec import compress_edges
from .param_graph import ParameterGraph, merge_runs

__all__ = ["to_networkx"]


def to_networkx(g: ParameterGraph) -> nx.DiGraph:
    """Nodes carry ``x`` (list of per-neuron parameters), ``node_type``, ``layer``, ``pos``, ``act``;
    edges carry ``edge_attr`` (a read-only ``numpy`` array: the edge's kernel at its true size
    ``kh x kw``, row-major, so one value for dense weights and structural edges), ``edge_type``,
    ``kernel`` ``(kh, kw)`` and ``multiplicity`` (1, see below).

    Parallel edges (only from ``x + x``-like additions) are merged and counted in ``multiplicity``;
    the first one's features are kept. Graphs holding a stack of checkpoints keep the stack per
    node/edge (``x`` a list of lists, ``edge_attr`` ``[T, kh*kw]``).

    One Python dict and one ``numpy`` view per edge is the floor; everything else works on arrays
    or on the edges' affine segments (:mod:`weightspace.graph.edge_codec`): each edge's dict is a
    copy of a prototype shared by a stretch of edges of one type and kernel size, and the
    adjacency dictionaries are filled a dense block's row or column at a time (``dict.update`` over
    a ``range`` of node ids and a slice of the dicts), in edge order, without sorting. A ResNet-18
    (1.4-1.9 M edges) converts in under 2 s on one core (``benchmarks/results/convert.md``).
    """
    enabled = gc.isenabled()
    gc.disable()  # millions of new containers, no cycles among them: skip the collector's passes
    try:
        return _to_networkx(g)
    finally:
        if enabled:
            gc.enable()


def _to_networkx(g: ParameterGraph) -> nx.DiGraph:
    g = g.to_true_size()
    x, ev = g.x.detach(), g.edge_values.detach()
    x = x.movedim(-2, 0) if x.dim() == 3 else x
    nt, nl, npos, na = (t.tolist() for t in (g.node_type, g.node_layer, g.node_pos, g.node_act))
    xs = x.tolist()
    G = nx.DiGraph()
    G.add_nodes_from(
        (i, {"x": xs[i], "node_type": nt[i], "layer": nl[i], "pos": npos[i], "act": na[i]}) for i in range(g.num_nodes)
    )
    E = int(g.edge_type.numel())
    if not E:
        return G
    values = _edge_views(ev, g.kernel_runs)
    succ, pred = getattr(G, "_succ", None), getattr(G, "_pred", None)
    if isinstance(succ, dict) and isinstance(pred, dict):
        data = _edge_dicts(values, g.edge_type.numpy(), g.kernel_runs)
        segments, rest = (g.edge_segments, g.edge_rest) if g.edges_compressed else compress_edges(g.edge_index)
        _add_by_segments(succ, pred, segments, rest, data)
        if sum(map(len, succ.values())) == E:  # no parallel edges (the usual case): done
            return G
        del data
        for adj in (*succ.values(), *pred.values()):  # parallel edges: start again, merging them
            adj.clear()
    # merge parallel edges (only from ``x + x``-like additions): the first one's features are kept
    ei = g.edge_index
    src_t, dst_t = ei[0].long(), ei[1].long()
    key = (src_t * max(g.num_nodes, 1) + dst_t).numpy()
    uniq, first, inverse, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    keep = np.sort(first)  # the first of each set of parallel edges, in edge order
    mult = counts[inverse[keep]].tolist()
    kernels = [tuple(k) for k in g.edge_kernel.tolist()]
    data = [{"edge_attr": a, "edge_type": t, "kernel": k, "multiplicity": m}
            for a, t, k, m in zip(_pick(values, keep), g.edge_type.numpy()[keep].tolist(), _pick(kernels, keep), mult)]
    _add_edges(G, src_t.numpy()[keep], dst_t.numpy()[keep], data)
    return G


def _edge_views(ev, kernel_runs) -> list:
    """Kernels at their true size, one read-only ``numpy`` array per edge: each run of one kernel
    size is a contiguous block of ``edge_values``, viewed as ``[n, (T,) kh*kw]``."""
    values: list = []
    v0 = 0
    for n, kh, kw in merge_runs(kernel_runs):
        K = kh * kw
        block = ev[..., v0 : v0 + n * K]
        block = block.reshape(n, K) if block.dim() == 1 else block.reshape(-1, n, K).movedim(0, 1)
        arr = block.numpy()
        arr.flags.writeable = False
        values.extend(arr)
        v0 += n * K
    return values


def _edge_dicts(values: list, edge_type: np.ndarray, kernel_runs) -> list[dict]:
    """One attribute dict per edge (``multiplicity`` 1): copies of one prototype per stretch of
    edges with one type and kernel size (a dict copy is cheaper than building a dict display), then
    each edge's kernel is set."""
    E = len(values)
    cuts = {0, E}
    cuts.update((np.flatnonzero(edge_type[1:] != edge_type[:-1]) + 1).tolist())
    kern, e = [], 0
    for n, kh, kw in merge_runs(kernel_runs):
        kern.append((e, (kh, kw)))
        e += n
        cuts.add(e)
    bounds = sorted(c for c in cuts if c <= E)
    data: list[dict] = []
    k = 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        while k + 1 < len(kern) and kern[k + 1][0] <= a:
            k += 1
        proto = {"edge_attr": None, "edge_type": int(edge_type[a]), "kernel": kern[k][1], "multiplicity": 1}
        data.extend(map(dict.copy, repeat(proto, b - a)))
    for d, v in zip(data, values):
        d["edge_attr"] = v
    return data


def _run(start: int, n: int, step: int):
    """The ``n`` node ids ``start + k*step``."""
    return range(start, start + n * step, step) if step else [start] * n


def _add_by_segments(succ: dict, pred: dict, segments, rest, data: list[dict]) -> None:
    """Fill the adjacency dictionaries of a graph without parallel edges straight from its affine
    segments (:mod:`weightspace.graph.edge_codec`), in edge order: a dense block's row (one target)
    or column (one source) is one ``dict.update`` over a ``range`` of node ids and a slice of
    ``data``, with no per-edge index lists and no sorting; explicit edges go one by one."""
    e0 = ex = 0  # position in the edges, in the explicit edges
    rest_l = rest.tolist() if rest.numel() else [[], []]
    for kind, R, C, s0, sr, sc, d0, dr, dc in segments.tolist():
        n = R * C
        if kind != 0:  # explicit edges
            for u, v, d in zip(rest_l[0][ex : ex + n], rest_l[1][ex : ex + n], data[e0 : e0 + n]):
                succ[u][v] = d
                pred[v][u] = d
            ex += n
            e0 += n
            continue
        _fill_side(pred, R, C, (d0, dr, dc), (s0, sr, sc), data, e0)  # in-neighbours of the targets
        _fill_side(succ, R, C, (s0, sr, sc), (d0, dr, dc), data, e0)  # out-neighbours of the sources
        e0 += n


def _fill_side(adj: dict, R: int, C: int, key: tuple[int, int, int], other: tuple[int, int, int], data: list,
               e0: int) -> None:
    """Add the edges ``e0 + r*C + c`` of one affine segment to ``adj[key node][other node]``, where
    ``key = (k0, kr, kc)`` and ``other`` give the node of edge ``(r, c)`` as ``k0 + r*kr + c*kc``: a
    whole row at a time when a row shares its key node (``kc == 0``), a column when a column does."""
    k0, kr, kc = key
    o0, or_, oc = other
    if kc == 0 or C == 1:
        for r in range(R):
            a = e0 + r * C
            adj[k0 + r * kr].update(zip(_run(o0 + r * or_, C, oc), data[a : a + C]))
    elif kr == 0 or R == 1:
        for c in range(C):
            adj[k0 + c * kc].update(zip(_run(o0 + c * oc, R, or_), data[e0 + c : e0 + R * C : C]))
    else:
        _one_by_one(adj, R, C, k0, kr, kc, o0, or_, oc, data, e0)


def _one_by_one(adj: dict, R: int, C: int, a0: int, ar: int, ac: int, b0: int, br: int, bc: int, data: list,
                e0: int) -> None:
    """``adj[a][b] = data[e]`` for every edge of a segment whose rows and columns both move ``a``."""
    e = e0
    for r in range(R):
        a, b = a0 + r * ar, b0 + r * br
        for _ in range(C):
            adj[a][b] = data[e]
            a, b, e = a + ac, b + bc, e + 1


def _add_edges(G: nx.DiGraph, src: np.ndarray, dst: np.ndarray, data: list[dict]) -> None:
    """``G.add_edges_from(zip(src, dst, data))`` for edges between existing nodes, without parallel
    edges, filling the adjacency dictionaries a node at a time."""
    succ, pred = getattr(G, "_succ", None), getattr(G, "_pred", None)
    if not isinstance(succ, dict) or not isinstance(pred, dict):  # pragma: no cover - other networkx layouts
        G.add_edges_from(zip(src.tolist(), dst.tolist(), data))
        return
    for a, b, inner in ((src, dst, succ), (dst, src, pred)):
        if bool((a[1:] >= a[:-1]).all()):  # already grouped (edges in order of their target, usually)
            a_sorted, b_sorted, d_sorted = a, b.tolist(), data
        else:
            order = np.argsort(a, kind="stable")
            a_sorted, b_sorted, d_sorted = a[order], b[order].tolist(), _pick(data, order)
        starts = np.flatnonzero(np.r_[True, a_sorted[1:] != a_sorted[:-1]])
        ends = np.r_[starts[1:], len(a_sorted)]
        for node, s, e in zip(a_sorted[starts].tolist(), starts.tolist(), ends.tolist()):
            inner[node].update(zip(b_sorted[s:e], d_sorted[s:e]))


def _pick(items: list, index: np.ndarray) -> list:
    """``[items[i] for i in index]`` at C speed."""
    idx = index.tolist()
    if len(idx) == 1:
        return [items[idx[0]]]
    return list(operator.itemgetter(*idx)(items)) if idx else []
