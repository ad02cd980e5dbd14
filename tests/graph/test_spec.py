"""GraphSpec on randomly generated architectures: lossless, every scalar once, a DAG, and
reusable across checkpoints."""

from __future__ import annotations

import networkx as nx
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightspace as ws

from ..helpers import assert_state_equal

ACTS = [nn.ReLU, nn.Tanh, nn.GELU, nn.SiLU, nn.Sigmoid, nn.LeakyReLU, nn.ELU]


class RandomCNN(nn.Module):
    """Conv blocks with random kernel sizes, dilations, BatchNorm, activations and residual
    additions wherever the channel count allows, then global pooling or flatten + linear."""

    def __init__(self, blocks, head_flatten, size):
        super().__init__()
        self.convs, self.norms, self.acts, self.residual = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), []
        c = 1
        for width, (kh, kw), dil, bn, act, res in blocks:
            pad = (dil * (kh - 1) // 2, dil * (kw - 1) // 2)
            self.convs.append(nn.Conv2d(c, width, (kh, kw), padding=pad, dilation=dil, bias=not bn))
            self.norms.append(nn.BatchNorm2d(width) if bn else nn.Identity())
            self.acts.append(ACTS[act]())
            self.residual.append(res and c == width)
            c = width
        self.head_flatten = head_flatten
        self.head = nn.Linear(c * size * size if head_flatten else c, 3)

    def forward(self, x):
        for conv, norm, act, res in zip(self.convs, self.norms, self.acts, self.residual):
            h = act(norm(conv(x)))
            x = h + x if res else h
        x = torch.flatten(x, 1) if self.head_flatten else x.mean((2, 3))
        return self.head(x)


odd = st.sampled_from([1, 3, 5])
block = st.tuples(st.integers(1, 5), st.tuples(odd, odd), st.integers(1, 2), st.booleans(),
                  st.integers(0, len(ACTS) - 1), st.booleans())


@settings(max_examples=25, deadline=None)
@given(blocks=st.lists(block, min_size=1, max_size=4), head_flatten=st.booleans(), size=st.integers(3, 6),
       seed=st.integers(0, 1000))
def test_random_cnns_round_trip(blocks, head_flatten, size, seed):
    torch.manual_seed(seed)
    model = RandomCNN(blocks, head_flatten, size).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 1, size, size)
    for example in (None, x):
        spec = ws.GraphSpec.from_module(model, example)
        g = spec.to_graph(model.state_dict())
        assert_state_equal(spec.to_state_dict(g), model.state_dict())
        assert nx.is_directed_acyclic_graph(ws.to_networkx(g))
        assert int((g.edge_type == ws.graph.EdgeType.RESIDUAL).sum()) == 2 * sum(
            w for (w, *_), r in zip(blocks, model.residual) if r
        )
    torch.manual_seed(seed + 1)
    fresh = RandomCNN(blocks, head_flatten, size).eval()
    ws.from_graph(g, fresh, spec=spec)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


class RandomMLP(nn.Module):
    def __init__(self, widths, skips, act):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.skips = [s and a == b for s, a, b in zip(skips, widths[:-1], widths[1:])]
        self.act = ACTS[act]()

    def forward(self, x):
        for i, (layer, skip) in enumerate(zip(self.layers, self.skips)):
            h = layer(x)
            h = self.act(h) if i < len(self.layers) - 1 else h
            x = h + x if skip else h
        return x


@settings(max_examples=25, deadline=None)
@given(widths=st.lists(st.sampled_from([2, 3, 5]), min_size=2, max_size=6),
       skips=st.lists(st.booleans(), min_size=5, max_size=5), act=st.integers(0, len(ACTS) - 1),
       seed=st.integers(0, 1000))
def test_random_mlps_round_trip_and_every_scalar_once(widths, skips, act, seed):
    torch.manual_seed(seed)
    model = RandomMLP(widths, skips, act)
    spec = ws.GraphSpec.from_module(model)
    P = sum(p.numel() for p in model.parameters())
    assert spec.num_params == P
    assert torch.equal(spec.encode_index[spec.encode_index < P].sort().values, torch.arange(P))
    stack = {k: torch.stack([v, 2 * v, -v]) for k, v in model.state_dict().items()}
    g = spec.to_graph(stack)
    assert_state_equal(spec.to_state_dict(g), stack)
    assert g.num_nodes == sum(widths) + sum(w for w, s in zip(widths[1:], model.skips) if s)


def test_copy_plan_for_large_inputs_matches_the_gather(monkeypatch):
    """Big stacks encode/decode by copying runs of consecutive scalars; the result is identical."""
    import weightspace.graph.spec as spec_module
    from weightspace.examples import EXAMPLES, build_example

    for name in EXAMPLES:
        model, x = build_example(name)
        spec = ws.GraphSpec.from_module(model, x)
        stack = {k: torch.stack([v * (i + 1) if v.is_floating_point() else v for i in range(3)])
                 for k, v in model.state_dict().items()}
        monkeypatch.setattr(spec_module, "_COPY_PLAN_MIN", 10**12)
        xs, es = spec.encode(stack)
        flat = spec.decode(xs, es)
        monkeypatch.setattr(spec_module, "_COPY_PLAN_MIN", 0)
        xc, ec = spec.encode(stack)
        assert torch.equal(xs, xc) and torch.equal(es, ec), name
        assert torch.equal(spec.decode(xs, es), flat), name
        assert_state_equal(spec.to_state_dict(spec.to_graph(stack)), stack)
        # gradients flow through the copies as through the gather
        p = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in stack.items()}
        xg, eg = spec.encode(p)
        (xg.sum() + 2 * eg.sum()).backward()
        weights = [k for k in spec.names if p[k].dim() >= 3 and "embed" not in k and "pos" not in k]
        assert all(bool((p[k].grad > 0).all()) for k in weights), name
