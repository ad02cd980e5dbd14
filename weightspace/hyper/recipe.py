"""Training recipe of the shipped :class:`~weightspace.hyper.ghn.GHN` checkpoints.

GHN-2's training loop on :class:`~weightspace.hyper.space.CellSpace`: a fixed pool of training
architectures (GHN-2 trains on the fixed DeepNets-1M set; here ``pool`` configurations of the
training share, traced once and cached), every step draws ``archs_per_step`` of them, predicts
all their parameters in one batched pass, runs each target network functionally
(``torch.func.functional_call``, BatchNorm in training mode) on a minibatch, and backpropagates
the mean cross-entropy into the hypernetwork (Adam, warm-up then cosine decay following the larger
of the step and wall-clock fractions, gradient clipping).

The shipped checkpoints are made by :mod:`weightspace.cli.ghn_recipe` (one CPU thread; it loads the
data and writes the checkpoint); its module docs list the exact commands, and each checkpoint's
``config.json`` extras record them with CPU minutes, steps and load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .ghn import GHN, GHNTarget
from .space import CellSpace, build_arch, config_key
from .train import fit_hypernetwork

log = logging.getLogger(__name__)

__all__ = ["GHNTrainConfig", "GHNTargetCache", "train_ghn", "pool_probabilities", "validation_split"]


@dataclass(frozen=True)
class GHNTrainConfig:
    """Schedule of :func:`train_ghn`.

    Attributes:
        steps: optimizer steps (upper bound; ``max_minutes`` usually ends training first).
        archs_per_step: architectures per step (GHN-2: 8).
        batch_size: inputs per architecture per step.
        lr / weight_decay / grad_clip: Adam; warm-up over 2%, cosine decay to 5% of ``lr``.
        pool: training architectures (distinct configurations of the training share).
        seed: seed of the pool, the draws and the minibatches.
        max_minutes: wall-clock budget (None: steps only).
        log_every: steps between log lines.
        kind_weights: relative weight of each family (``config["kind"]``: ``cnn``, ``vit``, ``mlp``) when
            a step draws from the pool, e.g. ``{"vit": 3.0}`` draws a transformer three times as often as
            a CNN or MLP; ``None`` draws every pool member with the same probability.
        linear_embed: share of the pool's ViTs that also enter the pool with their patch embedding
            written as a reshape + ``Linear`` (:meth:`~weightspace.hyper.space.CellSpace.train_pool`);
            0 keeps the pool to strided-convolution embeddings.
    """

    steps: int = 20000
    archs_per_step: int = 4
    batch_size: int = 64
    lr: float = 5e-3
    weight_decay: float = 1e-5
    grad_clip: float = 5.0
    pool: int = 120
    seed: int = 0
    max_minutes: float | None = 13.0
    log_every: int = 25
    kind_weights: dict[str, float] | None = None
    linear_embed: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class GHNTargetCache:
    """Built model and :class:`GHNTarget` per configuration (tracing costs 0.05-2 s)."""

    def __init__(self, ghn: GHN) -> None:
        self.ghn = ghn
        self.items: dict[str, tuple[nn.Module, GHNTarget]] = {}

    def __call__(self, config: dict) -> tuple[nn.Module, GHNTarget]:
        key = config_key(config)
        hit = self.items.get(key)
        if hit is None:
            model = build_arch(config)
            hit = self.items[key] = (model, self.ghn.target(model))
        return hit


def train_ghn(ghn: GHN, x: Tensor, y: Tensor, space: CellSpace, cfg: GHNTrainConfig | None = None, *,
              progress: bool = True, on_log: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``ghn`` in place on ``(x, y)`` over ``space``; return the logged history.

    Args:
        ghn: the hypernetwork (its ``data`` should name the dataset of ``x``).
        x / y: training inputs ``[n, C, L]`` or ``[n, C, H, W]`` and class indices ``[n]``.
        space: the architecture space (training share).
        cfg: schedule.
        progress: tqdm bar.
        on_log: called with every logged record (see :func:`~weightspace.hyper.train.fit_hypernetwork`).

    Returns:
        one dict per ``log_every`` steps: ``step``, ``minutes``, ``train/loss``, ``train/accuracy``.
    """
    cfg = cfg or GHNTrainConfig()
    extra = {"linear_embed": cfg.linear_embed} if cfg.linear_embed else {}  # spaces without twins need not take it
    pool = space.train_pool(cfg.pool, seed=cfg.seed, **extra)
    cache = GHNTargetCache(ghn)
    probs = pool_probabilities(pool, cfg.kind_weights)

    def draw(rng):
        if probs is None:  # uniform (the draw sequence of runs made before kind_weights existed)
            idx = rng.integers(len(pool), size=cfg.archs_per_step)
        else:
            idx = rng.choice(len(pool), size=cfg.archs_per_step, p=probs)
        return [cache(pool[int(i)]) for i in idx]

    return fit_hypernetwork(ghn, draw, x, y, cfg, progress=progress, desc="ghn", on_log=on_log)


def pool_probabilities(pool: list[dict], kind_weights: dict[str, float] | None) -> np.ndarray | None:
    """Draw probability of each pool member under ``kind_weights`` (None: uniform).

    Raises:
        ValueError: a weight is negative or names a family the pool does not hold, or all are zero.
    """
    if not kind_weights:
        return None
    kinds = [c["kind"] for c in pool]
    unknown = sorted(set(kind_weights) - set(kinds))
    if unknown or any(w < 0 for w in kind_weights.values()):
        raise ValueError(f"kind_weights {kind_weights}: weights are >= 0 and name families of the pool "
                         f"({sorted(set(kinds))}); not in the pool: {unknown}")
    w = np.asarray([float(kind_weights.get(k, 1.0)) for k in kinds])
    if w.sum() <= 0:
        raise ValueError(f"kind_weights {kind_weights} give every architecture of the pool weight 0")
    return w / w.sum()


def validation_split(x: Tensor, y: Tensor, fraction: float = 0.15,
                     seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_fit, y_fit, x_val, y_val)``: a seeded random ``fraction`` of a training split held out.

    The split of ``benchmarks/hyper.py``: its Adam references stop early on the held-out share, and
    its design-choice tools measure there. A GHN trained on the fitting share only
    (``ghn_recipe --hold-out-validation``) has never seen the held-out inputs; the shipped
    checkpoints were trained on the whole training split.

    Args:
        x / y: training inputs ``[n, ...]`` and labels ``[n]``.
        fraction: share held out, in ``[0, 1)``.
        seed: seed of the permutation (``torch.randperm``; the same seed always gives the same split;
            not :func:`model_zoo.data.split_indices`'s permutation, so that the benchmark's cached
            references keep their split).

    Raises:
        ValueError: ``fraction`` outside ``[0, 1)`` or ``x`` and ``y`` of different lengths.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_split: fraction must lie in [0, 1), got {fraction}")
    if len(x) != len(y):
        raise ValueError(f"validation_split: x has {len(x)} samples but y has {len(y)}")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n = int(round(fraction * len(x)))
    return x[perm[n:]], y[perm[n:]], x[perm[:n]], y[perm[:n]]
