"""The prepared jump (``JumpPlan``): equal to the streamed and the batched prediction for every example
architecture and nowcaster kind, following changes of the nowcaster's weights, refusing bad windows;
the hook's jumps through it equal those of the streamed path, also after remove / re-attach, a
state-dict resume and replaced parameter storage."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightspace as ws
import weightspace.nowcast.hook as hook_mod
from weightspace.examples import EXAMPLES, build_example
from weightspace.nowcast import Nowcaster, NowcastLayout
from weightspace.nowcast.plan import JumpPlan
from weightspace.nowcast.stream import predict_stream

from .helpers import randomized_nowcaster, train_steps

ALL_BLOCKS, NO_BLOCKS = 1, 1 << 40


_randomized = randomized_nowcaster


def _window(spec: ws.GraphSpec, model: nn.Module, seed: int, c: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    flat = spec.flatten(model.state_dict()).float()
    drift = torch.randn(flat.shape, generator=g) * 0.01
    return torch.stack([flat + k * drift + 0.003 * k * torch.randn(flat.shape, generator=g) for k in range(c)])


def _reference(nc: Nowcaster, lay: NowcastLayout, win: torch.Tensor, k: int) -> torch.Tensor:
    with torch.inference_mode():
        return predict_stream(nc, lay, win, k)


def _close(got: torch.Tensor, ref: torch.Tensor) -> bool:
    return got.shape == ref.shape and bool((got - ref).abs().max() <= 1e-5 * (1 + ref.abs().max()))


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), name=st.sampled_from(sorted(EXAMPLES)),
       kind=st.sampled_from(["graph", "mlp", "linefit"]), block_min=st.sampled_from([ALL_BLOCKS, 64, NO_BLOCKS]),
       k=st.integers(1, 6))
def test_prepared_jump_equals_the_streamed_and_the_batched_prediction(seed, name, kind, block_min, k):
    model, x = build_example(name, seed=seed % 7)
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    nc = _randomized(kind, seed)
    win = _window(spec, model, seed)
    plan = JumpPlan(nc, lay, block_min=block_min)
    ref = _reference(nc, lay, win, k)
    assert _close(plan(win, k), ref), (name, kind, block_min)
    assert _close(plan(list(win.unbind(0)), k), ref)  # rows, as a ring buffer hands them over
    assert _close(nc.predict(plan, win, horizon=k), ref)  # predict dispatches to the plan
    assert _close(plan(win, k), nc.predict(lay, win[None], horizon=k)[0])  # the batched forward pass
    assert torch.equal(win, _window(spec, model, seed))  # the window is read, not changed


@pytest.mark.parametrize("one_hot_max, dense_groups", [(0, 1 << 21), (16, 1 << 21), (16, 0)])
@pytest.mark.parametrize("name", ["vit", "cnn_flatten_bn"])
def test_every_way_of_summing_groups_and_adding_embeddings_gives_the_same_prediction(
        name, one_hot_max, dense_groups, monkeypatch):
    """Groups as runs (segment means), scattered groups (a dense product, or scatter-adds past its size
    limit); embedding rows as one-hot features or as a gathered table."""
    import dataclasses

    import weightspace.nowcast.plan as plan_mod

    monkeypatch.setattr(plan_mod, "_ONE_HOT_MAX", one_hot_max)
    monkeypatch.setattr(plan_mod, "_DENSE_GROUPS", dense_groups)
    model, x = build_example(name)
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    g = lay.slot_tensor.clone()
    g[: g.numel() // 2] = g[: g.numel() // 2].flip(0)  # groups no longer runs in flat order
    scattered = dataclasses.replace(lay, slot_tensor=g, cache={})
    nc = _randomized("graph", 5)
    win = _window(spec, model, 5)
    for layout, runs in ((lay, True), (scattered, False)):
        plan = JumpPlan(nc, layout)
        assert (plan._lengths is not None) == runs and (plan._kinds is not None) == (one_hot_max > 0)
        assert (plan._gm is not None) == (not runs and dense_groups > 0)
        assert _close(plan(win, 3), _reference(nc, layout, win, 3))
    assert not torch.allclose(JumpPlan(nc, scattered)(win, 3), JumpPlan(nc, lay)(win, 3), atol=1e-4)


@pytest.mark.parametrize("kind", ["graph", "mlp"])
def test_a_parameter_far_outside_its_group_is_clamped_in_the_features_but_not_in_the_line(kind):
    """One weight moves 100 times further per step than its group on average: its features (slope,
    differences) hit the clamp at 50 step scales, its fitted line does not; as in the streamed path."""
    model, x = build_example("mlp")
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    nc = _randomized(kind, 6)
    flat = spec.flatten(model.state_dict()).float()
    win = flat.repeat(5, 1)
    win[:, 0] += torch.arange(5.0)  # the group's other entries stay: its step scale is 1 / (group size)
    plan = JumpPlan(nc, lay)
    got, ref = plan(win, 2), _reference(nc, lay, win, 2)
    assert _close(got, ref)
    assert plan._rowviews[5][0] == 50.0  # the slope feature is clamped
    assert abs(float(got[0]) - 2.0) < 0.5  # the line (1 per spacing, 2 spacings ahead) is not


@pytest.mark.parametrize("c", [2, 3, 7])
def test_prepared_linefit_takes_any_context(c):
    model, x = build_example("cnn_gap")
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    nc = Nowcaster(kind="linefit", horizons=8)
    win = _window(spec, model, 3, c=c)
    plan = JumpPlan(nc, lay, context=c)
    for k in (1, 8):
        assert _close(plan(win, k), _reference(nc, lay, win, k))
    # a straight line is extrapolated exactly
    line = win[0] + torch.arange(c, dtype=torch.float32)[:, None] * 0.01
    assert torch.allclose(plan(line, 3), torch.full((lay.num_params,), 0.03), atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_prepared_linefit_sums_its_slope_from_the_differences_as_the_streamed_path(threads):
    """The prepared Linefit takes its slope from the window's differences, as ``param_features`` does, so the
    two paths agree to rounding of the result (not of the snapshots: summing the slope from the snapshots
    left a residue of about 2e-7 here, depending on the BLAS kernel); a still window gives at most the
    rounding of its mean, a moving one is extrapolated (sensitivity)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, x = build_example("cnn_gap")
        spec = ws.GraphSpec.from_module(model, x)
        lay = NowcastLayout.from_spec(spec)
        flat = spec.flatten(model.state_dict()).float() * 3.7  # values whose sums over the window round
        nc = Nowcaster(kind="linefit")
        plan = JumpPlan(nc, lay)
        g = torch.Generator().manual_seed(0)
        for win in (flat.repeat(5, 1), flat + torch.randn(5, flat.numel(), generator=g) * 0.01):
            ref = _reference(nc, lay, win, 4)
            assert (plan(win, 4) - ref).abs().max() <= 2e-8 * (1 + ref.abs().max())
        assert ref.abs().max() > 1e-2  # the moving window is extrapolated
    finally:
        torch.set_num_threads(prev)


def test_prepared_jump_follows_changes_of_the_nowcaster_weights():
    """What the plan gathers from the weights in advance is gathered again when they change: in place
    (an optimizer step, ``load_state_dict``) or by replacing a layer."""
    model, x = build_example("vit")
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    nc = _randomized("graph", 1)
    win = _window(spec, model, 1)
    plan = JumpPlan(nc, lay)
    before = plan(win, 2)
    with torch.no_grad():
        nc.kind_emb.weight.mul_(-2.0)
        nc.encode.bias.add_(0.5)
    after = plan(win, 2)
    assert not torch.allclose(after, before, atol=1e-4)
    assert _close(after, _reference(nc, lay, win, 2))
    nc.load_state_dict(_randomized("graph", 2).state_dict())
    assert _close(plan(win, 2), _reference(nc, lay, win, 2))
    nc.node_in = nn.Linear(nc.node_in.in_features, nc.node_in.out_features)
    assert _close(plan(win, 2), _reference(nc, lay, win, 2))
    mlp = _randomized("mlp", 3)
    mplan = JumpPlan(mlp, lay)
    first = mplan(win, 1)
    with torch.no_grad():
        mlp.encode[0].weight.mul_(3.0)
    assert not torch.allclose(mplan(win, 1), first, atol=1e-4)
    assert _close(mplan(win, 1), _reference(mlp, lay, win, 1))


def test_prepared_jump_refuses_bad_windows_and_horizons():
    model, x = build_example("mlp")
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    nc = _randomized("graph")
    plan = JumpPlan(nc, lay)
    win = _window(spec, model, 0)
    with pytest.raises(ValueError, match=r"window must be \[5, "):
        plan(win[:, :-1], 1)
    with pytest.raises(ValueError, match=r"window must be \[5, "):
        plan(win[:4], 1)
    with pytest.raises(ValueError, match=r"horizon must lie in \[1, 6\]"):
        plan(win, 7)
    with pytest.raises(ValueError, match="reads 5 snapshots"):
        JumpPlan(nc, lay, context=4)
    with pytest.raises(ValueError, match="at least 2 snapshots"):
        JumpPlan(Nowcaster(kind="linefit"), lay, context=1)
    # another nowcaster's plan stands for its layout only: predict takes the general path
    other = _randomized("graph", 9)
    assert _close(other.predict(plan, win, horizon=3), _reference(other, lay, win, 3))


# ----------------------------------------------------------------------------- the hook
def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(16, 6, generator=g), torch.randn(16, 3, generator=g)) for _ in range(8)]
    return model, opt, data


_train = train_steps


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _run(nc, steps=45, **kw):
    model, opt, data = _setup()
    h = nc.attach(model, opt, period=10, total_steps=100, **kw)
    _train(model, opt, data, steps)
    return model, h


@pytest.mark.parametrize("kind", ["graph", "mlp", "linefit"])
def test_hook_jumps_through_the_plan_as_through_the_streamed_path(kind, monkeypatch):
    nc = Nowcaster.pretrained() if kind == "graph" else _randomized(kind, 4, horizons=8)
    fast, hf = _run(nc)
    assert hf._plan is not None and hf.jumps == 4
    monkeypatch.setattr(hook_mod, "PLAN_MAX", 0)  # every model is "large": streamed in chunks
    slow, hs = _run(nc)
    assert hs._plan is None and hs.jumps == 4
    assert torch.allclose(_flat(fast), _flat(slow), atol=1e-5)
    assert not torch.allclose(_flat(fast), _flat(_setup()[0]), atol=1e-3)  # the jumps moved the weights


def test_hook_plan_after_remove_and_re_attach():
    nc = Nowcaster.pretrained()
    ref, _ = _run(nc)
    model, opt, data = _setup()
    h = nc.attach(model, opt, period=10, total_steps=100)
    _train(model, opt, data, 25)
    h.remove()
    assert h._plan is None  # its buffers are released
    _train(model, opt, data, 5, start=25)
    assert h.jumps == 2 and h.step == 25
    h2 = nc.attach(model, opt, period=10, total_steps=100)  # counts its own steps from here
    _train(model, opt, data, 20, start=30)
    assert h2._plan is not None and h2.jumps == 2 and h2.history[-1]["step"] == 20 and h.step == 25
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # detached for 5 steps and re-attached: a different run from the uninterrupted one
    assert not torch.allclose(_flat(model), _flat(_run(nc, steps=50)[0]), atol=1e-6)


def test_hook_plan_resumes_from_state_dicts():
    nc = Nowcaster.pretrained()
    ref, _ = _run(nc)
    m1, o1, data = _setup()
    h1 = nc.attach(m1, o1, period=10, total_steps=100)
    _train(m1, o1, data, 17)
    saved_opt, saved_model = copy.deepcopy(o1.state_dict()), copy.deepcopy(m1.state_dict())
    h1.remove()
    m2, o2, _ = _setup(seed=5)
    h2 = nc.attach(m2, o2, period=10, total_steps=100)
    m2.load_state_dict(saved_model)
    o2.load_state_dict(saved_opt)
    _train(m2, o2, data, 28, start=17)
    assert h2.jumps == 4
    assert torch.allclose(_flat(m2), _flat(ref), atol=1e-5)


def test_hook_plan_writes_into_replaced_parameter_storage():
    """Loading weights in place, or giving a parameter new storage (as ``module.to`` does), mid-run: the
    next jump reads the live values and writes the window's last snapshot plus the streamed prediction."""
    nc = Nowcaster.pretrained()
    model, opt, data = _setup()
    h = nc.attach(model, opt, period=10, horizon=3)
    _train(model, opt, data, 11)
    model.load_state_dict(_setup(seed=3)[0].state_dict())  # values replaced in place
    with torch.no_grad():
        old = model[2].weight.data
        model[2].weight.data = old.clone() * 1.5  # the parameter's storage replaced
    old_values = old.clone()
    seen = {}
    jump = h._jump

    def spy():
        seen["window"] = h.window
        jump()

    h._jump = spy
    _train(model, opt, data, 9, start=11)  # snapshots at 12, 14, 16, 18, 20; the jump at 20
    assert h.jumps == 2 and h.history[-1]["step"] == 20
    window = seen["window"]
    assert window.shape[0] == 5
    expect = window[-1] + _reference(nc, h.layout, window, 3)
    assert torch.allclose(h.spec.flatten(model.state_dict()), expect, atol=1e-6)
    assert torch.equal(old, old_values)  # the replaced storage is neither read nor written
    # the snapshots saw the replacement: the second layer's weights are those loaded, times 1.5
    i = h.spec.names.index("2.weight")
    o = sum(int(torch.Size(s).numel()) for s in h.spec.shapes[:i])
    n = model[2].weight.numel()
    loaded = _setup(seed=3)[0][2].weight.detach().reshape(-1) * 1.5
    assert (window[0][o: o + n] - loaded).abs().max() < 0.05  # one Adam step (lr 1e-2) away from it
    assert (window[0][o: o + n] - old_values.reshape(-1)).abs().max() > 0.1
