"""Training and evaluation of the graph hypernetwork (:mod:`weightspace.hyper.model`).

GHN-2's recipe on the project's architecture family: every step draws a few architectures from
:class:`~weightspace.hyper.family.ArchSpace` (training share only) and a fresh random draw
for each, predicts all their parameters in one batched pass, runs each target network functionally
(``torch.func.functional_call``) on a minibatch, and backpropagates the mean cross-entropy into the
hypernetwork (Adam, cosine learning-rate decay, gradient clipping).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm import tqdm

from weightspace.instantiate import instantiate

from .family import ArchSpace, config_key
from .model import GraphHyperNetwork, HyperTarget

log = logging.getLogger(__name__)

#: steps in a row with a non-finite loss or gradient after which hypernetwork training stops
MAX_BAD_STEPS = 20

__all__ = ["HyperTrainConfig", "TargetCache", "train_hypernetwork", "accuracy", "zero_shot_accuracy",
           "steps_to_target"]


@dataclass(frozen=True)
class HyperTrainConfig:
    """Schedule of :func:`train_hypernetwork`.

    Attributes:
        steps: optimizer steps.
        archs_per_step: architectures sampled per step (GHN-2: 8).
        batch_size: images per architecture per step.
        lr / weight_decay / grad_clip: Adam settings (cosine decay to 5% of ``lr``, 2% warm-up).
        seed: seed of architecture sampling, random draws and minibatches.
        log_every: steps between ``train/loss`` log lines.
        max_minutes: wall-clock budget; the learning-rate schedule then follows the larger of the
            step and time fractions, and training ends when either runs out (None: steps only).
            The default, 12, is the shipped recipe's first run.
    """

    steps: int = 2000
    archs_per_step: int = 4
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-5
    grad_clip: float = 5.0
    seed: int = 0
    log_every: int = 50
    max_minutes: float | None = 12.0

    def to_dict(self) -> dict:
        return asdict(self)


class TargetCache:
    """Built models and :class:`HyperTarget` per architecture config (tracing costs milliseconds)."""

    def __init__(self, hyper: GraphHyperNetwork, size: int = 4096) -> None:
        self.hyper, self.size = hyper, size
        self._items: OrderedDict[str, tuple[nn.Module, HyperTarget]] = OrderedDict()

    def __call__(self, config: dict) -> tuple[nn.Module, HyperTarget]:
        key = config_key(config)
        hit = self._items.get(key)
        if hit is None:
            model = instantiate(config)
            hit = self._items[key] = (model, self.hyper.target(model))
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        return hit


def lr_factor(progress: float) -> float:
    """Linear warm-up over the first 2%, then cosine decay to 5% (``progress`` in [0, 1])."""
    if progress < 0.02:
        return max(progress / 0.02, 0.01)
    t = min(1.0, (progress - 0.02) / 0.98)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))


def train_hypernetwork(hyper: GraphHyperNetwork, x: Tensor, y: Tensor, space: ArchSpace | None = None,
                       cfg: HyperTrainConfig | None = None, *, progress: bool = True) -> list[dict]:
    """Train ``hyper`` in place on classification data ``(x, y)``; return the logged history.

    Args:
        hyper: the hypernetwork.
        x: inputs ``[n, 1, 8, 8]`` (MLPs of the family flatten them).
        y: class indices ``[n]``.
        space: architecture family (default :class:`ArchSpace`).
        cfg: schedule (default :class:`HyperTrainConfig`).
        progress: show a tqdm bar.

    Returns:
        one dict per ``log_every`` steps: ``step``, ``train/loss``, ``train/accuracy`` (means over the window).
    """
    space, cfg = space or ArchSpace(), cfg or HyperTrainConfig()
    cache = TargetCache(hyper)
    return fit_hypernetwork(hyper, lambda rng: [cache(space.sample_train(rng)) for _ in range(cfg.archs_per_step)],
                            x, y, cfg, progress=progress, desc="hypernetwork")


def fit_hypernetwork(net: nn.Module, draw, x: Tensor, y: Tensor, cfg, *, progress: bool = True,
                     desc: str = "hypernetwork", on_log: Callable[[dict], None] | None = None) -> list[dict]:
    """The training loop shared by :func:`train_hypernetwork` and :func:`~weightspace.hyper.recipe.train_ghn`.

    Each step draws architectures, predicts all their parameters in one call of ``net.predict``, and
    minimizes the mean cross-entropy of the filled networks on one minibatch each (``functional_call``,
    so gradients reach the hypernetwork; buffers are not differentiated). Adam with linear warm-up over
    the first 2% and cosine decay to 5% (:func:`lr_factor`) of the progress ``max(step / steps,
    minutes / max_minutes)``, gradient clipping. A step whose loss or gradient norm is not finite (one
    drawn architecture overflowing) is skipped with a warning, and :data:`MAX_BAD_STEPS` of them in a
    row raise ``FloatingPointError``.

    Args:
        net: a hypernetwork with ``predict(targets, inits)`` and ``parameters()``.
        draw: ``rng -> [(model, target), ...]``: the architectures of one step.
        x / y: training inputs and class indices ``[n]``.
        cfg: ``seed, lr, weight_decay, steps, max_minutes, batch_size, grad_clip, log_every``.
        progress: tqdm bar; ``desc`` its label.
        on_log: called with every logged record (e.g. to save snapshots for a validation curve); the
            network is in training mode and must be left unchanged.

    Returns:
        one dict per ``log_every`` steps: ``step``, ``minutes``, ``train/loss``, ``train/accuracy`` (means
        over the window).
    """
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    t0 = time.perf_counter()

    def progress_fraction(step: int) -> float:
        frac = step / cfg.steps
        if cfg.max_minutes:
            frac = max(frac, (time.perf_counter() - t0) / 60 / cfg.max_minutes)
        return frac

    net.train()
    history, window = [], []
    skipped, bad_in_a_row = 0, 0
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress)
    for step in bar:
        frac = progress_fraction(step)
        if frac >= 1.0:
            log.info("time budget of %.1f minutes reached after %d steps", cfg.max_minutes, step)
            break
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(frac)
        entries = draw(rng)
        flats = net.predict([t for _, t in entries], [t.draw_init(gen) for _, t in entries])
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
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        if bool(torch.isfinite(loss.detach())) and bool(torch.isfinite(grad_norm)):
            opt.step()
            window.append((float(loss.detach()), correct / len(entries)))
            bad_in_a_row = 0
        else:  # one architecture's overflow must not turn the hypernetwork into NaNs: skip the step
            opt.zero_grad(set_to_none=True)
            skipped, bad_in_a_row = skipped + 1, bad_in_a_row + 1
            log.warning("step %d skipped: non-finite loss %s or gradient norm %s (%d skipped so far)",
                        step + 1, float(loss.detach()), float(grad_norm), skipped)
            if bad_in_a_row >= MAX_BAD_STEPS:
                raise FloatingPointError(
                    f"{desc}: {bad_in_a_row} steps in a row had a non-finite loss or gradient (last at step "
                    f"{step + 1}); lower the learning rate ({cfg.lr}) or the gradient clip ({cfg.grad_clip})")
        if window and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps
                       or progress_fraction(step + 1) >= 1.0):
            rec = {"step": step + 1, "minutes": round((time.perf_counter() - t0) / 60, 2),
                   "train/loss": float(np.mean([w[0] for w in window])),
                   "train/accuracy": float(np.mean([w[1] for w in window]))}
            if skipped:
                rec["skipped_steps"] = skipped
            history.append(rec)
            window = []
            log.info("step %d (%.1f min) train/loss %.4f train/accuracy %.3f", rec["step"], rec["minutes"],
                     rec["train/loss"], rec["train/accuracy"])
            bar.set_postfix(loss=f"{rec['train/loss']:.3f}", acc=f"{rec['train/accuracy']:.3f}")
            if on_log is not None:
                on_log(rec)
    net.eval()
    return history


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Share of ``x`` that ``model`` (in eval mode) classifies as ``y``."""
    was = model.training
    model.eval()
    acc = float((model(x).argmax(-1) == y).float().mean())
    model.train(was)
    return acc


def zero_shot_accuracy(hyper: GraphHyperNetwork, configs: list[dict], x: Tensor, y: Tensor, seed: int = 0
                       ) -> list[float]:
    """Test accuracy of each architecture filled by ``hyper`` (no training)."""
    return [accuracy(hyper(instantiate(c), seed=seed), x, y) for c in configs]


def steps_to_target(model: nn.Module, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
                    target: float, *, max_steps: int = 300, lr: float = 1e-3, batch_size: int = 64,
                    eval_every: int = 5, seed: int = 0) -> int | None:
    """Adam steps until ``model`` reaches ``target`` test accuracy (checked every ``eval_every``).

    Returns 0 if it starts at the target, None if it does not get there within ``max_steps``.
    """
    if accuracy(model, x_test, y_test) >= target:
        return 0
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(1, max_steps + 1):
        idx = torch.randint(len(x_train), (batch_size,), generator=gen)
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 and accuracy(model, x_test, y_test) >= target:
            return step
    return None
