"""The structural signature: a graph is refused by a model that differs only in a non-tensor
argument of its computation (stride, padding, dilation, pooling, eps, activation parameters,
constants), naming the first difference, and the model is left untouched; equal copies accept it."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightspace as ws
from weightspace.graph.signature import first_difference, signature_from_json, signature_to_json

from ..helpers import assert_state_equal

ACTS = {
    "leaky_relu": lambda v: nn.LeakyReLU(v),
    "elu": lambda v: nn.ELU(alpha=v),
    "softplus": lambda v: nn.Softplus(beta=v),
    "gelu": lambda v: nn.GELU(approximate="tanh" if v > 1 else "none"),
    "hardtanh": lambda v: nn.Hardtanh(-v, v),
}
BASE = dict(stride=1, padding=1, dilation=1, pool="max", eps=1e-5, act="leaky_relu", act_value=0.1, const=3.0)
CHOICES = dict(stride=[1, 2], padding=[0, 1, 2], dilation=[1, 2], pool=["max", "avg"], eps=[1e-5, 1e-3],
               act=list(ACTS), act_value=[0.1, 0.5, 2.0], const=[3.0, 2.0, 0.5])


class Net(nn.Module):
    """Conv -> BatchNorm -> activation -> pooling -> global mean -> linear, scaled by a constant."""

    def __init__(self, stride, padding, dilation, pool, eps, act, act_value, const):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=stride, padding=padding, dilation=dilation)
        self.bn = nn.BatchNorm2d(4, eps=eps)
        self.act = ACTS[act](act_value)
        self.pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
        self.fc = nn.Linear(4, 3)
        self.const = const

    def forward(self, x):
        h = self.pool(self.act(self.bn(self.conv(x))))
        return self.fc(h.mean((2, 3))) * self.const


def _net(seed=0, **cfg):
    torch.manual_seed(seed)
    m = Net(**{**BASE, **cfg}).eval()
    with torch.no_grad():
        m.bn.running_mean.normal_()
        m.bn.running_var.uniform_(0.5, 2.0)
    return m


def _refused(src: nn.Module, dst: nn.Module, match: str) -> None:
    g = ws.to_graph(src)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(ws.ArchitectureMismatchError, match=match):
        ws.from_graph(g, dst)
    assert_state_equal(dst.state_dict(), before)


MUTATIONS = {
    "stride": (dict(stride=2), r"at 'conv' \(Conv2d\): stride is \(1, 1\) in the graph but \(2, 2\) in the model"),
    "padding": (dict(padding=2), r"'conv' \(Conv2d\): padding is \(1, 1\) in the graph but \(2, 2\)"),
    "dilation": (dict(dilation=2), r"'conv' \(Conv2d\): dilation is \(1, 1\) in the graph but \(2, 2\)"),
    "pooling kind": (dict(pool="avg"), r"MaxPool2d at 'pool' in the graph but AvgPool2d at 'pool' in the model"),
    "batchnorm eps": (dict(eps=1e-3), r"'bn' \(BatchNorm2d\): eps is 1e-05 in the graph but 0.001"),
    "leaky relu slope": (dict(act_value=0.5), r"'act' \(LeakyReLU\): negative_slope is 0.1 in the graph but 0.5"),
    "elu alpha": (dict(act="elu", act_value=0.5), r"'act' \(ELU\): alpha is 0.1 in the graph but 0.5"),
    "softplus beta": (dict(act="softplus", act_value=0.5), r"'act' \(Softplus\): beta is 0.1 in the graph but 0.5"),
    "gelu approximation": (dict(act="gelu", act_value=2.0),
                           r"'act' \(GELU\): approximate is 'none' in the graph but 'tanh'"),
    "constant in forward": (dict(const=2.0), r"\(mul\): arg1 is 3.0 in the graph but 2.0 in the model"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_one_hyperparameter_changed_is_refused_naming_it(name):
    mutation, match = MUTATIONS[name]
    base = {k: v for k, v in mutation.items() if k == "act"}  # same activation type, other parameter
    _refused(_net(**base), _net(seed=1, **mutation), match)


def test_equal_architecture_is_accepted_and_reproduces_outputs():
    src, dst = _net(), _net(seed=1)
    x = torch.randn(2, 2, 12, 12)
    ws.from_graph(ws.to_graph(src), dst)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_dropout_probability_is_not_part_of_the_signature():
    """Dropout only acts in training: its probability does not change the evaluated function."""
    a = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.Linear(4, 2))
    b = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    ws.from_graph(ws.to_graph(a), b)
    assert_state_equal(b.state_dict(), a.state_dict())


def test_batchnorm_momentum_is_not_part_of_the_signature():
    a = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, momentum=0.1))
    b = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, momentum=0.01))
    ws.from_graph(ws.to_graph(a), b)
    assert_state_equal(b.state_dict(), a.state_dict())


def test_signature_is_plain_json_and_survives_a_round_trip():
    spec = ws.GraphSpec.from_module(_net())
    text = signature_to_json(spec.signature)
    assert json.loads(text)  # plain values only
    back = signature_from_json(text)
    assert back == spec.signature
    spec.check_signature(back)  # accepted
    g = spec.to_graph(_net().state_dict())
    g.signature = json.loads(text)  # lists, as read back from JSON
    spec.check_graph(g)


def test_a_non_persistent_buffer_is_part_of_the_signature():
    class Scaled(nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.register_buffer("scale", torch.full((3,), scale), persistent=False)

        def forward(self, x):
            return self.fc(x) * self.scale

    _refused(Scaled(2.0), Scaled(3.0), r"at 'scale' \(tensor\): digest is '[0-9a-f]+' in the graph but")
    ws.from_graph(ws.to_graph(Scaled(2.0)), Scaled(2.0))


def test_signature_under_export_ignores_the_example_input_size():
    """Under torch.export sizes of the example input are concrete; they stay out of the signature."""
    m = _net()
    a = ws.GraphSpec.from_module(m, torch.randn(1, 2, 12, 12), tracer="export")
    b = ws.GraphSpec.from_module(m, torch.randn(3, 2, 16, 16), tracer="export")
    assert first_difference(a.signature, b.signature) is None
    c = ws.GraphSpec.from_module(_net(stride=2), torch.randn(1, 2, 12, 12), tracer="export")
    assert "stride" in first_difference(a.signature, c.signature)


def test_graph_and_spec_of_different_tracers_are_refused_with_the_tracer_to_use():
    m = _net()
    g = ws.to_graph(m)  # symbolic tracing
    spec = ws.GraphSpec.from_module(m, torch.randn(1, 2, 12, 12), tracer="export")
    with pytest.raises(ws.ArchitectureMismatchError, match=r"tracer='fx'"):
        ws.from_graph(g, _net(seed=1), spec=spec)


@settings(max_examples=30, deadline=None)
@given(base=st.fixed_dictionaries({k: st.sampled_from(v) for k, v in CHOICES.items()}),
       key=st.sampled_from(list(CHOICES)), data=st.data())
def test_a_copy_with_one_hyperparameter_mutated_is_always_told_apart(base, key, data):
    new = data.draw(st.sampled_from([v for v in CHOICES[key] if v != base[key]]))
    mutated = {**base, key: new}
    if base["act"] == "gelu" and key == "act_value" and (new > 1) == (base["act_value"] > 1):
        return  # GELU reads act_value only as "tanh or not": not a mutation
    src = _net(**base)
    g = ws.to_graph(src)
    twin = _net(seed=1, **base)
    ws.from_graph(g, twin)  # an equal copy is always accepted
    assert_state_equal(twin.state_dict(), src.state_dict())
    other = _net(seed=1, **mutated)
    before = copy.deepcopy(other.state_dict())
    with pytest.raises(ws.ArchitectureMismatchError):
        ws.from_graph(g, other)
    assert_state_equal(other.state_dict(), before)
