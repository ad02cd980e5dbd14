"""The batched trainer: many small models of one architecture trained at once.

The parameters of ``M`` models live in one ``[M, D]`` tensor (named ``[M, *shape]`` views). One step
computes the gradients of all models still inside their epoch, then one fused optimizer
(Adam, SGD or RMSProp per model, with per-model learning rate, L2 coefficient and step counter)
updates them with a few elementwise passes. Gradients come from

* :class:`~model_zoo.batched.BatchedNet` for the MLP and SmallCNN families: the forward pass as
  batched matrix products (im2col for convolutions) under autograd;
* ``torch.func.vmap`` over ``functional_call`` and ``grad`` for every other family (ResNet, ViT).

Models are ordered by steps per epoch (train fraction), longest first, so the models that have not
finished their epoch are always a prefix of the stack: a step computes and updates exactly those, on
views, without gathering or restoring anyone. Each model keeps its own initialization (init std,
seed), its own training subset (train fraction) and its own batch order, so a model's data and
initialization do not depend on which other models share its group. Dropout uses a per-model rate;
its masks come from the group's random stream, so they depend on the group.

A group shares the architecture and the batch size (:func:`group_key`); mixing optimizers in one
group is faster than one group per optimizer, since every step has a fixed cost.

Why the trainer is built this way: ``docs/design-notes/model_zoo.md``.
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
from .batched import BatchedNet
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


def _sqrt(x: Tensor, out: Tensor) -> None:
    """``out = sqrt(x)``. On CPU through NumPy: torch 2.13's CPU sqrt takes ~10x longer on zeros
    (measured), and second moments hold many (SGD rows, parameters without gradient); both are
    correctly rounded, so the values are the same."""
    if x.device.type == "cpu":
        np.sqrt(x.numpy(), out=out.numpy())
    else:
        torch.sqrt(x, out=out)


class _FusedOptimizer:
    """SGD / Adam / RMSProp of every model as one short sequence of elementwise ops on the flat
    ``[M, D]`` parameters, each model (row) with its own rule, learning rate and L2 coefficient.

    All three rules are one update with per-row coefficients (columns ``[M, 1]``)::

        g += l2 * p                    # on weight matrices and kernels only
        m  = m + b * (g - m)           # Adam b = 1-b1; SGD and RMSProp b = 1, so m = g
        v  = v + d * (g² - v)          # Adam d = 1-b2; RMSProp d = 1-alpha; SGD d = 0
        p += m / (e * sqrt(v) + eps)   # with e = e0 / f and eps = eps0 / f, where
                                       # Adam:    f = -lr / (1-b1^t), e0 = 1/sqrt(1-b2^t), eps0 = eps
                                       # RMSProp: f = -lr,            e0 = 1,              eps0 = eps
                                       # SGD:     f = -lr,            e0 = 0,              eps0 = 1

    which is ``torch.optim``'s Adam, RMSprop and SGD (no dampening, no Nesterov) with
    ``weight_decay``, in seven passes over the parameters; SGD momentum ``mu`` makes the second line
    ``m = mu * m + g``. Only the first ``k`` rows (the active models) are updated.
    """

    def __init__(self, kinds: Sequence[str], lr: Tensor, l2: Tensor, decay: list[tuple[int, int]], D: int,
                 cfg: TrainerConfig) -> None:
        M = len(kinds)
        col = lambda vals: torch.tensor(vals, dtype=torch.float64).reshape(M, 1)  # noqa: E731
        b1, b2 = cfg.betas
        ka = [k == "adam" for k in kinds]
        ks = [k == "sgd" for k in kinds]
        self.adam = torch.tensor(ka).reshape(M, 1)
        self.momentum = col([cfg.sgd_momentum if s else 0.0 for s in ks]).float() if cfg.sgd_momentum else None
        self.b = col([1 - b1 if a else 1.0 for a in ka]).float()
        self.d = col([1 - b2 if a else (0.0 if s else 1 - cfg.rmsprop_alpha) for a, s in zip(ka, ks)]).float()
        self.e0 = col([0.0 if s else 1.0 for s in ks])
        self.eps = col([1.0 if s else cfg.eps for s in ks])
        self.lr = lr.to(torch.float64).reshape(M, 1)
        self.b1, self.b2 = b1, b2
        self.l2 = l2.reshape(M, 1).float() if bool((l2 != 0).any()) else None
        self.decay = decay  # column ranges [(start, stop)] that get L2
        self.m = torch.zeros(M, D)
        self.v = torch.zeros(M, D)
        self.tmp = torch.empty(M, D)

    @torch.no_grad()
    def step(self, p: Tensor, g: Tensor, t: Tensor) -> None:
        """Update the first ``k = len(g)`` rows of ``p`` with gradients ``g`` at (1-based) steps ``t``."""
        k = g.shape[0]
        adam, tf = self.adam[:k], t.to(torch.float64).reshape(k, 1)
        f = -self.lr[:k] / torch.where(adam, 1 - self.b1**tf, 1.0)
        e = self.e0[:k] / torch.where(adam, 1 - self.b2**tf, 1.0).sqrt()
        e, eps = (e / f).float(), (self.eps[:k] / f).float()
        p, m, v, tmp = p[:k], self.m[:k], self.v[:k], self.tmp[:k]
        if self.l2 is not None:
            for a, b in self.decay:  # weight matrices and kernels
                g[:, a:b].addcmul_(p[:, a:b], self.l2[:k])
        if self.momentum is None:
            m.lerp_(g, self.b[:k])
        else:
            m.mul_(self.momentum[:k] + (1 - self.b[:k])).addcmul_(g, self.b[:k])
        v.lerp_(torch.mul(g, g, out=tmp), self.d[:k])
        _sqrt(v, tmp)
        tmp.mul_(e).add_(eps)
        p.addcdiv_(m, tmp)


class _Flat:
    """Named stacked parameters ``{name: [M, *shape]}`` as views of one ``[M, D]`` tensor."""

    def __init__(self, params: dict[str, Tensor]) -> None:
        # Weight matrices and kernels first: L2 then covers one contiguous column range.
        params = dict(sorted(params.items(), key=lambda kv: kv[1].dim() < 3))
        self.names = list(params)
        self.shapes = [tuple(t.shape[1:]) for t in params.values()]
        sizes = [math.prod(s) for s in self.shapes]
        self.offsets = np.cumsum([0] + sizes).tolist()
        self.data = torch.cat([t.reshape(t.shape[0], -1) for t in params.values()], 1).contiguous()
        end = self.offsets[sum(len(s) >= 2 for s in self.shapes)]
        self.decay = [(0, end)] if end else []  # the columns that get L2

    def views(self, flat: Tensor) -> dict[str, Tensor]:
        k = flat.shape[0]
        return {n: flat[:, a:b].view(k, *s) for n, s, a, b in zip(self.names, self.shapes, self.offsets, self.offsets[1:])}

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Contiguous per-name copies of a ``[T, D]`` tensor."""
        return {n: t.contiguous() for n, t in self.views(flat).items()}


_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


def _eval_blocks(net: BatchedNet, x: Tensor, y: Tensor, bs: int) -> list[tuple[Tensor, Tensor]]:
    """A shared evaluation input cut into sample blocks in the batched network's layout."""
    return [(net.layout(x[i : i + bs]), y[i : i + bs]) for i in range(0, len(x), bs)]


def _correct(out: Tensor, y: Tensor) -> Tensor:
    """``(out.argmax(1) == y) & isfinite(out).all(1)`` for logits ``[M, K, B]``, with reductions over
    the short class axis that vectorize along the batch (``argmax(1)`` on this layout is ~50x slower):
    a finite sample is correct when its target's logit is the maximum and no earlier class ties it.
    Ties are found by comparing the maximum with the best non-target logit (one scatter and one
    ``amax``; a boolean count over the class axis costs several times more)."""
    y = y.expand(out.shape[0], -1)  # [B] (shared) or [M, B]
    mx, mn = out.amax(1), out.amin(1)
    finite = torch.isfinite(mx) & torch.isfinite(mn)
    yi = y.unsqueeze(1)
    ok = (out.gather(1, yi).squeeze(1) == mx) & finite
    ties = (out.scatter(1, yi, float("-inf")).amax(1) == mx) & ok
    if bool(ties.any()):  # rare: the first maximum decides, as in argmax
        m, b = ties.nonzero(as_tuple=True)
        ok[m, b] = out[m, :, b].argmax(-1) == y[m, b]
    return ok


def _per_sample(out: Tensor, y: Tensor, task: str) -> tuple[Tensor, Tensor | None]:
    """Loss and correctness ``[M, B]`` of logits ``[M, K, B]``; targets shared (``[B]``, ``[B, d]``)
    or per model (``[M, B]``, ``[M, B, d]``)."""
    if task == "classification":
        loss = F.cross_entropy(out, y.expand(out.shape[0], -1), reduction="none")
        return loss, _correct(out, y).float()
    return ((out - y.movedim(-2, -1)) ** 2).mean(1), None


def train_group(runs: Sequence[RunConfig], data: Dataset, cfg: TrainerConfig, *,
                progress: Callable[[int], None] | None = None, engine: str = "auto",
                trust_code: bool = False) -> list[RunResult]:
    """Train ``runs`` (same architecture and batch size) at once; return their checkpoints.

    Models are ordered by steps per epoch (longest first), so the models still inside their epoch are
    always a prefix of the stack: each step computes and updates exactly the active models, on
    views, with no gathering. Parameters live in one ``[M, D]`` tensor, updated by one fused
    optimizer (:class:`_FusedOptimizer`); metrics at a checkpoint are one batched pass over the
    train and test sets.

    Args:
        runs: the group (see :func:`group_key`).
        data: dataset; the inputs must fit the architecture.
        cfg: schedule and optimizer constants.
        progress: called with the number of optimizer steps done, for progress bars.
        engine: ``"batched"`` (:class:`~model_zoo.batched.BatchedNet`: MLP and SmallCNN),
            ``"vmap"`` (``torch.func.vmap`` over ``functional_call``: every family) or ``"auto"``
            (batched where supported).
        trust_code: allow an architecture ``_target_`` outside the allowlist (see
            :func:`weightspace.instantiate.resolve_target`).

    Raises:
        ValueError: runs of different groups; an unknown engine or one that does not support the
            architecture.
    """
    keys = {group_key(r) for r in runs}
    if len(keys) != 1:
        raise ValueError(f"train_group needs runs of one architecture and batch size, got {len(keys)} groups")
    if engine not in ("auto", "batched", "vmap"):
        raise ValueError(f"engine must be 'auto', 'batched' or 'vmap', got {engine!r}")
    # The group's random stream (dropout masks) depends only on its members.
    torch.manual_seed(int(np.random.default_rng([r.seed for r in runs]).integers(2**31 - 1)))
    xtr, ytr, xte, yte = data.x_train, data.y_train, data.x_test, data.y_test
    bs = runs[0].batch_size
    subsets = _subsets(runs, len(xtr))
    spe_given = [math.ceil(len(s) / bs) for s in subsets]
    order = sorted(range(len(runs)), key=lambda i: (-spe_given[i], i))  # longest epochs first
    given, runs, subsets = runs, [runs[i] for i in order], [subsets[i] for i in order]
    spe = np.array([spe_given[i] for i in order])
    M = len(runs)
    model = instantiate(runs[0].arch, trust_code=trust_code)
    net = None
    if engine != "vmap":
        if BatchedNet.supports(model):
            net = BatchedNet(model, data.input_shape)
        elif engine == "batched":
            raise ValueError(f"engine 'batched' does not support {type(model).__name__}; use 'vmap' or 'auto'")
    if net is None:
        _attach_dropout(model)
    params, buffers = init_state(model, runs)
    flat = _Flat(params)
    P = flat.data
    del params
    opt = _FusedOptimizer([r.optimizer for r in runs], torch.tensor([r.lr for r in runs], dtype=torch.float64),
                          torch.tensor([r.l2 for r in runs]), flat.decay, P.shape[1], cfg)
    drop = torch.tensor([r.dropout for r in runs])
    use_drop = bool((drop > 0).any())
    task = data.task
    S = int(spe.max())
    active = [int((spe > s).sum()) for s in range(S)]  # models inside their epoch at step s

    if net is not None:
        xtr_t = net.rows(xtr)  # sample-major, for per-model batches

        def grads(k: int, bi: Tensor, w: Tensor) -> Tensor:
            leaves = {n: t.detach().requires_grad_() for n, t in flat.views(P[:k]).items()}
            out = net.forward(leaves, net.batch(xtr_t, bi), drop[:k] if use_drop else None)
            yb = ytr[bi]
            per = F.cross_entropy(out, yb, reduction="none") if task == "classification" \
                else ((out - yb.transpose(1, 2)) ** 2).mean(1)
            gs = torch.autograd.grad((per * w).sum(), list(leaves.values()))  # w: per-model mean weights
            return torch.cat([g.reshape(k, -1) for g in gs], 1)

        ebs = cfg.eval_batch_size
        test_blocks = _eval_blocks(net, xte, yte, ebs)
        block = max(1, (1 << 23) // (net.activation_elements() * ebs))  # models per evaluation pass
        # Train metrics over each model's own subset: per block of models (similar subset sizes, as
        # they are ordered by steps per epoch), indices padded to the block's largest subset.
        train_blocks = []
        for a in range(0, M, block):
            sub = subsets[a : a + block]
            idx = torch.zeros(len(sub), max(len(x) for x in sub), dtype=torch.long)
            valid = torch.zeros(idx.shape, dtype=torch.bool)
            for j, x in enumerate(sub):
                idx[j, : len(x)] = torch.from_numpy(x)
                valid[j, : len(x)] = True
            train_blocks.append((idx, valid))

        @torch.no_grad()
        def evaluate() -> dict[str, Tensor]:
            out: dict[str, list[Tensor]] = {k: [] for k in _METRICS}
            for (idx, valid), a in zip(train_blocks, range(0, M, block)):
                p = flat.views(P[a : a + block])
                ls, cs = [], []
                for c in range(0, idx.shape[1], ebs):
                    ib = idx[:, c : c + ebs]
                    loss, ok = _per_sample(net.forward(p, net.batch(xtr_t, ib)), ytr[ib], task)
                    ls.append(loss)
                    cs.append(ok)
                n = valid.sum(1)
                out["train_loss"].append(torch.cat(ls, 1).masked_fill_(~valid, 0.0).sum(1) / n)
                out["train_accuracy"].append(torch.cat(cs, 1).masked_fill_(~valid, 0.0).sum(1) / n
                                             if cs[0] is not None else torch.full((len(n),), float("nan")))
                ls, cs = zip(*[_per_sample(net.forward(p, x), y, task) for x, y in test_blocks])
                out["test_loss"].append(torch.cat(ls, 1).mean(1))
                out["test_accuracy"].append(torch.cat(cs, 1).mean(1) if cs[0] is not None
                                            else torch.full((len(n),), float("nan")))
            return {k: torch.cat(v) for k, v in out.items()}
    else:
        def loss_one(p: dict, b: dict, rate: Tensor, x: Tensor, y: Tensor, w: Tensor) -> Tensor:
            _Dropout.rate = rate if use_drop else None
            try:
                out = functional_call(model, (p, b), (x,))
            finally:
                _Dropout.rate = None
            return (_loss(out, y, task) * w).sum() / w.sum().clamp_min(1.0)

        step_fn = vmap(grad_and_value(loss_one), randomness="different")
        fwd = vmap(lambda p, b, x: functional_call(model, (p, b), (x,)), in_dims=(0, 0, None))

        def grads(k: int, bi: Tensor, w: Tensor) -> Tensor:
            p = flat.views(P[:k])
            b = {n: t[:k] for n, t in buffers.items()}  # views: BatchNorm statistics update in place
            g, _ = step_fn(p, b, drop[:k], xtr[bi], ytr[bi], w)
            return torch.cat([g[n].reshape(k, -1) for n in flat.names], 1)

        x_all, y_all = torch.cat([xtr, xte]), torch.cat([ytr, yte])

        @torch.no_grad()
        def per_sample_all() -> tuple[Tensor, Tensor | None]:
            model.eval()
            p = flat.views(P)
            losses, correct = [], []
            for i in range(0, len(x_all), cfg.eval_batch_size):
                out = fwd(p, buffers, x_all[i : i + cfg.eval_batch_size])  # [M, b, K]
                loss, ok = _per_sample(out.transpose(1, 2), y_all[i : i + cfg.eval_batch_size], task)
                losses.append(loss)
                if ok is not None:
                    correct.append(ok)
            model.train()
            return torch.cat(losses, 1), (torch.cat(correct, 1) if correct else None)

        n_tr = len(xtr)
        w_te = torch.ones(M, len(xte))
        member = torch.zeros(M, n_tr)  # train metrics over each model's subset
        for m, sub in enumerate(subsets):
            member[m, torch.from_numpy(sub)] = 1.0

        def evaluate() -> dict[str, Tensor]:
            loss, ok = per_sample_all()
            out = {}
            for split, sl, w in (("train", slice(0, n_tr), member), ("test", slice(n_tr, None), w_te)):
                out[f"{split}_loss"] = (loss[:, sl] * w).sum(1) / w.sum(1)
                out[f"{split}_accuracy"] = ((ok[:, sl] * w).sum(1) / w.sum(1)) if ok is not None \
                    else torch.full((M,), float("nan"))
            return {k: out[k] for k in _METRICS}

    snaps: list[tuple[Tensor, dict[str, Tensor], Tensor, float | None, dict[str, Tensor]]] = []

    def snapshot(steps_done: Tensor, epoch: float | None) -> None:
        snaps.append((P.clone(), {n: t.clone() for n, t in buffers.items()}, steps_done.clone(), epoch, evaluate()))

    schedule = set(cfg.schedule())
    steps_done = torch.zeros(M, dtype=torch.long)
    it = 0
    model.train()
    if 0 in schedule:
        snapshot(steps_done, 0.0)
    for epoch in range(1, cfg.epochs + 1):
        idx, w, _ = _epoch_order(runs, subsets, epoch, bs)
        if net is not None:  # per-step weights of a per-model mean: 1 / (samples in the batch)
            w = (w.view(M, S, bs) / w.view(M, S, bs).sum(-1, keepdim=True).clamp_min(1.0)).view(M, -1)
        for s in range(S):
            k = active[s]
            sl = slice(s * bs, (s + 1) * bs)
            g = grads(k, idx[:k, sl], w[:k, sl])
            steps_done[:k] += 1
            opt.step(P, g, steps_done[:k])
            it += 1
            if cfg.dense_every and it % cfg.dense_every == 0:
                snapshot(steps_done, None)
            if progress is not None:
                progress(1)
        if epoch in schedule:
            snapshot(steps_done, float(epoch))

    results = []
    for m, run in enumerate(runs):
        keep, seen = [], set()
        for k, snap in enumerate(snaps):
            step, ep = int(snap[2][m]), snap[3]
            if step in seen:  # a dense snapshot at an epoch boundary, or a model past its epoch
                if ep is not None:  # prefer the epoch-labelled duplicate
                    keep = [j for j in keep if int(snaps[j][2][m]) != step] + [k]
                continue
            seen.add(step)
            keep.append(k)
        keep.sort(key=lambda j: int(snaps[j][2][m]))
        state = flat.unflatten(torch.stack([snaps[j][0][m] for j in keep]))
        for n in buffers:
            state[n] = torch.stack([snaps[j][1][n][m] for j in keep])
        steps = [int(snaps[j][2][m]) for j in keep]
        epochs = [snaps[j][3] if snaps[j][3] is not None else round(steps[i] / float(spe[m]), 4)
                  for i, j in enumerate(keep)]
        metrics = [{k: float(v[m]) for k, v in snaps[j][4].items()} for j in keep]
        results.append(RunResult(run.index, state, steps, epochs, metrics))
    back = {id(r): res for r, res in zip(runs, results)}
    return [back[id(r)] for r in given]
