"""NowcastLayout: slots agree with the converter, normalization groups split by role, the graph
index is cached and batches block-diagonally, sparse messages equal a dense reference."""

from __future__ import annotations

import math

import pytest
import torch

import weightspace as ws
from model_zoo.archs import TinyViT
from weightspace.examples import build_example
from weightspace.nowcast import (
    Nowcaster,
    NowcastLayout,
    window_features,
)

from .helpers import example_window as _example_window
from .helpers import randomize as _randomize


@pytest.mark.parametrize("name", ["mlp", "cnn_flatten_bn", "vit"])
def test_layout_slots_agree_with_the_converter(name):
    """Every flat parameter sits where ``GraphSpec.encode`` puts it: its node's column, or its edge."""
    model, x = build_example(name)
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    theta = torch.randn(spec.num_params, dtype=spec.dtype)
    xs, es = spec.encode(theta)
    node = ~lay.slot_edge
    assert torch.equal(xs[lay.slot_owner[node], lay.slot_col[node]], theta[node])
    F = es.shape[-1]
    pos = (spec.decode_index.long() - spec.num_nodes * xs.shape[-1]) % F
    assert torch.equal(es[lay.slot_owner[lay.slot_edge], pos[lay.slot_edge]], theta[lay.slot_edge])
    # the readout's per-parameter outputs, placed in the graph, decode exactly through the spec
    delta = torch.randn(spec.num_params, dtype=spec.dtype)
    xd, ed = torch.zeros_like(xs), torch.zeros_like(es)
    xd[lay.slot_owner[node], lay.slot_col[node]] = delta[node]
    ed[lay.slot_owner[lay.slot_edge], pos[lay.slot_edge]] = delta[lay.slot_edge]
    assert torch.equal(spec.decode(xd, ed), delta)
    assert int(lay.slot_tensor.max()) + 1 == lay.num_tensors
    fused = sum(2 for n in spec.names if n.endswith(("in_proj_weight", "in_proj_bias")))
    assert lay.num_tensors == len(spec.names) + fused  # q, k, v of a fused projection: three groups


def test_normalization_groups_split_a_fused_attention_projection_by_role():
    """``in_proj_weight`` / ``in_proj_bias`` pack the query, key and value maps: each gets its own group
    (row blocks, in flat order); every other tensor is one group."""
    model = TinyViT(image_size=8, patch=2, dim=16, heads=2, depth=1, mlp_ratio=2)
    x = torch.randn(2, 1, 8, 8)
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    o, seen = 0, []
    for name, shape in zip(spec.names, spec.shapes):
        n = math.prod(shape)
        g = lay.slot_tensor[o: o + n].view(shape[0], -1)
        if "in_proj" in name:
            blocks = g.view(3, shape[0] // 3, -1)
            assert all(bool((b == b.flatten()[0]).all()) for b in blocks), name
            ids = [int(b.flatten()[0]) for b in blocks]
            assert len(set(ids)) == 3 and ids == sorted(ids), name
        else:
            ids = g.unique().tolist()
            assert len(ids) == 1, name
        seen += ids
        o += n
    assert seen == list(range(lay.num_tensors))  # numbered in flat order, no group shared by two tensors


def test_normalization_groups_scale_query_and_key_apart():
    """A query block moving 100x slower than the value block is normalized by its own step size: its
    features and its Linefit-relative prediction do not change when the value block's scale changes."""
    model = TinyViT(image_size=8, patch=2, dim=16, heads=2, depth=1, mlp_ratio=2)
    x = torch.randn(2, 1, 8, 8)
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    g = torch.Generator().manual_seed(0)
    win = torch.randn(5, spec.num_params, generator=g).cumsum(0) * 0.01
    o = 0
    for name, shape in zip(spec.names, spec.shapes):
        if name.endswith("in_proj_weight"):
            break
        o += math.prod(shape)
    third = math.prod(spec.shapes[spec.names.index(name)]) // 3
    q = slice(o, o + third)
    v = slice(o + 2 * third, o + 3 * third)
    feats, s, _ = window_features(win[None], lay.slot_tensor, lay.num_tensors)
    win2 = win.clone()
    win2[:, v] *= 100.0
    feats2, s2, _ = window_features(win2[None], lay.slot_tensor, lay.num_tensors)
    assert torch.allclose(feats[0, q], feats2[0, q]) and torch.allclose(s[0, q], s2[0, q])
    assert not torch.allclose(s[0, v], s2[0, v])


def test_graph_index_is_cached_and_batches_are_block_diagonal():
    model, x, spec, window = _example_window("vit", 2)
    nc = _randomize(Nowcaster(kind="graph", horizons=3, hidden=16, layers=2), 4)
    lay = NowcastLayout.from_spec(spec)
    d1 = nc.predict(spec, window)
    gi = lay.graph_index(1)
    assert lay.graph_index(1) is gi  # built once
    w2 = torch.stack([window, window.flip(0)])
    d2 = nc.predict(spec, w2)  # two copies, one block-diagonal graph
    assert torch.allclose(d2[0], d1, atol=1e-5) and torch.allclose(d2[1], nc.predict(spec, window.flip(0)), atol=1e-5)


def test_sparse_messages_equal_a_dense_reference():
    """The cached CSR aggregation (duplicate entries for conv kernels included) equals explicit index_add."""
    from weightspace.nowcast.features import CHANNELS
    from weightspace.nowcast.layout import sparse_csr

    model, x, spec, window = _example_window("cnn_flatten_bn", 3)
    lay = NowcastLayout.from_spec(spec)
    gi = lay.graph_index(1)
    N, P = gi.num_nodes, gi.num_params
    edge, owner = lay.slot_edge, lay.slot_owner
    src = torch.where(edge, lay.edge_index[0, owner.clamp_max(lay.num_edges - 1)], owner)
    dst = torch.where(edge, lay.edge_index[1, owner.clamp_max(lay.num_edges - 1)], owner)
    a = torch.randn(P, 4)
    got = gi.agg @ a
    ref_in = torch.zeros(N, 4).index_add_(0, dst[edge], a[edge])
    cnt = torch.zeros(N).index_add_(0, dst[edge], torch.ones(int(edge.sum()))).clamp_min(1)
    assert torch.allclose(got[:N], ref_in / cnt[:, None], atol=1e-5)
    ref_node = torch.zeros(N, 4).index_add_(0, owner[~edge], a[~edge])
    cnt = torch.zeros(N).index_add_(0, owner[~edge], torch.ones(int((~edge).sum()))).clamp_min(1)
    assert torch.allclose(got[2 * N:], ref_node / cnt[:, None], atol=1e-5)
    # message passing: forward messages of channel 1 (values v) equal the explicit sum over incoming slots
    v = torch.randn(P, CHANNELS)
    S = sparse_csr(gi.mp_crow, gi.mp_col, v.reshape(-1).index_select(0, gi.mp_take) * gi.mp_scale,
                (2 * N, 2 * CHANNELS * N))
    m = torch.zeros(2 * CHANNELS * N, 3)
    m[N:2 * N] = torch.randn(N, 3)  # forward block of channel 1
    deg = torch.zeros(N).index_add_(0, dst[edge], torch.ones(int(edge.sum()))).clamp_min(1)
    ref = torch.zeros(N, 3).index_add_(0, dst[edge], v[edge, 1:2] * m[N + src[edge]]) / deg[:, None]
    assert torch.allclose((S @ m)[:N], ref, atol=1e-5)
