"""Idioms of third-party model code (Hugging Face, timm, hand-written research code), each on a
small hand-written module: the round trip is bit-exact, a fresh copy written from the graph computes
the same outputs, and where a hyperparameter changes the function, a mutated copy is told apart.

Shared layers, relative-position score biases (T5, Swin, LeViT), fused q/k/v layouts (timm, BLOOM),
interleaved rotary embeddings (GPT-J), attention written with ``einsum``/``baddbmm``, parameter
vectors split into heads (DeBERTa), functional norms on a module's own parameters, in-place
activations, layer scale and ``addcmul``, masks, class tokens split off and concatenated back (CvT),
space-to-depth concatenation (Swin), one-head attention."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightspace as ws
from weightspace.graph import EdgeType, NodeType

from ..helpers import assert_state_equal

B, T, D, H = 2, 6, 8, 2
DH = D // H
X = torch.randn(B, T, D, generator=torch.Generator().manual_seed(0))


def _check(cls, x=X, tracer="auto", **kw):
    """Round trip bit-exact, DAG, and a fresh copy (another seed) written from the graph computes
    the same outputs; returns the graph."""
    torch.manual_seed(0)
    model = cls(**kw).eval()
    example = None if tracer == "fx" else x
    spec = ws.GraphSpec.from_module(model, example, tracer=tracer)
    g = spec.to_graph(model.state_dict())
    assert_state_equal(spec.to_state_dict(g), model.state_dict())
    assert nx.is_directed_acyclic_graph(ws.to_networkx(g))
    torch.manual_seed(1)
    fresh = cls(**kw).eval()
    run = lambda m: m(*x) if isinstance(x, tuple) else m(x)  # noqa: E731
    with torch.no_grad():
        want = run(model)
        assert not torch.equal(run(fresh), want)
        ws.from_graph(g, fresh, spec=ws.GraphSpec.from_module(fresh, example, tracer=tracer))
        assert torch.equal(run(fresh), want)
    return g


def _split(t):
    return t.view(t.shape[0], t.shape[1], H, DH).transpose(1, 2)


def _merge(t):
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], D)


# ----------------------------------------------------------------------------- shared layers


class Shared(nn.Module):
    """One block (Linear + LayerNorm) run at every depth (ALBERT)."""

    def __init__(self, depth=3, shared=True):
        super().__init__()
        n = 1 if shared else depth
        self.fc = nn.ModuleList(nn.Linear(D, D) for _ in range(n))
        self.norm = nn.ModuleList(nn.LayerNorm(D) for _ in range(n))
        self.depth = depth

    def forward(self, x):
        for i in range(self.depth):
            j = i % len(self.fc)
            x = self.norm[j](x + F.gelu(self.fc[j](x)))
        return x


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_shared_layer_is_stored_once(tracer):
    g = _check(Shared, tracer=tracer)
    assert int((g.edge_type == EdgeType.LINEAR).sum()) == D * D  # the weight once
    # the 2 later runs: output units tied to the first run's (D each), input features likewise
    # (D each), and the norm's nodes tied to the first norm's (D each)
    assert int((g.edge_type == EdgeType.TIED).sum()) == 2 * 3 * D


def test_shared_and_unshared_blocks_are_told_apart():
    torch.manual_seed(0)
    g = ws.to_graph(Shared(shared=True))
    with pytest.raises(ws.ArchitectureMismatchError):
        ws.from_graph(g, Shared(shared=False))


# ----------------------------------------------------------------------------- score biases


class RelBias(nn.Module):
    """T5-style relative attention bias: an ``Embedding(buckets, heads)`` looked up with relative
    positions clamped to ``max_distance``, added to the scores of every head."""

    def __init__(self, max_distance=2):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=False) for _ in range(4))
        self.max_distance = max_distance
        self.rel = nn.Embedding(2 * max_distance + 1, H)

    def forward(self, x):
        n = x.shape[1]
        pos = torch.arange(n)
        rel = (pos[None, :] - pos[:, None]).clamp(-self.max_distance, self.max_distance) + self.max_distance
        bias = self.rel(rel).permute(2, 0, 1).unsqueeze(0)  # [1, H, T, T]
        q, k, v = _split(self.q(x)), _split(self.k(x)), _split(self.v(x))
        scores = q @ k.transpose(-1, -2) + bias
        return self.o(_merge(scores.softmax(-1) @ v))


def test_relative_position_bias_is_a_per_head_score_bias():
    g = _check(RelBias)
    assert int((g.node_type == NodeType.ATTN_BIAS).sum()) == H
    assert int((g.edge_type == EdgeType.ATTN_BIAS).sum()) == H * DH  # bias unit -> its head's query units
    assert int((g.edge_type == EdgeType.EMBEDDING).sum()) == 5 * H  # the whole table


def test_relative_bias_with_another_clamp_distance_is_told_apart():
    torch.manual_seed(0)
    a, b = RelBias(max_distance=2), RelBias(max_distance=2)
    b.max_distance = 1  # same parameter shapes, another function
    g = ws.to_graph(a, X)
    with pytest.raises(ws.ArchitectureMismatchError):
        ws.from_graph(g, b, example_input=X)


class TableBias(nn.Module):
    """Swin-style relative position bias table ``[positions, heads]`` indexed by a buffer of
    relative position indices; LeViT-style ``[heads, offsets][:, idxs]`` cached in eval mode."""

    def __init__(self, levit=False):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(D, D) for _ in range(3))
        idx = (torch.arange(T)[None, :] - torch.arange(T)[:, None]).abs()
        self.register_buffer("idx", idx, persistent=False)
        self.levit = levit
        self.table = nn.Parameter(torch.randn(H, T) if levit else torch.randn(T, H))
        self.cache = {}

    def bias(self):
        if self.levit:
            if self.training:
                return self.table[:, self.idx]
            if "b" not in self.cache:  # a tensor derived from a parameter, cached in eval mode
                self.cache["b"] = self.table[:, self.idx]
            return self.cache["b"]
        return self.table[self.idx.view(-1)].view(T, T, H).permute(2, 0, 1).unsqueeze(0)

    def train(self, mode=True):
        super().train(mode)
        if mode:
            self.cache = {}
        return self

    def forward(self, x):
        q, k, v = _split(self.q(x)), _split(self.k(x)), _split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * DH**-0.5 + self.bias()
        return _merge(torch.matmul(scores.softmax(-1), v))


@pytest.mark.parametrize("levit", [False, True])
def test_indexed_bias_table(levit):
    torch.manual_seed(0)
    m = TableBias(levit=levit).eval()
    with torch.no_grad():
        m(X)  # fills the LeViT-style cache: the trace must read the parameter, not the cached copy
    g = _check(TableBias, levit=levit)
    assert int((g.edge_type == EdgeType.ATTN_BIAS).sum()) == H * DH
    assert int((g.edge_type == EdgeType.EMBEDDING).sum()) == T * H


def test_a_learned_bias_on_the_whole_score_matrix_is_still_refused():
    class Full(TableBias):
        def __init__(self):
            super().__init__()
            self.full = nn.Parameter(torch.randn(T, T))

        def bias(self):
            return self.full

    with pytest.raises(ws.UnsupportedModuleError, match="attention scores combined"):
        ws.to_graph(Full(), X)


# ----------------------------------------------------------------------------- fused q/k/v layouts


class FusedQKV(nn.Module):
    """One projection to q, k, v viewed as ``[B, N, 3, heads, d]`` (timm) or ``[B, N, heads, 3, d]``
    (BLOOM), split with ``unbind``/indexing, attention with ``scaled_dot_product_attention``."""

    def __init__(self, layout="timm"):
        super().__init__()
        self.qkv = nn.Linear(D, 3 * D)
        self.proj = nn.Linear(D, D)
        self.layout = layout

    def forward(self, x):
        b, n, _ = x.shape
        if self.layout == "timm":
            q, k, v = self.qkv(x).reshape(b, n, 3, H, DH).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            f = self.qkv(x).view(b, n, H, 3, DH)
            q, k, v = (f[..., i, :].transpose(1, 2) for i in range(3))
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))


@pytest.mark.parametrize("layout", ["timm", "bloom"])
def test_fused_qkv_layouts(layout):
    g = _check(FusedQKV, layout=layout)
    for t in (NodeType.ATTN_Q, NodeType.ATTN_K, NodeType.ATTN_V):
        assert int((g.node_type == t).sum()) == D
    assert int((g.edge_type == EdgeType.ATTN_HEAD).sum()) == H * DH * DH


def test_fused_qkv_layouts_give_different_graphs():
    """The same weights read as another layout are another function: other q/k/v units."""
    torch.manual_seed(0)
    ga, gb = ws.to_graph(FusedQKV("timm"), X), ws.to_graph(FusedQKV("bloom"), X)
    assert not torch.equal(ga.node_type, gb.node_type)


class Interleaved(nn.Module):
    """GPT-J's rotary embedding: pairs of adjacent units rotated, ``stack((-x2, x1), -1).flatten(-2)``."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(D, D, bias=False) for _ in range(3))
        ang = torch.arange(T)[:, None] * torch.tensor([1.0, 0.1])[None, :]
        self.register_buffer("sin", ang.sin().repeat_interleave(2, -1), persistent=False)
        self.register_buffer("cos", ang.cos().repeat_interleave(2, -1), persistent=False)

    def rot(self, x):
        x1, x2 = x[..., ::2], x[..., 1::2]
        return x * self.cos + torch.stack((-x2, x1), dim=-1).flatten(-2) * self.sin

    def forward(self, x):
        q, k, v = _split(self.q(x)), _split(self.k(x)), _split(self.v(x))
        return _merge(F.scaled_dot_product_attention(self.rot(q), self.rot(k), v))


def test_interleaved_rotary_with_stack():
    g = _check(Interleaved)
    assert int((g.node_type == NodeType.ROTARY_Q).sum()) == D
    assert int((g.edge_type == EdgeType.ROTARY).sum()) == 2 * D // 2  # one edge per rotated pair, q and k


class WrittenOut(nn.Module):
    """Attention written with ``einsum`` (CvT) or ``baddbmm`` plus a constant per-head bias (BLOOM's
    ALiBi); DeBERTa's ``q_bias`` vector split into heads and added to the query heads."""

    def __init__(self, style="einsum"):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(D, D, bias=False) for _ in range(3))
        self.q_bias = nn.Parameter(torch.randn(D))
        self.style = style

    def forward(self, x):
        q = _split(self.q(x)) + self.q_bias[None, None, :].view(1, 1, H, DH).transpose(1, 2)
        k, v = _split(self.k(x)), _split(self.v(x))
        if self.style == "einsum":
            s = torch.einsum("bhlk,bhtk->bhlt", q, k)
            return _merge(torch.einsum("bhlt,bhtv->bhlv", s.softmax(-1), v))
        b = x.shape[0]
        alibi = (torch.arange(T) * torch.tensor([0.5, 0.25])[:, None]).repeat(b, 1)[:, None, :]
        s = alibi.baddbmm(q.reshape(b * H, T, DH), k.reshape(b * H, T, DH).transpose(-1, -2), beta=1.0, alpha=0.5)
        p = s.view(b, H, T, T).softmax(-1).view(b * H, T, T)
        return _merge(torch.bmm(p, v.reshape(b * H, T, DH)).view(b, H, T, DH))


@pytest.mark.parametrize("style", ["einsum", "baddbmm"])
def test_attention_written_with_einsum_or_baddbmm(style):
    g = _check(WrittenOut, style=style)
    q = g.node_type == NodeType.ATTN_Q
    assert int(q.sum()) == D
    assert bool((g.x[q, 0] != 0).all())  # the query heads hold q_bias


def test_baddbmm_scale_is_in_the_signature():
    class Other(WrittenOut):
        def forward(self, x):
            return super().forward(x) * 2.0

    torch.manual_seed(0)
    g = ws.to_graph(WrittenOut("baddbmm"), X)
    with pytest.raises(ws.ArchitectureMismatchError):
        ws.from_graph(g, Other("baddbmm"), example_input=X)


class OneHead(nn.Module):
    """Attention with one head: the view to ``[B, N, 1, d]`` splits nothing (SegFormer, CvT)."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(D, D) for _ in range(3))

    def forward(self, x):
        s = lambda t: t.view(t.shape[0], t.shape[1], 1, D).transpose(1, 2)  # noqa: E731
        return F.scaled_dot_product_attention(s(self.q(x)), s(self.k(x)), s(self.v(x))).transpose(1, 2).flatten(2)


def test_one_head_attention():
    g = _check(OneHead)
    assert int((g.edge_type == EdgeType.ATTN_HEAD).sum()) == D * D


# ----------------------------------------------------------------------------- how code is written


class Styles(nn.Module):
    """Functional norms on the module's own parameters and buffers, in-place activations and
    dropout (torchvision/HF MobileNetV2 style), layer scale and an affine ``addcmul``."""

    def __init__(self, eps=1e-5):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn_w, self.bn_b = nn.Parameter(torch.rand(4) + 0.5), nn.Parameter(torch.randn(4))
        self.register_buffer("bn_mean", torch.randn(4))
        self.register_buffer("bn_var", torch.rand(4) + 0.5)
        self.gn_w, self.gn_b = nn.Parameter(torch.rand(4) + 0.5), nn.Parameter(torch.randn(4))
        self.fc = nn.Linear(4, D)
        self.ln_w, self.ln_b = nn.Parameter(torch.rand(D) + 0.5), nn.Parameter(torch.randn(D))
        self.gamma = nn.Parameter(torch.randn(D))  # layer scale
        self.alpha, self.beta = nn.Parameter(torch.randn(D)), nn.Parameter(torch.randn(D))
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.2, inplace=True)
        self.eps = eps

    def forward(self, img):
        x = self.conv(img)
        x = F.batch_norm(x, self.bn_mean, self.bn_var, self.bn_w, self.bn_b, False, 0.1, self.eps)
        x = self.drop(self.act(x))
        x = F.group_norm(x, 2, self.gn_w, self.gn_b, self.eps)
        x = F.relu(x, inplace=True).mean((2, 3))
        h = self.fc(x)
        h = F.dropout(F.layer_norm(h, (D,), self.ln_w, self.ln_b, self.eps), 0.1, self.training, inplace=True)
        h = h + self.gamma * F.silu(h, inplace=False)
        return torch.addcmul(self.beta, self.alpha, h)


IMG = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_functional_norms_inplace_activations_layer_scale_addcmul(tracer):
    g = _check(Styles, IMG, tracer)
    assert math.isclose(float(g.x[:, 1].abs().sum()), 0.0) is False


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_functional_norm_eps_is_told_apart(tracer):
    torch.manual_seed(0)
    example = None if tracer == "fx" else IMG
    g = ws.GraphSpec.from_module(Styles(), example, tracer=tracer).to_graph(Styles().state_dict())
    with pytest.raises(ws.ArchitectureMismatchError, match="eps"):
        ws.from_graph(g, Styles(eps=1e-3), spec=ws.GraphSpec.from_module(Styles(eps=1e-3), example, tracer=tracer))


class Masks(nn.Module):
    """``masked_fill``/``where`` with constant masks; one feature picked out only for its shape
    (BART's ``embed_positions(inputs_embeds[:, :, -1])``)."""

    def __init__(self, use_value=False):
        super().__init__()
        self.fc = nn.Linear(D, D)
        self.pos = nn.Parameter(torch.randn(T, D))
        self.use_value = use_value

    def forward(self, x):
        h = self.fc(x)
        picked = h[:, :, -1]
        if self.use_value:
            return picked * 2
        mask = torch.arange(T)[None, :, None] > 3
        h = torch.where(mask, h, torch.zeros(()))
        h = h.masked_fill(torch.arange(T)[None, :, None] == 0, 1.0)
        return h + self.pos[: picked.shape[1]]


def test_masks_and_a_feature_read_only_for_its_shape():
    _check(Masks)


def test_a_single_feature_used_for_its_values_is_refused():
    with pytest.raises(ws.UnsupportedModuleError, match="indexing selects single features"):
        ws.to_graph(Masks(use_value=True), X)


class ClassToken(nn.Module):
    """CvT: the class token split off the sequence, the patch tokens convolved (depth-wise), the
    class token concatenated back; Swin: 2x2 neighbours concatenated along the features (space to
    depth), then normalised."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, D, 1)
        self.cls = nn.Parameter(torch.randn(1, 1, D))
        self.dw = nn.Conv2d(D, D, 3, padding=1, groups=D)
        self.norm = nn.LayerNorm(4 * D)
        self.fc = nn.Linear(4 * D, D)

    def forward(self, img):  # img: [B, 3, 4, 4]
        b = img.shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1), self.embed(img).flatten(2).transpose(1, 2)], dim=1)
        cls, patches = torch.split(x, [1, 16], 1)
        p = self.dw(patches.transpose(1, 2).reshape(b, D, 4, 4))
        x = torch.cat([cls, p.flatten(2).transpose(1, 2)], dim=1)  # class token beside convolved tokens
        grid = x[:, 1:].reshape(b, 4, 4, D)
        merged = torch.cat([grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]], -1)
        return self.fc(self.norm(merged))


def test_class_token_split_and_concatenated_back_and_space_to_depth():
    g = _check(ClassToken, torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2)))
    assert int((g.edge_type == EdgeType.TOKEN).sum()) == D
    assert int((g.edge_type == EdgeType.IDENTITY).sum()) >= 2 * D + 4 * D


class MaskToken(nn.Module):
    """A learned mask token put in place of masked positions with ``torch.where`` (DINOv2, BEiT)."""

    def __init__(self, use_mask=True):
        super().__init__()
        self.fc = nn.Linear(D, D)
        self.mask_token = nn.Parameter(torch.randn(1, D))
        self.use_mask = use_mask

    def forward(self, x):
        h = self.fc(x)
        if self.use_mask:
            masked = (torch.arange(T) % 3 == 0)[None, :, None]
            h = torch.where(masked, self.mask_token.unsqueeze(0), h)
        return h


def test_mask_token_put_in_place_with_where():
    g = _check(MaskToken)
    assert int((g.edge_type == EdgeType.TOKEN).sum()) == D


def test_a_parameter_the_traced_path_does_not_read_is_refused_with_a_hint():
    with pytest.raises(ws.UnsupportedModuleError, match="'mask_token'.*example_input that takes that path"):
        ws.to_graph(MaskToken(use_mask=False), X)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_recurrent_layers_are_refused_with_the_reason(cls, tracer):
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = cls(D, D, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0]

    with pytest.raises(ws.UnsupportedModuleError, match=r"recurrent module .* hidden state fed back.*\[at '"):
        ws.GraphSpec.from_module(Recurrent(), X, tracer=tracer)


_LOG_100 = math.log(100.0)  # the logit-scale cap of cosine attention


class CosineAttention(nn.Module):
    """Swin V2: cosine attention (normalised queries and keys) with a learned per-head logit scale,
    and a continuous position bias: an MLP applied to a constant table of relative coordinates,
    indexed by relative position, ``16 * sigmoid``, added to the scores."""

    def __init__(self, max_scale=_LOG_100):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(D, D) for _ in range(3))
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(H, 1, 1)) + torch.randn(H, 1, 1) * 0.1)
        self.cpb = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, H, bias=False))
        coords = torch.stack(torch.meshgrid(torch.arange(3.0) - 1, torch.arange(3.0) - 1, indexing="ij"), -1)
        self.register_buffer("coords", coords.view(1, 9, 2), persistent=False)
        self.register_buffer("index", torch.randint(0, 9, (T * T,), generator=torch.Generator().manual_seed(3)),
                             persistent=False)
        self.max_scale = max_scale

    def forward(self, x):
        q, k, v = _split(self.q(x)), _split(self.k(x)), _split(self.v(x))
        s = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        s = s * torch.clamp(self.logit_scale, max=self.max_scale).exp()
        table = self.cpb(self.coords).view(-1, H)
        bias = 16 * torch.sigmoid(table[self.index].view(T, T, H).permute(2, 0, 1))
        return _merge((s + bias.unsqueeze(0)).softmax(-1) @ v)


def test_cosine_attention_with_logit_scale_and_position_bias_mlp():
    g = _check(CosineAttention)
    assert int((g.node_type == NodeType.ATTN_SCALE).sum()) == H
    assert int((g.edge_type == EdgeType.ATTN_SCALE).sum()) == H * DH
    assert int((g.edge_type == EdgeType.ATTN_BIAS).sum()) == H * DH
    assert int((g.node_type == NodeType.ATTN_BIAS).sum()) == H  # the MLP's output units


def test_logit_scale_clamp_is_told_apart():
    torch.manual_seed(0)
    g = ws.to_graph(CosineAttention(), X)
    with pytest.raises(ws.ArchitectureMismatchError):
        ws.from_graph(g, CosineAttention(max_scale=1.0), example_input=X)


class Unfold(nn.Module):
    """MobileViT: ``[B, C, H, W]`` unfolded into ``[B * patch_area, patches, C]`` through a reshape
    that merges the channels with the batch axis, a ``Linear`` over the channels, folded back, then
    upsampled bilinearly."""

    def __init__(self, C=4, p=2):
        super().__init__()
        self.conv = nn.Conv2d(3, C, 3, padding=1)
        self.fc = nn.Linear(C, C)
        self.out = nn.Conv2d(C, 2, 1)
        self.C, self.p = C, p

    def forward(self, img):
        x = self.conv(img)
        b, c, h, w = x.shape
        p = self.p
        nh, nw = h // p, w // p
        t = x.reshape(b * c * nh, p, nw, p).transpose(1, 2).reshape(b, c, nh * nw, p * p).transpose(1, 3)
        t = self.fc(t.reshape(b * p * p, nh * nw, c))
        t = t.contiguous().view(b, p * p, nh * nw, c).transpose(1, 3).reshape(b * c * nh, nw, p, p)
        x = t.transpose(1, 2).reshape(b, c, h, w)
        return self.out(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))


def test_unfolded_patches_with_channels_through_the_batch_axis():
    g = _check(Unfold, torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(4)), tracer="export")
    assert int((g.edge_type == EdgeType.LINEAR).sum()) == 4 * 4


def test_features_left_merged_with_other_axes_are_refused_naming_the_reshape():
    class Strided(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(D, D)
            self.head = nn.Linear(T * D, 2)

        def forward(self, x):
            return self.head(self.fc(x).reshape(x.shape[0], -1))  # features strided across the tokens

    with pytest.raises(ws.UnsupportedModuleError, match="strides the feature axis"):
        ws.to_graph(Strided(), X)


class MaskInput(nn.Module):
    """DINOv2/BEiT: ``x * (1 - mask) + mask_token * mask`` with a per-position mask given as an input."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(D, D)
        self.mask_token = nn.Parameter(torch.randn(1, 1, D))

    def forward(self, x, masked):
        h = self.fc(x)
        m = masked.unsqueeze(-1).type_as(h)
        return h * (1 - m) + self.mask_token.expand(x.shape[0], x.shape[1], -1) * m


def test_mask_token_mixed_in_by_an_input_mask():
    masked = torch.zeros(B, T, dtype=torch.bool)
    masked[:, 2] = True
    g = _check(MaskInput, (X, masked), tracer="export")
    assert int((g.edge_type == EdgeType.TOKEN).sum()) == D


def test_dinov2_mask_token_converts_when_the_example_input_takes_its_path():
    transformers = pytest.importorskip("transformers")

    def dino(seed):
        torch.manual_seed(seed)
        cfg = transformers.Dinov2Config(image_size=16, patch_size=8, num_channels=3, hidden_size=16,
                                        num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
        return transformers.Dinov2Model(cfg).eval()

    masked = torch.tensor([[False, True, False, False]])
    inputs = {"pixel_values": torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5)),
              "bool_masked_pos": masked}
    model, fresh = dino(0), dino(1)
    with pytest.raises(ws.UnsupportedModuleError, match="mask_token"):
        ws.to_graph(model, inputs["pixel_values"])
    spec = ws.GraphSpec.from_module(model, inputs)
    g = spec.to_graph(model.state_dict())
    assert_state_equal(spec.to_state_dict(g), model.state_dict())
    ws.from_graph(g, fresh, example_input=inputs)
    with torch.no_grad():
        assert torch.equal(fresh(**inputs).last_hidden_state, model(**inputs).last_hidden_state)


@settings(max_examples=8, deadline=None)
@given(depth=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_shared_layer_round_trip_property(depth, seed):
    """Any depth: the round trip is exact, the weights are stored once, and each later run adds
    3 * D tied edges (outputs, inputs, norm)."""
    torch.manual_seed(seed)
    model = Shared(depth=depth).eval()
    spec = ws.GraphSpec.from_module(model)
    g = spec.to_graph(model.state_dict())
    assert_state_equal(spec.to_state_dict(g), model.state_dict())
    assert int((g.edge_type == EdgeType.LINEAR).sum()) == D * D
    assert int((g.edge_type == EdgeType.TIED).sum()) == (depth - 1) * 3 * D


@pytest.mark.slow
@settings(max_examples=4, deadline=None)
@given(c=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_unfold_round_trip_property(c, seed):
    """Unfolded patches of any channel count: exact, and the outputs of a fresh copy. (One channel
    or patches of one pixel make every reshape axis of size 1 ambiguous: refused, see the design
    note.)"""
    p = 2
    img = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = Unfold(C=c, p=p).eval()
    spec = ws.GraphSpec.from_module(model, img, tracer="export")
    g = spec.to_graph(model.state_dict())
    assert_state_equal(spec.to_state_dict(g), model.state_dict())
    fresh = Unfold(C=c, p=p).eval()
    ws.from_graph(g, fresh, spec=spec)
    with torch.no_grad():
        assert torch.equal(fresh(img), model(img))
