"""Every built-in example converts and round-trips bit for bit, with and without example input."""

import pytest
import torch

import weightspace as ws
from weightspace.examples import EXAMPLES, build_example

from ..helpers import assert_state_equal


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@pytest.mark.parametrize("with_input", [False, True])
def test_example_round_trip(name, with_input):
    model, x = build_example(name)
    if name == "transformer" and not with_input:
        with pytest.raises(ws.UnsupportedModuleError, match="example_input"):
            ws.to_graph(model)
        return
    spec = ws.GraphSpec.from_module(model, x if with_input else None)
    g = spec.to_graph(model.state_dict())
    assert_state_equal(spec.to_state_dict(g), model.state_dict())
    other, _ = build_example(name, seed=1)
    ws.from_graph(g, other, spec=spec)
    with torch.no_grad():
        assert torch.equal(other(x), model(x))
