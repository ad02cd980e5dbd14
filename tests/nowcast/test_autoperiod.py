"""period="auto": the decision logic on injected timings (AutoPeriod), the hook following it under a fake
clock, the log line of a change, its state dict, and the warning when the horizon cannot decay."""

from __future__ import annotations

import logging
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from weightspace.nowcast import AUTO_BUDGET, JUMP_YIELD, AutoPeriod, Nowcaster, total_steps_from_scheduler

from .helpers import train_steps as _train


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(16, 6, generator=g), torch.randn(16, 3, generator=g)) for _ in range(8)]
    return model, opt, data


def _timed(a: AutoPeriod, window: float, step: float) -> AutoPeriod:
    for _ in range(5):
        a.add_step(step)
    a.add_window(window)
    return a


def test_auto_period_before_any_timing_is_the_start_period():
    a = AutoPeriod(context=5)
    assert a.current == 4 and a.stride(32) == 4  # period 20 until a jump was timed
    assert AutoPeriod(context=3).current == 7  # 21: the start period rounded up to a multiple of context
    assert a.share(4, 32) is None


def test_auto_period_picks_the_smallest_stride_within_the_budget():
    # a window of jumps costs 6.5 plain steps of 1 ms: at horizon 32, 3 spacings (96 steps saved) keep the
    # cost at 6.8%; 2 spacings (64 steps) would cost 10.2%
    a = _timed(AutoPeriod(context=5, jump_yield=1.0), window=6.5e-3, step=1e-3)
    assert a.stride(32) == 3
    assert a.share(3, 32) == pytest.approx(6.5 / 96) and a.share(2, 32) > AUTO_BUDGET
    # the horizon decays to 1: the period grows so that a jump still pays 10x its cost
    assert a.stride(1) == 65 and a.current == 65
    # a looser budget, a shorter period
    assert _timed(AutoPeriod(context=5, budget=0.5, jump_yield=1.0), 6.5e-3, 1e-3).stride(32) == 1


def test_auto_period_counts_a_jump_as_saving_its_yield():
    # a jump that saves a quarter of the steps it goes ahead needs spacings 4x as long for the same budget
    full = _timed(AutoPeriod(context=5, jump_yield=1.0), window=6.5e-3, step=1e-3)
    quarter = _timed(AutoPeriod(context=5, jump_yield=0.25), window=6.5e-3, step=1e-3)
    assert full.stride(32) == 3 and quarter.stride(32) == 9  # ceil(6.5 / (0.1 * 0.25 * 32))
    assert quarter.share(9, 32) == pytest.approx(6.5 / (0.25 * 32 * 9)) and quarter.share(8, 32) > AUTO_BUDGET
    assert AutoPeriod(context=5).jump_yield == JUMP_YIELD and 0 < JUMP_YIELD <= 1
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="jump_yield is the steps a jump saves per step it goes ahead"):
            AutoPeriod(context=5, jump_yield=bad)
        with pytest.raises(ValueError, match="jump_yield"):
            Nowcaster(kind="linefit").attach(*_setup()[:2], jump_yield=bad, total_steps=10)


def test_auto_period_is_bounded_and_robust_to_a_slow_step():
    a = _timed(AutoPeriod(context=5), window=1.0, step=1e-3)
    assert a.stride(1) == a.max_stride == 200  # a period of at most 1000 steps
    b = _timed(AutoPeriod(context=5, jump_yield=1.0), window=6.5e-3, step=1e-3)
    b.add_step(5.0)  # an evaluation between two steps
    assert b.step_seconds == pytest.approx(1e-3) and b.stride(32) == 3


@settings(max_examples=200, deadline=None)
@given(window=st.floats(1e-5, 10.0), step=st.floats(1e-5, 1.0), k=st.integers(1, 32),
       budget=st.floats(0.01, 1.0), jump_yield=st.floats(0.05, 1.0))
def test_auto_period_is_the_smallest_stride_within_budget(window, step, k, budget, jump_yield):
    a = _timed(AutoPeriod(context=5, budget=budget, jump_yield=jump_yield), window, step)
    s = a.stride(k)
    assert 1 <= s <= a.max_stride
    assert s == a.max_stride or a.share(s, k) <= budget * (1 + 1e-9)
    assert s == 1 or a.share(s - 1, k) > budget * (1 - 1e-9)


def test_auto_period_refuses_a_bad_budget():
    with pytest.raises(ValueError, match="budget is a share of the saved time in"):
        AutoPeriod(context=5, budget=0.0)
    model, opt, _ = _setup()
    with pytest.raises(ValueError, match="budget"):
        Nowcaster(kind="linefit").attach(model, opt, auto_budget=2.0, total_steps=10)
    with pytest.raises(ValueError, match="or 'auto', got 'fast'"):
        Nowcaster(kind="linefit").attach(model, opt, period="fast", total_steps=10)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Slow(Nowcaster):
    """A Linefit nowcaster whose every prediction takes ``cost`` seconds on a fake clock."""

    clock: _Clock
    cost = 0.0

    def predict(self, spec, window, horizon=None):
        self.clock.now += self.cost
        return super().predict(spec, window, horizon)


def _loop_with_clock(model, opt, data, steps, clock, step_seconds, start=0):
    for i in range(start, start + steps):
        clock.now += step_seconds  # the plain step's own time
        _train(model, opt, data, 1, start=i)


def test_hook_follows_the_auto_period_on_a_fake_clock(caplog):
    model, opt, data = _setup()
    nc = _Slow(kind="linefit")
    clock = nc.clock = _Clock()
    nc.cost = 6.5e-3
    h = nc.attach(model, opt, horizon=4, total_steps=1000, jump_yield=1.0)
    h._clock = clock  # the hook reads its time from the fake clock
    assert h.period == 20 and h.auto is not None
    with caplog.at_level(logging.INFO, logger="weightspace.nowcast.hook"):
        _loop_with_clock(model, opt, data, 20, clock, 1e-3)
    # first jump at step 20; its window cost 6.5 ms of 1 ms steps; at horizon 4 a spacing of 17 steps
    # (68 steps ahead) keeps it under 10%: ceil(6.5 / (0.1 * 4 * 1))
    assert h.jumps == 1 and h.history[0]["step"] == 20 and h.history[0]["period"] == 20
    assert h.stride == 17 and h.period == 85
    assert any("period 20 -> 85" in r.getMessage() and "horizon 4" in r.getMessage() for r in caplog.records)
    _loop_with_clock(model, opt, data, 85, clock, 1e-3, start=20)
    assert [r["step"] for r in h.history] == [20, 105] and h.history[1]["steps_ahead"] == 68
    # a cheaper jump: the period shrinks again after the next windows' median moves
    nc.cost = 0.4e-3
    _loop_with_clock(model, opt, data, 85 * 3, clock, 1e-3, start=105)
    assert h.period < 85
    s = h.summary()
    assert s["auto"] and s["period"] == h.period and s["step_seconds"] == pytest.approx(1e-3)


def test_explicit_period_is_never_changed():
    model, opt, data = _setup()
    nc = _Slow(kind="linefit")
    clock = nc.clock = _Clock()
    nc.cost = 1.0  # jumps that never pay
    h = nc.attach(model, opt, period=10, horizon=2, total_steps=100)
    h._clock = clock
    _loop_with_clock(model, opt, data, 40, clock, 1e-3)
    assert h.auto is None and h.period == 10 and [r["step"] for r in h.history] == [10, 20, 30, 40]


def test_auto_state_dict_round_trip_and_refusal_by_a_fixed_period():
    model, opt, data = _setup()
    nc = _Slow(kind="linefit")
    clock = nc.clock = _Clock()
    nc.cost = 6.5e-3
    h = nc.attach(model, opt, horizon=4, total_steps=1000, jump_yield=1.0)
    h._clock = clock
    _loop_with_clock(model, opt, data, 30, clock, 1e-3)
    st_ = h.state_dict()
    assert st_["period"] == "auto" and st_["auto"]["current"] == 17 and st_["anchor"] == 20
    h2 = Nowcaster(kind="linefit").attach(*_setup()[:2], horizon=4, total_steps=1000, jump_yield=1.0)
    h2.load_state_dict(st_)
    assert h2.period == 85 and h2.step == 30 and h2.auto.window_seconds == pytest.approx(6.5e-3)
    with pytest.raises(ValueError, match="saved hook state has period=auto"):
        Nowcaster(kind="linefit").attach(*_setup()[:2], period=20, horizon=4).load_state_dict(st_)


def test_a_horizon_that_cannot_decay_is_warned_once_at_attach():
    model, opt, _ = _setup()
    with pytest.warns(UserWarning, match="no total_steps given: the jump horizon stays at its maximum") as rec:
        Nowcaster(kind="linefit").attach(model, opt)
    assert len([w for w in rec if "total_steps" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Nowcaster(kind="linefit").attach(*_setup()[:2], total_steps=100)
        Nowcaster(kind="linefit").attach(*_setup()[:2], horizon=3)


def test_total_steps_from_a_scheduler():
    _, opt, _ = _setup()
    one = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=300)
    assert total_steps_from_scheduler(one) == 300
    assert total_steps_from_scheduler(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50)) == 50
    assert total_steps_from_scheduler(torch.optim.lr_scheduler.StepLR(opt, step_size=5)) is None
    assert math.isclose(AUTO_BUDGET, 0.10)
