"""Meta-training data of the nowcasters: dense parameter trajectories and windows sampled from them.

A :class:`Trajectory` is one training run's evenly spaced snapshots, flattened in the order of its
architecture's :class:`~weightspace.GraphSpec`. :func:`load_trajectories` reads them from
``model_zoo`` zoos generated with dense checkpoints (``trainer.dense_every``);
:func:`sample_windows` draws the ``(window, future, mask)`` triples meta-training regresses.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from weightspace.graph import GraphSpec

log = logging.getLogger(__name__)

__all__ = ["Trajectory", "load_trajectories", "sample_windows"]


@dataclass(frozen=True, eq=False)
class Trajectory:
    """One run's evenly spaced snapshots: ``flat [T, P]`` (float32) of architecture ``spec``."""

    spec: GraphSpec
    flat: Tensor
    every: int
    name: str = ""


def load_trajectories(paths: Sequence[str | os.PathLike], max_runs: int | None = None) -> list[Trajectory]:
    """Dense trajectories of every run of the zoos at ``paths`` (``model_zoo`` store).

    Keeps each run's checkpoints on its densest even grid of steps (``dense_every``).
    """
    import model_zoo

    out: list[Trajectory] = []
    for path in paths:
        zoo = model_zoo.load(path)
        specs: dict[str, GraphSpec] = {}
        n = len(zoo) if max_runs is None else min(len(zoo), max_runs)
        for i in range(n):
            key = json.dumps(zoo.arch_config(i), sort_keys=True)
            if key not in specs:
                specs[key] = zoo.graph_spec(i)
            spec = specs[key]
            steps = torch.tensor(zoo.steps(i))
            if len(steps) < 3:
                continue
            every = int(torch.diff(steps).clamp_min(1).min())
            keep = (steps % every == 0).nonzero().squeeze(1)
            flat = spec.flatten(zoo.trajectory(i), allow_nonfinite=True)[keep].float()
            good = torch.isfinite(flat).all(-1)
            if not bool(good.all()):  # cut a run that diverged at its first non-finite snapshot
                flat = flat[: int((~good).nonzero()[0])]
            if flat.shape[0] >= 3:
                out.append(Trajectory(spec, flat, every, f"{Path(path).name}/{i}"))
    log.info("loaded %d trajectories from %d zoos", len(out), len(paths))
    return out




def sample_windows(traj: Trajectory, c: int, H: int, stride: int, batch: int, gen: torch.Generator
                   ) -> tuple[Tensor, Tensor, Tensor] | None:
    """``batch`` windows of ``c`` snapshots ``stride`` apart, from random starts in ``traj``.

    Args:
        traj: the run.
        c: snapshots per window.
        H: horizons of the targets (``1..H`` strides past the window's last snapshot).
        stride: spacing of the window's snapshots, in stored snapshots.
        batch: windows to draw.
        gen: the random generator (the draw depends only on its state).

    Returns:
        ``(window [B, c, P], target [B, H, P], mask [B, H])`` with ``target`` the change from the
        window's last snapshot (``mask`` false where a horizon runs past the trajectory's end), or
        ``None`` when the run is too short for this stride.
    """
    T = traj.flat.shape[0]
    span = (c - 1) * stride
    if T <= span + stride:
        return None
    starts = torch.randint(0, T - span - stride, (batch,), generator=gen)
    k = torch.arange(c) * stride
    win = traj.flat[starts[:, None] + k]  # [B, c, P]
    last = starts + span
    fut = last[:, None] + torch.arange(1, H + 1) * stride  # [B, H]
    mask = fut < T
    tgt = traj.flat[fut.clamp_max(T - 1)] - traj.flat[last][:, None]
    return win, tgt, mask

