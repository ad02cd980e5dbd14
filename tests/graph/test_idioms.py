"""Idioms of real model code through the converter, each bit-exact and output-preserving: a
learned positional table sliced to the sequence length and a class token expanded over the batch
(ViT), a ``Linear`` along a non-last axis (MLP-Mixer token mixing), ``weight_norm``
parametrizations (``spectral_norm`` and ``orthogonal``: ``test_parametrizations.py``), and module
versions kept on write-back."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import weightspace as ws
from weightspace.graph import EdgeType, NodeType

from ..helpers import assert_round_trip, assert_state_equal


class TinyViT(nn.Module):
    """Patches, a class token expanded over the batch and concatenated, a learned positional table
    longer than the sequence, sliced to it."""

    def __init__(self, D=8):
        super().__init__()
        self.patch = nn.Conv2d(3, D, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, D))
        self.pos = nn.Parameter(torch.randn(1, 10, D))
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, 2)

    def forward(self, img):
        x = self.patch(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos[:, : x.shape[1]]
        return self.head(self.norm(x)[:, 0])


def _vit(seed):
    torch.manual_seed(seed)
    return TinyViT().eval()


IMG = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("tracer", ["fx", "auto", "export"])
def test_sliced_positional_table_and_expanded_class_token(tracer):
    g = assert_round_trip(_vit, IMG, tracer)
    assert int((g.edge_type == EdgeType.POSITION).sum()) == 10 * 8  # the whole table, every row a position
    assert int((g.edge_type == EdgeType.TOKEN).sum()) == 8


def test_positional_table_sliced_along_its_features_is_refused():
    class Bad(TinyViT):
        def forward(self, img):
            x = self.patch(img).flatten(2).transpose(1, 2)
            return self.head(x + self.pos[:, :4, :8][..., :4].sum())

    with pytest.raises(ws.UnsupportedModuleError, match=r"'pos' sliced along its last \(feature\) axis"):
        ws.to_graph(Bad())


class MixerBlock(nn.Module):
    def __init__(self, N, D, T=6, C=10):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.token_mix1, self.token_mix2 = nn.Linear(N, T), nn.Linear(T, N)
        self.channel_mix1, self.channel_mix2 = nn.Linear(D, C), nn.Linear(C, D)

    def forward(self, x):
        h = self.norm1(x).transpose(1, 2)
        x = x + self.token_mix2(nn.functional.gelu(self.token_mix1(h))).transpose(1, 2)
        return x + self.channel_mix2(nn.functional.gelu(self.channel_mix1(self.norm2(x))))


class Mixer(nn.Module):
    def __init__(self, D=8, N=4):
        super().__init__()
        self.stem = nn.Conv2d(3, D, 4, stride=4)
        self.blocks = nn.Sequential(MixerBlock(N, D), MixerBlock(N, D))
        self.head = nn.Linear(D, 2)

    def forward(self, img):
        x = self.stem(img).flatten(2).transpose(1, 2)
        return self.head(self.blocks(x).mean(1))


def _mixer(seed):
    torch.manual_seed(seed)
    return Mixer().eval()


@pytest.mark.parametrize("tracer", ["fx", "auto", "export"])
def test_linear_along_the_token_axis(tracer):
    g = assert_round_trip(_mixer, IMG, tracer)
    spec = ws.GraphSpec.from_module(_mixer(0))
    hidden = spec.node_groups["blocks.0.token_mix1"]  # the token MLP's hidden units: permutable
    tokens = spec.node_groups["blocks.0.token_mix2"]  # its outputs are positions of the sequence
    assert set(g.node_type[hidden].tolist()) == {NodeType.HIDDEN}
    assert set(g.node_type[tokens].tolist()) == {NodeType.POSITION}
    assert g.node_pos[tokens].tolist() == [0, 1, 2, 3]
    # per block: features -> 4 positions, then each layer's units (6, then 4) -> the 8 features of its result
    assert int((g.edge_type == EdgeType.AXIS).sum()) == 2 * (8 * 4 + 6 * 8 + 4 * 8)


def test_token_mlp_hidden_permutation_permutes_nodes_only():
    """Permuting the token MLP's hidden units keeps the function and only permutes graph nodes;
    permuting its output positions changes the function and is visible in the graph."""
    model = _mixer(0)
    spec = ws.GraphSpec.from_module(model)
    g0 = spec.to_graph(model.state_dict())
    perm = torch.tensor([3, 1, 0, 5, 2, 4])
    sd = dict(model.state_dict())
    p = "blocks.0.token_mix"
    sd[f"{p}1.weight"], sd[f"{p}1.bias"] = sd[f"{p}1.weight"][perm], sd[f"{p}1.bias"][perm]
    sd[f"{p}2.weight"] = sd[f"{p}2.weight"][:, perm]
    permuted = _mixer(1)
    permuted.load_state_dict(sd)
    with torch.no_grad():
        assert torch.allclose(permuted(IMG), model(IMG), atol=1e-6)
    g1 = spec.to_graph(permuted.state_dict())
    hidden = spec.node_groups[f"{p}1"]
    assert torch.equal(g1.x[hidden], g0.x[hidden][perm])
    assert not torch.equal(g1.x, g0.x)
    assert torch.equal(torch.sort(g1.edge_attr.flatten()).values, torch.sort(g0.edge_attr.flatten()).values)


def _weight_normed(seed):
    torch.manual_seed(seed)
    return nn.Sequential(parametrizations.weight_norm(nn.Conv2d(2, 3, 3)), nn.BatchNorm2d(3), nn.ReLU(),
                         nn.Flatten(), parametrizations.weight_norm(nn.Linear(12, 2))).eval()


def test_weight_norm_stores_direction_on_edges_and_magnitude_on_nodes():
    x = torch.randn(2, 2, 4, 4)
    g = assert_round_trip(_weight_normed, x, "fx")
    model = _weight_normed(0)
    spec = ws.GraphSpec.from_module(model)
    out = spec.node_groups["4"]
    magnitude = model.state_dict()["4.parametrizations.weight.original0"].flatten()
    assert torch.equal(g.x[out, ws.graph.NODE_FEATURES.index("weight")], magnitude)
    direction = model.state_dict()["4.parametrizations.weight.original1"].flatten()
    assert bool(torch.isin(direction, g.edge_attr[g.edge_type == EdgeType.FLATTEN]).all())


def test_weight_norm_under_export_is_refused_clearly():
    with pytest.raises(ws.UnsupportedModuleError, match=r"only supported under torch.fx.*\[at '0'"):
        ws.GraphSpec.from_module(_weight_normed(0), torch.randn(2, 2, 4, 4), tracer="export")


class Versioned(nn.Linear):
    """A module that migrates old checkpoints: it reads its version from the state dict's metadata."""

    _version = 2

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        version = local_metadata.get("version")
        if version not in (1, 2):
            raise RuntimeError(f"version should be set to 1 or 2 instead of {version}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


def test_write_back_keeps_module_versions():
    src = nn.Sequential(Versioned(3, 4), nn.ReLU(), Versioned(4, 2))
    dst = nn.Sequential(Versioned(3, 4), nn.ReLU(), Versioned(4, 2))
    ws.from_graph(ws.to_graph(src), dst)
    assert_state_equal(dst.state_dict(), src.state_dict())


class WrittenOut(nn.Module):
    """Pieces of real code written with raw parameters: ``x @ W.T + b`` (Falcon), a norm scale
    used as ``1 + w`` (Gemma's RMSNorm), a per-channel spatial norm (ConvNeXt-V2's GRN),
    ``reshape_as``, ``type_as``."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 4))
        self.b = nn.Parameter(torch.randn(6))
        self.scale = nn.Parameter(torch.randn(6))
        self.gamma = nn.Parameter(torch.randn(6))

    def forward(self, x):
        h = x @ self.w.T + self.b
        h = h * (1.0 + self.scale)
        gx = torch.linalg.vector_norm(h, dim=1, keepdim=True)  # over the tokens: per feature
        h = self.gamma * (h * (gx / (gx.mean(dim=-1, keepdim=True) + 1e-6))) + h
        return torch.relu(h).reshape_as(h).type_as(h)


def _written_out(seed):
    torch.manual_seed(seed)
    return WrittenOut()


@pytest.mark.parametrize("tracer", ["auto", "export"])  # auto: symbolic tracing, shapes from the input
def test_raw_parameter_idioms(tracer):
    g = assert_round_trip(_written_out, torch.randn(2, 3, 4), tracer)
    spec = ws.GraphSpec.from_module(_written_out(0), torch.randn(2, 3, 4), tracer=tracer)
    assert int((g.edge_type == EdgeType.LINEAR).sum()) == 6 * 4
    assert "1.0" in repr(spec.signature)  # the constant of 1 + w is part of the signature


def test_parameter_plus_another_constant_is_another_function():
    class Shifted(WrittenOut):
        def forward(self, x):
            return (x @ self.w.T + self.b) * (2.0 + self.scale) * self.gamma

    class Base(WrittenOut):
        def forward(self, x):
            return (x @ self.w.T + self.b) * (1.0 + self.scale) * self.gamma

    with pytest.raises(ws.ArchitectureMismatchError, match="1.0 in the graph but 2.0"):
        ws.from_graph(ws.to_graph(Base()), Shifted())


class HandAttention(nn.Module):
    """Attention written with matrix products (GPT-Neo style): scores = q k^T, scaled, causally
    masked, softmax, dropout, times v."""

    def __init__(self, D=8, H=2, bias_on_scores=False):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.H = H
        self.drop = nn.Dropout(0.0)
        self.score_bias = nn.Parameter(torch.randn(4, 4)) if bias_on_scores else None

    def forward(self, x):
        B, T, D = x.shape
        split = lambda t: t.view(B, T, self.H, D // self.H).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (D // self.H) ** -0.5
        if self.score_bias is not None:
            scores = scores + self.score_bias
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        h = torch.matmul(self.drop(scores.softmax(-1)), v)
        return self.o(h.transpose(1, 2).reshape(B, T, D))


def _hand_attention(seed):
    torch.manual_seed(seed)
    return HandAttention().eval()


@pytest.mark.parametrize("tracer", ["auto", "export"])
def test_attention_written_with_matrix_products(tracer):
    g = assert_round_trip(_hand_attention, torch.randn(2, 4, 8), tracer)
    for t in (NodeType.ATTN_Q, NodeType.ATTN_K, NodeType.ATTN_V):
        assert int((g.node_type == t).sum()) == 8
    assert int((g.edge_type == EdgeType.ATTN_HEAD).sum()) == 2 * 4 * 4  # keys to values, per head


def test_a_learned_bias_on_written_out_attention_scores_is_refused():
    with pytest.raises(ws.UnsupportedModuleError, match=r"attention scores combined \('add'\) with Param"):
        ws.to_graph(HandAttention(bias_on_scores=True), torch.randn(2, 4, 8))
