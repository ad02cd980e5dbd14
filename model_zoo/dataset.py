"""A PyTorch Geometric dataset of parameter graphs drawn from a zoo, split by run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Dataset

log = logging.getLogger(__name__)

__all__ = ["ZooGraphDataset", "split_runs", "SPLITS"]

SPLITS = ("train", "val", "test")


def split_runs(n_runs: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> dict[str, list[int]]:
    """Assign runs to train/val/test by a seeded permutation; every checkpoint follows its run.

    Raises:
        ValueError: fractions not three non-negative numbers summing to 1.
    """
    f = [float(x) for x in fractions]
    if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    perm = np.random.default_rng(seed).permutation(n_runs)
    n_tr = int(round(f[0] * n_runs))
    n_va = int(round(f[1] * n_runs))
    parts = (perm[:n_tr], perm[n_tr : n_tr + n_va], perm[n_tr + n_va :])
    return {name: sorted(int(r) for r in p) for name, p in zip(SPLITS, parts)}


class ZooGraphDataset(Dataset):
    r"""Parameter graphs of a zoo's checkpoints with a regression/classification target.

    Each item is a :class:`weightspace.ParameterGraph` with ``y`` (``[1]``, the target at that
    checkpoint), ``run`` and ``step``. With ``trajectory=True`` an item is a whole run: ``x`` is
    ``[T, N, 5]``, ``edge_attr`` ``[T, E, F]`` and ``y`` ``[T]``.

    Args:
        zoo: a :class:`model_zoo.Zoo`.
        target: a metrics column (``test_accuracy``, ``test_loss``, ``config.lr``, ...).
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` (all runs).
        fractions, seed: the run split (see :func:`split_runs`).
        checkpoints: ``"final"``, ``"all"`` or a list of epochs to keep.
        nonfinite: checkpoints with NaN/inf weights or target (diverged runs): ``"drop"`` them when the
            dataset is built (default; the count is in ``dropped``) or ``"raise"``
            (:class:`weightspace.NonFiniteWeightsError` when such a graph is requested).
        trajectory: one item per run with all its checkpoints.
    """

    def __init__(self, zoo: Any, target: str = "test_accuracy", split: str | None = None,
                 fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                 checkpoints: str | Sequence[float] = "final", nonfinite: str = "drop",
                 trajectory: bool = False) -> None:
        self.zoo, self.target, self.trajectory_mode = zoo, target, trajectory
        if target not in zoo.metrics:
            raise KeyError(f"unknown target {target!r}; metrics columns: {zoo.metrics.columns}")
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        if nonfinite not in ("drop", "raise"):
            raise ValueError(f"nonfinite must be 'drop' or 'raise', got {nonfinite!r}")
        if isinstance(checkpoints, str) and checkpoints not in ("final", "all"):
            raise ValueError(f"checkpoints must be 'final', 'all' or a list of epochs, got {checkpoints!r}")
        self.nonfinite = nonfinite
        runs = range(len(zoo)) if split is None else split_runs(len(zoo), fractions, seed)[split]
        self.items: list[tuple[int, list[int], list[float]]] = []
        dropped = 0
        for r in runs:
            rows = zoo.rows(r)
            steps, epochs, ys = list(rows["step"]), list(rows["epoch"]), rows[target]
            keep = list(range(len(steps)))
            if checkpoints == "final":
                keep = [len(steps) - 1]
            elif not isinstance(checkpoints, str):
                want = {float(e) for e in checkpoints}
                keep = [k for k in keep if float(epochs[k]) in want]
            if nonfinite == "drop" and keep:
                traj = zoo.trajectory(r)
                finite = torch.stack([torch.isfinite(t.reshape(len(steps), -1)).all(1) for t in traj.values()
                                      if t.is_floating_point()]).all(0)
                dropped += sum(1 for k in keep if not finite[k])
                keep = [k for k in keep if finite[k]]
            groups = [keep] if trajectory else [[k] for k in keep]
            for g in groups:
                if not g:
                    continue
                y = [float(ys[k]) for k in g]
                if not np.isfinite(y).all():
                    if nonfinite == "raise":
                        raise ValueError(f"run {r}: target {target!r} is not finite at steps {[steps[k] for k in g]}")
                    dropped += 1
                    continue
                self.items.append((int(r), [int(steps[k]) for k in g], y))
        self.dropped = dropped
        super().__init__(None)

    def len(self) -> int:
        return len(self.items)

    def get(self, idx: int) -> Any:
        run, steps, y = self.items[idx]
        spec = self.zoo.graph_spec(run)
        traj = self.zoo.trajectory(run)
        all_steps = self.zoo.steps(run)
        sel = torch.tensor([all_steps.index(s) for s in steps])
        state = {n: (t[sel] if self.trajectory_mode else t[sel[0]]) for n, t in traj.items()}
        g = spec.to_graph(state)  # raises NonFiniteWeightsError for NaN weights (nonfinite="raise")
        g.y = torch.tensor(y, dtype=torch.float32)
        g.run = torch.tensor([run])
        g.step = torch.tensor(steps if self.trajectory_mode else steps[:1])
        return g

    def __repr__(self) -> str:
        return f"ZooGraphDataset(items={len(self.items)}, target={self.target!r})"
