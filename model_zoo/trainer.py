"""The batched trainer: many small models of one architecture trained at once.

The parameters of ``M`` models are stacked into tensors ``[M, *shape]``; one step evaluates all of
them with ``torch.func.vmap`` over ``torch.func.functional_call`` and ``torch.func.grad``, then
applies functional optimizers (Adam, SGD, RMSProp; each model its own) on the stacked tensors with
per-model learning rate, L2 coefficient and step counter. Each model keeps its own initialization (init std, seed),
its own training subset (train fraction) and its own batch order, so a model's data and
initialization do not depend on which other models share its group. Dropout uses a per-model rate
(masks drawn under ``vmap(randomness="different")``, so they depend on the group's random stream).

A group shares the architecture and the batch size (:func:`group_key`); mixing optimizers in one
group measured faster than one group per optimizer, since small groups pay vmap's per-step overhead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from .archs import ACTIVATIONS, instantiate
from .data import Dataset
from .sampling import RunConfig

log = logging.getLogger(__name__)

__all__ = ["TrainerConfig", "RunResult", "train_group", "checkpoint_epochs", "group_key", "init_state"]


@dataclass(frozen=True)
class TrainerConfig:
    """Training schedule shared by a zoo.

    Attributes:
        epochs: passes over each model's training subset.
        checkpoints: epochs at which weights and metrics are stored; ``None`` gives the Small CNN Zoo
            schedule (see :func:`checkpoint_epochs`).
        dense_every: also store every ``k`` optimizer steps (dense trajectories for nowcasting); 0 = off.
        eval_batch_size: samples per forward pass when computing metrics.
        sgd_momentum, betas, eps, rmsprop_alpha: optimizer constants.
    """

    epochs: int = 20
    checkpoints: tuple[int, ...] | None = None
    dense_every: int = 0
    eval_batch_size: int = 512
    sgd_momentum: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    rmsprop_alpha: float = 0.99

    def schedule(self) -> tuple[int, ...]:
        eps = checkpoint_epochs(self.epochs) if self.checkpoints is None else tuple(sorted(set(self.checkpoints)))
        bad = [e for e in eps if not 0 <= e <= self.epochs]
        if bad:
            raise ValueError(f"checkpoint epochs {bad} lie outside [0, epochs={self.epochs}]")
        return eps


def checkpoint_epochs(epochs: int) -> tuple[int, ...]:
    """The Small CNN Zoo schedule: epochs 0, 1, 2, 3, then every quarter of training, and the last.

    For 86 epochs this is close to the published 0,1,2,3,20,40,60,80,86; for 20 epochs it gives
    0,1,2,3,5,10,15,20.
    """
    q = max(1, epochs // 4)
    return tuple(sorted({e for e in (0, 1, 2, 3) if e <= epochs} | set(range(q, epochs + 1, q)) | {epochs}))


@dataclass
class RunResult:
    """One trained run: checkpoints stacked on a leading axis and one metrics row per checkpoint."""

    index: int
    state: dict[str, Tensor]
    steps: list[int]
    epochs: list[float]
    metrics: list[dict[str, float]] = field(default_factory=list)


def group_key(run: RunConfig) -> str:
    """Runs with the same key can be trained together: same architecture and batch size (each model
    keeps its own optimizer, learning rate, L2, dropout, init std, train fraction and seed)."""
    import json

    return json.dumps([run.arch, run.batch_size], sort_keys=True)


def init_state(model: nn.Module, runs: Sequence[RunConfig]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Stacked initial parameters ``[M, *shape]`` and buffers.

    Weights, embeddings and kernels ~ N(0, init_std²) from the run's own seed; biases 0; 1-D scales
    of normalization layers 1 (the Small CNN Zoo draws from a truncated normal of the same std).
    """
    named = list(model.named_parameters())
    params = {n: torch.empty(len(runs), *p.shape) for n, p in named}
    for m, run in enumerate(runs):
        g = torch.Generator().manual_seed(run.seed)
        for n, p in named:
            if n.endswith("bias"):
                params[n][m].zero_()
            elif p.dim() == 1 and n.endswith("weight"):
                params[n][m].fill_(1.0)
            else:
                params[n][m].normal_(0.0, run.init_std, generator=g)
    buffers = {n: b.unsqueeze(0).repeat(len(runs), *([1] * b.dim())) for n, b in model.named_buffers()}
    return params, buffers


class _Dropout:
    """Per-model dropout applied after hidden activations through forward hooks."""

    rate: Tensor | None = None

    @classmethod
    def hook(cls, module: nn.Module, inputs: tuple, out: Tensor) -> Tensor:
        p = cls.rate
        if p is None or not module.training:
            return out
        keep = (torch.rand_like(out) >= p).to(out.dtype)
        return out * keep / (1.0 - p)


def _attach_dropout(model: nn.Module) -> None:
    kinds = tuple(ACTIVATIONS.values()) + (nn.TransformerEncoderLayer,)
    for mod in model.modules():
        if isinstance(mod, kinds):
            mod.register_forward_hook(_Dropout.hook)


def _subsets(runs: Sequence[RunConfig], n: int) -> list[np.ndarray]:
    out = []
    for r in runs:
        k = max(1, int(round(r.train_fraction * n)))
        out.append(np.sort(np.random.default_rng([r.seed, 0]).permutation(n)[:k]))
    return out


def _epoch_order(runs: Sequence[RunConfig], subsets: list[np.ndarray], epoch: int, bs: int
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Per-model batch order for one epoch: indices ``[M, S*bs]``, weights ``[M, S*bs]``, steps ``[M]``."""
    steps = np.array([math.ceil(len(s) / bs) for s in subsets])
    S = int(steps.max())
    idx = np.zeros((len(runs), S * bs), dtype=np.int64)
    w = np.zeros((len(runs), S * bs), dtype=np.float32)
    for m, (r, s) in enumerate(zip(runs, subsets)):
        perm = s[np.random.default_rng([r.seed, 1, epoch]).permutation(len(s))]
        idx[m, : len(s)] = perm
        w[m, : len(s)] = 1.0
    return torch.from_numpy(idx), torch.from_numpy(w), torch.from_numpy(steps)


def _loss(out: Tensor, y: Tensor, task: str) -> Tensor:
    if task == "classification":
        return F.cross_entropy(out, y, reduction="none")
    return ((out - y) ** 2).mean(-1)


_KINDS = ("sgd", "adam", "rmsprop")


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


class _Optimizer:
    """SGD / Adam / RMSProp on stacked parameters, each model with its own optimizer, learning rate
    and L2 coefficient. The group's models are ordered by optimizer, so each rule runs in place on a
    contiguous slice (a view) of the stacked tensors; models past their epoch are restored afterwards.
    """

    def __init__(self, kinds: Sequence[str], params: dict[str, Tensor], lr: Tensor, l2: Tensor,
                 cfg: TrainerConfig) -> None:
        if list(kinds) != sorted(kinds, key=_KINDS.index):
            raise ValueError("models must be ordered by optimizer")
        self.cfg = cfg
        self.slices = []
        for k in _KINDS:
            idx = [i for i, x in enumerate(kinds) if x == k]
            if idx:
                self.slices.append((k, slice(idx[0], idx[-1] + 1)))
        self.lr, self.l2 = lr, l2
        self.t = torch.zeros_like(lr)
        self.m = {n: torch.zeros_like(p) for n, p in params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()}

    @torch.no_grad()
    def step(self, params: dict[str, Tensor], grads: dict[str, Tensor], active: Tensor) -> None:
        c = self.cfg
        all_active = bool(active.all())
        idle = None if all_active else (~active).nonzero().flatten()
        saved = None
        if idle is not None:
            saved = [(n, params[n][idle].clone(), self.m[n][idle].clone(), self.v[n][idle].clone()) for n in params]
        self.t += active.to(self.t.dtype)
        for n, p in params.items():
            g = grads[n]
            if p.dim() >= 3:  # L2 on weight matrices and kernels (per-model [M, out, in, ...])
                g.addcmul_(_bcast(self.l2, p), p)
            for kind, sl in self.slices:
                ps, gs, lr = p[sl], g[sl], _bcast(self.lr[sl], p)
                if kind == "sgd":
                    if c.sgd_momentum:
                        ms = self.m[n][sl]
                        ms.mul_(c.sgd_momentum).add_(gs)
                        gs = ms
                    ps.sub_(lr * gs)
                elif kind == "adam":
                    b1, b2 = c.betas
                    ms, vs = self.m[n][sl], self.v[n][sl]
                    ms.mul_(b1).add_(gs, alpha=1 - b1)
                    vs.mul_(b2).addcmul_(gs, gs, value=1 - b2)
                    t = _bcast(self.t[sl].clamp_min(1), p)
                    denom = (vs / (1 - b2**t)).sqrt_().add_(c.eps)
                    ps.sub_((lr / (1 - b1**t)) * ms / denom)
                else:  # rmsprop
                    vs = self.v[n][sl]
                    vs.mul_(c.rmsprop_alpha).addcmul_(gs, gs, value=1 - c.rmsprop_alpha)
                    ps.sub_(lr * gs / vs.sqrt().add_(c.eps))
        if saved is not None:  # models past their epoch keep their weights and optimizer state
            for n, p0, m0, v0 in saved:
                params[n][idle] = p0
                self.m[n][idle] = m0
                self.v[n][idle] = v0


def train_group(runs: Sequence[RunConfig], data: Dataset, cfg: TrainerConfig, *,
                progress: Callable[[int], None] | None = None) -> list[RunResult]:
    """Train ``runs`` (same architecture and batch size) at once; return their checkpoints.

    Args:
        runs: the group (see :func:`group_key`).
        data: dataset; the inputs must fit the architecture.
        cfg: schedule and optimizer constants.
        progress: called with the number of optimizer steps done, for progress bars.

    Raises:
        ValueError: runs of different groups.
    """
    keys = {group_key(r) for r in runs}
    if len(keys) != 1:
        raise ValueError(f"train_group needs runs of one architecture and batch size, got {len(keys)} groups")
    # The group's random stream (dropout masks) depends only on its members.
    torch.manual_seed(int(np.random.default_rng([r.seed for r in runs]).integers(2**31 - 1)))
    order = sorted(range(len(runs)), key=lambda i: (_KINDS.index(runs[i].optimizer), i))
    given, runs = runs, [runs[i] for i in order]  # ordered by optimizer: one slice per update rule
    r0 = runs[0]
    M, bs = len(runs), r0.batch_size
    model = instantiate(r0.arch)
    _attach_dropout(model)
    params, buffers = init_state(model, runs)
    lr = torch.tensor([r.lr for r in runs])
    opt = _Optimizer([r.optimizer for r in runs], params, lr, torch.tensor([r.l2 for r in runs]), cfg)
    drop = torch.tensor([r.dropout for r in runs])
    use_drop = bool((drop > 0).any())
    xtr, ytr, xte, yte = data.x_train, data.y_train, data.x_test, data.y_test
    subsets = _subsets(runs, len(xtr))
    member = torch.zeros(M, len(xtr))
    for m, s in enumerate(subsets):
        member[m, torch.from_numpy(s)] = 1.0
    task = data.task

    def loss_one(p: dict, b: dict, rate: Tensor, x: Tensor, y: Tensor, w: Tensor) -> Tensor:
        _Dropout.rate = rate if use_drop else None
        try:
            out = functional_call(model, (p, b), (x,))
        finally:
            _Dropout.rate = None
        return (_loss(out, y, task) * w).sum() / w.sum().clamp_min(1.0)

    step_fn = vmap(grad_and_value(loss_one), randomness="different")
    fwd = vmap(lambda p, b, x: functional_call(model, (p, b), (x,)), in_dims=(0, 0, None))

    @torch.no_grad()
    def evaluate(x: Tensor, y: Tensor, weight: Tensor | None) -> tuple[Tensor, Tensor]:
        model.eval()
        losses, correct = [], []
        for i in range(0, len(x), cfg.eval_batch_size):
            out = fwd(params, buffers, x[i : i + cfg.eval_batch_size])  # [M, b, K]
            yb = y[i : i + cfg.eval_batch_size]
            losses.append(_loss(out.flatten(0, 1), yb.repeat(M, *([1] * (yb.dim() - 1))), task).reshape(M, -1))
            if task == "classification":
                ok = (out.argmax(-1) == yb) & torch.isfinite(out).all(-1)
                correct.append(ok.float())
        model.train()
        loss = torch.cat(losses, 1)
        w = torch.ones_like(loss) if weight is None else weight
        mean_loss = (loss * w).sum(1) / w.sum(1)
        acc = (torch.cat(correct, 1) * w).sum(1) / w.sum(1) if correct else torch.full((M,), float("nan"))
        return mean_loss, acc

    snaps: list[tuple[dict[str, Tensor], Tensor, float | None, dict[str, Tensor]]] = []

    def snapshot(steps_done: Tensor, epoch: float | None) -> None:
        trl, tra = evaluate(xtr, ytr, member)
        tel, tea = evaluate(xte, yte, None)
        state = {**{n: t.clone() for n, t in params.items()}, **{n: t.clone() for n, t in buffers.items()}}
        snaps.append((state, steps_done.clone(), epoch,
                      {"train_loss": trl, "train_accuracy": tra, "test_loss": tel, "test_accuracy": tea}))

    schedule = set(cfg.schedule())
    steps_done = torch.zeros(M, dtype=torch.long)
    it = 0
    model.train()
    if 0 in schedule:
        snapshot(steps_done, 0.0)
    for epoch in range(1, cfg.epochs + 1):
        idx, w, nsteps = _epoch_order(runs, subsets, epoch, bs)
        S = idx.shape[1] // bs
        for s in range(S):
            sl = slice(s * bs, (s + 1) * bs)
            bi = idx[:, sl]
            active = nsteps > s
            if bool(active.all()):
                grads, _ = step_fn(params, buffers, drop, xtr[bi], ytr[bi], w[:, sl])
            else:
                # models past their epoch (smaller train fraction) are left out of the computation:
                # forward/backward run on the active ones only, and only their statistics change
                act = active.nonzero().flatten()
                sub_p = {n: t.index_select(0, act) for n, t in params.items()}
                sub_b = {n: t.index_select(0, act) for n, t in buffers.items()}
                sub_g, _ = step_fn(sub_p, sub_b, drop[act], xtr[bi[act]], ytr[bi[act]], w[act, sl])
                grads = {n: torch.zeros_like(t).index_copy_(0, act, sub_g[n]) for n, t in params.items()}
                for n, t in buffers.items():
                    t.index_copy_(0, act, sub_b[n])
            opt.step(params, grads, active)
            steps_done += active.long()
            it += 1
            if cfg.dense_every and it % cfg.dense_every == 0:
                snapshot(steps_done, None)
            if progress is not None:
                progress(1)
        if epoch in schedule:
            snapshot(steps_done, float(epoch))

    spe = torch.tensor([math.ceil(len(s) / bs) for s in subsets], dtype=torch.float64)
    results = []
    for m, run in enumerate(runs):
        keep, seen = [], set()
        for k, (_, st, ep, _) in enumerate(snaps):
            step = int(st[m])
            if step in seen:  # a dense snapshot at an epoch boundary, or a model past its epoch
                if ep is not None:  # prefer the epoch-labelled duplicate
                    keep = [j for j in keep if int(snaps[j][1][m]) != step] + [k]
                continue
            seen.add(step)
            keep.append(k)
        keep.sort(key=lambda j: int(snaps[j][1][m]))
        state = {n: torch.stack([snaps[j][0][n][m] for j in keep]) for n in snaps[0][0]}
        steps = [int(snaps[j][1][m]) for j in keep]
        epochs = [snaps[j][2] if snaps[j][2] is not None else round(steps[i] / float(spe[m]), 4)
                  for i, j in enumerate(keep)]
        metrics = [{k: float(v[m]) for k, v in snaps[j][3].items()} for j in keep]
        results.append(RunResult(run.index, state, steps, epochs, metrics))
    back = {id(r): res for r, res in zip(runs, results)}
    return [back[id(r)] for r in given]
