"""weightspace.hyper.train: a CI-sized training run, and the shipped checkpoint's zero-shot accuracy."""

from __future__ import annotations

import math

import numpy as np
import torch

from weightspace.hyper import (
    ArchSpace,
    GraphHyperNetwork,
    HyperTrainConfig,
    accuracy,
    train_hypernetwork,
    zero_shot_accuracy,
)
from weightspace.instantiate import instantiate


def test_ci_training_run_takes_a_few_steps(digits):
    torch.manual_seed(0)
    hyper = GraphHyperNetwork(hidden=16, layers=1)
    before = [p.detach().clone() for p in hyper.parameters()]
    cfg = HyperTrainConfig(steps=4, archs_per_step=2, batch_size=32, log_every=2)
    hist = train_hypernetwork(hyper, digits.x_train, digits.y_train, cfg=cfg, progress=False)
    assert [h["step"] for h in hist] == [2, 4]
    assert all(math.isfinite(h["train/loss"]) for h in hist)
    assert any(not torch.equal(a, b) for a, b in zip(before, hyper.parameters()))


def test_shipped_checkpoint_beats_chance_on_unseen_architectures(shipped, digits):
    hyper = shipped
    configs = ArchSpace().split("unseen", 6, seed=123)
    acc = zero_shot_accuracy(hyper, configs, digits.x_test, digits.y_test)
    assert np.mean(acc) > 0.5, acc  # chance is 0.1
    random_init = [accuracy(instantiate(c), digits.x_test, digits.y_test) for c in configs]
    assert np.mean(acc) > np.mean(random_init) + 0.2
