"""Streamed one-window prediction: equal to the batched forward pass with and without dense blocks,
at any chunk size, for every nowcaster kind; dense-block detection and its refusals."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightspace as ws
from weightspace.examples import EXAMPLES, build_example
from weightspace.nowcast import NowcastLayout
from weightspace.nowcast.stream import StreamIndex, predict_stream

from .helpers import randomized_nowcaster

ALL_BLOCKS, NO_BLOCKS = 1, 1 << 40


_randomized = randomized_nowcaster


def _window(spec: ws.GraphSpec, model: nn.Module, seed: int, c: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    flat = spec.flatten(model.state_dict())
    drift = torch.randn(flat.shape, generator=g) * 0.01
    return torch.stack([flat + k * drift + 0.003 * k * torch.randn(flat.shape, generator=g) for k in range(c)])


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), chunk=st.sampled_from([7, 64, 1 << 18]),
       name=st.sampled_from(sorted(EXAMPLES)), kind=st.sampled_from(["graph", "mlp", "linefit"]))
def test_streamed_prediction_equals_the_batched_forward(seed, chunk, name, kind):
    model, x = build_example(name, seed=seed % 7)
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    nc = _randomized(kind, seed)
    win = _window(spec, model, seed)
    ref = nc.predict(lay, win[None])[0]  # the batched path, one window
    ref_h = nc.predict(lay, win[None], horizon=4)[0]
    tol = 1e-5 * (1 + ref.abs().max())
    for block_min in (ALL_BLOCKS, NO_BLOCKS):
        with torch.inference_mode():
            got = predict_stream(nc, lay, win.unbind(0), None, chunk=chunk, block_min=block_min)
            got_h = predict_stream(nc, lay, list(win), 4, chunk=chunk, block_min=block_min)
        assert got.shape == ref.shape and got_h.shape == ref_h.shape
        assert (got - ref).abs().max() <= tol, (name, kind, block_min)
        assert (got_h - ref_h).abs().max() <= tol, (name, kind, block_min)


def test_predict_of_one_window_is_streamed_and_accepts_ring_buffer_rows():
    model, x = build_example("cnn_gap")
    spec = ws.GraphSpec.from_module(model, x)
    nc = _randomized("graph")
    win = _window(spec, model, 0)
    batched = nc.predict(spec, win[None], horizon=2)[0]
    assert torch.allclose(nc.predict(spec, win, horizon=2), batched, atol=1e-6)
    assert torch.allclose(nc.predict(spec, list(win.unbind(0)), horizon=2), batched, atol=1e-6)
    # the rows are read, not changed
    before = win.clone()
    nc.predict(spec, list(win.unbind(0)))
    assert torch.equal(win, before)
    with pytest.raises(ValueError, match="parameters"):
        nc.predict(spec, [r[:-1] for r in win.unbind(0)])
    with pytest.raises(ValueError, match="snapshots"):
        nc.predict(spec, list(win.unbind(0))[:3])


def test_dense_blocks_are_found_in_linear_conv_and_embedding_weights():
    emb = nn.Embedding(50, 16)
    model = nn.Sequential(emb, nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    spec = ws.GraphSpec.from_module(model, torch.randint(0, 50, (2, 3)))
    ix = StreamIndex.build(NowcastLayout.from_spec(spec), block_min=1)
    by_start = {b.start: b for b in ix.blocks}
    offsets = {}
    o = 0
    for name, shape in zip(spec.names, spec.shapes):
        offsets[name] = o
        o += int(torch.Size(shape).numel())
    table, lin = by_start[offsets["0.weight"]], by_start[offsets["1.weight"]]
    assert (table.d0, table.d1, table.dst_rows) == (50, 16, False)  # rows of the table are the sources
    assert (lin.d0, lin.d1, lin.dst_rows) == (32, 16, True)  # nn.Linear: [out, in]
    assert len(set(table.rows.tolist())) == 50 and len(set(lin.rows.tolist())) == 32
    assert ix.rest is not None and ix.rest_size == spec.num_params - sum(b.size for b in ix.blocks)
    # a convolution's kernel entries fold into one block entry per edge
    cnn, x = build_example("cnn_gap")
    cspec = ws.GraphSpec.from_module(cnn, x)
    cix = StreamIndex.build(NowcastLayout.from_spec(cspec), block_min=1)
    assert any(b.T > 1 for b in cix.blocks)


def test_grouped_convolution_is_not_a_dense_block_but_gives_the_same_prediction():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.ReLU(), nn.Conv2d(4, 6, 1), nn.Flatten(),
                          nn.LazyLinear(3))
    x = torch.randn(1, 4, 5, 5)
    model(x)
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    ix = StreamIndex.build(lay, block_min=1)
    grouped = spec.names.index("0.weight")
    start = sum(int(torch.Size(s).numel()) for s in spec.shapes[:grouped])
    assert start not in {b.start for b in ix.blocks}  # in-channel depends on the out-channel's group
    assert spec.names.index("2.weight") is not None and len(ix.blocks) >= 2
    nc = _randomized("graph")
    win = _window(spec, model, 1)
    with torch.inference_mode():
        got = predict_stream(nc, lay, list(win), None, chunk=5, block_min=1)
    assert torch.allclose(got, nc.predict(lay, win[None])[0], atol=1e-5)


def test_a_changed_weight_inside_a_dense_block_changes_other_predictions():
    """Sensitivity beside the equality test: the block path really passes messages between neurons."""
    model, x = build_example("mlp")
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    nc = _randomized("graph")
    win = _window(spec, model, 2)
    ix = StreamIndex.build(lay, block_min=1)
    first, last = ix.blocks[0], ix.blocks[-1]
    moved = win.clone()
    moved[:, first.start] += torch.linspace(0, 0.5, win.shape[0])  # one weight of the first layer moves
    with torch.inference_mode():
        a = predict_stream(nc, lay, list(win), 3, block_min=1)
        b = predict_stream(nc, lay, list(moved), 3, block_min=1)
    far = slice(last.start, last.start + last.size)  # the last layer's weights, two layers away
    assert not torch.allclose(a[far], b[far], atol=1e-6)


def test_a_fused_attention_projection_streams_as_one_dense_block_per_normalization_group():
    """``in_proj_weight`` holds q, k and v (three normalization groups): three row blocks, each with its
    own group, and the streamed prediction equals the batched one."""
    from model_zoo.archs import TinyViT

    torch.manual_seed(0)
    model = TinyViT(image_size=8, patch=2, dim=16, heads=2, depth=1, mlp_ratio=2)
    spec = ws.GraphSpec.from_module(model, torch.randn(2, 1, 8, 8))
    lay = NowcastLayout.from_spec(spec)
    o = 0
    for name, shape in zip(spec.names, spec.shapes):
        if name.endswith("in_proj_weight"):
            break
        o += int(torch.Size(shape).numel())
    ix = StreamIndex.build(lay, block_min=1)
    by_start = {b.start: b for b in ix.blocks}
    third = 16 * 16
    qkv = [by_start[o + j * third] for j in range(3)]
    assert [(b.d0, b.d1) for b in qkv] == [(16, 16)] * 3
    assert len({b.tensor for b in qkv}) == 3
    assert [b.tensor for b in qkv] == [int(lay.slot_tensor[o + j * third]) for j in range(3)]
    nc = _randomized("graph")
    win = _window(spec, model, 0)
    ref = nc.predict(lay, win[None], horizon=3)[0]
    with torch.inference_mode():
        got = predict_stream(nc, lay, list(win), 3, chunk=64, block_min=1)
    assert (got - ref).abs().max() <= 1e-5 * (1 + ref.abs().max())


def test_a_tensor_grouped_by_columns_stays_a_dense_block_with_per_column_groups():
    """A weight whose columns fall into several normalization groups (GPT-2's ``Conv1D`` ``c_attn``,
    ``[in, 3·out]``) stays one dense block that carries the group of every column; the streamed
    prediction equals the batched one."""
    import dataclasses

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    spec = ws.GraphSpec.from_module(model)
    lay = NowcastLayout.from_spec(spec)
    tid = lay.slot_tensor.clone()
    G = lay.num_tensors
    cols = torch.arange(6) % 3  # the first weight [12, 6]: column c in group G + c % 3
    tid[: 12 * 6] = (G + cols).repeat(12).to(tid.dtype)
    lay2 = dataclasses.replace(lay, slot_tensor=tid, num_tensors=G + 3, cache={})
    ix = StreamIndex.build(lay2, block_min=1)
    first = next(b for b in ix.blocks if b.start == 0)
    assert isinstance(first.tensor, torch.Tensor) and first.tensor.tolist() == (G + cols).tolist()
    nc = _randomized("graph")
    win = _window(spec, model, 0)
    ref = nc.predict(lay2, win[None], horizon=2)[0]
    with torch.inference_mode():
        for chunk in (5, 1 << 18):
            got = predict_stream(nc, lay2, list(win), 2, chunk=chunk, block_min=1)
            assert (got - ref).abs().max() <= 1e-5 * (1 + ref.abs().max()), chunk
    # the groups matter: the same window with one group for the whole tensor predicts otherwise
    assert not torch.allclose(nc.predict(lay, win[None], horizon=2)[0], ref)
