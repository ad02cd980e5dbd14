"""Weight parametrizations ``spectral_norm`` and ``orthogonal`` through the converter: the graph holds
the stored tensors (``original``) and the parametrization's buffers (power-iteration vectors ``u``,
``v``; the orthogonal ``base``), the round trip is bit-exact, a model written from the graph computes
the same outputs in evaluation mode, hidden-unit permutations act on the graph as on the model, and
another parametrization setting is told apart."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrizations

import weightspace as ws
from weightspace.graph import EdgeType, NodeType

from ..helpers import (
    assert_graphs_permuted,
    assert_round_trip,
    node_permutation,
    permute_params,
)

SETTINGS = {
    "spectral": ("spectral_norm", {}),
    "spectral_2iter": ("spectral_norm", {"n_power_iterations": 2}),
    "spectral_eps": ("spectral_norm", {"eps": 1e-6}),
    "orthogonal": ("orthogonal", {}),
    "orthogonal_cayley": ("orthogonal", {"orthogonal_map": "cayley"}),
    "orthogonal_householder": ("orthogonal", {"orthogonal_map": "householder"}),
    "orthogonal_plain": ("orthogonal", {"use_trivialization": False}),
}


def _net(seed: int, setting: str, conv_k: tuple[int, int] = (3, 3), hidden: int = 5, out: int = 3) -> nn.Module:
    """Conv2d -> pool -> Linear -> Linear, every weight parametrized; a few training-mode passes
    move the power-iteration vectors away from their initial values."""
    kind, kw = SETTINGS[setting]
    f = getattr(parametrizations, kind)
    torch.manual_seed(seed)
    model = nn.Sequential(
        f(nn.Conv2d(2, 4, conv_k, padding=1), **kw), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        f(nn.Linear(4, hidden), **kw), nn.Tanh(), f(nn.Linear(hidden, out), **kw),
    )
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(3, 2, 5, 5))
    return model.eval()


X = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(0))




@settings(max_examples=10, deadline=None)
@given(setting=st.sampled_from(sorted(SETTINGS)), kh=st.integers(1, 3), kw=st.integers(1, 3),
       hidden=st.integers(2, 6), out=st.integers(2, 6))
def test_round_trip_and_outputs_property(setting, kh, kw, hidden, out):
    assert_round_trip(lambda seed: _net(seed, setting, (kh, kw), hidden, out), X, tracer="fx")


def test_spectral_norm_state_on_edges_into_one_node_per_layer():
    model = _net(0, "spectral")
    spec = ws.GraphSpec.from_module(model)
    g = spec.to_graph(model.state_dict())
    sd = model.state_dict()
    sigma = (g.node_type == NodeType.PARAMETRIZATION).nonzero().squeeze(1)
    assert sigma.numel() == 3  # one per parametrized layer
    is_state = g.edge_type == EdgeType.PARAMETRIZATION
    assert bool(torch.isin(g.edge_index[1, is_state], sigma).all())
    # the conv layer's edges hold the stored tensor (not W / sigma), its u on edges from its output units
    conv_out = spec.node_groups["0"]
    w = sd["0.parametrizations.weight.original"]
    assert torch.equal(g.edge_attr[g.edge_type == EdgeType.CONV], w.reshape(-1, 9))
    into_conv = is_state & (g.edge_index[1] == spec.node_groups["0:spectral_norm"][0])
    from_out = into_conv & torch.isin(g.edge_index[0], conv_out)
    assert torch.equal(g.edge_attr[from_out][:, 4], sd["0.parametrizations.weight.0._u"])  # 1x1 at the grid centre
    # v: the 3x3 kernel of each input channel, on the edge from that input unit
    from_in = into_conv & (g.node_type[g.edge_index[0]] == NodeType.INPUT)
    assert torch.equal(g.edge_attr[from_in], sd["0.parametrizations.weight.0._v"].reshape(2, 9))


def test_orthogonal_base_parallel_to_conv_edges_and_on_basis_nodes_of_linear():
    model = _net(0, "orthogonal", hidden=6, out=3)
    spec = ws.GraphSpec.from_module(model)
    g = spec.to_graph(model.state_dict())
    sd = model.state_dict()
    conv = g.edge_type == EdgeType.CONV
    base = (g.edge_type == EdgeType.PARAMETRIZATION) & torch.isin(g.edge_index[1], spec.node_groups["0"])
    assert torch.equal(g.edge_index[:, conv], g.edge_index[:, base])
    assert torch.equal(g.edge_attr[base], sd["0.parametrizations.weight.0.base"].reshape(-1, 9))
    # Linear(6 -> 3) has more inputs than outputs: its 6x6 base goes from 6 basis nodes to its input units
    basis = spec.node_groups["6:orthogonal_base"]
    assert basis.numel() == 6 and bool((g.node_type[basis] == NodeType.PARAMETRIZATION).all())
    into = torch.isin(g.edge_index[0], basis)
    assert bool(torch.isin(g.edge_index[1, into], spec.node_groups["4"]).all())


def _mlp(seed: int, kind: str) -> nn.Module:
    torch.manual_seed(seed)
    f = getattr(parametrizations, kind)
    model = nn.Sequential(f(nn.Linear(4, 6)), nn.ReLU(), f(nn.Linear(6, 3)))
    with torch.no_grad():
        model(torch.randn(5, 4))
    return model.eval()


def _permute_hidden(model: nn.Module, perm: torch.Tensor, with_state: bool = True) -> nn.Module:
    rules = [("0.parametrizations.weight.original", 0, perm), ("0.bias", 0, perm),
             ("2.parametrizations.weight.original", 1, perm)]
    if with_state:
        rules += [("0.parametrizations.weight.0._u", 0, perm), ("2.parametrizations.weight.0._v", 0, perm)]
    return permute_params(model, rules)


def test_spectral_norm_hidden_permutation_acts_on_the_graph():
    """Permuting the hidden units (rows of layer 0 with its ``u``, columns of layer 2 with its
    ``v``) keeps the function and permutes the graph's nodes."""
    model = _mlp(0, "spectral_norm")
    x = torch.randn(7, 4)
    spec = ws.GraphSpec.from_module(model)
    g0 = spec.to_graph(model.state_dict())
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y0 = model(x)
        permuted = _permute_hidden(model, perm)
        assert torch.allclose(permuted(x), y0, atol=1e-6)
    g1 = spec.to_graph(permuted.state_dict())
    pi = node_permutation(g0.num_nodes, spec.node_groups, {"0": perm})
    assert_graphs_permuted(g0, g1, pi)


def test_spectral_norm_permutation_without_its_state_is_told_apart():
    """Sensitivity: permuting the weights but not the power-iteration vectors changes the function,
    and the graph is no longer the permuted one."""
    model = _mlp(0, "spectral_norm")
    x = torch.randn(7, 4)
    spec = ws.GraphSpec.from_module(model)
    g0 = spec.to_graph(model.state_dict())
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y0 = model(x)
        permuted = _permute_hidden(model, perm, with_state=False)
        assert not torch.allclose(permuted(x), y0, atol=1e-6)
    g1 = spec.to_graph(permuted.state_dict())
    pi = node_permutation(g0.num_nodes, spec.node_groups, {"0": perm})
    with pytest.raises(AssertionError):
        assert_graphs_permuted(g0, g1, pi)


@pytest.mark.parametrize("source, target", [
    ("spectral", "spectral_2iter"), ("spectral", "spectral_eps"), ("orthogonal", "orthogonal_cayley"),
    ("orthogonal_cayley", "orthogonal_householder"), ("orthogonal", "orthogonal_plain"), ("spectral", "orthogonal"),
])
def test_another_parametrization_setting_is_told_apart(source, target):
    g = ws.to_graph(_net(0, source))
    with pytest.raises(ws.ArchitectureMismatchError):
        ws.from_graph(g, _net(1, target))
    ws.from_graph(g, _net(1, source))  # the same setting is accepted


@pytest.mark.parametrize("make, what", [
    (lambda: parametrizations.spectral_norm(nn.Conv2d(4, 4, 3, groups=2)), "_SpectralNorm on 'weight'"),
    (lambda: parametrizations.orthogonal(nn.Conv1d(2, 3, 3)), "_Orthogonal on 'weight'"),
    (lambda: parametrizations.spectral_norm(parametrizations.spectral_norm(nn.Linear(4, 4))),
     "_SpectralNorm\\+_SpectralNorm"),
    (lambda: parametrizations.spectral_norm(nn.Linear(4, 4), name="bias"), "on 'bias'"),
])
def test_unsupported_parametrizations_are_refused_naming_module_and_parametrization(make, what):
    with pytest.raises(ws.UnsupportedModuleError, match=rf"{what}.*not supported.*\[at '1'"):
        ws.to_graph(nn.Sequential(nn.Identity(), make()))


def test_orthogonal_base_over_flattened_features_is_refused_clearly():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), parametrizations.orthogonal(nn.Linear(12, 5))).eval()
    with pytest.raises(ws.UnsupportedModuleError, match=r"flattened input features.*\[at '2'"):
        ws.GraphSpec.from_module(model)


@pytest.mark.parametrize("kind", ["spectral_norm", "orthogonal"])
def test_parametrizations_under_export_are_refused_clearly(kind):
    with pytest.raises(ws.UnsupportedModuleError, match=r"only supported under torch.fx.*\[at '0'"):
        ws.GraphSpec.from_module(_mlp(0, kind), torch.randn(2, 4), tracer="export")
