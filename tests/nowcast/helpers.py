"""Shared helpers of the nowcasting tests."""

from __future__ import annotations

import torch

from weightspace.nowcast import Nowcaster


def randomized_nowcaster(kind: str, seed: int = 0, horizons: int = 6) -> Nowcaster:
    """A nowcaster whose every weight (zero-initialized heads too) is random, so outputs are not Linefit."""
    nc = Nowcaster(kind=kind, horizons=horizons)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in nc.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return nc.eval()


def train_steps(model, opt, data, steps, start=0, sched=None):
    """``steps`` MSE steps over ``data`` (cycled from ``start``), stepping ``sched`` after each if given."""
    for i in range(start, start + steps):
        x, y = data[i % len(data)]
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
