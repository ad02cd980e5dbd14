"""The op registry (``weightspace.graph.ops``): one core handler per key, module handlers matched
along the MRO (or exactly), and an operation added as one handler (``torch.special.expit``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import weightspace as ws
from weightspace.graph import ops
from weightspace.graph.vocab import Activation

from ..helpers import assert_state_equal


@pytest.mark.parametrize("core, key, tier, name", [(True, "linear", "core", "linear_aten"),
                                                    (False, "where", "idiom", "where")])
def test_a_second_handler_for_a_key_is_refused(core, key, tier, name):
    """Which handler runs never depends on import order."""
    registry = ops.CORE if core else ops.IDIOMS
    with pytest.raises(RuntimeError, match=f"two {tier} handlers for '{key}'"):
        ops.register(aten=(key,), core=core)(lambda w, node, args, kwargs: None)
    assert registry.aten[key].__name__ == name  # the registry is unchanged


def test_idiom_handlers_may_share_a_key_with_core_handlers():
    shared = set(ops.IDIOMS.aten) & set(ops.CORE.aten)
    assert "select" in shared and "transpose" in shared


class MyLinear(nn.Linear):
    """A subclass that keeps ``Linear``'s forward."""


class MyReLU(nn.ReLU):
    """A subclass of an activation registered with ``exact=True``."""


def test_module_handlers_match_along_the_mro_unless_exact():
    assert ops.CORE.module(MyLinear(2, 3)) is ops.CORE.module(nn.Linear(2, 3)) is not None
    assert ops.CORE.module(nn.ReLU()) is not None
    assert ops.CORE.module(MyReLU()) is None  # exact: a subclass may compute something else
    assert ops.CORE.module(nn.Bilinear(1, 1, 1)) is None  # no handler: refused by the walker


class Expit(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fc1, self.fc2, self.fn = nn.Linear(3, 4), nn.Linear(4, 2), fn

    def forward(self, x):
        return self.fc2(self.fn(self.fc1(x)))


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_expit_is_the_sigmoid_activation_and_round_trips(tracer):
    torch.manual_seed(0)
    model = Expit(torch.special.expit)
    x = torch.randn(5, 3)
    spec = ws.GraphSpec.from_module(model, x if tracer == "export" else None, tracer=tracer)
    g = spec.to_graph(model.state_dict())
    assert_state_equal(spec.to_state_dict(g), model.state_dict())
    hidden = spec.node_groups["fc1"]
    assert bool((g.node_act[hidden] == Activation.SIGMOID).all())
    torch.manual_seed(1)
    fresh = Expit(torch.special.expit)
    with torch.no_grad():
        ws.from_graph(g, fresh, spec=spec)
        assert torch.equal(fresh(x), model(x))


def test_expit_is_told_apart_from_another_activation():
    torch.manual_seed(0)
    g = ws.to_graph(Expit(torch.special.expit))
    with pytest.raises(ws.ArchitectureMismatchError):
        ws.from_graph(g, Expit(torch.tanh))
