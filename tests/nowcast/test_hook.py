"""NowcastHook: jumps in a plain loop, exactness, schedulers, accumulation, AMP, state dicts, optimizer
state after a jump, refusal of unsupported models, non-finite jumps, detaching, Lightning adapter."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import weightspace as ws
from weightspace.nowcast import Nowcaster
from weightspace.nowcast.hook import NowcastHook, horizon_schedule

from .helpers import train_steps as _train


def _setup(seed: int = 0, lr: float = 1e-2):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(16, 6, generator=g), torch.randn(16, 3, generator=g)) for _ in range(8)]
    return model, opt, data


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_jumps_happen_every_period_and_apply_the_prediction_exactly():
    model, opt, data = _setup()
    nc = Nowcaster(kind="linefit", horizons=4)
    h = nc.attach(model, opt, period=8, context=4, horizon=3)
    assert isinstance(h, NowcastHook) and h.stride == 2
    _train(model, opt, data, 7)
    window = h.window  # snapshots at steps 2, 4, 6
    assert window.shape[0] == 3 and h.jumps == 0
    x, y = data[7]
    loss = ((model(x) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()  # step 8: snapshot, then the jump
    assert h.step == 8 and h.jumps == 1
    rec = h.history[-1]
    assert rec["applied"] and rec["horizon"] == 3 and rec["steps_ahead"] == 6
    # replay the jump: the same window (steps 2..8, before the jump) through the same nowcaster
    model2, opt2, _ = _setup()
    _train(model2, opt2, data, 8)
    snaps = []
    model3, opt3, _ = _setup()
    for i in range(8):
        _train(model3, opt3, data, 1, start=i)
        if (i + 1) % 2 == 0:
            snaps.append(ws.GraphSpec.from_module(model3).flatten(model3.state_dict()))
    w = torch.stack(snaps)
    expect = w[-1] + nc.predict(h.spec, w)[2]
    assert torch.allclose(h.spec.flatten(model.state_dict()), expect, atol=1e-6)
    assert not torch.allclose(_flat(model), _flat(model2))
    _train(model, opt, data, 16, start=8)
    assert h.jumps == 3 and h.step == 24


def test_plain_loop_with_lr_scheduler_and_total_steps():
    model, opt, data = _setup()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    h = Nowcaster(kind="linefit").attach(model, opt, period=10, context=5, total_steps=30)
    _train(model, opt, data, 40, sched=sched)
    assert h.step == 40 and h.jumps == 2  # steps 10, 20; none at 30 (the end of the planned run) or later
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**8)
    ks = [r["horizon"] for r in h.history]
    assert ks[0] >= ks[1]  # decaying schedule


def test_horizon_schedule():
    k = horizon_schedule(16, 1, total_steps=100)
    assert k(0) == 16 and k(100) == 1 and k(50) == round(1 + 15 * 0.25)
    assert horizon_schedule(5)(10_000) == 5
    with pytest.raises(ValueError, match="at least 1"):
        horizon_schedule(0)


def test_gradient_accumulation_counts_optimizer_steps():
    model, opt, data = _setup()
    h = Nowcaster(kind="linefit").attach(model, opt, period=10, context=5)
    for i in range(40):  # accumulate 4 micro-batches per optimizer step -> 10 steps
        x, y = data[i % len(data)]
        (((model(x) - y) ** 2).mean() / 4).backward()
        if (i + 1) % 4 == 0:
            opt.step()
            opt.zero_grad()
    assert h.step == 10 and h.jumps == 1


def test_autocast_bfloat16_on_cpu():
    model, opt, data = _setup()
    h = Nowcaster(kind="linefit").attach(model, opt, period=10, context=5, horizon=2)
    for i in range(20):
        x, y = data[i % len(data)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        loss = ((out.float() - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert h.jumps == 2 and all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_state_dict_resume_matches_uninterrupted_run():
    model, opt, data = _setup()
    nc = Nowcaster(kind="linefit")
    Nowcaster.attach(nc, model, opt, period=10, context=5, horizon=3)
    _train(model, opt, data, 33)
    ref = _flat(model)
    # interrupted at step 17 (mid-window), saved with the ordinary state dicts, resumed elsewhere
    m1, o1, _ = _setup()
    h1 = nc.attach(m1, o1, period=10, context=5, horizon=3)
    _train(m1, o1, data, 17)
    saved_opt = copy.deepcopy(o1.state_dict())
    saved_model = copy.deepcopy(m1.state_dict())
    assert "nowcast" in saved_opt and saved_opt["nowcast"]["step"] == 17
    assert saved_opt["nowcast"]["window"].shape[0] == 3  # the snapshots of steps 12, 14, 16
    h1.remove()
    m2, o2, _ = _setup(seed=5)
    h2 = nc.attach(m2, o2, period=10, context=5, horizon=3)
    m2.load_state_dict(saved_model)
    o2.load_state_dict(saved_opt)
    assert h2.step == 17 and h2.jumps == 1
    _train(m2, o2, data, 16, start=17)
    assert h2.jumps == 3
    assert torch.allclose(_flat(m2), ref, atol=1e-6)
    # the hook's own state alone
    st = h2.state_dict()
    h3 = nc.attach(*_setup()[:2], period=10, context=5)
    h3.load_state_dict(st)
    assert h3.step == 33 and torch.equal(h3.window, h2.window)
    with pytest.raises(ValueError, match="period"):
        nc.attach(*_setup()[:2], period=20, context=5).load_state_dict(st)


@pytest.mark.parametrize("choice", ["keep", "reset"])
def test_optimizer_state_after_a_jump(choice):
    model, opt, data = _setup()
    h = Nowcaster(kind="linefit").attach(model, opt, period=10, context=5, horizon=2, optimizer_state=choice)
    _train(model, opt, data, 9)
    before = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()}
    _train(model, opt, data, 1, start=9)
    assert h.jumps == 1
    for p in model.parameters():
        if choice == "reset":
            assert p not in opt.state or not opt.state[p]
        else:
            assert int(opt.state[p]["step"]) == int(before[id(p)]["step"]) + 1
            assert opt.state[p]["exp_avg"].abs().sum() > 0
    _train(model, opt, data, 5, start=10)  # Adam carries on either way
    assert all(int(opt.state[p]["step"]) == (5 if choice == "reset" else 15) for p in model.parameters())


def test_frozen_parameters_and_buffers_stay():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model[0].weight.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    frozen = model[0].weight.detach().clone()
    h = Nowcaster(kind="linefit").attach(model, opt, period=5, context=5, horizon=4)
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    for _ in range(10):
        model.train()
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        rm = model[1].running_mean.clone()
        if h.step % 5 == 0:
            assert torch.equal(model[1].running_mean, rm)
    assert h.jumps == 2
    assert torch.equal(model[0].weight, frozen)


def test_unsupported_model_is_refused_naming_the_layer():
    model = nn.Sequential(nn.Linear(3, 4), nn.LSTM(4, 4))
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(ws.UnsupportedModuleError, match="LSTM"):
        Nowcaster(kind="linefit").attach(model, opt)
    assert not opt._optimizer_step_post_hooks


def test_bad_arguments():
    model, opt, _ = _setup()
    nc = Nowcaster(kind="linefit")
    with pytest.raises(ValueError, match="multiple of context"):
        nc.attach(model, opt, period=12, context=5)
    with pytest.raises(ValueError, match="optimizer_state"):
        nc.attach(model, opt, optimizer_state="zero")
    with pytest.raises(ValueError, match="horizon must lie"):
        nc.attach(model, opt, horizon=99)
    with pytest.raises(ValueError, match="reads 5 snapshots"):
        Nowcaster(kind="mlp").attach(model, opt, context=4, period=8)
    other = torch.optim.Adam([nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="updates none"):
        nc.attach(model, other)


class _Exploding(Nowcaster):
    def predict(self, spec, window, horizon=None):
        d = super().predict(spec, window, horizon).clone()
        d[..., 0] = float("nan")
        return d


def test_non_finite_jump_is_skipped_with_a_warning():
    model, opt, data = _setup()
    h = _Exploding(kind="linefit").attach(model, opt, period=10, context=5, horizon=2)
    _train(model, opt, data, 9)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        _train(model, opt, data, 1, start=9)
    assert h.jumps == 0 and h.skipped == 1 and not h.history[-1]["applied"]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    ref_model, ref_opt, _ = _setup()
    _train(ref_model, ref_opt, data, 10)
    assert torch.equal(_flat(model), _flat(ref_model))  # nothing was applied


def test_remove_detaches():
    model, opt, data = _setup()
    h = Nowcaster(kind="linefit").attach(model, opt, period=10, context=5)
    _train(model, opt, data, 5)
    h.remove()
    assert not h.attached
    _train(model, opt, data, 20)
    assert h.step == 5 and h.jumps == 0
    assert "nowcast" not in opt.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.load_state_dict(opt.state_dict())


def test_pretrained_nowcaster_in_a_loop():
    model, opt, data = _setup()
    nc = Nowcaster.pretrained()
    h = nc.attach(model, opt, period=4 * nc.context, total_steps=60)
    _train(model, opt, data, 60)
    assert h.jumps >= 2 and h.skipped == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_lightning_callback():
    pl = pytest.importorskip("lightning.pytorch" if _has("lightning") else "pytorch_lightning")
    from weightspace.nowcast.lightning import NowcastCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            x, y = batch
            return ((self(x) - y) ** 2).mean()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    ds = torch.utils.data.TensorDataset(torch.randn(64, 6), torch.randn(64, 3))
    cb = NowcastCallback(Nowcaster(kind="linefit"), period=5, horizon=2, model=lambda m: m.net)
    trainer = pl.Trainer(max_steps=20, callbacks=[cb], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Module(), torch.utils.data.DataLoader(ds, batch_size=8))
    # max_steps=20 becomes total_steps: jumps at 5, 10, 15, none at the end of the run
    assert cb.handle is not None and cb.handle.jumps == 3 and not cb.handle.attached


def _has(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_ring_buffer_holds_the_latest_snapshots_in_order():
    """Before ``start`` the window keeps rolling: the buffer wraps and still reads oldest first."""
    model, opt, data = _setup()
    h = Nowcaster(kind="linefit").attach(model, opt, period=8, context=4, start=100)
    spec = ws.GraphSpec.from_module(model)
    snaps = []
    for i in range(22):
        _train(model, opt, data, 1, start=i)
        if (i + 1) % 2 == 0:
            snaps.append(spec.flatten(model.state_dict()).float())
    assert h.jumps == 0
    assert torch.equal(h.window, torch.stack(snaps[-4:]))
    st = h.state_dict()
    h2 = Nowcaster(kind="linefit").attach(*_setup()[:2], period=8, context=4)
    h2.load_state_dict(st)
    assert torch.equal(h2.window, h.window)


def test_jump_with_a_subset_of_parameters_in_the_optimizer_moves_only_those():
    model, _, data = _setup()
    opt = torch.optim.Adam(model[2].parameters(), lr=1e-2)
    frozen = model[0].weight.detach().clone()
    h = Nowcaster(kind="linefit").attach(model, opt, period=4, context=2, horizon=4)
    _train(model, opt, data, 8)
    assert h.jumps == 2 and torch.equal(model[0].weight, frozen)


def _vit_setup(seed: int = 0):
    from model_zoo.archs import TinyViT

    torch.manual_seed(seed)
    model = TinyViT(image_size=8, patch=2, dim=16, heads=2, depth=1, mlp_ratio=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(8)]
    return model, opt, data


def _vit_train(model, opt, data, steps):
    for i in range(steps):
        x, y = data[i % len(data)]
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("hold", [None, ()])
def test_attention_projections_are_held_by_default_and_jump_with_an_empty_hold(hold):
    """By default a jump leaves the query/key/value weights and biases where the optimizer put them and
    moves every other parameter; ``hold=()`` moves them too."""
    model, opt, data = _vit_setup()
    before: dict[str, torch.Tensor] = {}
    # registered first, so it runs after the optimizer's update and before the nowcast hook's jump
    opt.register_step_post_hook(lambda *_: before.update({n: p.detach().clone() for n, p in model.named_parameters()}))
    nc = Nowcaster(kind="linefit", horizons=4)
    kw = {} if hold is None else {"hold": hold}
    h = nc.attach(model, opt, period=8, context=4, horizon=4, example_input=data[0][0][:2], **kw)
    _vit_train(model, opt, data, 8)
    assert h.jumps == 1
    after = dict(model.named_parameters())
    for name in ("encoder.layers.0.self_attn.in_proj_weight", "encoder.layers.0.self_attn.in_proj_bias"):
        assert torch.equal(after[name], before[name]) == (hold is None), name
    for name in ("encoder.layers.0.linear1.weight", "head.weight", "encoder.layers.0.self_attn.out_proj.weight"):
        assert not torch.equal(after[name], before[name]), name
    assert h.held == (48 * 16 + 48 if hold is None else 0)


def test_hold_names_a_role_and_refuses_unknown_ones():
    model, opt, data = _vit_setup()
    nc = Nowcaster(kind="linefit", horizons=4)
    h = nc.attach(model, opt, period=8, context=4, example_input=data[0][0][:2], hold=("attn_q",))
    assert h.held == 16 * 16 + 16  # the query rows of in_proj_weight and their biases
    h.remove()
    with pytest.raises(ValueError, match="unknown role 'attention'"):
        nc.attach(model, opt, period=8, context=4, example_input=data[0][0][:2], hold=("attention",))
    # a model without attention holds nothing by default
    m2, o2, _ = _setup()
    assert nc.attach(m2, o2, period=8, context=4).held == 0
