"""Shared helpers of the nowcasting tests."""

from __future__ import annotations

import torch
from torch import nn

import weightspace as ws
from weightspace.examples import build_example
from weightspace.nowcast import Nowcaster, Trajectory


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


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 7), nn.Tanh(), nn.Linear(7, 3))


def adam_trajectory(model: nn.Module, steps: int = 48, every: int = 1, seed: int = 0) -> torch.Tensor:
    """Flat snapshots of ``model`` trained by Adam on a random regression problem."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, model[0].in_features, generator=g)
    y = torch.randn(64, model[-1].out_features, generator=g)
    spec = ws.GraphSpec.from_module(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    snaps = [spec.flatten(model.state_dict())]
    for i in range(steps):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (i + 1) % every == 0:
            snaps.append(spec.flatten(model.state_dict()).detach().clone())
    return torch.stack(snaps)


def randomize(nc: Nowcaster, seed: int = 0) -> Nowcaster:
    """Give every weight (the zero-initialized heads too) a random value, so outputs are not Linefit."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in nc.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return nc


def example_window(name: str, seed: int):
    model, x = build_example(name)
    spec = ws.GraphSpec.from_module(model, x)
    g = torch.Generator().manual_seed(seed)
    base = spec.flatten(model.state_dict())
    steps = torch.randn(5, base.numel(), generator=g).cumsum(0) * 0.01
    drift = torch.randn(base.numel(), generator=g) * 0.02 * torch.arange(5.0)[:, None]
    return model, x, spec, base + steps + drift


def trajectories(n: int = 3) -> list[Trajectory]:
    out = []
    for i in range(n):
        torch.manual_seed(i)
        model = small_mlp()
        spec = ws.GraphSpec.from_module(model)
        out.append(Trajectory(spec, adam_trajectory(model, steps=40, seed=i), 1, f"t{i}"))
    return out
