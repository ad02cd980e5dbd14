"""Non-learned baselines of weight generation (weightspace.diffusion.baselines): shapes and knobs."""

import torch

from weightspace.diffusion.baselines import averages, gaussian_fit, noisy_copies

from .nets import random_mlps


def test_baselines_shapes_and_knobs():
    model, spec, flats = random_mlps(5)
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
