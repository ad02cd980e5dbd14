import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_zoo.sampling import sample_runs

ARCH = {"_target_": "model_zoo.archs.MLP", "depth": 1}
SPACE = {"lr": {"log_uniform": [1e-4, 1e-1]}, "optimizer": {"choice": ["adam", "sgd", "rmsprop"]},
         "dropout": {"uniform": [0.0, 0.5]}, "arch.width": {"choice": [8, 16]}, "batch_size": 16}


def test_prefix_and_determinism():
    a = sample_runs(SPACE, ARCH, 50, seed=1)
    b = sample_runs(SPACE, ARCH, 10, seed=1)
    assert a[:10] == b
    assert sample_runs(SPACE, ARCH, 50, seed=1) == a
    assert sample_runs(SPACE, ARCH, 50, seed=2) != a
    assert len({r.seed for r in a}) == 50


def test_key_order_does_not_matter():
    rev = dict(reversed(list(SPACE.items())))
    assert sample_runs(rev, ARCH, 5) == sample_runs(SPACE, ARCH, 5)


def test_values_and_arch_overrides():
    runs = sample_runs(SPACE, ARCH, 200, seed=0)
    assert {r.optimizer for r in runs} == {"adam", "sgd", "rmsprop"}
    assert {r.arch["width"] for r in runs} == {8, 16}
    assert all(r.batch_size == 16 and r.arch["depth"] == 1 for r in runs)
    hp = runs[0].hparams()
    assert hp["arch.width"] in (8, 16) and hp["arch.family"] == "MLP" and "seed" in hp


@settings(max_examples=25, deadline=None)
@given(lo=st.floats(1e-6, 1e-2), ratio=st.floats(1.0, 1e4), seed=st.integers(0, 1000))
def test_log_uniform_within_bounds(lo, ratio, seed):
    hi = lo * ratio
    for r in sample_runs({"lr": {"log_uniform": [lo, hi]}}, ARCH, 5, seed=seed):
        assert lo * (1 - 1e-9) <= r.lr <= hi * (1 + 1e-9)


def test_log_uniform_is_log_spread():
    lrs = [r.lr for r in sample_runs({"lr": {"log_uniform": [1e-4, 1e-0]}}, ARCH, 2000)]
    below = sum(math.log10(v) < -2 for v in lrs) / len(lrs)
    assert 0.45 < below < 0.55  # a uniform (not log-uniform) draw would put ~1% below 1e-2


def test_whole_architecture_choice():
    space = {"arch": {"choice": [{"_target_": "model_zoo.archs.MLP"}, {"_target_": "model_zoo.archs.SmallCNN"}]},
             "arch.activation": {"choice": ["tanh"]}}
    runs = sample_runs(space, ARCH, 30)
    assert {r.arch["_target_"] for r in runs} == {"model_zoo.archs.MLP", "model_zoo.archs.SmallCNN"}
    assert all(r.arch["activation"] == "tanh" for r in runs)


@pytest.mark.parametrize("space,message", [
    ({"learning_rate": 0.1}, "unknown search space keys"),
    ({"lr": {"log_uniform": [0.0, 1.0]}}, "log_uniform needs positive bounds"),
    ({"lr": {"uniform": [1.0, 0.1]}}, "lower bound 1.0 exceeds upper bound 0.1"),
    ({"lr": {"gauss": [0, 1]}}, "unknown distribution 'gauss'"),
    ({"lr": {"uniform": [0, 1], "choice": [1]}}, "exactly one of"),
    ({"optimizer": {"choice": []}}, "choice needs at least one value"),
    ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"),
    ({"dropout": 1.0}, "dropout must lie in"),
    ({"train_fraction": 0.0}, "train_fraction must lie in"),
    ({"arch": {"choice": [{"depth": 1}]}}, "must draw '_target_' dicts"),
])
def test_bad_spaces(space, message):
    with pytest.raises(ValueError, match=message):
        sample_runs(space, ARCH, 3)
