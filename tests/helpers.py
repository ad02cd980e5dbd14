"""Test helpers: bit-exact comparison of state dicts and graphs, function-preserving permutations."""

from __future__ import annotations

from collections import defaultdict

import networkx as nx
import torch
from torch import Tensor, nn

import weightspace as ws
from weightspace.graph import PERMUTABLE_NODE_TYPES, ParameterGraph


def bits(t: Tensor) -> Tensor:
    """View a tensor's bytes as integers so that NaN == NaN and -0.0 != 0.0."""
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8) if t.dtype != torch.bool else t


def assert_state_equal(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert list(a.keys()) == list(b.keys())
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(bits(a[k]), bits(b[k])), f"{k} differs"


def permute_params(model: nn.Module, rules: list[tuple[str, int, Tensor]]) -> nn.Module:
    """Permute ``param.index_select(axis, perm)`` for each ``(name, axis, perm)`` in place."""
    sd = model.state_dict()
    new = {}
    for name, axis, perm in rules:
        src = new.get(name, sd[name])
        new[name] = src.index_select(axis, perm)
    with torch.no_grad():
        model.load_state_dict({**sd, **new})
    return model


def node_permutation(num_nodes: int, groups: dict[str, Tensor], perms: dict[str, Tensor]) -> Tensor:
    """Node map ``pi`` (old id -> new id) for neuron permutations given per group label.

    A neuron ``j`` of a group permuted by ``perm`` (new neuron ``i`` is old neuron ``perm[i]``)
    moves from node ``nodes[perm[i]]`` to node ``nodes[i]``.
    """
    pi = torch.arange(num_nodes)
    for label, perm in perms.items():
        nodes = groups[label]
        pi[nodes[perm]] = nodes
    return pi


def edge_dict(g: ParameterGraph, pi: Tensor | None = None) -> dict[tuple[int, int], list]:
    src, dst = g.edge_index
    if pi is not None:
        src, dst = pi[src], pi[dst]
    out: dict[tuple[int, int], list] = defaultdict(list)
    for s, d, t, k, a in zip(src.tolist(), dst.tolist(), g.edge_type.tolist(), g.edge_kernel.tolist(),
                             g.edge_attr.tolist()):
        out[(s, d)].append((t, tuple(k), tuple(a)))
    return {k: sorted(v) for k, v in out.items()}


def assert_graphs_permuted(a: ParameterGraph, b: ParameterGraph, pi: Tensor) -> None:
    """``b`` is ``a`` with node ``i`` renamed ``pi[i]``: node features, edge set, edge features."""
    assert a.num_nodes == b.num_nodes
    inv = torch.empty_like(pi)
    inv[pi] = torch.arange(pi.numel())
    for key in ("x", "node_type", "node_layer", "node_pos", "node_act"):
        assert torch.equal(getattr(b, key)[pi], getattr(a, key)), key
    assert edge_dict(a, pi) == edge_dict(b)


def fingerprint(g: ParameterGraph) -> dict:
    """Invariant to permutations of permutable nodes, sensitive to which weights touch each
    non-permutable neuron (inputs, outputs, positions): for every such neuron, the sorted
    features of its in- and out-edges, and its own features."""
    fixed = [i for i, t in enumerate(g.node_type.tolist()) if t not in PERMUTABLE_NODE_TYPES]
    src, dst = g.edge_index.tolist()
    attrs = [tuple(round(v, 7) for v in a) for a in g.edge_attr.tolist()]
    ins, outs = defaultdict(list), defaultdict(list)
    for s, d, a in zip(src, dst, attrs):
        outs[s].append(a)
        ins[d].append(a)
    key = lambda i: (int(g.node_type[i]), int(g.node_pos[i]))  # noqa: E731
    return {key(i): (sorted(ins[i]), sorted(outs[i]), tuple(g.x[i].tolist())) for i in fixed}


def _keyed_nx(g: ParameterGraph) -> nx.DiGraph:
    G = ws.to_networkx(g)
    for _, d in G.nodes(data=True):
        d["key"] = (d["node_type"], d["pos"], tuple(d["x"]))
    for _, _, d in G.edges(data=True):
        d["key"] = (d["edge_type"], tuple(d["edge_attr"]))
    return G


def isomorphic(g0: ParameterGraph, g1: ParameterGraph) -> bool:
    """Whether some node relabelling maps ``g0`` onto ``g1`` with equal node/edge types and features."""
    same = lambda a, b: a["key"] == b["key"]  # noqa: E731
    return nx.is_isomorphic(_keyed_nx(g0), _keyed_nx(g1), node_match=same, edge_match=same)


def head_permutation(H: int, dh: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Query/key and value unit permutations that permute heads and units inside each head."""
    heads = torch.randperm(H, generator=gen)
    qk = torch.cat([heads[h] * dh + torch.randperm(dh, generator=gen) for h in range(H)])
    v = torch.cat([heads[h] * dh + torch.randperm(dh, generator=gen) for h in range(H)])
    return qk, v


def qk_pairing_signature(g: ParameterGraph) -> list:
    """A relabelling-invariant summary of which query unit is paired with which key unit: for
    every ``ATTN_QK`` edge, the incoming weights and bias of its query and of its key."""
    src, dst = g.edge_index
    incoming: dict[int, list] = defaultdict(list)
    for d, a in zip(dst.tolist(), g.edge_attr.tolist()):
        incoming[d].append(tuple(round(v, 6) for v in a))
    qk = (g.edge_type == ws.graph.EdgeType.ATTN_QK).nonzero().squeeze(1)

    def unit(i: int) -> tuple:
        return tuple(sorted(incoming[i])), round(float(g.x[i, 0]), 6)

    return sorted((unit(int(src[e])), unit(int(dst[e]))) for e in qk.tolist())


def assert_round_trip(make, x, tracer: str = "auto") -> ParameterGraph:
    """decode(encode) of ``make(0)`` is bit-exact, its graph is a DAG, and a fresh model ``make(1)``
    (other weights) written from the graph computes the same outputs on ``x``; returns the graph.
    ``tracer="fx"`` converts without the example input."""
    model = make(0)
    spec = ws.GraphSpec.from_module(model, None if tracer == "fx" else x, tracer=tracer)
    g = spec.to_graph(model.state_dict())
    assert_state_equal(spec.to_state_dict(g), model.state_dict())
    assert nx.is_directed_acyclic_graph(ws.to_networkx(g))
    fresh = make(1)
    with torch.no_grad():
        assert not torch.equal(fresh(x), model(x))
        ws.from_graph(g, fresh, spec=spec)
        assert torch.equal(fresh(x), model(x))
    return g

