"""The spike guard: a jump whose next reported loss rises past the factor is undone (weights back exactly,
recorded in history and summary), a good jump is kept, and the guard is off with spike_guard=None or
while no loss is reported; summary(), the INFO line at close, and plot()."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from weightspace.nowcast import JUMP_YIELD, Nowcaster, plot


def _setup(seed: int = 0, dtype: torch.dtype = torch.float32):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 3, generator=g, dtype=dtype)
    data = []
    for _ in range(8):
        x = torch.randn(32, 6, generator=g, dtype=dtype)
        data.append((x, x @ w))
    return model, opt, data


def _run(model, opt, data, steps, handle=None, start=0):
    """A plain loop reporting each loss before the optimizer step (as documented)."""
    for i in range(start, start + steps):
        x, y = data[i % len(data)]
        loss = ((model(x) - y) ** 2).mean()
        if handle is not None:
            handle.report_loss(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


class _Wild(Nowcaster):
    """A nowcaster that predicts a large change of every weight (a jump forced to be bad)."""

    def predict(self, spec, window, horizon=None):
        d = super().predict(spec, window, horizon)
        return torch.full_like(d, 3.0)


def test_a_bad_jump_is_undone_and_the_weights_come_back_exactly():
    model, opt, data = _setup()
    h = _Wild(kind="linefit").attach(model, opt, period=10, horizon=2, total_steps=100)
    _run(model, opt, data, 10, h)
    assert h.jumps == 1 and h.history[0]["applied"]
    ref, ref_opt, _ = _setup()
    _run(ref, ref_opt, data, 10)  # the weights where the optimizer left them at step 10
    assert not torch.allclose(_flat(model), _flat(ref))
    _run(model, opt, data, 1, h, start=10)  # the loss on the jumped weights is reported; step 11 judges it
    rec = h.history[0]
    assert rec["undone"] and rec["loss_after"] > 2.0 * rec["loss_before"]
    assert h.jumps == 0 and h.undone == 1 and h.summary()["undone"] == 1
    assert torch.equal(_flat(model), _flat(ref))  # step 11's update on the jumped weights is discarded too
    _run(model, opt, data, 10, h, start=11)  # training goes on; the next (bad) jump is undone as well
    assert h.undone == 2 and h.summary()["steps_ahead"] == 0


def test_a_good_jump_is_kept():
    model, opt, data = _setup()
    h = Nowcaster(kind="linefit").attach(model, opt, period=10, horizon=1, total_steps=100)
    _run(model, opt, data, 12, h)
    rec = h.history[0]
    assert rec["applied"] and not rec["undone"] and h.jumps == 1 and h.undone == 0
    assert rec["loss_after"] is not None and rec["loss_after"] <= 2.0 * rec["loss_before"]
    assert h.summary()["steps_ahead"] == 2


def test_the_guard_is_off_with_none_or_without_a_reported_loss():
    for kw, report in (({"spike_guard": None}, True), ({}, False)):
        model, opt, data = _setup()
        h = _Wild(kind="linefit").attach(model, opt, period=10, horizon=2, total_steps=100, **kw)
        _run(model, opt, data, 12, h if report else None)
        assert h.jumps == 1 and h.undone == 0 and not h.history[0]["undone"]


def test_undo_is_exact_for_float64_and_puts_back_reset_optimizer_state():
    model, opt, data = _setup(dtype=torch.float64)
    h = _Wild(kind="linefit").attach(model, opt, period=10, horizon=2, total_steps=100, optimizer_state="reset")
    _run(model, opt, data, 11, h)
    ref, ref_opt, _ = _setup(dtype=torch.float64)
    _run(ref, ref_opt, data, 10)
    assert h.undone == 1 and torch.equal(_flat(model), _flat(ref))
    assert all(p.dtype == torch.float64 for p in model.parameters())
    # "reset" dropped Adam's state at the jump; the undo put back the state of step 10
    for p, q in zip(model.parameters(), ref.parameters()):
        assert int(opt.state[p]["step"]) == 10
        assert torch.equal(opt.state[p]["exp_avg"], ref_opt.state[q]["exp_avg"])


def test_spike_guard_must_be_a_factor_above_one():
    model, opt, _ = _setup()
    with pytest.raises(ValueError, match="spike_guard is the factor by which the loss may rise"):
        Nowcaster(kind="linefit").attach(model, opt, period=10, total_steps=10, spike_guard=0.5)


def test_summary_and_the_info_line_at_close(caplog):
    model, opt, data = _setup()
    h = Nowcaster(kind="linefit").attach(model, opt, period=10, horizon=1, total_steps=100)
    _run(model, opt, data, 25, h)
    s = h.summary()
    assert s["steps"] == 25 and s["jumps"] == 2 and s["undone"] == 0 and s["steps_ahead"] == 4
    assert s["seconds"] == h.seconds and s["step_seconds"] > 0 and not s["auto"]
    assert s["steps_saved"] == pytest.approx(JUMP_YIELD * 4 - h.seconds / s["step_seconds"])
    assert s["cost_share"] == pytest.approx(h.seconds / (JUMP_YIELD * 4 * s["step_seconds"]))
    with caplog.at_level(logging.INFO, logger="weightspace.nowcast.hook"):
        out = h.close()
        h.close()
    assert out["jumps"] == 2 and not h.attached
    lines = [r.getMessage() for r in caplog.records if "2 jumps (0 undone, 0 skipped) in 25 optimizer steps" in r.getMessage()]
    assert len(lines) == 1  # logged once
    assert [step for step, _ in h.losses] == list(range(25))


def test_plot_draws_the_loss_or_the_parameter_change_with_jump_markers():
    model, opt, data = _setup()
    h = _Wild(kind="linefit").attach(model, opt, period=10, horizon=2, total_steps=100)
    _run(model, opt, data, 25, h)
    ax = plot(h)
    assert ax.get_ylabel() == "loss" and len(ax.lines[0].get_xdata()) == 25
    labels = ax.get_legend_handles_labels()[1]
    assert "undone jump" in labels and "jump" not in labels
    model2, opt2, _ = _setup()
    h2 = Nowcaster(kind="linefit").attach(model2, opt2, period=10, horizon=1, total_steps=100)
    _run(model2, opt2, data, 25)  # no loss reported
    ax2 = plot(h2)
    assert ax2.get_ylabel() == "parameter change" and "jump" in ax2.get_legend_handles_labels()[1]
    assert list(ax2.lines[1].get_ydata()) == [r["delta_norm"] for r in h2.history]
    with pytest.raises(TypeError, match="plot\\(\\) takes a NowcastHook"):
        plot(model)


def test_a_non_finite_loss_after_a_jump_undoes_it_and_per_sample_losses_count_as_their_mean():
    model, opt, data = _setup()
    h = Nowcaster(kind="linefit").attach(model, opt, period=10, horizon=1, total_steps=100)
    _run(model, opt, data, 10, h)
    x, y = data[10 % len(data)]
    h.report_loss(torch.tensor([float("nan"), 1.0]))  # per-sample losses on the jumped weights: mean NaN
    opt.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    opt.step()
    assert h.undone == 1 and h.history[0]["undone"]
    model2, opt2, _ = _setup()
    h2 = Nowcaster(kind="linefit").attach(model2, opt2, period=10, horizon=1, total_steps=100)
    _run(model2, opt2, data, 10, h2)
    h2.report_loss(torch.tensor([0.0, 2.0 * h2.losses[-1][1]]))  # mean: the loss before, no spike
    _run(model2, opt2, data, 1, start=10)
    assert h2.undone == 0 and h2.history[0]["loss_after"] == pytest.approx(h2.losses[-1][1])
