"""Novelty metrics, neuron alignment and the non-learned baselines of weight diffusion."""

import numpy as np
import pytest
import torch

from model_zoo.archs import MLP
from weightspace.diffusion.align import MLPChain, align_population
from weightspace.diffusion.baselines import averages, gaussian_fit, noisy_copies
from weightspace.diffusion.data import batched_logits
from weightspace.diffusion.metrics import nearest_training, not_closer_pvalue, pairwise_iou
from weightspace.graph import GraphSpec


def _nets(n, seed=0):
    torch.manual_seed(seed)
    model = MLP(in_features=6, num_outputs=3, depth=2, width=5)
    spec = GraphSpec.from_module(model)
    flats = torch.stack([spec.flatten(MLP(in_features=6, num_outputs=3, depth=2, width=5).state_dict())
                         for _ in range(n)])
    return model, spec, flats


def test_copy_is_nearest_and_independent_nets_are_not():
    model, spec, flats = _nets(6)
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


def test_alignment_undoes_a_permutation_and_keeps_functions():
    model, spec, flats = _nets(4, seed=1)
    x = torch.randn(300, 6)
    chain = MLPChain(model, spec)
    perms = [np.random.default_rng(0).permutation(5), np.random.default_rng(1).permutation(5)]
    permuted = chain.permute(flats[0], perms)
    assert not torch.allclose(permuted, flats[0])
    before = batched_logits(model, spec, torch.stack([flats[0], permuted]), x)
    assert torch.allclose(before[0], before[1], atol=1e-5)  # permuting hidden units preserves the function
    aligned, _ = align_population(model, spec, torch.stack([flats[0], permuted, flats[1]]), x)
    assert torch.allclose(aligned[1], aligned[0], atol=1e-6)  # matched back onto the reference
    after = batched_logits(model, spec, aligned, x)
    assert torch.allclose(after[2], batched_logits(model, spec, flats[1:2], x)[0], atol=1e-5)


def test_alignment_refuses_non_mlps():
    from model_zoo.archs import SmallCNN

    cnn = SmallCNN(channels=2, layers=1)
    try:
        MLPChain(cnn, GraphSpec.from_module(cnn))
    except ValueError as e:
        assert "Conv2d" in str(e) and "features.0" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_baselines_shapes_and_knobs():
    model, spec, flats = _nets(5)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(noisy_copies(spec, flats, 3, 0.0, g)[:, None].eq(flats[None]).all(-1).any(-1).float(),
                          torch.ones(3))
    assert noisy_copies(spec, flats, 7, 0.1, g).shape == (7, flats.shape[1])
    assert torch.allclose(averages(flats, 2, 5, g), flats.mean(0).expand(2, -1), atol=1e-6)
    assert torch.allclose(gaussian_fit(flats, 3, 0.0, g), flats.mean(0).expand(3, -1))
    try:
        averages(flats, 1, 9, g)
    except ValueError as e:
        assert "9 of 5" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_farther_probability():
    from weightspace.diffusion.metrics import farther_probability

    a = np.array([0.1, 0.2, 0.3])
    assert farther_probability(a, a) == 0.5  # one set against itself: ties count half
    assert farther_probability(a + 1, a) == 1.0 and farther_probability(a - 1, a) == 0.0
    assert farther_probability(np.array([0.2]), a) == 0.5
    with pytest.raises(ValueError, match="two non-empty sets"):
        farther_probability(np.array([]), a)
