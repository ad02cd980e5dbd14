"""Converter: per-layer round trips, structure, batching, trajectories, gradients, bad input."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch
from torch import nn

import weightspace as ws
from weightspace.graph import EdgeType, NodeType, batch_graphs
from weightspace.graph.vocab import Activation

from ..helpers import assert_state_equal
from .layouts import dense_layout


class Residual(nn.Module):
    def __init__(self, c=6):
        super().__init__()
        self.a = nn.Linear(c, c)
        self.b = nn.Linear(c, c)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h) + x


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 4, 1)
        self.bn = nn.BatchNorm2d(7)
        self.fc = nn.Linear(7, 5)

    def forward(self, x):
        h = torch.cat([self.a(x), self.b(x)], dim=1)
        return self.fc(self.bn(h).mean((2, 3)))


class FunctionalNet(nn.Module):
    """Raw parameters used through torch.nn.functional."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 4))
        self.b = nn.Parameter(torch.randn(5))
        self.gamma = nn.Parameter(torch.randn(5))

    def forward(self, x):
        h = torch.nn.functional.linear(x, self.w, self.b)
        return torch.nn.functional.gelu(h) * self.gamma


def _bn(cls, n):
    m = cls(n)
    with torch.no_grad():
        m.running_mean.normal_()
        m.running_var.uniform_(0.5, 2)
        m.num_batches_tracked.fill_(17)
        m.weight.normal_()
        m.bias.normal_()
    return m


LAYERS = {
    "linear": (lambda: nn.Linear(4, 3), (2, 4)),
    "linear_nobias": (lambda: nn.Linear(4, 3, bias=False), (2, 4)),
    "conv1d": (lambda: nn.Conv1d(2, 3, 5, stride=2, padding=1), (2, 2, 12)),
    "conv2d_3x3": (lambda: nn.Conv2d(2, 3, 3), (2, 2, 8, 8)),
    "conv2d_rect_dilated": (lambda: nn.Conv2d(2, 3, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
                            (2, 2, 9, 9)),
    "conv2d_depthwise": (lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4), (2, 4, 6, 6)),
    "conv2d_grouped": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), (2, 4, 6, 6)),
    "batchnorm1d": (lambda: nn.Sequential(nn.Linear(3, 4), _bn(nn.BatchNorm1d, 4)), (2, 3)),
    "batchnorm2d": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), _bn(nn.BatchNorm2d, 4)), (2, 1, 6, 6)),
    "batchnorm_on_input": (lambda: nn.Sequential(_bn(nn.BatchNorm2d, 2), nn.Conv2d(2, 3, 1)), (2, 2, 4, 4)),
    "layernorm": (lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)), (2, 3)),
    "groupnorm": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4)), (2, 1, 6, 6)),
    "embedding": (lambda: nn.Sequential(nn.Embedding(11, 4), nn.Linear(4, 2)), None),
    "mha": (lambda: MHA(8, 2), (2, 5, 8)),
    "mha_no_bias": (lambda: MHA(8, 4, bias=False), (2, 5, 8)),
    "encoder_layer_post_norm": (lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
                                (2, 5, 8)),
    "encoder_layer_pre_norm_gelu": (lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu",
                                                                       batch_first=True, norm_first=True), (2, 5, 8)),
    "residual": (Residual, (2, 6)),
    "concat": (Concat, (2, 2, 5, 5)),
    "flatten": (lambda: nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)),
                (2, 1, 6, 6)),
    "pooling_dropout": (lambda: nn.Sequential(nn.Conv2d(1, 3, 3), nn.MaxPool2d(2), nn.Dropout(0.5), nn.AvgPool2d(2),
                                              nn.Flatten(), nn.Linear(12, 2)), (2, 1, 10, 10)),
    "functional": (FunctionalNet, (2, 4)),
}


class MHA(nn.Module):
    def __init__(self, d, h, bias=True):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, h, bias=bias, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


def _example(name):
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randint(0, 11, (2, 3)) if shape is None else torch.randn(shape)
    return model, x


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_round_trip_is_bit_exact(name):
    model, x = _example(name)
    spec = ws.GraphSpec.from_module(model, x)
    g = spec.to_graph(model.state_dict())
    assert_state_equal(spec.to_state_dict(g), model.state_dict())
    # every scalar parameter and buffer appears exactly once in the graph
    n_float = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    assert spec.num_params == n_float
    stored = spec.encode_index[spec.encode_index < n_float]
    assert torch.equal(stored.sort().values, torch.arange(n_float))
    # writing into a differently initialised copy reproduces the outputs exactly
    torch.manual_seed(1)
    other = LAYERS[name][0]().eval()
    ws.from_graph(g, other, spec=spec)
    with torch.no_grad():
        assert torch.equal(other(x), model(x))


def test_linear_edges_follow_the_weight_matrix():
    model = nn.Linear(3, 2)
    g = ws.to_graph(model)
    assert g.num_nodes == 5 and g.edge_index.shape[1] == 6
    inputs = (g.node_type == NodeType.INPUT).nonzero().squeeze(1)
    outputs = (g.node_type == NodeType.OUTPUT).nonzero().squeeze(1)
    assert g.node_pos[inputs].tolist() == [0, 1, 2] and g.node_pos[outputs].tolist() == [0, 1]
    for (s, d), w in zip(g.edge_index.t().tolist(), g.edge_attr[:, 0].tolist()):
        j, i = int(g.node_pos[d]), int(g.node_pos[s])
        assert w == model.weight[j, i].item()
    assert torch.equal(g.x[outputs, 0], model.bias.detach())


def test_conv_kernels_are_centred_and_true_size_kept():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 1), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    g = ws.to_graph(model, torch.randn(1, 1, 6, 6))
    assert g.grid == (3, 16)  # 3x3 kernels, 16-wide spatial blocks after Flatten
    conv1x1 = (g.edge_type == EdgeType.CONV) & (g.edge_kernel[:, 0] == 1)
    grid = g.edge_attr[conv1x1].reshape(-1, 3, 16)
    assert torch.count_nonzero(grid[:, 1, 7]) == int(conv1x1.sum())  # centre of a 3x16 grid
    grid[:, 1, 7] = 0
    assert torch.count_nonzero(grid) == 0
    flat = g.edge_type == EdgeType.FLATTEN
    assert int(flat.sum()) == 2 * 3 and g.edge_kernel[flat].tolist()[0] == [1, 16]


def test_activations_are_recorded_on_nodes():
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.GELU(), nn.Linear(3, 1))
    g = ws.to_graph(model)
    acts = g.node_act[g.node_type == NodeType.HIDDEN].tolist()
    assert acts == [Activation.TANH] * 3 + [Activation.GELU] * 3


def test_residual_and_attention_are_typed():
    model = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    g = ws.to_graph(model, torch.randn(1, 3, 8))
    types = set(g.edge_type.tolist())
    for t in (EdgeType.ATTN_Q, EdgeType.ATTN_K, EdgeType.ATTN_V, EdgeType.ATTN_OUT, EdgeType.ATTN_QK,
              EdgeType.ATTN_HEAD, EdgeType.RESIDUAL, EdgeType.LINEAR):
        assert t in types
    # ATTN_HEAD joins keys and values of the same head only: 2 heads of 4 units -> 2 * 4 * 4 edges
    assert int((g.edge_type == EdgeType.ATTN_HEAD).sum()) == 2 * 4 * 4
    assert int((g.edge_type == EdgeType.ATTN_QK).sum()) == 8


def test_to_networkx_preserves_counts_features_and_is_a_dag():
    from weightspace.examples import build_example

    for name in ("mlp", "resnet", "vit"):
        model, x = build_example(name)
        g = ws.to_graph(model, x)
        G = ws.to_networkx(g)
        assert G.number_of_nodes() == g.num_nodes
        assert G.number_of_edges() == g.edge_index.shape[1]
        assert nx.is_directed_acyclic_graph(G)
        assert nx.is_weakly_connected(G)
        for e in (0, g.num_edges // 2, g.num_edges - 1):
            s, d = g.edge_index[:, e].tolist()
            kh, kw = g.edge_kernel[e].tolist()
            attr = G[s][d]["edge_attr"]  # the kernel at its true size, the grid's padding left out
            assert G[s][d]["kernel"] == (kh, kw) and attr.shape == (kh * kw,)
            (KH, KW), oh, ow = g.grid, (g.grid[0] - kh) // 2, (g.grid[1] - kw) // 2
            centred = g.edge_attr[e].reshape(KH, KW)[oh : oh + kh, ow : ow + kw].flatten()
            assert torch.equal(torch.from_numpy(attr.copy()), centred)
            assert G[s][d]["edge_type"] == int(g.edge_type[e])
            assert G.nodes[s]["x"] == g.x[s].tolist()


def test_trajectory_stack_encodes_and_decodes_in_one_call():
    from weightspace.examples import build_example

    model, _ = build_example("cnn_flatten_bn")
    spec = ws.GraphSpec.from_module(model)
    T = 5
    stack = {k: torch.stack([v + i if v.is_floating_point() else v + i for i in range(T)])
             for k, v in model.state_dict().items()}
    g = spec.to_graph(stack)
    assert g.x.shape[0] == T and g.edge_attr.shape[0] == T and g.num_checkpoints == T
    back = spec.to_state_dict(g)
    assert_state_equal(back, stack)
    single = spec.to_graph({k: v[2] for k, v in stack.items()})
    assert torch.equal(single.edge_attr, g.edge_attr[2])


def test_encode_decode_are_differentiable():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    spec = ws.GraphSpec.from_module(model, torch.randn(1, 1, 4, 4))
    params = {k: v.clone().requires_grad_(True) for k, v in model.state_dict().items()}
    x, e = spec.encode(params)
    (x.sum() + 2 * e.sum()).backward()
    assert torch.equal(params["0.weight"].grad, torch.full_like(params["0.weight"], 2.0))
    assert torch.equal(params["0.bias"].grad, torch.ones(2))
    # decode: gradients reach the graph features that hold parameters, and only those
    xg, eg = x.detach().requires_grad_(True), e.detach().requires_grad_(True)
    flat = spec.decode(xg, eg)
    flat.sum().backward()
    assert int(eg.grad.sum()) == sum(v.numel() for k, v in model.state_dict().items() if "weight" in k)


def test_heterogeneous_batch_pads_edge_features_and_decodes_exactly():
    from weightspace.examples import build_example

    specs, graphs, models = [], [], []
    for name in ("mlp", "conv1d", "cnn_flatten_bn", "resnet"):
        m, x = build_example(name)
        s = ws.GraphSpec.from_module(m, x)
        specs.append(s)
        models.append(m)
        graphs.append(s.to_graph(m.state_dict()))
    batch = batch_graphs(graphs)
    KH = max(s.kernel_shape[0] for s in specs)
    KW = max(s.kernel_shape[1] for s in specs)
    assert batch.edge_attr.shape[1] == KH * KW
    assert batch.num_graphs == 4 and batch.num_nodes == sum(g.num_nodes for g in graphs)
    for i, (s, m) in enumerate(zip(specs, models)):
        assert_state_equal(s.to_state_dict(batch.get_example(i)), m.state_dict())


def test_float64_and_mixed_precision_round_trip():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    g = ws.to_graph(model)
    assert g.x.dtype == torch.float64
    assert_state_equal(ws.GraphSpec.from_module(model).to_state_dict(g), model.state_dict())
    mixed = nn.Sequential(nn.Linear(3, 4).half(), nn.Linear(4, 2))
    spec = ws.GraphSpec.from_module(mixed)
    assert spec.dtype == torch.float32
    assert_state_equal(spec.to_state_dict(spec.to_graph(mixed.state_dict())), mixed.state_dict())


# --------------------------------------------------------------------------- bad input


def test_unsupported_module_names_its_path():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(3, 4)
            self.rnn = nn.LSTM(4, 4)

        def forward(self, x):
            return self.rnn(self.enc(x))[0]

    with pytest.raises(ws.UnsupportedModuleError, match=r"LSTM.*'rnn'|'rnn'.*LSTM") as err:
        ws.to_graph(Net())
    assert err.value.path == "rnn"


def test_weight_used_by_unmodelled_operation_is_refused():
    class MatmulNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Parameter(torch.randn(4, 3))

        def forward(self, x):
            return torch.einsum("bi,ij->bj", x, self.proj)

    with pytest.raises(ws.UnsupportedModuleError, match="einsum"):
        ws.to_graph(MatmulNet(), torch.randn(2, 4))


def test_matrix_product_with_a_weight_is_a_linear_layer():
    class MatmulNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Parameter(torch.randn(4, 3))  # stored [in, out]

        def forward(self, x):
            return x @ self.proj

    m, x = MatmulNet(), torch.randn(2, 4)
    for tracer in ("fx", "export"):
        spec = ws.GraphSpec.from_module(m, x, tracer=tracer)
        g = spec.to_graph(m.state_dict())
        assert_state_equal(spec.to_state_dict(g), m.state_dict())
        assert int((g.edge_type == EdgeType.LINEAR).sum()) == 12
        assert g.edge_index[:, 1].tolist() == [0, 5]  # edge (input 0 -> output 1) holds proj[0, 1]
        assert float(g.edge_attr[1, 0]) == float(m.proj.detach()[0, 1])


def test_unused_parameter_is_refused_not_dropped():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(3, 2)
            self.spare = nn.Linear(3, 2)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(ws.UnsupportedModuleError, match="spare.weight"):
        ws.to_graph(Unused())


def test_shared_module_called_twice_stores_its_weights_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(3, 3)

        def forward(self, x):
            return self.f(torch.relu(self.f(x)))

    g = ws.to_graph(Twice())
    assert int((g.edge_type == EdgeType.LINEAR).sum()) == 9  # stored once; the second call is TIED edges
    assert int((g.edge_type == EdgeType.TIED).sum()) == 3 + 3


def test_weight_shared_by_two_kinds_of_operation_is_refused():
    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(3, 3)

        def forward(self, x):
            return torch.nn.functional.layer_norm(self.f(x), (3,), None, self.f.bias)

    with pytest.raises(ws.UnsupportedModuleError, match="'f.bias' is used by two operations"):
        ws.to_graph(Both(), torch.randn(2, 3))


def test_tied_parameters_used_once_are_stored_once_and_restored_to_both_keys():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)
            self.b.weight = self.a.weight  # tied, but only `b` runs

        def forward(self, x):
            return self.b(x)

    class Dummy(nn.Module):  # `a` is tied to `b`; only b.bias and the shared weight are used
        pass

    m = Tied()
    with pytest.raises(ws.UnsupportedModuleError, match="a.bias"):
        ws.to_graph(m)
    m.a.bias = None
    spec = ws.GraphSpec.from_module(m)
    assert spec.aliases == {"b.weight": "a.weight"}
    assert spec.num_params == 9 + 3
    back = spec.to_state_dict(spec.to_graph(m.state_dict()))
    assert list(back) == list(m.state_dict())
    assert torch.equal(back["a.weight"], back["b.weight"])


def _assert_refused_untouched(src: nn.Module, dst: nn.Module, match: str) -> None:
    """Writing ``src``'s graph into ``dst`` raises ``ArchitectureMismatchError`` matching ``match`` and
    leaves ``dst``'s weights as they were."""
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ws.ArchitectureMismatchError, match=match):
        ws.from_graph(ws.to_graph(src), dst)
    assert_state_equal(dst.state_dict(), before)


def test_graph_into_other_architecture_names_parameter_and_leaves_model_untouched():
    src = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    dst = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    _assert_refused_untouched(src, dst, r"'0.weight'.*\(8, 4\).*\(6, 4\)")


def test_same_shapes_other_wiring_is_refused():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    class Skip(Plain):
        def forward(self, x):
            return self.b(torch.relu(self.a(x))) + x

    _assert_refused_untouched(Plain(), Skip(), "another architecture|number of")


def test_same_shapes_other_activation_is_refused_naming_the_node():
    src = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    dst = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    _assert_refused_untouched(src, dst, r"node 4 \(layer 1\) applies tanh in the graph but relu")
    twin = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))  # same activation: accepted, exact
    ws.from_graph(ws.to_graph(src), twin)
    assert_state_equal(twin.state_dict(), src.state_dict())


def test_state_dict_of_other_architecture_names_missing_key():
    spec = ws.GraphSpec.from_module(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)))
    with pytest.raises(ws.ArchitectureMismatchError, match="'1.weight'"):
        spec.to_graph(nn.Sequential(nn.Linear(4, 8)).state_dict())


def test_nan_weights_are_refused_unless_allowed():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    with pytest.raises(ws.NonFiniteWeightsError, match="'1.weight'"):
        ws.to_graph(model)
    g = ws.to_graph(model, allow_nonfinite=True)
    back = ws.GraphSpec.from_module(model).to_state_dict(g)
    assert_state_equal(back, model.state_dict())
    clean = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in clean.state_dict().items()}
    with pytest.raises(ws.NonFiniteWeightsError):
        ws.from_graph(g, clean)
    assert_state_equal(clean.state_dict(), before)


def test_untraceable_model_asks_for_example_input_then_uses_export():
    class ShapeBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)
            self.b = nn.Linear(4, 3)

        def forward(self, x):
            if x.shape[0] > 1:  # data-dependent on a shape: symbolic tracing cannot follow it
                return self.a(x) + torch.relu(self.b(x))
            return self.a(x)

    m = ShapeBranch()
    with pytest.raises(ws.UnsupportedModuleError, match="example_input"):
        ws.to_graph(m)
    g = ws.to_graph(m, torch.randn(2, 4))
    assert_state_equal(ws.GraphSpec.from_module(m, torch.randn(2, 4)).to_state_dict(g), m.state_dict())
    assert int((g.edge_type == EdgeType.RESIDUAL).sum()) == 6  # a(x) + relu(b(x)): 3 + 3 identity edges


def test_conversion_of_a_large_network_stays_within_memory_and_exact():
    from weightspace.examples import resnet18

    model = resnet18(num_classes=10)
    spec = ws.GraphSpec.from_module(model)
    g = spec.to_graph(model.state_dict())
    n_float = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    assert spec.num_params == n_float
    stored = g.x.numel() + g.edge_attr.numel()
    assert stored <= 1.2 * n_float + g.num_nodes * 5  # 3x3 grid is filled by 3x3 convs
    assert math.isclose(float(g.edge_attr.abs().sum() + g.x.abs().sum()),
                        float(sum(v.abs().sum() for v in model.state_dict().values() if v.is_floating_point()))
                        + float((g.edge_type == EdgeType.RESIDUAL).sum()), rel_tol=1e-4)


def test_example_input_does_not_change_batchnorm_statistics_or_mode():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ws.to_graph(model, torch.randn(4, 1, 4, 4) * 5 + 3)
    assert_state_equal(model.state_dict(), before)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("name", sorted(n for n in LAYERS if "mha" not in n and "encoder" not in n))
def test_export_tracer_gives_the_same_graph_as_symbolic_tracing(name):
    model, x = _example(name)
    fx = ws.GraphSpec.from_module(model, x, tracer="fx")
    ex = ws.GraphSpec.from_module(model, x, tracer="export")
    for key in ("edge_index", "edge_type", "edge_kernel", "node_type", "node_act", "encode_index"):
        assert torch.equal(getattr(fx, key), getattr(ex, key)), key
    assert_state_equal(ex.to_state_dict(ex.to_graph(model.state_dict())), model.state_dict())


def test_attention_under_export_is_refused_clearly():
    model, x = _example("mha")
    # nn.MultiheadAttention's exported form folds the heads into the batch axis
    with pytest.raises(ws.UnsupportedModuleError, match="attention heads"):
        ws.GraphSpec.from_module(model, x, tracer="export")


def test_unknown_tracer_is_refused():
    with pytest.raises(ValueError, match="tracer"):
        ws.GraphSpec.from_module(nn.Linear(2, 2), tracer="jit")


class HandRMSNorm(nn.Module):
    """RMSNorm written out element-wise (as transformers' Llama does)."""

    def __init__(self, d: int = 6):
        super().__init__()
        self.fc = nn.Linear(4, d)
        self.weight = nn.Parameter(torch.rand(d) + 0.5)
        self.out = nn.Linear(d, 3)

    def forward(self, x):
        h = self.fc(x)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.out(self.weight * h)


@pytest.mark.parametrize("example", [None, torch.randn(2, 4)], ids=["fx", "export"])
def test_handwritten_rms_norm_is_a_per_neuron_scale(example):
    model = HandRMSNorm()
    spec = ws.GraphSpec.from_module(model, example, tracer="auto" if example is None else "export")
    g = spec.to_graph(model.state_dict())
    assert_state_equal(spec.to_state_dict(g), model.state_dict())
    assert torch.equal(g.x[spec.node_groups["fc"], 1], model.weight.detach())  # the scale column


def test_reduction_over_features_used_other_than_as_a_normalization_is_refused():
    class Pool(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 6)
            self.out = nn.Linear(1, 2)

        def forward(self, x):
            return self.out(self.fc(x).mean(-1, keepdim=True))

    with pytest.raises(ws.UnsupportedModuleError, match="got Stat|statistic"):
        ws.to_graph(Pool())


def test_to_networkx_merges_parallel_edges_and_keeps_stacks():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    spec = ws.GraphSpec.from_module(model)
    g = spec.to_graph({k: torch.stack([v, 2 * v]) for k, v in model.state_dict().items()})
    dup = g.clone()  # the first edge twice
    dup.edge_index = torch.cat([g.edge_index, g.edge_index[:, :1]], 1)
    dup.edge_values = torch.cat([g.edge_values, g.edge_values[:, :1]], 1)
    dup.kernel_runs = torch.tensor([[g.num_edges + 1, 1, 1]])
    dup.edge_type = torch.cat([g.edge_type, g.edge_type[:1]])
    G = ws.to_networkx(dup)
    assert G.number_of_edges() == g.num_edges
    s, d = g.edge_index[:, 0].tolist()
    assert G[s][d]["multiplicity"] == 2
    assert sorted({e["multiplicity"] for _, _, e in G.edges(data=True)}) == [1, 2]
    assert G[s][d]["edge_attr"].shape == (2, 1)  # [T, kh*kw]
    assert G[s][d]["edge_attr"][1, 0] == 2 * G[s][d]["edge_attr"][0, 0] == 2 * float(model[0].weight.detach()[0, 0])


def test_saved_graph_loads_with_weights_only(tmp_path):
    model, x = _example("conv2d_3x3")
    g = ws.to_graph(model, x)
    torch.save(g, tmp_path / "g.pt")
    back = torch.load(tmp_path / "g.pt", weights_only=True)
    assert isinstance(back, ws.ParameterGraph)
    assert_state_equal(ws.GraphSpec.from_module(model, x).to_state_dict(back), model.state_dict())
    assert back.signature == g.signature


def test_batch_from_data_list_batches_different_kernel_grids():
    from torch_geometric.data import Batch
    from torch_geometric.loader import DataLoader

    a = ws.to_graph(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)))
    b = ws.to_graph(nn.Sequential(nn.Conv2d(1, 2, 5), nn.Flatten(), nn.Linear(8, 2)))
    mixed = batch_graphs([a, b])
    assert mixed.edge_attr.shape == (a.num_edges + b.num_edges, 25)
    plain = Batch.from_data_list([a, b])  # PyG's own collation: padded to the batch's largest grid
    assert plain.grid == (5, 5) and torch.equal(plain.edge_attr, mixed.edge_attr)
    assert torch.equal(plain.edge_kernel, torch.cat([a.edge_kernel, b.edge_kernel]))
    loaded = next(iter(DataLoader([a, b, a], batch_size=3)))
    assert loaded.num_graphs == 3 and loaded.edge_attr.shape == (2 * a.num_edges + b.num_edges, 25)
    same = Batch.from_data_list([a, a])  # one grid: the batch keeps it
    assert same.num_graphs == 2 and same.edge_attr.shape == (2 * a.num_edges, 12)
    # graphs saved in the older dense layout: mixed grids still point at batch_graphs, which batches them
    da, db = dense_layout(a), dense_layout(b)
    with pytest.raises(ValueError, match=r"different kernel grids \(\(3, 4\) and \(5, 5\)\).*batch_graphs"):
        Batch.from_data_list([da, db])
    assert torch.equal(batch_graphs([da, db]).edge_attr, mixed.edge_attr)
