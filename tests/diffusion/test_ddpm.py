"""The latent DDPM of weight diffusion: schedule properties, training signal, seeded sampling."""

import pytest
import torch

from weightspace.diffusion.ddpm import LatentDDPM, NoiseSchedule, timestep_embedding


def test_linear_schedule_properties():
    s = NoiseSchedule.linear(1000, 1e-4, 2e-2)
    assert s.steps == 1000
    assert torch.all(s.betas[1:] > s.betas[:-1])
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(2e-2)
    ab = s.alphas_cumprod
    assert torch.all(ab[1:] < ab[:-1]) and ab[0] < 1 and ab[-1] > 0
    assert ab[-1] < 1e-4  # the last step is (almost) pure noise
    torch.manual_seed(0)
    z0 = torch.randn(4, 3)
    noise = torch.randn(4, 3)
    first = s.q_sample(z0, torch.zeros(4, dtype=torch.long), noise)
    last = s.q_sample(z0, torch.full((4,), 999), noise)
    assert torch.allclose(first, z0, atol=0.05)  # sqrt(1 - abar_0) = 0.01
    assert torch.allclose(last, noise, atol=0.05)


@pytest.mark.parametrize("kwargs, match", [({"steps": 0}, "at least one step"),
                                           ({"beta_start": 0.1, "beta_end": 0.01}, "beta_start <= beta_end"),
                                           ({"beta_end": 1.5}, "beta_end < 1")])
def test_bad_schedule(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoiseSchedule.linear(**kwargs)


def test_timestep_embedding_distinguishes_steps():
    e = timestep_embedding(torch.tensor([0, 1, 500]), 16)
    assert e.shape == (3, 16)
    assert not torch.allclose(e[0], e[1]) and not torch.allclose(e[1], e[2])
    assert timestep_embedding(torch.tensor([3]), 7).shape == (1, 7)


def test_training_reduces_loss_and_sampling_is_seeded():
    torch.manual_seed(0)
    data = torch.randn(256, 2) * 0.1 + torch.tensor([2.0, -1.0])
    ddpm = LatentDDPM(2, cond_dim=1, steps=50, hidden=32, blocks=1)
    opt = torch.optim.Adam(ddpm.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    cond = torch.ones(256, 1)
    first = ddpm.loss(data, cond, torch.Generator().manual_seed(1)).item()
    for _ in range(300):
        loss = ddpm.loss(data[torch.randint(0, 256, (64,), generator=g)], cond[:64], g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert ddpm.loss(data, cond, torch.Generator().manual_seed(1)).item() < first
    a = ddpm.sample(64, torch.ones(64, 1), torch.Generator().manual_seed(5))
    b = ddpm.sample(64, torch.ones(64, 1), torch.Generator().manual_seed(5))
    c = ddpm.sample(64, torch.ones(64, 1), torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a.mean(0) - torch.tensor([2.0, -1.0])).abs().max() < 0.5  # it learned where the data is
    guided = ddpm.sample(8, torch.ones(8, 1), torch.Generator().manual_seed(5), guidance=1.0)
    assert guided.shape == (8, 2) and torch.isfinite(guided).all()
