import dataclasses
import math

import pytest
import torch

from model_zoo.archs import instantiate
from model_zoo.data import load_dataset
from model_zoo.sampling import sample_runs
from model_zoo.trainer import (
    TrainerConfig,
    _epoch_order,
    _subsets,
    checkpoint_epochs,
    init_state,
    train_group,
)

MLP = {"_target_": "model_zoo.archs.MLP", "in_features": 64, "depth": 1, "width": 16}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", flatten=True)


def runs(n, **space):
    base = {"lr": {"log_uniform": [1e-3, 1e-2]}, "init_std": {"log_uniform": [0.05, 0.2]}, "batch_size": 128}
    return sample_runs({**base, **space}, MLP, n, seed=0)


@pytest.mark.parametrize("opt", ["adam", "sgd", "rmsprop"])
def test_functional_optimizers_match_torch_optim(digits, opt):
    (run,) = runs(1, optimizer=opt, train_fraction=0.6)
    cfg = TrainerConfig(epochs=2, checkpoints=(2,))
    (res,) = train_group([run], digits, cfg)
    # the same run, trained one by one with torch.optim on the same init and batch order
    model = instantiate(run.arch)
    params, _ = init_state(model, [run])
    model.load_state_dict({k: v[0] for k, v in params.items()})
    optim = {"adam": lambda p: torch.optim.Adam(p, lr=run.lr, eps=cfg.eps),
             "sgd": lambda p: torch.optim.SGD(p, lr=run.lr),
             "rmsprop": lambda p: torch.optim.RMSprop(p, lr=run.lr, alpha=cfg.rmsprop_alpha, eps=cfg.eps)}[opt](
        model.parameters())
    subsets = _subsets([run], len(digits.x_train))
    for epoch in (1, 2):
        idx, w, steps = _epoch_order([run], subsets, epoch, run.batch_size)
        for s in range(int(steps[0])):
            sl = slice(s * run.batch_size, (s + 1) * run.batch_size)
            keep = w[0, sl] > 0
            b = idx[0, sl][keep]
            optim.zero_grad()
            torch.nn.functional.cross_entropy(model(digits.x_train[b]), digits.y_train[b]).backward()
            optim.step()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(res.state[k][-1], v, rtol=1e-4, atol=1e-5)
    assert res.steps[-1] == 2 * math.ceil(len(subsets[0]) / run.batch_size)


def test_same_seed_same_results(digits):
    rs = runs(4, dropout={"uniform": [0.1, 0.4]}, optimizer="adam")
    cfg = TrainerConfig(epochs=1, checkpoints=(0, 1))
    a, b = train_group(rs, digits, cfg), train_group(rs, digits, cfg)
    for x, y in zip(a, b):
        assert x.metrics == y.metrics
        for k in x.state:
            assert torch.equal(x.state[k], y.state[k])


def test_run_does_not_depend_on_its_group(digits):
    rs = runs(6, optimizer={"choice": ["adam", "sgd", "rmsprop"]}, train_fraction={"uniform": [0.2, 1.0]})
    assert len({r.optimizer for r in rs}) == 3
    cfg = TrainerConfig(epochs=1, checkpoints=(0, 1))
    together = train_group(rs, digits, cfg)
    for i in range(6):
        alone = train_group(rs[i : i + 1], digits, cfg)[0]
        assert together[i].steps == alone.steps
        for k in alone.state:
            torch.testing.assert_close(together[i].state[k], alone.state[k], rtol=1e-4, atol=1e-5)


def test_dropout_changes_training(digits):
    (r,) = runs(1, optimizer="adam")
    cfg = TrainerConfig(epochs=1, checkpoints=(1,))
    plain = train_group([r], digits, cfg)[0]
    dropped = train_group([dataclasses.replace(r, dropout=0.5)], digits, cfg)[0]
    assert not torch.allclose(plain.state["net.1.weight"], dropped.state["net.1.weight"])


def test_train_fraction_sets_steps_and_train_metrics(digits):
    rs = runs(2, train_fraction={"uniform": [0.1, 1.0]}, optimizer="sgd")
    res = train_group(rs, digits, TrainerConfig(epochs=1, checkpoints=(1,)))
    n = len(digits.x_train)
    for r, out in zip(rs, res):
        assert out.steps == [math.ceil(max(1, round(r.train_fraction * n)) / 128)]
        assert 0.0 <= out.metrics[0]["train_accuracy"] <= 1.0


def test_batchnorm_statistics_are_trained():
    d = load_dataset("digits")
    arch = {"_target_": "model_zoo.archs.SmallResNet", "width": 4, "blocks": [1]}
    rs = sample_runs({"batch_size": 128, "optimizer": "adam", "lr": 1e-2, "init_std": 0.1}, arch, 2)
    res = train_group(rs, d, TrainerConfig(epochs=1, checkpoints=(0, 1)))
    for out in res:
        assert float(out.state["stem.1.running_mean"][0].abs().max()) == 0.0
        assert float(out.state["stem.1.running_mean"][1].abs().max()) > 0.0
        assert int(out.state["stem.1.num_batches_tracked"][1]) == out.steps[1]


def test_checkpoint_schedule_and_dense(digits):
    assert checkpoint_epochs(20) == (0, 1, 2, 3, 5, 10, 15, 20)
    assert checkpoint_epochs(2) == (0, 1, 2)
    (r,) = runs(1, optimizer="adam")
    out = train_group([r], digits, TrainerConfig(epochs=1, checkpoints=(0, 1), dense_every=4))[0]
    n_steps = math.ceil(len(digits.x_train) / 128)
    assert out.steps == sorted({0, n_steps} | set(range(4, n_steps + 1, 4)))
    assert out.epochs[0] == 0.0 and out.epochs[-1] == 1.0
    assert all(v.shape[0] == len(out.steps) for v in out.state.values())


def test_errors(digits):
    mixed = runs(6, batch_size={"choice": [32, 64]})
    with pytest.raises(ValueError, match="runs of one architecture and batch size, got 2 groups"):
        train_group(mixed, digits, TrainerConfig(epochs=1))
    with pytest.raises(ValueError, match=r"checkpoint epochs \[5\] lie outside \[0, epochs=2\]"):
        TrainerConfig(epochs=2, checkpoints=(0, 5)).schedule()


CNN = {"_target_": "model_zoo.archs.SmallCNN", "channels": [6, 5], "layers": 2, "kernel_size": 3, "strides": [2, 1]}


@pytest.mark.parametrize("opt", ["adam", "sgd", "rmsprop"])
def test_batched_cnn_matches_torch_optim(opt):
    """The im2col/bmm SmallCNN (stride 2 and 1, padding) trains like the module under torch.optim."""
    d = load_dataset("digits")
    space = {"lr": 3e-3, "init_std": 0.2, "batch_size": 64, "optimizer": opt, "train_fraction": 0.4,
             "l2": 1e-3, "arch.activation": "tanh"}
    (run,) = sample_runs(space, CNN, 1, seed=1)
    cfg = TrainerConfig(epochs=1, checkpoints=(1,))
    (res,) = train_group([run], d, cfg, engine="batched")
    model = instantiate(run.arch)
    params, _ = init_state(model, [run])
    model.load_state_dict({k: v[0] for k, v in params.items()})
    groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": run.l2},
              {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    optim = {"adam": lambda: torch.optim.Adam(groups, lr=run.lr, eps=cfg.eps),
             "sgd": lambda: torch.optim.SGD(groups, lr=run.lr),
             "rmsprop": lambda: torch.optim.RMSprop(groups, lr=run.lr, alpha=cfg.rmsprop_alpha, eps=cfg.eps)}[opt]()
    subsets = _subsets([run], len(d.x_train))
    idx, w, steps = _epoch_order([run], subsets, 1, run.batch_size)
    for s in range(int(steps[0])):
        sl = slice(s * run.batch_size, (s + 1) * run.batch_size)
        b = idx[0, sl][w[0, sl] > 0]
        optim.zero_grad()
        torch.nn.functional.cross_entropy(model(d.x_train[b]), d.y_train[b]).backward()
        optim.step()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(res.state[k][-1], v, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        acc = float((model(d.x_test).argmax(-1) == d.y_test).float().mean())
    assert res.metrics[-1]["test_accuracy"] == pytest.approx(acc, abs=1e-6)


@pytest.mark.parametrize("arch", [MLP, {**CNN, "channels": 4, "layers": 3, "strides": 2},
                                  {**CNN, "dims": 1, "activation": "gelu"},
                                  {**CNN, "channels": 4, "layers": 2, "activation": "sigmoid"}])
def test_batched_engine_matches_vmap(arch):
    """Without dropout the two engines train the same models (mixed optimizers, train fractions);
    sigmoid (which does not map 0 to 0) takes the padding path instead of zero slots."""
    d = load_dataset("mnist1d", num_samples=400) if arch.get("dims") == 1 else load_dataset("digits", flatten=arch is MLP)
    space = {"lr": {"log_uniform": [1e-3, 1e-2]}, "init_std": {"log_uniform": [0.05, 0.3]}, "batch_size": 64,
             "optimizer": {"choice": ["adam", "sgd", "rmsprop"]}, "train_fraction": {"uniform": [0.2, 1.0]},
             "l2": {"log_uniform": [1e-6, 1e-2]}}
    rs = sample_runs(space, arch, 5, seed=2)
    cfg = TrainerConfig(epochs=2, checkpoints=(0, 1, 2))
    a = train_group(rs, d, cfg, engine="batched")
    b = train_group(rs, d, cfg, engine="vmap")
    for x, y in zip(a, b):
        assert x.steps == y.steps and x.epochs == y.epochs
        for k in x.state:
            torch.testing.assert_close(x.state[k], y.state[k], rtol=1e-4, atol=1e-5)
        for mx, my in zip(x.metrics, y.metrics):
            assert mx == pytest.approx(my, rel=1e-4, abs=1e-5)


def test_batched_regression_matches_vmap():
    d = load_dataset("synthetic")
    arch = {"_target_": "model_zoo.archs.MLP", "in_features": 8, "num_outputs": 1, "depth": 1, "width": 8}
    rs = sample_runs({"lr": 1e-2, "batch_size": 32, "train_fraction": {"uniform": [0.3, 1.0]}}, arch, 3)
    cfg = TrainerConfig(epochs=1, checkpoints=(0, 1))
    for x, y in zip(train_group(rs, d, cfg, engine="batched"), train_group(rs, d, cfg, engine="vmap")):
        torch.testing.assert_close(x.state["net.1.weight"], y.state["net.1.weight"], rtol=1e-4, atol=1e-6)
        assert x.metrics[-1]["test_loss"] == pytest.approx(y.metrics[-1]["test_loss"], rel=1e-4)
        assert math.isnan(x.metrics[-1]["test_accuracy"])


def test_dropout_mask_rates():
    from model_zoo.batched import dropout_mask

    torch.manual_seed(0)
    rate = torch.tensor([0.0, 0.1, 0.45])
    m = dropout_mask((3, 20, 5000), rate)
    assert torch.equal(m[0], torch.ones(20, 5000))
    kept = (m > 0).float().mean((1, 2))
    torch.testing.assert_close(kept, 1 - rate, atol=4e-3, rtol=0)
    torch.testing.assert_close(m.amax((1, 2)), 1 / (1 - rate))
    assert not torch.equal(m[1, 0], m[1, 1])  # fresh draws per element


def test_engine_errors(digits):
    arch = {"_target_": "model_zoo.archs.SmallResNet", "width": 4, "blocks": [1]}
    rs = sample_runs({"batch_size": 128}, arch, 1)
    with pytest.raises(ValueError, match="engine 'batched' does not support SmallResNet"):
        train_group(rs, load_dataset("digits"), TrainerConfig(epochs=1), engine="batched")
    with pytest.raises(ValueError, match="engine must be 'auto', 'batched' or 'vmap', got 'jit'"):
        train_group(runs(1), digits, TrainerConfig(epochs=1), engine="jit")


def test_correct_matches_argmax_with_ties_and_nonfinite():
    from model_zoo.trainer import _correct

    g = torch.Generator().manual_seed(0)
    for trial in range(50):
        out = torch.randint(-2, 2, (3, 5, 40), generator=g).float()  # many ties
        if trial % 2:
            out[0, 1, 3], out[1, 2, 4], out[2, 0, 5] = float("nan"), float("inf"), -float("inf")
        y = torch.randint(0, 5, (40,), generator=g)
        assert torch.equal(_correct(out, y), (out.argmax(1) == y) & torch.isfinite(out).all(1))
