"""NowcastHook moves exactly what the optimizer updates now: parameters frozen, param groups added or
removed after attach, parameters outside the optimizer; attaching after ``optimizer.load_state_dict``
restores the saved hook state; a jump keeps each parameter's dtype and precision."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import weightspace as ws
from weightspace.nowcast import Nowcaster

from .helpers import train_steps as _train


def _setup(seed: int = 0, dtype: torch.dtype = torch.float32):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(16, 6, generator=g, dtype=dtype), torch.randn(16, 3, generator=g, dtype=dtype))
            for _ in range(8)]
    return model, data


def _before_jumps(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Each parameter after the optimizer's update of the latest step, before any jump of that step.

    Registered before the nowcast hook, so it runs first among the step post hooks.
    """
    seen: dict[str, torch.Tensor] = {}
    opt.register_step_post_hook(lambda *_: seen.update({n: p.detach().clone() for n, p in model.named_parameters()}))
    return seen


class _Recording(Nowcaster):
    """A nowcaster that keeps the deltas it returned."""

    def predict(self, spec, window, horizon=None):
        d = super().predict(spec, window, horizon)
        self.deltas = [*getattr(self, "deltas", []), d.clone()]
        return d


def test_parameter_frozen_after_attach_stays_bit_identical_and_moves_again_when_unfrozen():
    model, data = _setup()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = _before_jumps(model, opt)
    h = Nowcaster(kind="linefit", horizons=4).attach(model, opt, period=8, context=4, horizon=4)
    _train(model, opt, data, 5)
    model[0].weight.requires_grad_(False)  # frozen mid-window: Adam leaves it (no grad), so must the jump
    model[0].weight.grad = None
    frozen = model[0].weight.detach().clone()
    _train(model, opt, data, 11, start=5)
    assert h.jumps == 2
    assert torch.equal(model[0].weight, frozen)
    assert not torch.equal(model[2].weight, before["2.weight"])  # the others did jump at step 16
    # sensitivity: unfrozen, it jumps again at the next jump
    model[0].weight.requires_grad_(True)
    _train(model, opt, data, 8, start=16)
    assert h.jumps == 3
    assert not torch.equal(model[0].weight, before["0.weight"])


def test_param_group_added_after_attach_is_jumped():
    model, data = _setup()
    opt = torch.optim.Adam(model[2].parameters(), lr=1e-2)
    before = _before_jumps(model, opt)
    nc = _Recording(kind="linefit", horizons=4)
    h = nc.attach(model, opt, period=8, context=4, horizon=4)
    opt.add_param_group({"params": list(model[0].parameters()), "lr": 1e-3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # parameters of the model: jumped, no warning
        _train(model, opt, data, 8)
    assert h.jumps == 1
    # the added group's parameters take the predicted delta like the others
    expect = h.spec.unflatten(h.spec.flatten(before) + nc.deltas[-1])
    for name, p in model.named_parameters():
        assert not torch.equal(p, before[name]), name
        assert torch.equal(p, expect[name]), name


def test_param_group_outside_the_model_added_after_attach_warns_naming_it():
    model, data = _setup()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    h = Nowcaster(kind="linefit", horizons=4).attach(model, opt, period=8, context=4, horizon=4)
    extra = nn.Parameter(torch.zeros(5))
    opt.add_param_group({"params": [extra], "lr": 1e-3})
    with pytest.warns(UserWarning, match=r"param group 1 .*1 parameter tensor.* not in the model"):
        _train(model, opt, data, 8)
    assert h.jumps == 1 and torch.equal(extra, torch.zeros(5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per group
        _train(model, opt, data, 8, start=8)
    assert h.jumps == 2


def test_parameter_outside_every_param_group_never_moves():
    """Neither left out at attach nor taken out of the optimizer afterwards (its group deleted)."""
    model, data = _setup()
    model.add_module("3", nn.Linear(3, 2))
    opt = torch.optim.Adam([{"params": model[0].parameters()}, {"params": model[2].parameters()}], lr=1e-2)
    before = _before_jumps(model, opt)
    h = Nowcaster(kind="linefit", horizons=4).attach(model, opt, period=8, context=4, horizon=4)
    left_out = {n: p.detach().clone() for n, p in model[3].named_parameters()}
    data = [(x, torch.randn(16, 2)) for x, _ in data]
    _train(model, opt, data, 5)
    del opt.param_groups[1]  # model[2] leaves the optimizer mid-window
    taken_out = {n: p.detach().clone() for n, p in model[2].named_parameters()}
    _train(model, opt, data, 11, start=5)
    assert h.jumps == 2
    for n, p in model[3].named_parameters():
        assert torch.equal(p, left_out[n]), n
    for n, p in model[2].named_parameters():
        assert torch.equal(p, taken_out[n]), n
    assert not torch.equal(model[0].weight, before["0.weight"])  # sensitivity: the group left in jumps


def test_attach_after_optimizer_load_state_dict_restores_the_hook_state():
    model, data = _setup()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    nc = Nowcaster(kind="linefit", horizons=4)
    h = nc.attach(model, opt, period=8, context=4, horizon=3)
    _train(model, opt, data, 13)  # one jump (step 8), snapshots of steps 10 and 12 in flight
    saved_opt, saved_model = copy.deepcopy(opt.state_dict()), copy.deepcopy(model.state_dict())
    _train(model, opt, data, 11, start=13)  # the uninterrupted run: jumps at 16 and 24
    ref = [p.detach().clone() for p in model.parameters()]
    assert h.jumps == 3

    m2, _ = _setup(seed=7)
    o2 = torch.optim.Adam(m2.parameters(), lr=1e-2)
    m2.load_state_dict(saved_model)
    o2.load_state_dict(saved_opt)  # no hook attached yet
    h2 = nc.attach(m2, o2, period=8, context=4, horizon=3)
    assert h2.step == 13 and h2.jumps == 1 and h2.window.shape[0] == 2
    assert h2.history == h.history[:1]
    assert "nowcast" not in o2.state  # taken over by the hook, not left among the optimizer's state
    _train(m2, o2, data, 2, start=13)
    assert h2.jumps == 1  # step 15: no jump yet
    _train(m2, o2, data, 1, start=15)
    assert h2.jumps == 2 and h2.history[-1]["step"] == 16  # the next jump at the same step
    _train(m2, o2, data, 8, start=16)
    assert h2.step == 24 and h2.jumps == 3
    for p, r in zip(m2.parameters(), ref):
        assert torch.allclose(p, r, atol=1e-6)


def test_attach_after_load_with_another_period_is_refused_and_keeps_the_saved_state():
    model, data = _setup()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    nc = Nowcaster(kind="linefit", horizons=4)
    nc.attach(model, opt, period=8, context=4)
    _train(model, opt, data, 5)
    saved = copy.deepcopy(opt.state_dict())
    m2, _ = _setup()
    o2 = torch.optim.Adam(m2.parameters(), lr=1e-2)
    o2.load_state_dict(saved)
    with pytest.raises(ValueError, match=r"period=8, context=4.*period=12.*optimizer.state.pop\('nowcast'\)"):
        nc.attach(m2, o2, period=12, context=4)
    assert not o2._optimizer_step_post_hooks
    assert nc.attach(m2, o2, period=8, context=4).step == 5


def test_load_with_the_hook_attached_leaves_no_hook_state_in_the_optimizer():
    model, data = _setup()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    nc = Nowcaster(kind="linefit", horizons=4)
    nc.attach(model, opt, period=8, context=4)
    _train(model, opt, data, 5)
    saved = copy.deepcopy(opt.state_dict())
    m2, _ = _setup()
    o2 = torch.optim.Adam(m2.parameters(), lr=1e-2)
    h2 = nc.attach(m2, o2, period=8, context=4)
    o2.load_state_dict(saved)
    assert h2.step == 5 and "nowcast" not in o2.state
    assert "nowcast" in saved and "nowcast" in saved["state"]  # the caller's dict is left as it was


def test_float64_parameters_keep_their_precision_across_a_jump():
    model, data = _setup(dtype=torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = _before_jumps(model, opt)
    nc = _Recording(kind="linefit", horizons=4)
    h = nc.attach(model, opt, period=8, context=4, horizon=4, hold=())
    _train(model, opt, data, 8)
    assert h.jumps == 1
    delta = nc.deltas[-1]
    assert delta.dtype == torch.float32
    spec = ws.GraphSpec.from_module(model)
    flat_before = spec.flatten(before)
    assert flat_before.dtype == torch.float64
    after = spec.flatten(model.state_dict())
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert torch.equal(after, flat_before + delta.to(torch.float64))  # the float32 delta added in float64


def test_every_parameter_frozen_after_attach_makes_the_jump_a_no_op():
    model, data = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    h = Nowcaster(kind="linefit", horizons=4).attach(model, opt, period=4, context=2, horizon=2)
    _train(model, opt, data, 3)
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    ref = [p.detach().clone() for p in model.parameters()]
    opt.step()  # step 4: the jump is due
    assert h.step == 4 and h.jumps == 0 and h.history[-1]["applied"] is False
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), ref))


def test_group_outside_the_model_given_at_attach_draws_no_warning_even_after_a_load():
    """Only groups added after attach are reported; ``optimizer.load_state_dict`` makes new group dicts
    (around the same params lists), which are not new groups."""
    model, data = _setup()
    extra = nn.Parameter(torch.zeros(5))
    opt = torch.optim.Adam([{"params": model.parameters()}, {"params": [extra]}], lr=1e-2)
    h = Nowcaster(kind="linefit", horizons=4).attach(model, opt, period=8, context=4, horizon=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _train(model, opt, data, 5)
        opt.load_state_dict(opt.state_dict())
        _train(model, opt, data, 11, start=5)
    assert h.jumps == 2


def test_param_group_swapped_for_another_of_the_same_size_moves_the_new_one_only():
    model, data = _setup()
    model.add_module("3", nn.Linear(3, 3))
    opt = torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[2].parameters()}], lr=1e-2)
    before = _before_jumps(model, opt)
    h = Nowcaster(kind="linefit", horizons=4).attach(model, opt, period=8, context=4, horizon=4)
    data = [(x, torch.randn(16, 3)) for x, _ in data]
    _train(model, opt, data, 5)
    del opt.param_groups[1]
    opt.add_param_group({"params": list(model[3].parameters())})  # as many tensors, all with grad
    out = {n: p.detach().clone() for n, p in model[2].named_parameters()}
    _train(model, opt, data, 3, start=5)
    assert h.jumps == 1
    for n, p in model[2].named_parameters():
        assert torch.equal(p, out[n]), n
    for n, p in model[3].named_parameters():
        assert not torch.equal(p, before[f"3.{n}"]), n
