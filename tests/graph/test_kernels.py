"""True-size kernel storage: round trips on mixed kernel sizes, the dense view, batching, old layout."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch_geometric.data import Batch

import weightspace as ws
from weightspace.graph import batch_graphs, resize_kernel_grid
from weightspace.graph.param_graph import kernel_runs_of, kernels_of_runs, pad_kernels, unpad_kernels

from ..helpers import assert_state_equal
from .layouts import dense_layout

KERNELS_2D = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 3), (3, 1)]


def mixed_net(kernels: list[tuple[int, int]], width: int, one_d: bool, seed: int) -> tuple[nn.Module, torch.Tensor]:
    """Convolutions with the given kernel sizes (same padding), then a flatten and a Linear."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    cin = 2
    for kh, kw in kernels:
        if one_d:
            layers += [nn.Conv1d(cin, width, kw, padding=kw // 2), nn.ReLU()]
        else:
            layers += [nn.Conv2d(cin, width, (kh, kw), padding=(kh // 2, kw // 2)), nn.ReLU()]
        cin = width
    side = 4
    layers += [nn.Flatten(), nn.Linear(cin * side * (1 if one_d else side), 3)]
    x = torch.randn(1, 2, side) if one_d else torch.randn(1, 2, side, side)
    return nn.Sequential(*layers), x


def reference_dense(g: ws.ParameterGraph, grid: tuple[int, int]) -> torch.Tensor:
    """The dense layout built edge by edge: each kernel centred in ``grid``, zeros elsewhere."""
    KH, KW = grid
    ptr = g.edge_value_ptr.tolist()
    ev = g.edge_values
    out = torch.zeros(*ev.shape[:-1], g.num_edges, KH, KW, dtype=ev.dtype)
    for e, (kh, kw) in enumerate(g.edge_kernel.tolist()):
        oh, ow = (KH - kh) // 2, (KW - kw) // 2
        out[..., e, oh : oh + kh, ow : ow + kw] = ev[..., ptr[e] : ptr[e + 1]].reshape(*ev.shape[:-1], kh, kw)
    return out.reshape(*ev.shape[:-1], g.num_edges, KH * KW)


kernel_lists = st.lists(st.sampled_from(KERNELS_2D), min_size=1, max_size=3)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kernels=kernel_lists, width=st.integers(1, 3), one_d=st.booleans(), seed=st.integers(0, 2**16),
       stack=st.sampled_from([0, 1, 3]))
def test_round_trip_and_dense_view_on_mixed_kernels(kernels, width, one_d, seed, stack):
    if one_d:
        kernels = [(1, kw) for _, kw in kernels]
    model, x = mixed_net(kernels, width, one_d, seed)
    spec = ws.GraphSpec.from_module(model, x)
    sd = model.state_dict()
    state = {k: torch.stack([v + i for i in range(stack)]) for k, v in sd.items()} if stack else sd
    g = spec.to_graph(state)
    # storage at each edge's own size: one value per weight scalar, nothing padded
    assert g.true_size and g.edge_values.shape[-1] == spec.num_values
    assert spec.num_values == int((g.edge_kernel[:, 0] * g.edge_kernel[:, 1]).sum())
    n_weights = sum(m.weight.numel() for m in model if hasattr(m, "weight"))
    assert spec.num_values == n_weights  # every edge holds a weight (no structural edges here)
    assert_state_equal(spec.to_state_dict(g), state)
    # the dense view is the old padded layout, and decode takes it too
    dense = g.edge_attr
    assert torch.equal(dense, reference_dense(g, g.grid))
    assert g.grid == (max(k[0] for k in kernels), max(max(k[1] for k in kernels), (4 if one_d else 16)))
    assert torch.equal(spec.decode(g.x, dense), spec.decode(g.x, g.edge_values))
    assert torch.equal(unpad_kernels(dense, g.kernel_runs, g.grid), g.edge_values)
    # the dense-layout index maps agree with the dense view
    ext = torch.cat([spec.flatten(sd), torch.tensor([0.0, 1.0, -1.0])])
    single = spec.to_graph(sd)
    n_x = spec.num_nodes * 5
    assert torch.equal(ext[spec.encode_index.long()][n_x:].view_as(single.edge_attr), single.edge_attr)
    full = torch.cat([single.x.flatten(), single.edge_attr.flatten()])
    assert torch.equal(full[spec.decode_index.long()], spec.flatten(sd))


def test_changing_one_weight_changes_one_dense_entry():
    """Sensitivity beside the round trip: the dense view moves exactly where the kernel entry sits."""
    model, x = mixed_net([(7, 7), (3, 3), (1, 1)], 2, False, 0)
    spec = ws.GraphSpec.from_module(model, x)
    sd = model.state_dict()
    g0 = spec.to_graph(sd)
    sd2 = {k: v.clone() for k, v in sd.items()}
    sd2["2.weight"][1, 0, 2, 0] += 1.0  # the 3x3 conv: out 1, in 0, row 2, column 0
    g1 = spec.to_graph(sd2)
    diff = (g1.edge_attr != g0.edge_attr).nonzero().tolist()
    assert len(diff) == 1
    e, slot = diff[0]
    assert g0.edge_kernel[e].tolist() == [3, 3]
    KH, KW = g0.grid  # (7, 16): the 7x7 stem and the flatten's 1x16 blocks
    assert slot == (2 + (KH - 3) // 2) * KW + (0 + (KW - 3) // 2)  # centred in the grid
    assert int(g0.edge_index[1, e]) == int(spec.node_groups["2"][1])  # into output channel 1 of that conv


def test_graph_bytes_of_a_7x7_stem_are_near_its_parameter_bytes():
    model = nn.Sequential(nn.Conv2d(3, 32, 7, padding=3), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    g = ws.to_graph(model)
    param_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    stored = {v.untyped_storage().data_ptr(): v.untyped_storage().nbytes() for v in g.values()
              if isinstance(v, torch.Tensor)}
    assert sum(stored.values()) <= 1.5 * param_bytes
    assert g.edge_attr.numel() == g.num_edges * 49  # the dense view still pads to 7x7 when asked


def test_kernel_runs_encode_edge_kernels():
    ek = torch.tensor([[3, 3], [3, 3], [1, 1], [7, 7], [7, 7], [3, 3]], dtype=torch.int32)
    runs = kernel_runs_of(ek)
    assert runs.tolist() == [[2, 3, 3], [1, 1, 1], [2, 7, 7], [1, 3, 3]]
    assert torch.equal(kernels_of_runs(runs), ek)
    one = kernels_of_runs(torch.tensor([[4, 3, 3]]))
    assert one.shape == (4, 2) and one.stride(0) == 0
    v = torch.arange(9 + 9 + 1 + 49 + 49 + 9, dtype=torch.float32)
    assert torch.equal(unpad_kernels(pad_kernels(v, runs, (7, 9)), runs, (7, 9)), v)
    with pytest.raises(ValueError, match="smaller than the largest kernel"):
        pad_kernels(v, runs, (5, 5))


def _mixed_graphs():
    nets = [mixed_net([(7, 7), (3, 3)], 2, False, 1), mixed_net([(1, 1)], 3, False, 2),
            mixed_net([(1, 5)], 2, True, 3), mixed_net([(3, 1), (5, 5)], 1, False, 4)]
    return [ws.to_graph(m, x) for m, x in nets], nets


def test_batching_mixed_grids_equals_the_padded_result():
    graphs, _ = _mixed_graphs()
    KH = max(g.grid[0] for g in graphs)
    KW = max(g.grid[1] for g in graphs)
    old = torch.cat([resize_kernel_grid(reference_dense(g, g.grid), g.edge_kernel, g.grid, (KH, KW)) for g in graphs])
    fast = batch_graphs(graphs)
    plain = Batch.from_data_list(graphs)
    assert fast.grid == plain.grid == (KH, KW)
    assert torch.equal(fast.edge_attr, old) and torch.equal(plain.edge_attr, old)
    assert torch.equal(batch_graphs([dense_layout(g) for g in graphs]).edge_attr, old)
    assert torch.equal(plain.edge_kernel, torch.cat([g.edge_kernel for g in graphs]))
    assert torch.equal(fast.edge_index, plain.edge_index)


def test_graphs_taken_back_out_of_a_batch_decode_exactly():
    graphs, nets = _mixed_graphs()
    batch = Batch.from_data_list(graphs)
    for i, (model, x) in enumerate(nets):
        back = batch.get_example(i)
        assert torch.equal(back.edge_values, graphs[i].edge_values)
        assert_state_equal(ws.GraphSpec.from_module(model, x).to_state_dict(back), model.state_dict())


def test_graph_saved_in_the_dense_layout_still_loads_and_decodes(tmp_path):
    model, x = mixed_net([(5, 5), (1, 1)], 2, False, 5)
    spec = ws.GraphSpec.from_module(model, x)
    g = spec.to_graph(model.state_dict())
    torch.save(dense_layout(g), tmp_path / "old.pt")
    old = torch.load(tmp_path / "old.pt", weights_only=True)
    assert not old.true_size and torch.equal(old.edge_attr, g.edge_attr)
    assert_state_equal(spec.to_state_dict(old), model.state_dict())
    ws.from_graph(old, mixed_net([(5, 5), (1, 1)], 2, False, 6)[0], spec=spec)
    assert torch.equal(old.to_true_size().edge_values, g.edge_values)
    assert nx_edges(ws.to_networkx(old)) == nx_edges(ws.to_networkx(g))
    torch.save(g, tmp_path / "new.pt")
    new = torch.load(tmp_path / "new.pt", weights_only=True)
    assert new.true_size and torch.equal(new.edge_values, g.edge_values)


def nx_edges(G) -> list:
    return sorted((s, d, tuple(a["edge_attr"].tolist()), a["kernel"]) for s, d, a in G.edges(data=True))


def test_to_networkx_gives_true_size_kernels():
    model, x = mixed_net([(7, 7), (1, 3)], 1, False, 7)
    g = ws.to_graph(model, x)
    G = ws.to_networkx(g)
    ptr = g.edge_value_ptr
    for e in range(g.num_edges):
        s, d = g.edge_index[:, e].tolist()
        kh, kw = g.edge_kernel[e].tolist()
        assert G[s][d]["kernel"] == (kh, kw)
        assert G[s][d]["edge_attr"].tolist() == g.edge_values[ptr[e] : ptr[e + 1]].tolist()


def test_assigning_a_dense_view_stores_true_kernels():
    model, x = mixed_net([(5, 5), (3, 3)], 2, False, 8)
    g = ws.to_graph(model, x)
    h = g.clone()
    h.edge_attr = g.edge_attr * 2.0
    assert h.true_size and torch.equal(h.edge_values, g.edge_values * 2.0)
    assert g.grid == (5, 16)  # the 5x5 conv and the flatten's 1x16 blocks
    wider = g.with_kernel_grid(7, 20)
    assert wider.edge_values is g.edge_values and wider.edge_attr.shape == (g.num_edges, 140)
    assert torch.equal(wider.edge_attr, resize_kernel_grid(g.edge_attr, g.edge_kernel, (5, 16), (7, 20)))
    with pytest.raises(ValueError, match="smaller than the largest kernel"):
        g.with_kernel_grid(3, 3)


def test_consumers_read_mixed_batches():
    """Metanetworks take PyG-collated mixed batches and give what they give on batch_graphs batches."""
    from weightspace.nn import GraphMetaNet
    from weightspace.nn.statnn import tensor_statistics

    graphs, _ = _mixed_graphs()
    torch.manual_seed(0)
    net = GraphMetaNet(hidden=8, num_layers=1, out=2, kernel_grid=(7, 16)).eval()
    with torch.no_grad():
        a = net(batch_graphs(graphs))
        b = net(Batch.from_data_list(graphs))
        c = net(batch_graphs([dense_layout(g) for g in graphs]))
    assert a.shape == (4, 2) and torch.equal(a, b) and torch.equal(a, c)
    for g in graphs:
        assert torch.equal(tensor_statistics(g), tensor_statistics(dense_layout(g)))


@pytest.mark.parametrize("stack", [0, 2])
def test_slice_copy_paths_equal_the_one_gather_paths(monkeypatch, stack):
    """Large inputs go through slice copies (straight into the dense view for ``encode``); small ones
    through one gather: both give the same tensors, and decode inverts both layouts."""
    import weightspace.graph.spec as spec_module

    model = nn.Sequential(nn.Conv2d(2, 6, 7, padding=3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1),
                          nn.Conv2d(6, 6, 1), nn.Flatten(),
                          nn.Linear(6 * 16, 300))
    x = torch.randn(1, 2, 4, 4)
    sd = {k: v.double() if v.is_floating_point() and k.endswith("bias") else v for k, v in model.state_dict().items()}
    state = {k: torch.stack([v * (i + 1) for i in range(stack)]) for k, v in sd.items()} if stack else sd
    flat_state = ws.GraphSpec.from_module(model, x).flatten(state)
    results = []
    for threshold in (1 << 60, 0):  # the one-gather paths, then the slice-copy paths
        monkeypatch.setattr(spec_module, "_COPY_PLAN_MIN", threshold)
        spec = ws.GraphSpec.from_module(model, x)
        xd, dense = spec.encode(state)
        xv, values = spec.encode_values(state)
        xf, dense_f = spec.encode(flat_state)
        assert torch.equal(xd, xv) and torch.equal(xf, xd) and torch.equal(dense_f, dense)
        assert torch.equal(spec.dense_edges(values), dense)
        assert torch.equal(spec.decode(xd, dense), flat_state) and torch.equal(spec.decode(xv, values), flat_state)
        results.append((xd, dense, values))
    assert all(torch.equal(a, b) for a, b in zip(*results))
