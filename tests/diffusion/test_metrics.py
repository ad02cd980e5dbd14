"""Novelty metrics of generated networks (weightspace.diffusion.metrics), measured in function space."""

import numpy as np
import pytest
import torch

from weightspace.diffusion.data import batched_logits
from weightspace.diffusion.metrics import nearest_training, not_closer_pvalue, pairwise_iou

from .nets import random_mlps


def test_copy_is_nearest_and_independent_nets_are_not():
    model, spec, flats = random_mlps(6)
    x = torch.randn(200, 6)
    y = torch.randint(0, 3, (200,))
    prob = batched_logits(model, spec, flats, x).softmax(-1).detach()
    nov = nearest_training(prob[:2], prob[2:], y)
    assert np.all(nov["nearest_tv"] > 0.01)
    same = nearest_training(prob[2:4], prob[2:], y)
    assert np.allclose(same["nearest_tv"], 0, atol=1e-6)
    assert np.allclose(same["max_iou"], 1) and np.allclose(same["max_agreement"], 1)
    assert 0 <= pairwise_iou(prob, y) <= 1
    assert not_closer_pvalue(np.zeros(20), np.ones(20)) < 0.01
    assert not_closer_pvalue(np.ones(20), np.zeros(20)) > 0.5


def test_nearest_tv_is_the_mean_total_variation_to_the_nearest_training_net():
    """Against the definition, computed per input with a loop; the nearest net, not the mean, counts."""
    g = torch.Generator().manual_seed(0)
    prob = torch.rand(5, 30, 4, generator=g).softmax(-1)
    prob_t = torch.rand(7, 30, 4, generator=g).softmax(-1)
    y = torch.randint(0, 4, (30,), generator=g)
    ref = [min(float(sum(0.5 * (p[k] - q[k]).abs().sum() for k in range(30)) / 30) for q in prob_t) for p in prob]
    got = nearest_training(prob, prob_t, y, chunk=2)["nearest_tv"]
    assert np.allclose(got, ref, atol=1e-6)
    moved = prob_t.clone()
    moved[int(np.argmin([float((0.5 * (prob[0] - q).abs().sum(-1)).mean()) for q in prob_t]))] = prob[0]
    assert nearest_training(prob[:1], moved, y)["nearest_tv"][0] < 1e-6 < got[0]


def test_farther_probability():
    from weightspace.diffusion.metrics import farther_probability

    a = np.array([0.1, 0.2, 0.3])
    assert farther_probability(a, a) == 0.5  # one set against itself: ties count half
    assert farther_probability(a + 1, a) == 1.0 and farther_probability(a - 1, a) == 0.0
    assert farther_probability(np.array([0.2]), a) == 0.5
    with pytest.raises(ValueError, match="two non-empty sets"):
        farther_probability(np.array([]), a)
