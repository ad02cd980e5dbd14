"""GraphMetaNet: invariant graph outputs and equivariant node/edge outputs under function-preserving
hidden-neuron permutations (MLP, CNN, ResNet, ViT), sensitivity to non-symmetries, heterogeneous
batches, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace.graph import batch_graphs
from weightspace.nn import GraphMetaNet

from ..perm_cases import CASES, broken_pair, max_grid, permuted_pair

SEEDS = st.integers(0, 2**31 - 1)


def _double(*graphs):
    """Float64 copies: invariance is checked at atol 1e-5 without float32 summation-order noise."""
    out = []
    for g in graphs:
        g = g.clone()
        g.x, g.edge_attr = g.x.double(), g.edge_attr.double()
        out.append(g)
    return out


def _net(grid: tuple[int, int], seed: int = 0) -> GraphMetaNet:
    torch.manual_seed(seed)
    net = GraphMetaNet(hidden=16, num_layers=2, embed_dim=16, kernel_grid=grid, node_out=2, edge_out=3).eval()
    with torch.no_grad():  # non-trivial FiLM and updates (they start at zero)
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return net.double()


@pytest.mark.parametrize("name", CASES)
@settings(max_examples=2, deadline=None)
@given(seed=SEEDS)
def test_prediction_invariant_to_hidden_permutations(name, seed):
    g0, g1 = _double(*permuted_pair(name, seed)[:2])
    net = _net(max_grid(g0, g1))
    with torch.no_grad():
        a, b = net(g0), net(g1)
        assert torch.allclose(net.encode(g0), net.encode(g1), atol=1e-5)
    assert torch.allclose(a, b, atol=1e-5), (a, b)


@pytest.mark.parametrize("name", CASES)
def test_prediction_sensitive_to_non_symmetries(name):
    g0, g1 = _double(*broken_pair(name, 0))
    net = _net(max_grid(g0, g1))
    with torch.no_grad():
        assert (net(g0) - net(g1)).abs().max() > 1e-3


@pytest.mark.parametrize("name", CASES)
def test_node_and_edge_readouts_equivariant(name):
    g0, g1, pi = permuted_pair(name, 1)
    g0, g1 = _double(g0, g1)
    net = _net(max_grid(g0, g1))
    with torch.no_grad():
        n0, n1 = net.node_outputs(g0), net.node_outputs(g1)
        e0, e1 = net.edge_outputs(g0), net.edge_outputs(g1)
    assert torch.allclose(n1[pi], n0, atol=1e-5)
    # match edges by (new src, new dst, type); ties are resolved by edge features
    def keyed(g, src, dst, out):
        keys = [(s, d, t, tuple(round(v, 6) for v in a)) for s, d, t, a in
                zip(src.tolist(), dst.tolist(), g.edge_type.tolist(), g.edge_attr.tolist())]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        return [keys[i] for i in order], out[order]
    k0, o0 = keyed(g0, pi[g0.edge_index[0]], pi[g0.edge_index[1]], e0)
    k1, o1 = keyed(g1, g1.edge_index[0], g1.edge_index[1], e1)
    assert k0 == k1
    assert torch.allclose(o0, o1, atol=1e-5)


def test_node_readout_sensitive_to_non_symmetries():
    g0, g1 = _double(*broken_pair("mlp", 0))
    net = _net(max_grid(g0, g1))
    with torch.no_grad():
        n0, n1 = net.node_outputs(g0), net.node_outputs(g1)
    # the first hidden layer, compared as a set (sorted per column): not a permutation of before
    layer1 = g0.node_layer == 1
    s0, s1 = n0[layer1].sort(0).values, n1[layer1].sort(0).values
    assert (s0 - s1).abs().max() > 1e-3


def test_heterogeneous_batch_matches_single_graphs():
    graphs = _double(*[permuted_pair(n, 0)[0] for n in CASES])
    net = _net(max_grid(*graphs))
    with torch.no_grad():
        batched = net(batch_graphs(graphs))
        single = torch.cat([net(g) for g in graphs])
    assert batched.shape == (len(CASES), 1)
    assert torch.allclose(batched, single, atol=1e-5)


def test_gradients_flow_to_every_parameter():
    graphs = _double(*[permuted_pair(n, 0)[0] for n in ("mlp", "resnet")])
    net = _net(max_grid(*graphs)).train()
    b = batch_graphs(graphs)
    (net(b).sum() + net.node_outputs(b).sum() + net.edge_outputs(b).sum()).backward()
    # position embeddings of unused rows get no gradient; every weight matrix must
    missing = [n for n, p in net.named_parameters() if p.grad is None and "emb" not in n]
    assert not missing


def test_kernel_larger_than_grid_raises():
    g = _double(permuted_pair("resnet", 0)[0])[0]  # 3x3 kernels
    net = _net((1, 1))
    with pytest.raises(ValueError, match="smaller than the largest kernel"):
        net(g)


def test_trajectory_input_raises():
    g = _double(permuted_pair("mlp", 0)[0])[0]
    g.x = g.x[None].repeat(2, 1, 1)
    with pytest.raises(ValueError, match="one checkpoint per graph"):
        _net((1, 1))(g)


def test_missing_heads_raise_and_repr():
    net = GraphMetaNet(hidden=8, num_layers=1, kernel_grid=(1, 1))
    g, _, _ = permuted_pair("mlp", 0)
    with pytest.raises(RuntimeError, match="node_out=0"):
        net.node_outputs(g)
    with pytest.raises(RuntimeError, match="edge_out=0"):
        net.edge_outputs(g)
    assert "GraphMetaNet(hidden=8" in repr(net) and "GMNConv(8" in repr(net.convs)
    before = [p.clone() for p in net.parameters()]
    net.reset_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def _hybrid(g0, g1, seed: int = 0) -> GraphMetaNet:
    from weightspace.nn import tensor_statistics

    n = max(int(tensor_statistics(g)[-1]) for g in (g0, g1))
    torch.manual_seed(seed)
    net = GraphMetaNet(hidden=16, num_layers=2, embed_dim=16, kernel_grid=max_grid(g0, g1), stat_tensors=n,
                       layer_bins=3).eval()
    net.fit_normalizer(torch.stack([tensor_statistics(g, n) for g in (g0, g1)]) + torch.randn(2, 7 * n + 1))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return net.double()


@pytest.mark.parametrize("name", CASES)
def test_statistics_and_depth_bins_invariant_and_sensitive(name):
    g0, g1 = _double(*permuted_pair(name, 3)[:2])
    net = _hybrid(g0, g1)
    with torch.no_grad():
        # float64: a true symmetry agrees to ~1e-14, far inside the tolerance used for sensitivity below
        assert torch.allclose(net(g0), net(g1), rtol=0, atol=1e-9)
        assert net.stat_features(g0).shape == (1, 7 * net.stat_tensors + 1)
    b0, b1 = _double(*broken_pair(name, 0))
    net = _hybrid(b0, b1)
    with torch.no_grad():
        # the broken pairs rewire weights without changing any tensor's statistics: only the
        # message-passing path can see it, and it must
        assert torch.allclose(net.stat_features(b0), net.stat_features(b1), atol=1e-6)
        assert (net(b0) - net(b1)).abs().max() > 1e-5


def test_statistics_hybrid_batch_and_normalizer_errors():
    from weightspace.nn import tensor_statistics

    graphs = _double(*[permuted_pair(n, 0)[0] for n in CASES])

    n = max(int(tensor_statistics(g)[-1]) for g in graphs)
    net = GraphMetaNet(hidden=8, num_layers=1, embed_dim=8, kernel_grid=max_grid(*graphs), stat_tensors=n,
                       layer_bins=4).double()
    with torch.no_grad():
        batched = net(batch_graphs(graphs))
        single = torch.cat([net(g) for g in graphs])
    assert torch.allclose(batched, single, atol=1e-5)
    with pytest.raises(RuntimeError, match="stat_tensors=0"):
        GraphMetaNet(hidden=8, num_layers=1, kernel_grid=(1, 1)).fit_normalizer(torch.zeros(2, 8))



@pytest.mark.parametrize("layers", [0, 1, 3])
def test_streamed_inference_matches_the_gradient_path(monkeypatch, layers):
    """Without gradients, graphs of more than ``GMNConv.chunk_edges`` edges are embedded chunk by
    chunk (edge encoder, layers with in-place edge states, readout pools): same encoding, node and
    edge outputs as the ordinary path, on a heterogeneous batch (kernel grids resized, several
    graphs, depth bins, statistics hybrid), on a single graph, in uneven chunks."""
    from weightspace.nn import GMNConv, tensor_statistics

    graphs = _double(*[permuted_pair(n, 0)[0] for n in CASES])
    n = max(int(tensor_statistics(g)[-1]) for g in graphs)
    torch.manual_seed(0)
    net = GraphMetaNet(hidden=8, num_layers=layers, embed_dim=8, kernel_grid=max_grid(*graphs), stat_tensors=n,
                       layer_bins=3, node_out=2, edge_out=3).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    net = net.double()
    for b in (batch_graphs(graphs), graphs[-1]):
        ref = net.encode(b), net.node_outputs(b), net.edge_outputs(b)  # gradients on: never streamed
        assert all(r.requires_grad for r in ref)
        monkeypatch.setattr(GMNConv, "chunk_edges", 97)
        assert b.num_edges > 3 * 97 and b.num_edges % 97
        with torch.no_grad():
            assert net._streamed(b)
            got = net.encode(b), net.node_outputs(b), net.edge_outputs(b)
        monkeypatch.undo()
        for r, g in zip(ref, got):
            assert torch.allclose(r, g, rtol=0, atol=1e-9), (r - g).abs().max()


def test_gmnconv_in_edge_chunks_matches(monkeypatch):
    from weightspace.nn import GMNConv

    torch.manual_seed(0)
    conv = GMNConv(8).double()
    with torch.no_grad():
        for p in conv.parameters():
            p.add_(0.2 * torch.randn_like(p))
    h, e = torch.randn(50, 8, dtype=torch.double), torch.randn(1000, 8, dtype=torch.double)
    edge_index = torch.randint(0, 50, (2, 1000), dtype=torch.int32)
    h0, e0 = conv(h, e, edge_index)
    monkeypatch.setattr(GMNConv, "chunk_edges", 64)
    with torch.no_grad():
        h1, e1 = conv(h, e.clone(), edge_index)
    assert torch.allclose(h0, h1, rtol=0, atol=1e-10) and torch.allclose(e0, e1, rtol=0, atol=1e-10)
