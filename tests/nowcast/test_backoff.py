"""The hook's do-no-harm rules: no jump while the learning rate rises (warm-up), and the backoff that
shrinks the horizon after jumps that did not pay (``jump_paid``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from weightspace.nowcast import Nowcaster
from weightspace.nowcast.hook import BACKOFF_FACTOR, jump_paid


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 3, generator=g)
    data = []
    for _ in range(8):
        x = torch.randn(32, 6, generator=g)
        data.append((x, x @ w))
    return model, opt, data


def _run(model, opt, data, steps, handle=None, sched=None, start=0):
    for i in range(start, start + steps):
        x, y = data[i % len(data)]
        loss = ((model(x) - y) ** 2).mean()
        if handle is not None:
            handle.report_loss(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()


# ---------------------------------------------------------------- warm-up
@pytest.mark.parametrize("skip", [True, False])
def test_no_jump_while_the_learning_rate_rises(skip):
    model, opt, data = _setup()
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=25)
    h = Nowcaster(kind="linefit").attach(model, opt, period=10, horizon=2, total_steps=100, skip_warmup=skip)
    _run(model, opt, data, 40, sched=sched)
    steps = [r["step"] for r in h.history if r["applied"]]
    if skip:  # steps 10 and 20 fall in the warm-up; 30 (window 22..30 starts at the warm-up's last rise) too
        assert steps == [40] and h.skipped_warmup == 3 and h.summary()["skipped_warmup"] == 3
    else:  # sensitivity: the same run jumps in the warm-up without the rule
        assert steps == [10, 20, 30, 40] and h.skipped_warmup == 0


def test_a_constant_or_falling_learning_rate_does_not_block_jumps():
    model, opt, data = _setup()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40)
    h = Nowcaster(kind="linefit").attach(model, opt, period=10, horizon=2, total_steps=100)
    _run(model, opt, data, 40, sched=sched)
    assert [r["step"] for r in h.history if r["applied"]] == [10, 20, 30, 40] and h.skipped_warmup == 0


def test_the_warmup_rule_survives_a_resume():
    model, opt, data = _setup()
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=25)
    h = Nowcaster(kind="linefit").attach(model, opt, period=10, horizon=2, total_steps=100)
    _run(model, opt, data, 17, sched=sched)
    st_ = h.state_dict()
    assert len(st_["window_lr"]) == st_["window"].shape[0]
    h.remove()
    m2, o2, _ = _setup()
    o2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    h2 = Nowcaster(kind="linefit").attach(m2, o2, period=10, horizon=2, total_steps=100)
    h2.load_state_dict(st_)
    _run(m2, o2, data, 3, start=17)  # constant lr now, but the window (from step 12) saw it rise
    assert h2.jumps == 0 and h2.skipped_warmup == 2


# ---------------------------------------------------------------- jump_paid
def test_jump_paid_on_hand_made_curves():
    falling = [4.0] * 5 + [3.0] * 5  # damped trend: 2.5 next (linear: 2.0)
    assert jump_paid(falling, [2.4] * 5) is True
    assert jump_paid(falling, [2.6] * 5) is False  # below the latest level, but not below the trend
    assert jump_paid(falling, [2.4] * 5, trend=1.0) is False and jump_paid(falling, [2.9] * 5, trend=0.0) is True
    rising = [3.0] * 5 + [4.0] * 5  # a rising loss: the jump must at least beat the latest level
    assert jump_paid(rising, [3.9] * 5) is True and jump_paid(rising, [4.1] * 5) is False
    assert jump_paid(falling, [float("nan")] * 5) is False
    assert jump_paid(falling[:9], [1.0] * 5) is None and jump_paid(falling, [1.0]) is None
    assert jump_paid([float("inf")] * 10, [1.0] * 5) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.1, 10.0), min_size=6, max_size=6), st.lists(st.floats(0.1, 10.0), min_size=3, max_size=3),
       st.floats(-5.0, 5.0), st.floats(0.5, 4.0))
def test_jump_paid_is_invariant_to_shift_and_scale_of_the_loss(before, after, shift, scale):
    v = jump_paid(before, after)
    moved = jump_paid([scale * b + shift for b in before], [scale * a + shift for a in after])
    b1, b0 = sum(before[3:]) / 3, sum(before[:3]) / 3
    margin = abs(sum(after) / 3 - min(b1, b1 - 0.5 * (b0 - b1)))
    if margin > 1e-6:
        assert moved == v


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.1, 10.0), min_size=6, max_size=6), st.lists(st.floats(0.1, 10.0), min_size=3, max_size=3))
def test_jump_paid_sensitivity_a_worse_loss_after_the_jump_turns_the_verdict(before, after):
    # sensitivity beside the invariance: raising only the losses after the jump far enough makes it not pay
    assert jump_paid(before, [a + 100.0 for a in after]) is False
    assert jump_paid(before, [a - 100.0 for a in after]) is True


# ---------------------------------------------------------------- the backoff in the hook
class _Off(Nowcaster):
    """Predicts a change that raises the loss without doubling it (the spike guard lets it through)."""

    def predict(self, spec, window, horizon=None):
        d = super().predict(spec, window, horizon)
        return torch.full_like(d, 0.05 * float(horizon or 1))


@pytest.mark.parametrize("backoff", [True, False])
def test_jumps_that_do_not_pay_shrink_the_horizon(backoff):
    model, opt, data = _setup()
    h = _Off(kind="linefit").attach(model, opt, period=10, horizon=8, total_steps=1000, spike_guard=None,
                                    backoff=backoff)
    _run(model, opt, data, 100, h)
    ks = [r["horizon"] for r in h.history if r["applied"]]
    if backoff:
        assert h.summary()["not_paid"] >= 3 and h.reach < 1.0
        assert ks[0] == 8 and ks[-1] < ks[0] and min(ks) <= 8 * BACKOFF_FACTOR ** 2
        verdicts = [r["paid"] for r in h.history if r["paid"] is not None]
        assert verdicts[0] is False and verdicts.count(False) > verdicts.count(True)
    else:  # sensitivity: without the backoff the horizon never moves
        assert set(ks) == {8} and h.reach == 1.0 and all(r["paid"] is None for r in h.history)


def test_jumps_that_pay_keep_the_horizon():
    model, opt, data = _setup()
    h = Nowcaster(kind="linefit").attach(model, opt, period=10, horizon=2, total_steps=1000, backoff=True)
    _run(model, opt, data, 100, h)
    verdicts = [r["paid"] for r in h.history if r["paid"] is not None]
    assert verdicts and sum(verdicts) > len(verdicts) / 2 and h.reach >= BACKOFF_FACTOR ** 2


def test_the_backoff_does_nothing_without_reported_losses():
    model, opt, data = _setup()
    h = _Off(kind="linefit").attach(model, opt, period=10, horizon=8, total_steps=1000, spike_guard=None, backoff=True)
    _run(model, opt, data, 60)
    assert h.reach == 1.0 and {r["horizon"] for r in h.history} == {8}


class _Clock:
    """A fake clock: plain steps take 1 ms, each jump of :class:`_OffTimed` 2 ms (auto period decisions
    made on these times, not on the machine's)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _OffTimed(_Off):
    clock: _Clock

    def predict(self, spec, window, horizon=None):
        self.clock.t += 2e-3
        return super().predict(spec, window, horizon)


@pytest.mark.parametrize("backoff", [True, False])
def test_auto_period_stretches_when_jumps_at_the_shortest_horizon_still_do_not_pay(backoff):
    model, opt, data = _setup()
    clock, nc = _Clock(), _OffTimed(kind="linefit")
    nc.clock = clock
    h = nc.attach(model, opt, horizon=32, total_steps=10_000, spike_guard=None, backoff=backoff, auto_budget=1.0)
    h._clock = clock
    for i in range(600):
        clock.t += 1e-3
        _run(model, opt, data, 1, h, start=i)
    if backoff:  # reach 1 -> 1/32 in five failures; failures after that double the spacing
        assert h.reach <= 1 / 8 and max(r["stretch"] for r in h.history) >= 2
        assert max(r["period"] for r in h.history) >= 4 * h.context
        assert h.state_dict()["stretch"] == h.stretch
    else:  # sensitivity: the cost rule alone (2 ms per jump, 1 ms per step, budget 1) keeps a period of 5
        assert {r["stretch"] for r in h.history} == {1} and h.reach == 1.0
        assert {r["period"] for r in h.history[1:]} == {5}
