"""NowcastEnsemble: the mean of its members, through predict, the prepared plan and the hook."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace.graph import GraphSpec
from weightspace.nowcast import EnsemblePlan, NowcastEnsemble, Nowcaster

from .helpers import randomized_nowcaster, small_mlp


def _window(spec, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, spec.num_params, generator=g).cumsum(0) * 0.1


@settings(max_examples=10, deadline=None)
@given(seeds=st.lists(st.integers(0, 50), min_size=1, max_size=3), horizon=st.integers(1, 6))
def test_prediction_is_the_members_mean(seeds, horizon):
    spec = GraphSpec.from_module(small_mlp())
    members = [randomized_nowcaster("graph", s) for s in seeds]
    ens = NowcastEnsemble(members)
    w = _window(spec)
    want = torch.stack([m.predict(spec, w, horizon) for m in members]).mean(0)
    torch.testing.assert_close(ens.predict(spec, w, horizon), want, atol=1e-5, rtol=1e-5)


def test_members_matter():
    """Sensitivity: two different members give a mean unlike either (the check above can fail)."""
    spec = GraphSpec.from_module(small_mlp())
    a, b = randomized_nowcaster("graph", 1), randomized_nowcaster("graph", 2)
    w = _window(spec)
    m = NowcastEnsemble([a, b]).predict(spec, w, 3)
    assert not torch.allclose(m, a.predict(spec, w, 3), atol=1e-4)
    assert not torch.allclose(m, b.predict(spec, w, 3), atol=1e-4)


def test_prepared_plan_equals_the_streamed_mean():
    spec = GraphSpec.from_module(small_mlp())
    ens = NowcastEnsemble([randomized_nowcaster("graph", 3), randomized_nowcaster("mlp", 4)])
    from weightspace.nowcast import NowcastLayout

    plan = ens.make_plan(NowcastLayout.from_spec(spec), 5, torch.device("cpu"))
    assert isinstance(plan, EnsemblePlan) and len(plan.plans) == 2
    w = _window(spec, 1)
    torch.testing.assert_close(ens.predict(plan, w, 2), ens.predict(spec, w, 2), atol=1e-5, rtol=1e-4)


def test_hook_jumps_by_the_mean():
    """The hook with an ensemble of two copies of one nowcaster ends where that nowcaster alone ends."""
    data = [(torch.randn(8, 6, generator=torch.Generator().manual_seed(i)), torch.randn(8, 3)) for i in range(4)]
    ends = []
    for nc in (randomized_nowcaster("graph", 5), None):
        member = randomized_nowcaster("graph", 5)
        model = small_mlp()
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        h = (nc if nc is not None else NowcastEnsemble([member, member])).attach(model, opt, period=5, horizon=2,
                                                                                 total_steps=20, spike_guard=None)
        for i in range(20):
            x, y = data[i % 4]
            loss = ((model(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert h.jumps == 3  # at steps 5, 10, 15 (none at total_steps)
        ends.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(ends[0], ends[1], atol=1e-5, rtol=1e-5)


def test_mismatched_members_and_empty_are_refused():
    with pytest.raises(ValueError, match="at least one member"):
        NowcastEnsemble([])
    with pytest.raises(ValueError, match="share context and horizons"):
        NowcastEnsemble([Nowcaster(kind="linefit", horizons=4), Nowcaster(kind="linefit", horizons=8)])


def test_from_pretrained_loads_members(tmp_path):
    a = randomized_nowcaster("graph", 6)
    a.save_pretrained(tmp_path / "a")
    ens = NowcastEnsemble.from_pretrained([tmp_path / "a", tmp_path / "a"])
    assert len(ens) == 2 and ens.kind == "ensemble" and ens.horizons == a.horizons and ens.learned
