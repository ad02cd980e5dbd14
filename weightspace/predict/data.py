"""A zoo's checkpoints as train/val/test lists of parameter graphs with targets and hyperparameters."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from weightspace.graph import ParameterGraph

log = logging.getLogger(__name__)

__all__ = ["ZooGraphs", "load_zoo_graphs"]


@dataclass
class ZooGraphs:
    """Final-checkpoint graphs of a zoo's runs with targets and hyperparameters, split by run, and
    what a probing predictor needs to run them: the zoo's architecture configs and input shape."""

    graphs: dict[str, list[ParameterGraph]]
    hparams: dict[str, list[dict[str, Any]]]
    chance: float
    archs: list[dict[str, Any]] = field(default_factory=list)
    input_shape: list[int] | None = None


def load_zoo_graphs(zoo: Any, target: str = "test_accuracy", fractions: Sequence[float] = (0.8, 0.1, 0.1),
                    seed: int = 0, max_runs: int | None = None, progress: bool = False,
                    train_checkpoints: str | Sequence[float] = "final") -> ZooGraphs:
    """Read a zoo (a path or a :class:`model_zoo.Zoo`) into train/val/test lists of graphs.

    Uses the zoo's own run-level split (:meth:`model_zoo.Zoo.graph_dataset`); diverged runs (non-finite
    weights or target) are dropped there. ``max_runs`` keeps the first runs of each split in
    proportion (for CI-sized runs). ``train_checkpoints`` picks the train runs' checkpoints
    (``"final"``, ``"all"`` or epochs); validation and test hold each run's final checkpoint.
    """
    import model_zoo

    if isinstance(zoo, (str, os.PathLike)):
        zoo = model_zoo.load(zoo)
    graphs: dict[str, list[ParameterGraph]] = {}
    hps: dict[str, list[dict[str, Any]]] = {}
    for split in ("train", "val", "test"):
        ckpt = train_checkpoints if split == "train" else "final"
        ds = zoo.graph_dataset(target=target, split=split, fractions=tuple(fractions), seed=seed, checkpoints=ckpt)
        idx = range(len(ds))
        if max_runs is not None:
            runs = sorted({r for r, _, _ in ds.items})
            keep = set(runs[: max(1, int(round(max_runs * len(runs) / max(len(zoo), 1))))])
            idx = [i for i, (r, _, _) in enumerate(ds.items) if r in keep]
        items = [ds[i] for i in tqdm(idx, desc=f"load {split}", disable=not progress)]
        graphs[split] = items
        hps[split] = [zoo.hparams(int(g.run)) for g in items]
        if ds.dropped:
            log.info("%s: dropped %d non-finite checkpoints", split, ds.dropped)
    classes = zoo.info.get("dataset", {}).get("num_outputs") or zoo.info.get("dataset", {}).get("num_classes")
    chance = 1.0 / float(classes) if classes else 0.0
    archs = [dict(zoo.info["archs"][a]) for a in sorted(zoo.info.get("archs", {}))]
    shape = zoo.info.get("dataset", {}).get("input_shape")
    return ZooGraphs(graphs, hps, chance, archs, [int(d) for d in shape] if shape else None)
