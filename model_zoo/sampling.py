"""Hyperparameter sampling for zoo runs (as in the Small CNN Zoo of Unterthiner et al. 2020).

A search space maps names to distributions::

    lr: {log_uniform: [1.0e-4, 1.0e-1]}
    optimizer: {choice: [adam, sgd, rmsprop]}
    dropout: {uniform: [0.0, 0.5]}
    batch_size: 32                  # a constant
    arch.activation: {choice: [relu, tanh]}   # "arch." keys override the architecture config
    arch: {choice: [{_target_: ...}, ...]}    # or draw whole architecture configs (heterogeneous zoos)

Run ``i`` of a zoo with seed ``s`` draws from ``numpy.random.default_rng([s, i])``, so a zoo of
100 runs is exactly the first 100 runs of the same zoo with 1,000.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RunConfig", "sample_runs", "TRAINING_KEYS", "DEFAULTS"]

TRAINING_KEYS = ("lr", "optimizer", "l2", "dropout", "init_std", "train_fraction", "batch_size")
DEFAULTS: dict[str, Any] = {"lr": 1e-3, "optimizer": "adam", "l2": 0.0, "dropout": 0.0, "init_std": 0.1,
                            "train_fraction": 1.0, "batch_size": 32}
OPTIMIZERS = ("adam", "sgd", "rmsprop")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run: its index, seed, training hyperparameters and architecture."""

    index: int
    seed: int
    lr: float
    optimizer: str
    l2: float
    dropout: float
    init_std: float
    train_fraction: float
    batch_size: int
    arch: dict

    def hparams(self) -> dict[str, Any]:
        """The sampled values, as written to the ``config.*`` columns."""
        out = {k: getattr(self, k) for k in TRAINING_KEYS}
        out["seed"] = self.seed
        out["arch.family"] = str(self.arch.get("_target_", "")).rsplit(".", 1)[-1]
        for k, v in self.arch.items():
            if k != "_target_":
                out[f"arch.{k}"] = v
        return out


def _draw(name: str, dist: Any, rng: np.random.Generator) -> Any:
    if not isinstance(dist, Mapping):
        return dist
    if len(dist) != 1:
        raise ValueError(f"search space entry {name!r} must have exactly one of log_uniform/uniform/choice/int_uniform, got {dict(dist)}")
    (kind, arg), = dist.items()
    if kind == "choice":
        if not arg:
            raise ValueError(f"search space entry {name!r}: choice needs at least one value")
        v = arg[int(rng.integers(len(arg)))]
        return list(v) if isinstance(v, (list, tuple)) else v
    lo, hi = (float(a) for a in arg)
    if lo > hi:
        raise ValueError(f"search space entry {name!r}: lower bound {lo} exceeds upper bound {hi}")
    if kind == "uniform":
        return float(rng.uniform(lo, hi))
    if kind == "log_uniform":
        if lo <= 0:
            raise ValueError(f"search space entry {name!r}: log_uniform needs positive bounds, got {arg}")
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if kind == "int_uniform":
        return int(rng.integers(int(lo), int(hi) + 1))
    raise ValueError(f"search space entry {name!r}: unknown distribution {kind!r}")


def sample_runs(space: Mapping[str, Any], arch: Mapping[str, Any], size: int, seed: int = 0,
                start: int = 0) -> list[RunConfig]:
    """Draw runs ``start .. size-1``.

    Raises:
        ValueError: unknown keys, invalid distributions or values (e.g. an unknown optimizer).
    """
    unknown = [k for k in space if k not in TRAINING_KEYS and k != "arch" and not k.startswith("arch.")]
    if unknown:
        raise ValueError(f"unknown search space keys {unknown}; allowed: {list(TRAINING_KEYS)} and 'arch.<name>'")
    runs = []
    for i in range(start, size):
        rng = np.random.default_rng([int(seed), i])
        vals = dict(DEFAULTS)
        a = dict(arch)
        for name in sorted(space):  # sorted: the draw order does not depend on the config's key order
            v = _draw(name, space[name], rng)
            if name == "arch":  # a whole architecture config (heterogeneous zoos); sorts before "arch.*"
                if not isinstance(v, Mapping) or "_target_" not in v:
                    raise ValueError(f"search space entry 'arch' must draw '_target_' dicts, got {v!r}")
                a = dict(v)
            elif name.startswith("arch."):
                a[name[5:]] = v
            else:
                vals[name] = v
        if vals["optimizer"] not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {vals['optimizer']!r}; choose one of {OPTIMIZERS}")
        if not 0.0 <= float(vals["dropout"]) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {vals['dropout']}")
        if not 0.0 < float(vals["train_fraction"]) <= 1.0:
            raise ValueError(f"train_fraction must lie in (0, 1], got {vals['train_fraction']}")
        run_seed = int(np.random.default_rng([int(seed), i, 1]).integers(2**31 - 1))
        runs.append(RunConfig(i, run_seed, float(vals["lr"]), str(vals["optimizer"]), float(vals["l2"]),
                              float(vals["dropout"]), float(vals["init_std"]), float(vals["train_fraction"]),
                              int(vals["batch_size"]), a))
    return runs
