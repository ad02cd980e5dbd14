"""Non-learned baselines for weight generation (Zeng et al. 2025): each is a family with one knob,
so it can be compared with a generator at matched accuracy.

* :func:`noisy_copies`: a training net plus Gaussian noise, ``sigma`` times each tensor's RMS;
* :func:`averages`: the mean of ``k`` (neuron-aligned) training nets;
* :func:`gaussian_fit`: a per-coordinate Gaussian fitted to the (aligned) training nets, its standard
  deviation scaled by ``shrink``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from weightspace.graph import GraphSpec

__all__ = ["noisy_copies", "averages", "gaussian_fit", "tensor_rms"]


def tensor_rms(spec: GraphSpec, flat: Tensor) -> Tensor:
    """``[P]``: the RMS over the training nets of the tensor each coordinate belongs to."""
    out = torch.empty(flat.shape[1])
    for o, shape in zip(spec.offsets, spec.shapes):
        n = 1
        for s in shape:
            n *= s
        out[o : o + n] = flat[:, o : o + n].pow(2).mean().sqrt()
    return out


def noisy_copies(spec: GraphSpec, train: Tensor, n: int, sigma: float, generator: torch.Generator) -> Tensor:
    """``n`` random training nets, each plus ``N(0, (sigma * rms)^2)`` per coordinate."""
    idx = torch.randint(0, train.shape[0], (n,), generator=generator)
    noise = torch.randn(n, train.shape[1], generator=generator) * tensor_rms(spec, train)
    return train[idx] + sigma * noise


def averages(aligned: Tensor, n: int, k: int, generator: torch.Generator) -> Tensor:
    """``n`` means of ``k`` distinct random (aligned) training nets."""
    if k > aligned.shape[0]:
        raise ValueError(f"cannot average {k} of {aligned.shape[0]} training nets")
    rows = torch.stack([torch.randperm(aligned.shape[0], generator=generator)[:k] for _ in range(n)])
    return aligned[rows].mean(1)


def gaussian_fit(aligned: Tensor, n: int, shrink: float, generator: torch.Generator) -> Tensor:
    """``n`` draws from ``N(mean, (shrink * std)^2)`` per coordinate of the (aligned) training nets."""
    mu, sd = aligned.mean(0), aligned.std(0)
    return mu + shrink * sd * torch.randn(n, aligned.shape[1], generator=generator)
