"""MONAI's networks and the layers they brought to the converter: PReLU (one slope per channel or
one shared slope), transposed convolutions, instance norm under ``torch.export``, in-place
activations under ``torch.export``, and symbolic traces that compute something else than the
forward pass (MONAI's ``UpCat`` branches on ``torch.jit.isinstance``, False for an fx ``Proxy``).

Each converted network round-trips bit-exactly and a fresh copy (another seed) written from the
graph computes the same outputs; property tests do the same on small plain-torch models; every
hyperparameter of the new layers that changes the function is in the structural signature
(``from_graph`` refuses a model that differs in it)."""

from __future__ import annotations

import copy

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightspace as ws
from weightspace.graph import EdgeType, NodeType
from weightspace.graph.vocab import WEIGHT, Activation

from ..helpers import assert_graphs_permuted, assert_state_equal, node_permutation, permute_params

IMG = 32


def _roundtrip(build, x, tracer="auto"):
    """Bit-exact round trip, a DAG, and a fresh copy (another seed) written from the graph computes
    the same outputs as the model; returns the spec and the graph."""
    torch.manual_seed(0)
    model = build().eval()
    example = None if tracer == "fx" else x
    spec = ws.GraphSpec.from_module(model, example, tracer=tracer)
    g = spec.to_graph(model.state_dict())
    assert_state_equal(spec.to_state_dict(g), model.state_dict())
    assert nx.is_directed_acyclic_graph(ws.to_networkx(g))
    torch.manual_seed(1)
    fresh = build().eval()
    with torch.no_grad():
        want = model(x)
        assert not torch.equal(fresh(x), want)
        ws.from_graph(g, fresh, spec=ws.GraphSpec.from_module(fresh, example, tracer=tracer))
        assert torch.equal(fresh(x), want)
    return spec, g


def _rejects(src: nn.Module, dst: nn.Module, x, match: str):
    """``src``'s graph is refused by ``dst`` (same parameter shapes, another function)."""
    g = ws.GraphSpec.from_module(src, x).to_graph(src.state_dict())
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ws.ArchitectureMismatchError, match=match):
        ws.from_graph(g, dst, example_input=x)
    assert_state_equal(dst.state_dict(), before)


# ----------------------------------------------------------------------------- MONAI networks

MONAI = {
    "UNet": ("UNet", dict(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2),
                          num_res_units=1), (1, 1, IMG, IMG)),
    "BasicUNet": ("BasicUNet", dict(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4)),
                  (1, 1, IMG, IMG)),
    "DynUNet": ("DynUNet", dict(spatial_dims=2, in_channels=1, out_channels=2, kernel_size=[3, 3, 3],
                                strides=[1, 2, 2], upsample_kernel_size=[2, 2], filters=[4, 8, 16]), (1, 1, IMG, IMG)),
    "AttentionUnet": ("AttentionUnet", dict(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16),
                                            strides=(2, 2)), (1, 1, IMG, IMG)),
    "Classifier": ("Classifier", dict(in_shape=(1, IMG, IMG), classes=10, channels=(4, 8), strides=(2, 2)),
                   (1, 1, IMG, IMG)),
    "Regressor": ("Regressor", dict(in_shape=(1, IMG, IMG), out_shape=(1,), channels=(4, 8), strides=(2, 2)),
                  (1, 1, IMG, IMG)),
    "AutoEncoder": ("AutoEncoder", dict(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8),
                                        strides=(2, 2)), (1, 1, IMG, IMG)),
    "FullyConnectedNet": ("FullyConnectedNet", dict(in_channels=16, out_channels=4, hidden_channels=(8, 8)), (1, 16)),
}


@pytest.mark.parametrize("name", list(MONAI))
def test_monai_network_round_trips_and_writes_back(name):
    nets = pytest.importorskip("monai.networks.nets")
    cls, kwargs, shape = MONAI[name]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    _roundtrip(lambda: getattr(nets, cls)(**kwargs), x)


def test_monai_integer_buffer_is_refused_by_name():
    nets = pytest.importorskip("monai.networks.nets")
    model = nets.SwinUNETR(spatial_dims=2, in_channels=1, out_channels=2, feature_size=12, depths=(1, 1, 1, 1),
                           num_heads=(1, 1, 1, 1)).eval()
    with pytest.raises(ws.UnsupportedModuleError, match=r"'swinViT.layers1.0.blocks.0.attn.relative_position_index' "
                                                        r"\(torch.int64.*persistent=False"):
        ws.GraphSpec.from_module(model, torch.randn(1, 1, 64, 64))


def test_monai_3d_network_is_refused_naming_the_2d_kernels():
    nets = pytest.importorskip("monai.networks.nets")
    model = nets.ResNet(spatial_dims=3, block="basic", layers=[1, 1, 1, 1], block_inplanes=[4, 8, 16, 32],
                        n_input_channels=1, num_classes=3).eval()
    with pytest.raises(ws.UnsupportedModuleError, match=r"Conv3d.*2-D grid.*'conv1'"):
        ws.GraphSpec.from_module(model, torch.randn(1, 1, 8, 8, 8))


# ----------------------------------------------------------------------------- PReLU


class ConvPReLU(nn.Module):
    def __init__(self, c=3, shared=True, norm=False, functional=False):
        super().__init__()
        self.conv = nn.Conv2d(2, c, 3, padding=1)
        self.norm = nn.BatchNorm2d(c) if norm else nn.Identity()
        self.act = nn.PReLU(1 if shared else c)
        nn.init.uniform_(self.act.weight, -0.5, 0.5)  # slopes of both signs, drawn with the seed
        self.functional = functional
        self.head = nn.Conv2d(c, 2, 1)

    def forward(self, x):
        h = self.norm(self.conv(x))
        h = F.prelu(h, self.act.weight) if self.functional else self.act(h)
        return self.head(h)


@settings(max_examples=8, deadline=None)
@given(c=st.integers(1, 5), shared=st.booleans(), norm=st.booleans(), functional=st.booleans(),
       tracer=st.sampled_from(["fx", "export"]))
def test_prelu_round_trip_and_write_back(c, shared, norm, functional, tracer):
    x = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(c))
    spec, g = _roundtrip(lambda: ConvPReLU(c, shared, norm, functional), x, tracer)
    prelu = (g.node_act == int(Activation.PRELU)).nonzero().squeeze(1)
    assert prelu.numel() == c
    slopes = g.node_type == int(NodeType.ACT_PARAM)
    if shared and c > 1:
        # the shared slope is stored once, on one ACT_PARAM node, joined to every channel
        assert int(slopes.sum()) == 1
        node = int(slopes.nonzero())
        ties = (g.edge_type == int(EdgeType.ACT_PARAM))
        assert g.edge_index[0, ties].eq(node).all() and sorted(g.edge_index[1, ties].tolist()) == prelu.tolist()
        assert torch.equal(g.x[prelu, WEIGHT], torch.zeros(c))
    else:
        assert int(slopes.sum()) == 0
    torch.manual_seed(0)
    model = ConvPReLU(c, shared, norm, functional).eval()
    slope_values = g.x[slopes, WEIGHT] if shared and c > 1 else g.x[prelu, WEIGHT]
    assert torch.equal(slope_values, model.act.weight.detach().reshape(-1))


def test_prelu_slope_changes_outputs_and_graph():
    """Sensitivity: the slope is a weight the graph carries (not a constant of the signature)."""
    x = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    a = ConvPReLU(3, shared=True).eval()
    spec = ws.GraphSpec.from_module(a, x)
    g = spec.to_graph(a.state_dict())
    b = ConvPReLU(3, shared=True).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b.act.weight.fill_(0.7)
    g2 = spec.to_graph(b.state_dict())
    assert not torch.equal(g.x, g2.x)
    with torch.no_grad():
        assert not torch.equal(a(x), b(x))


# ----------------------------------------------------------------------------- transposed convolutions


class Up(nn.Module):
    def __init__(self, cin=4, cout=6, k=3, stride=2, padding=1, output_padding=1, dilation=1, groups=2, dims=2,
                 bias=True, functional=False):
        super().__init__()
        conv = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose1d
        self.pre = (nn.Conv2d if dims == 2 else nn.Conv1d)(2, cin, 1)
        self.up = conv(cin, cout, k, stride=stride, padding=padding, output_padding=output_padding,
                       dilation=dilation, groups=groups, bias=bias)
        self.functional = functional
        self.post = (nn.Conv2d if dims == 2 else nn.Conv1d)(cout, 2, 1)

    def forward(self, x):
        h = torch.relu(self.pre(x))
        u = self.up
        if self.functional:
            fn = F.conv_transpose2d if isinstance(u, nn.ConvTranspose2d) else F.conv_transpose1d
            h = fn(h, u.weight, u.bias, u.stride, u.padding, u.output_padding, u.groups, u.dilation)
        else:
            h = u(h)
        return self.post(torch.relu(h))


@st.composite
def up_configs(draw):
    groups = draw(st.sampled_from([1, 2]))
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    return dict(cin=groups * draw(st.integers(1, 3)), cout=groups * draw(st.integers(1, 3)), k=draw(st.integers(1, 4)),
                stride=stride, padding=draw(st.integers(0, 1)),
                output_padding=draw(st.integers(0, max(stride, dilation) - 1)), dilation=dilation, groups=groups,
                dims=draw(st.sampled_from([1, 2])), bias=draw(st.booleans()), functional=draw(st.booleans()))


@settings(max_examples=10, deadline=None)
@given(cfg=up_configs(), tracer=st.sampled_from(["fx", "export"]))
def test_conv_transpose_round_trip_and_write_back(cfg, tracer):
    x = torch.randn((2, 2, 6, 5) if cfg["dims"] == 2 else (2, 2, 7), generator=torch.Generator().manual_seed(1))
    spec, g = _roundtrip(lambda: Up(**cfg), x, tracer)
    conv = g.edge_type == int(EdgeType.CONV)
    k = (cfg["k"], cfg["k"]) if cfg["dims"] == 2 else (1, cfg["k"])
    n_up = cfg["cin"] * cfg["cout"] // cfg["groups"]
    assert (g.edge_kernel[conv] == torch.tensor(k)).all(dim=1).sum() >= n_up  # true-size kernels


def test_stride_one_conv_transpose_has_the_graph_of_the_equivalent_conv():
    """A stride-1 ConvTranspose2d is the Conv2d with the flipped, in/out-swapped kernel and padding
    ``k-1-p``: both give the same graph (edges hold kernels as they are correlated with the input)."""
    torch.manual_seed(0)
    t = nn.ConvTranspose2d(3, 4, 3, padding=0)
    c = nn.Conv2d(3, 4, 3, padding=2)
    with torch.no_grad():
        c.weight.copy_(t.weight.transpose(0, 1).flip(-1, -2))
        c.bias.copy_(t.bias)
    x = torch.randn(1, 3, 5, 5)
    assert torch.allclose(t(x), c(x), atol=1e-6)
    gt = ws.GraphSpec.from_module(t, x).to_graph(t.state_dict())
    gc = ws.GraphSpec.from_module(c, x).to_graph(c.state_dict())
    for key in ("edge_index", "edge_type", "edge_attr", "x", "node_type"):
        assert torch.equal(getattr(gt, key), getattr(gc, key)), key


@pytest.mark.parametrize("field,value", [("stride", 3), ("padding", 0), ("output_padding", 0), ("dilation", 2)])
def test_conv_transpose_hyperparameters_are_in_the_signature(field, value):
    """Sensitivity: a copy differing in one hyperparameter (same weight shapes) is refused."""
    x = torch.randn(1, 2, 6, 6)
    base = dict(cin=4, cout=4, k=3, stride=2, padding=1, output_padding=1, dilation=1, groups=1)
    torch.manual_seed(0)
    src = Up(**base).eval()
    dst = Up(**{**base, field: value}).eval()
    _rejects(src, dst, x, match=f"another function: at 'up'.*{field} is")
    ws.from_graph(ws.GraphSpec.from_module(src, x).to_graph(src.state_dict()), Up(**base).eval(), example_input=x)


# ----------------------------------------------------------------------------- instance norm


class ConvIN(nn.Module):
    def __init__(self, affine=True, track=False, dims=2, eps=1e-5):
        super().__init__()
        conv, norm = (nn.Conv2d, nn.InstanceNorm2d) if dims == 2 else (nn.Conv1d, nn.InstanceNorm1d)
        self.conv = conv(2, 3, 3, padding=1)
        self.norm = norm(3, affine=affine, track_running_stats=track, eps=eps)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.head = conv(3, 2, 1)

    def forward(self, x):
        return self.head(self.act(self.norm(self.conv(x))))


@settings(max_examples=8, deadline=None)
@given(affine=st.booleans(), track=st.booleans(), dims=st.sampled_from([1, 2]), tracer=st.sampled_from(["fx", "export"]))
def test_instance_norm_round_trip_and_write_back(affine, track, dims, tracer):
    x = torch.randn((2, 2, 5, 5) if dims == 2 else (2, 2, 7), generator=torch.Generator().manual_seed(2))

    def build():
        m = ConvIN(affine, track, dims)
        if track:  # non-trivial running statistics, drawn with the seed
            with torch.no_grad():
                m.norm.running_mean.normal_()
                m.norm.running_var.uniform_(0.5, 2.0)
        return m

    _roundtrip(build, x, tracer)


@pytest.mark.parametrize("mutation,match", [(dict(eps=1e-3), "at 'norm'.*eps"), (dict(track=True), "norm.running_mean")])
def test_instance_norm_settings_are_in_the_signature(mutation, match):
    """Sensitivity: eps, or tracked statistics used in evaluation, change the function."""
    x = torch.randn(1, 2, 5, 5)
    torch.manual_seed(0)
    src = ConvIN(affine=True).eval()
    dst = ConvIN(affine=True, **mutation).eval()
    _rejects(src, dst, x, match=match)


# ----------------------------------------------------------------------------- fx traces that differ from forward


class BranchOnTensor(nn.Module):
    """Takes one branch for a real tensor and another for an fx ``Proxy`` (as MONAI's ``UpCat``)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 1)
        self.b = nn.Conv2d(2, 3, 1)
        self.c = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        if torch.jit.isinstance(x, torch.Tensor):
            h = self.a(x) + self.b(x)
        else:
            h = self.a(x) + self.b(x).flip(1)
        return self.c(h)


def test_symbolic_trace_that_differs_from_forward_falls_back_to_export():
    x = torch.randn(1, 2, 4, 4)
    _roundtrip(BranchOnTensor, x)


def test_symbolic_trace_that_differs_from_forward_is_refused_with_fx_only():
    x = torch.randn(1, 2, 4, 4)
    model = BranchOnTensor().eval()
    with pytest.raises(ws.UnsupportedModuleError, match="another computation than the forward pass.*BranchOnTensor"):
        ws.GraphSpec.from_module(model, x, tracer="fx")


# ----------------------------------------------------------------------------- gating products, channel padding


class Gate(nn.Module):
    """An attention gate: ``x [B, C, H, W]`` times a one-channel sigmoid map ``[B, 1, H, W]``."""

    def __init__(self, c=3, method=False):
        super().__init__()
        self.f = nn.Conv2d(2, c, 3, padding=1)
        self.g = nn.Conv2d(c, 1, 1)
        self.out = nn.Conv2d(c, 2, 1)
        self.method = method

    def forward(self, x):
        h = torch.relu(self.f(x))
        psi = torch.sigmoid(self.g(h))
        return self.out(h.mul(psi) if self.method else psi * h)


@pytest.mark.parametrize("tracer", ["fx", "export"])
@pytest.mark.parametrize("method", [False, True])
def test_one_channel_gate_product_round_trips(tracer, method):
    x = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(3))
    _, g = _roundtrip(lambda: Gate(3, method), x, tracer)
    prod = (g.node_type == int(NodeType.PRODUCT)).nonzero().squeeze(1)
    assert prod.numel() == 3
    into = g.edge_index[1][g.edge_type == int(EdgeType.PRODUCT)]
    assert sorted(into.tolist()) == sorted(prod.tolist() * 2)  # two operands per product neuron


class PadShortcut(nn.Module):
    """A residual block whose shortcut gains channels by zero padding (MONAI's ``ChannelPad``)."""

    def __init__(self, before=1, after=2, value=0.0):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 1)
        self.b = nn.Conv2d(3, 3 + before + after, 3, padding=1)
        self.pad = (0, 0, 0, 0, before, after)
        self.value = value

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h) + F.pad(h, self.pad, value=self.value)


@settings(max_examples=8, deadline=None)
@given(before=st.integers(0, 2), after=st.integers(0, 2), tracer=st.sampled_from(["fx", "export"]))
def test_channel_padding_round_trips(before, after, tracer):
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    spec, g = _roundtrip(lambda: PadShortcut(before, after), x, tracer)
    hidden_no_input = set(range(g.num_nodes)) - set(g.edge_index[1].tolist())
    zeros = [i for i in hidden_no_input if int(g.node_type[i]) == int(NodeType.HIDDEN)]
    assert len(zeros) == before + after  # the zero channels: neurons without incoming edges


def test_channel_padding_widths_are_in_the_signature():
    """Sensitivity: padding (1, 2) and (2, 1) have the same weights and compute different functions."""
    x = torch.randn(1, 2, 4, 4)
    torch.manual_seed(0)
    _rejects(PadShortcut(1, 2).eval(), PadShortcut(2, 1).eval(), x, match="another (function|architecture)")


def test_channel_padding_with_a_nonzero_value_is_refused():
    with pytest.raises(ws.UnsupportedModuleError, match="only zero padding"):
        ws.GraphSpec.from_module(PadShortcut(1, 1, value=0.5), torch.randn(1, 2, 4, 4))


# ----------------------------------------------------------------------------- equivariance


@settings(max_examples=8, deadline=None)
@given(c=st.integers(2, 5), shared=st.booleans(), transposed=st.booleans(), seed=st.integers(0, 2**16))
def test_channel_permutation_permutes_graph_nodes_only(c, shared, transposed, seed):
    """Permuting the hidden channels of conv (or transposed conv) + PReLU + conv, a function-preserving
    change of the weights, gives the same graph with those neurons renamed (the shared slope's
    ``ACT_PARAM`` node stays in place); a sensitivity check: permuting only the first layer's
    channels changes the function and gives a graph that is not a renaming of the first."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(c, generator=gen)
    while torch.equal(perm, torch.arange(c)):
        perm = torch.randperm(c, generator=gen)
    torch.manual_seed(seed)
    model = ConvPReLU(c, shared).eval()
    if transposed:
        model.conv = nn.ConvTranspose2d(2, c, 3, padding=1)
    x = torch.randn(1, 2, 5, 5, generator=gen)
    spec = ws.GraphSpec.from_module(model, x)
    g = spec.to_graph(model.state_dict())
    rules = [("conv.weight", 1 if transposed else 0, perm), ("conv.bias", 0, perm), ("head.weight", 1, perm)]
    if not shared:
        rules.append(("act.weight", 0, perm))
    moved = copy.deepcopy(model)
    permute_params(moved, rules)
    with torch.no_grad():
        assert torch.allclose(moved(x), model(x), atol=1e-6)
    pi = node_permutation(g.num_nodes, spec.node_groups, {"conv": perm})
    assert_graphs_permuted(g, spec.to_graph(moved.state_dict()), pi)
    broken = copy.deepcopy(model)
    permute_params(broken, rules[:2])
    with torch.no_grad():
        assert not torch.allclose(broken(x), model(x), atol=1e-6)
    with pytest.raises(AssertionError):
        assert_graphs_permuted(g, spec.to_graph(broken.state_dict()), pi)


def test_type_test_on_a_traced_tensor_without_example_input_is_refused():
    """Without an example input the trace cannot be checked: a ``torch.jit.isinstance`` on a traced
    tensor is refused, naming the module and asking for ``example_input``."""
    with pytest.raises(ws.UnsupportedModuleError, match=r"torch.jit.isinstance.*example_input.*BranchOnTensor"):
        ws.GraphSpec.from_module(BranchOnTensor().eval())
    nets = pytest.importorskip("monai.networks.nets")
    unet = nets.BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4)).eval()
    with pytest.raises(ws.UnsupportedModuleError, match=r"torch.jit.isinstance.*\[at 'upcat_4'\]"):
        ws.GraphSpec.from_module(unet)


def test_monai_handlers_live_in_their_families_once():
    """Each operation the MONAI corpus brought has one handler per tier, in its family's module;
    the one-channel gate and the per-position mask share the single idiom handler of ``mul``."""
    from weightspace.graph import ops

    family = {
        ops.CORE.module(nn.PReLU()): "activations", ops.CORE.function(F.prelu): "activations",
        ops.CORE.aten["leaky_relu_"]: "activations", ops.CORE.module(nn.ConvTranspose2d(1, 1, 2)): "linear",
        ops.CORE.aten["convolution"]: "linear", ops.CORE.module(nn.Conv3d(1, 1, 1)): "linear",
        ops.CORE.aten["instance_norm"]: "norms", ops.CORE.function(F.pad): "shape",
        ops.CORE.aten["constant_pad_nd"]: "shape", ops.IDIOMS.aten["mul"]: "arithmetic",
    }
    for handler, module in family.items():
        assert handler is not None and handler.__module__ == f"weightspace.graph.ops.{module}", handler
    assert ops.IDIOMS.aten["mul"] is ops.IDIOMS.methods["mul"] is ops.IDIOMS.function(torch.mul)
    assert ops.CORE.aten["convolution"] is ops.CORE.aten["_convolution"]
