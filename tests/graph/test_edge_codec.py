"""Compressed edge storage: encode/decode of edge lists, graphs that store segments, batching,
caching, saved graphs of the older layout, and that a one-edge change is never lost."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

import weightspace as ws
from weightspace.graph import ArchitectureMismatchError, batch_graphs
from weightspace.graph.edge_codec import (
    MIN_SEGMENT_EDGES,
    SEGMENT_COLUMNS,
    compress_edges,
    edge_index_of,
    expand_edges,
)

from ..helpers import assert_state_equal


# ----------------------------------------------------------------------------- edge lists
def dense_block(out0: int, n_out: int, in0: int, n_in: int, transposed: bool = False) -> torch.Tensor:
    """A dense layer's edges, output-major (``transposed``: input-major)."""
    o, i = torch.arange(n_out) + out0, torch.arange(n_in) + in0
    if transposed:
        return torch.stack([i.repeat_interleave(n_out), o.repeat(n_in)])
    return torch.stack([i.repeat(n_out), o.repeat_interleave(n_in)])


def grouped_block(out0: int, in0: int, groups: int, per_out: int, per_in: int) -> torch.Tensor:
    """A grouped convolution's edges (``per_in`` inputs -> ``per_out`` outputs per group)."""
    return torch.cat([dense_block(out0 + g * per_out, per_out, in0 + g * per_in, per_in) for g in range(groups)], 1)


def diagonal(a: int, b: int, n: int, step_a: int = 1, step_b: int = 1) -> torch.Tensor:
    """Identity / depthwise / residual edges ``a + k*step_a -> b + k*step_b``."""
    k = torch.arange(n)
    return torch.stack([a + k * step_a, b + k * step_b])


def round_trip(ei: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    table, rest = compress_edges(ei)
    assert table.dtype == torch.long and table.shape[1] == len(SEGMENT_COLUMNS)
    assert rest.dtype == torch.int32 and rest.shape[0] == 2
    out = expand_edges(table, rest)
    assert out.dtype == torch.int32 and out.shape == ei.shape
    assert torch.equal(out, ei.to(torch.int32))
    return table, rest


piece = st.one_of(
    st.tuples(st.just("dense"), st.integers(0, 40), st.integers(1, 12), st.integers(0, 40), st.integers(1, 12),
              st.booleans()),
    st.tuples(st.just("grouped"), st.integers(0, 40), st.integers(0, 40), st.integers(1, 4), st.integers(1, 4),
              st.integers(1, 4)),
    st.tuples(st.just("diagonal"), st.integers(0, 40), st.integers(0, 40), st.integers(1, 30), st.integers(-2, 3),
              st.integers(-2, 3)),
    st.tuples(st.just("random"), st.integers(0, 25), st.integers(1, 60)),
    st.tuples(st.just("empty"),),
)


def build(spec: tuple, seed: int) -> torch.Tensor:
    kind = spec[0]
    if kind == "dense":
        return dense_block(*spec[1:])
    if kind == "grouped":
        return grouped_block(*spec[1:])
    if kind == "diagonal":
        a, b, n, sa, sb = spec[1:]
        a, b = a + max(0, -sa) * n, b + max(0, -sb) * n  # keep ids non-negative
        return diagonal(a, b, n, sa, sb)
    if kind == "random":
        n, hi = spec[1:]
        return torch.randint(0, hi, (2, n), generator=torch.Generator().manual_seed(seed))
    return torch.zeros(2, 0, dtype=torch.long)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(piece, max_size=6), seed=st.integers(0, 2**16))
def test_encode_decode_is_exact_on_structured_and_random_edge_lists(pieces, seed):
    ei = torch.cat([build(p, seed + k) for k, p in enumerate(pieces)] + [torch.zeros(2, 0, dtype=torch.long)], 1)
    round_trip(ei)


@settings(max_examples=50, deadline=None)
@given(edges=st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)), max_size=40))
def test_encode_decode_is_exact_on_arbitrary_ids(edges):
    ei = torch.tensor(edges, dtype=torch.long).reshape(-1, 2).t()
    round_trip(ei)


@settings(max_examples=60, deadline=None)
@given(n_out=st.integers(1, 70), n_in=st.integers(1, 70), out0=st.integers(0, 500), in0=st.integers(0, 500),
       transposed=st.booleans())
def test_a_dense_block_is_one_segment(n_out, n_in, out0, in0, transposed):
    table, rest = round_trip(dense_block(out0, n_out, in0, n_in, transposed))
    if n_out * n_in >= MIN_SEGMENT_EDGES:
        assert table.shape[0] == 1 and rest.shape[1] == 0 and int(table[0, 0]) == 0
    else:  # too small to pay for a table row
        assert rest.shape[1] == n_out * n_in


@settings(max_examples=40, deadline=None)
@given(groups=st.integers(2, 6), per_out=st.integers(2, 5), per_in=st.integers(2, 5), n=st.integers(9, 80))
def test_grouped_and_diagonal_blocks_compress(groups, per_out, per_in, n):
    table, rest = round_trip(grouped_block(100, 0, groups, per_out, per_in))
    assert rest.shape[1] == 0 or per_out * per_in < MIN_SEGMENT_EDGES
    assert table.shape[0] <= groups
    table, rest = round_trip(diagonal(3, 500, n))
    assert table.shape[0] == 1 and rest.shape[1] == 0


def test_random_edges_stay_explicit():
    ei = torch.randint(0, 1000, (2, 5000), generator=torch.Generator().manual_seed(0))
    table, rest = round_trip(ei)
    assert rest.shape[1] > 4900 and table.shape[0] < 20


def test_large_lists_are_encoded_in_chunks_and_both_decode_paths_agree(monkeypatch):
    from weightspace.graph import edge_codec

    big = torch.cat([dense_block(500, 300, 0, 150), diagonal(0, 900, 7), dense_block(900, 10, 500, 300),
                     torch.randint(0, 50, (2, 40), generator=torch.Generator().manual_seed(1))], 1)
    monkeypatch.setattr(edge_codec, "ENCODE_CHUNK_EDGES", 1 << 14)  # split the first block across chunks
    table, rest = round_trip(big)
    assert table.shape[0] < 20 and rest.shape[1] < 100
    ref = expand_edges(table, rest)
    for loop, chunk in [(1, 1 << 20), (1 << 30, 1 << 20), (1 << 30, 7), (1000, 100)]:
        monkeypatch.setattr(edge_codec, "DECODE_LOOP_EDGES", loop)  # segments written one by one ...
        monkeypatch.setattr(edge_codec, "DECODE_CHUNK_EDGES", chunk)  # ... or together, in chunks
        assert torch.equal(expand_edges(table, rest), ref)


def test_a_one_edge_change_is_not_lost():
    ei = torch.cat([dense_block(100, 20, 0, 30), diagonal(0, 200, 30)], 1).to(torch.int32)
    table, rest = compress_edges(ei)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        e = int(torch.randint(ei.shape[1], (1,), generator=g))
        row = int(torch.randint(2, (1,), generator=g))
        changed = ei.clone()
        changed[row, e] += 1
        t2, r2 = compress_edges(changed)
        assert torch.equal(expand_edges(t2, r2), changed)
        assert not torch.equal(expand_edges(t2, r2), ei)
        assert not (torch.equal(t2, table) and torch.equal(r2, rest))


def test_corrupt_tables_are_refused():
    table, rest = compress_edges(torch.cat([dense_block(10, 3, 0, 4), torch.tensor([[0], [1]])], 1))
    bad = table.clone()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match="unknown kind"):
        expand_edges(bad, rest)
    with pytest.raises(ValueError, match="edge_rest"):
        expand_edges(table, rest[:, :0])
    with pytest.raises(ValueError, match="int32"):
        compress_edges(torch.tensor([[-1], [0]]))


# ----------------------------------------------------------------------------- graphs
class Net(nn.Module):
    """Conv -> depthwise conv -> residual -> Linear: dense blocks, a diagonal and identity edges."""

    def __init__(self, c: int = 4, groups: int = 1, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, c, 3, padding=1)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c if groups == 0 else groups)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = y + torch.relu(self.dw(y))
        return self.fc(y.mean((2, 3)))


def explicit(g: ws.ParameterGraph) -> ws.ParameterGraph:
    """``g`` as graphs were saved before compressed edges: ``edge_index`` stored."""
    out = g.clone()
    out.edge_index = g.edge_index.clone()
    assert not out.edges_compressed and "edge_segments" not in out
    return out


@pytest.fixture(scope="module")
def graphs():
    out = []
    for seed, (c, groups) in enumerate([(4, 1), (4, 0), (6, 2)]):
        torch.manual_seed(seed)
        m = Net(c, groups)
        spec = ws.GraphSpec.from_module(m)
        out.append((m, spec, spec.to_graph(m.state_dict())))
    return out


def test_graphs_store_segments_shared_with_their_spec(graphs):
    m, spec, g = graphs[0]
    assert g.edges_compressed and "edge_index" not in g._store
    assert g.edge_segments is spec.edge_segments
    g2 = spec.to_graph(m.state_dict())
    assert g2.edge_index is g.edge_index is spec.edge_index  # decoded once, shared
    assert g.edge_index.dtype == torch.int32 and g.edge_index.shape == (2, g.num_edges)
    assert g.num_edges == spec.num_edges == int(g.edge_type.numel())


def test_cache_is_refreshed_when_the_table_changes(graphs):
    _, spec, g = graphs[0]
    seg = spec.edge_segments.clone()
    rest = spec.edge_rest.clone()
    first = edge_index_of(seg, rest)
    assert edge_index_of(seg, rest) is first
    affine = int((seg[:, 0] == 0).nonzero()[0])
    seg[affine, 3] += 1  # in place: every source of that segment moves by one
    moved = edge_index_of(seg, rest)
    assert moved is not first and not torch.equal(moved, spec.edge_index)
    assert torch.equal(moved, expand_edges(seg, rest))


def test_assigning_edge_index_stores_it_explicitly(graphs):
    _, spec, g = graphs[0]
    h = g.clone()
    new = g.edge_index.clone()
    new[0, 0] = (int(new[0, 0]) + 1) % g.num_nodes
    h.edge_index = new
    assert h.edge_index is new and not h.edges_compressed
    with pytest.raises(ArchitectureMismatchError, match="edge_index"):
        spec.check_graph(h)
    assert torch.equal(h.compress_edges().edge_index, new)


def test_check_graph_compares_segment_tables(graphs):
    _, spec, g = graphs[0]
    spec.check_graph(g)
    h = g.clone()  # equal tables, other tensors
    assert h.edge_segments is not spec.edge_segments
    spec.check_graph(h)
    affine = int((h.edge_segments[:, 0] == 0).nonzero()[-1])
    h.edge_segments[affine, 6] += 1  # every target of one segment moves
    with pytest.raises(ArchitectureMismatchError, match="edge_index"):
        spec.check_graph(h)


def test_old_layout_graphs_load_decode_and_batch(graphs, tmp_path):
    m, spec, g = graphs[1]
    old = explicit(g)
    path = tmp_path / "g.pt"
    torch.save(old, path)
    back = torch.load(path, weights_only=True)
    assert not back.edges_compressed
    assert_state_equal(ws.from_graph(back, Net(4, 0)).state_dict(), m.state_dict())
    assert torch.equal(back.edge_index, g.edge_index)
    # a batch of both layouts: batch_graphs compresses the explicit one
    b = batch_graphs([back, g])
    ref = Batch.from_data_list([back, explicit(g)])
    assert b.edges_compressed and torch.equal(b.edge_index, ref.edge_index)
    # saved compressed graphs load with weights_only too
    buf = io.BytesIO()
    torch.save(g, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=True)
    assert again.edges_compressed and torch.equal(again.edge_index, g.edge_index)


def test_batching_compressed_graphs_equals_batching_explicit_ones(graphs):
    gs = [g for _, _, g in graphs] * 2
    ref = Batch.from_data_list([explicit(g) for g in gs])
    for b in (Batch.from_data_list(gs), batch_graphs(gs), next(iter(DataLoader(gs, batch_size=len(gs))))):
        assert b.edges_compressed
        assert torch.equal(b.edge_index, ref.edge_index)
        assert b.num_edges == ref.num_edges
        for i, (m, spec, _) in enumerate(graphs * 2):
            one = b.get_example(i)
            assert torch.equal(one.edge_segments, spec.edge_segments)
            spec.check_graph(one)
            assert_state_equal(spec.to_state_dict(one), m.state_dict())


def test_edge_index_follows_the_graph_to_its_device_and_dtype(graphs):
    _, spec, g = graphs[2]
    ei = g.edge_index
    src, dst = ei.long()
    assert int(src.max()) < g.num_nodes and int(dst.max()) < g.num_nodes
    h = g.to("cpu")
    assert torch.equal(h.edge_index, ei)


def test_edge_index_first_decoded_under_inference_mode_works_with_autograd(graphs):
    _, spec, g = graphs[2]
    h = g.clone()  # tables of its own: nothing decoded yet
    with torch.inference_mode():
        ei = h.edge_index
    assert not ei.is_inference() and h.edge_index is ei
    w = torch.randn(h.num_nodes, requires_grad=True)
    w[ei[0].long()].sum().backward()  # an inference tensor here would refuse to be saved for backward
    assert w.grad is not None
    with torch.inference_mode():
        t, r = compress_edges(spec.edge_index)  # inference tensors as tables
    assert torch.equal(edge_index_of(t, r), spec.edge_index)


def test_ids_beyond_int32_are_refused_not_wrapped():
    big = dense_block(0, 4, 0, 4) + torch.tensor([[2**32], [0]])  # wraps onto a valid block in int32
    with pytest.raises(ValueError, match="int32"):
        compress_edges(big)


def reference_networkx(g: ws.ParameterGraph):
    """``to_networkx``'s edges built one ``add_edge`` at a time (graphs without parallel edges)."""
    import networkx as nx

    G = nx.DiGraph()
    G.add_nodes_from(range(g.num_nodes))
    ptr, kern = g.edge_value_ptr.tolist(), g.edge_kernel.tolist()
    for e, (u, v) in enumerate(g.edge_index.t().tolist()):
        G.add_edge(u, v, edge_attr=g.edge_values[..., ptr[e] : ptr[e + 1]], edge_type=int(g.edge_type[e]),
                   kernel=tuple(kern[e]), multiplicity=1)
    return G


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 2), lo=st.integers(0, 60), width=st.integers(0, 40), seed=st.integers(0, 2**16))
def test_to_networkx_from_segments_equals_edge_by_edge(graphs, which, lo, width, seed):
    _, _, g = graphs[which]
    ei = g.edge_index.clone()
    hi = min(lo + width, g.num_edges)
    perm = torch.randperm(max(hi - lo, 0), generator=torch.Generator().manual_seed(seed))
    ei[:, lo:hi] = ei[:, lo:hi][:, perm]  # a shuffled window: explicit edges amid segments
    h = g.clone()
    h.edge_index = ei
    ref = reference_networkx(h)
    for k in (h, h.compress_edges()):
        G = ws.to_networkx(k)
        assert G.number_of_edges() == g.num_edges
        for u in ref:
            assert list(G.succ[u]) == list(ref.succ[u]) and list(G.pred[u]) == list(ref.pred[u])
            for v, d in ref.succ[u].items():
                got = G.succ[u][v]
                assert got.keys() == d.keys() and got["edge_type"] == d["edge_type"] and got["kernel"] == d["kernel"]
                assert got["multiplicity"] == 1 and torch.equal(torch.from_numpy(got["edge_attr"].copy()), d["edge_attr"])


def test_graphs_of_the_oldest_layout_dense_values_and_explicit_edges_still_work(graphs, tmp_path):
    from .layouts import dense_layout

    m, spec, g = graphs[2]
    old = dense_layout(explicit(g))  # edge_attr, edge_kernel and edge_index stored
    assert not old.true_size and not old.edges_compressed
    torch.save(old, tmp_path / "old.pt")
    back = torch.load(tmp_path / "old.pt", weights_only=True)
    spec.check_graph(back)
    assert_state_equal(spec.to_state_dict(back), m.state_dict())
    b = batch_graphs([g, back])
    ref = Batch.from_data_list([explicit(g), explicit(g)])
    assert b.edges_compressed and b.true_size and torch.equal(b.edge_index, ref.edge_index)
    assert_state_equal(spec.to_state_dict(b.get_example(1)), m.state_dict())
