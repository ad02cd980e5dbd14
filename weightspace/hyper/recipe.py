"""Training recipe of the shipped :class:`~weightspace.hyper.ghn.GHN` checkpoints (one command each).

GHN-2's training loop on :class:`~weightspace.hyper.space.CellSpace`: a fixed pool of training
architectures (GHN-2 trains on the fixed DeepNets-1M set; here ``pool`` configurations of the
training share, traced once and cached), every step draws ``archs_per_step`` of them, predicts
all their parameters in one batched pass, runs each target network functionally
(``torch.func.functional_call``, BatchNorm in training mode) on a minibatch, and backpropagates
the mean cross-entropy into the hypernetwork (Adam, warm-up then cosine decay following the larger
of the step and wall-clock fractions, gradient clipping).

The shipped checkpoints, each one command on one CPU thread (:mod:`weightspace.cli.ghn_recipe`,
which loads the data)::

    python -m weightspace.cli.ghn_recipe --data digits  --out weightspace/checkpoints/hypernet-digits  --minutes 13
    python -m weightspace.cli.ghn_recipe --data mnist1d --out weightspace/checkpoints/hypernet-mnist1d --minutes 13
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm import tqdm

from .ghn import GHN, GHNTarget
from .space import CellSpace, build_arch, config_key

log = logging.getLogger(__name__)

__all__ = ["GHNTrainConfig", "GHNTargetCache", "train_ghn"]


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


def _lr_factor(progress: float) -> float:
    if progress < 0.02:
        return max(progress / 0.02, 0.01)
    t = min(1.0, (progress - 0.02) / 0.98)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))


def train_ghn(ghn: GHN, x: Tensor, y: Tensor, space: CellSpace, cfg: GHNTrainConfig | None = None, *,
              progress: bool = True) -> list[dict]:
    """Train ``ghn`` in place on ``(x, y)`` over ``space``; return the logged history.

    Args:
        ghn: the hypernetwork (its ``data`` should name the dataset of ``x``).
        x / y: training inputs ``[n, C, L]`` or ``[n, C, H, W]`` and class indices ``[n]``.
        space: the architecture space (training share).
        cfg: schedule.
        progress: tqdm bar.

    Returns:
        one dict per ``log_every`` steps: ``step``, ``minutes``, ``train/loss``, ``train/accuracy``.
    """
    cfg = cfg or GHNTrainConfig()
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    pool = space.train_pool(cfg.pool, seed=cfg.seed)
    cache = GHNTargetCache(ghn)
    opt = torch.optim.Adam(ghn.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    t0 = time.perf_counter()

    def frac(step: int) -> float:
        f = step / cfg.steps
        if cfg.max_minutes:
            f = max(f, (time.perf_counter() - t0) / 60 / cfg.max_minutes)
        return f

    ghn.train()
    history, window = [], []
    bar = tqdm(range(cfg.steps), desc="ghn", disable=not progress)
    for step in bar:
        fr = frac(step)
        if fr >= 1.0:
            log.info("time budget of %.1f minutes reached after %d steps", cfg.max_minutes, step)
            break
        for group in opt.param_groups:
            group["lr"] = cfg.lr * _lr_factor(fr)
        entries = [cache(pool[int(i)]) for i in rng.integers(len(pool), size=cfg.archs_per_step)]
        flats = ghn.predict([t for _, t in entries], [t.draw_init(gen) for _, t in entries])
        loss, correct = 0.0, 0.0
        for (model, t), flat in zip(entries, flats):
            idx = torch.randint(len(x), (cfg.batch_size,), generator=gen)
            model.train()
            buffers = {k for k, _ in model.named_buffers()}
            params = {k: (v.detach() if k in buffers else v) for k, v in t.spec.unflatten(flat).items()}
            out = functional_call(model, params, (x[idx],))
            loss = loss + F.cross_entropy(out, y[idx])
            correct += float((out.argmax(-1) == y[idx]).float().mean())
        loss = loss / len(entries)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ghn.parameters(), cfg.grad_clip)
        opt.step()
        window.append((float(loss.detach()), correct / len(entries)))
        if (step + 1) % cfg.log_every == 0 or frac(step + 1) >= 1.0 or step + 1 == cfg.steps:
            rec = {"step": step + 1, "minutes": round((time.perf_counter() - t0) / 60, 2),
                   "train/loss": float(np.mean([w[0] for w in window])),
                   "train/accuracy": float(np.mean([w[1] for w in window]))}
            history.append(rec)
            window = []
            log.info("step %d (%.1f min) train/loss %.4f train/accuracy %.3f", rec["step"], rec["minutes"],
                     rec["train/loss"], rec["train/accuracy"])
            bar.set_postfix(loss=f"{rec['train/loss']:.3f}", acc=f"{rec['train/accuracy']:.3f}")
    ghn.eval()
    return history
