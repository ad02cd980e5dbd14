"""Neuron alignment (weightspace.diffusion.align): permutations are undone, functions kept, non-MLPs refused."""

import numpy as np
import torch

from weightspace.diffusion.align import MLPChain, align_population
from weightspace.diffusion.data import batched_logits
from weightspace.graph import GraphSpec

from .nets import random_mlps


def test_alignment_undoes_a_permutation_and_keeps_functions():
    model, spec, flats = random_mlps(4, seed=1)
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
