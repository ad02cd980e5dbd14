"""Training a generalization predictor on a zoo: fit, select on validation tau, report on test.

:func:`train_predictor` fits a :class:`~weightspace.predict.Predictor` (a metanetwork of
:data:`~weightspace.predict.METANETS` plus the target scaling and feature encoders it needs) on a
zoo's train split and keeps the epoch with the best validation Kendall tau; :func:`run_predict` also
reports test metrics and saves the predictor (``save_pretrained``).

Trained metanetworks minimize the MSE of the standardized target, optionally plus RankNet's pairwise
logistic loss (Burges et al. 2005), :func:`pairwise_rank_loss`. Multi-process training: launched by
``torchrun``, the train split is sharded over ranks and the model wrapped in
``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from tqdm.auto import tqdm

from weightspace.nn import StatGBM, tensor_statistics

from .data import ZooGraphs, load_zoo_graphs
from .encoders import HParamEncoder
from .metanets import KINDS, build_metanet
from .metrics import evaluate, regression_metrics
from .predictor import Predictor

log = logging.getLogger(__name__)

__all__ = ["PredictConfig", "train_predictor", "run_predict", "pairwise_rank_loss", "maybe_init_distributed",
           "resolve_device"]


@dataclass
class PredictConfig:
    """Everything ``run_predict`` needs besides the zoo.

    Args:
        metanet: ``gmn``, ``probe`` (:class:`~weightspace.nn.ProbeNet`), ``statnn`` (MLP),
            ``statnn_gbm`` (gradient boosting) or ``hparams``.
        model: keyword arguments of the metanetwork (``hidden``, ``num_layers``, ...).
        target: the metrics column to predict.
        fractions, split_seed: run-level split (see :func:`model_zoo.split_runs`).
        epochs, batch_size, lr, weight_decay: optimization (AdamW, cosine schedule).
        seed: initialization and batch order.
        trained_threshold: a run "trained" when its target is at least this (``None``: twice chance).
        device: ``cpu``, ``cuda`` or ``auto``.
        progress: tqdm bars.
        max_runs: use only the first runs of the zoo (``None``: all).
        train_checkpoints: which checkpoints of the *train* runs to learn from: ``"final"``, ``"all"``
            (every checkpoint with its own target, as in the Small CNN Zoo protocol) or a list of
            epochs. Validation and test always use each run's final checkpoint.
        rank_weight: weight of a pairwise ranking term added to the MSE for trained metanetworks
            (RankNet, Burges et al. 2005: ``softplus(-(s_i - s_j) / 0.1)`` over the batch's pairs with
            ``y_i > y_j``, targets standardized), since Kendall's tau only scores the order; 0 = MSE only.

    For ``gmn`` and ``probe``, ``model.stats=True`` fuses StatNN's invariant per-tensor statistics
    into the embedding (``stat_tensors=...``). ``probe`` runs every network on learned inputs, so it
    needs the zoo's architecture configs (read by :func:`load_zoo_graphs`).
    """

    metanet: str = "gmn"
    model: dict[str, Any] = field(default_factory=dict)
    target: str = "test_accuracy"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    trained_threshold: float | None = None
    device: str = "auto"
    progress: bool = True
    max_runs: int | None = None
    train_checkpoints: str | list[float] = "final"
    rank_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.metanet not in KINDS:
            raise ValueError(f"unknown metanet {self.metanet!r}; choose one of {KINDS}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if isinstance(self.train_checkpoints, str) and self.train_checkpoints not in ("final", "all"):
            raise ValueError(f"train_checkpoints must be 'final', 'all' or a list of epochs, "
                             f"got {self.train_checkpoints!r}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def maybe_init_distributed(device: torch.device) -> bool:
    """Initialize the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        return True
    return False


def train_predictor(data: ZooGraphs, cfg: PredictConfig) -> tuple[Predictor, dict[str, Any]]:
    """Fit a predictor on ``data.graphs['train']`` selecting on validation tau.

    Returns the predictor (best validation epoch) and a history with ``train/time_s``,
    ``train/graphs_per_s`` and per-epoch ``train/loss`` / ``val/tau``.
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    train_g, val_g = data.graphs["train"], data.graphs["val"]
    if not train_g:
        raise ValueError("the zoo's train split is empty")
    y_train = np.array([float(g.y.reshape(-1)[0]) for g in train_g])
    y_mean, y_std = float(y_train.mean()), float(max(y_train.std(), 1e-6))
    threshold = cfg.trained_threshold if cfg.trained_threshold is not None else 2 * data.chance
    meta: dict[str, Any] = {"target": cfg.target, "trained_threshold": threshold}
    kwargs = dict(cfg.model)
    kind = cfg.metanet
    if kind in ("gmn", "probe") and kwargs.pop("stats", False):  # fuse StatNN's statistics
        meta["max_tensors"] = int(max(int(tensor_statistics(g)[-1]) for g in train_g))
        kwargs["stat_tensors"] = meta["max_tensors"]
    if kind == "gmn":
        kh = max(max(g.edge_kernel[:, 0].max().item(), 1) for g in train_g)
        kw = max(max(g.edge_kernel[:, 1].max().item(), 1) for g in train_g)
        grid = kwargs.pop("kernel_grid", None) or [kh, kw]
        kwargs["kernel_grid"] = [int(grid[0]), int(grid[1])]
        meta["kernel_grid"] = kwargs["kernel_grid"]
    elif kind == "probe":
        if not data.archs or not data.input_shape:
            raise ValueError("the probe predictor runs the zoo's networks: it needs the zoo's architecture "
                             "configs and input shape (zoo.json 'archs' and 'dataset.input_shape')")
        kwargs["archs"], kwargs["input_shape"] = data.archs, data.input_shape
    elif kind in ("statnn", "statnn_gbm"):
        meta["max_tensors"] = int(kwargs.pop("max_tensors", None) or max(int(tensor_statistics(g)[-1]) for g in train_g))
        if kind == "statnn":
            kwargs["max_tensors"] = meta["max_tensors"]
    elif kind == "hparams":
        enc = HParamEncoder.fit(data.hparams["train"])
        if enc.dim == 0:
            raise ValueError("the zoo records no varying hyperparameters; the hparams baseline cannot be trained")
        meta["hparams"] = enc.to_dict()
        kwargs["in_dim"] = enc.dim

    model = None if kind == "statnn_gbm" else build_metanet(kind, kwargs)
    pred = Predictor(kind, model, y_mean, y_std, meta, StatGBM(**kwargs) if kind == "statnn_gbm" else None)
    tr = [pred.prepare(g, h) for g, h in zip(train_g, data.hparams["train"])]
    va = [pred.prepare(g, h) for g, h in zip(val_g, data.hparams["val"])]
    for g, src in zip(tr, train_g):
        g.y = src.y.reshape(-1)[:1]
    for g, src in zip(va, val_g):
        g.y = src.y.reshape(-1)[:1]
    hist: dict[str, Any] = {"train/loss": [], "val/tau": [], "train/n": len(tr), "val/n": len(va)}
    t0 = time.perf_counter()
    if kind == "statnn_gbm":
        feats = torch.cat([g.stat_feats for g in tr]).numpy()
        pred.gbm.fit(feats, (y_train - y_mean) / y_std)
        hist["train/time_s"] = time.perf_counter() - t0
        hist["train/graphs_per_s"] = len(tr) / max(hist["train/time_s"], 1e-9)
        return pred, hist

    if kind in ("statnn", "hparams") or (kind in ("gmn", "probe") and "max_tensors" in meta):
        model.fit_normalizer(torch.cat([g.hparams if kind == "hparams" else g.stat_feats for g in tr]))
    rank, world = _dist()
    model.to(device)
    pred.device = device
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(tr) / world / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, cfg.epochs * steps_per_epoch),
                                                pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    best = (-float("inf"), copy.deepcopy(model.state_dict()), -1)
    seen, train_time = 0, 0.0
    bar = tqdm(range(cfg.epochs), desc=f"train {kind}", disable=not cfg.progress or rank != 0)
    for epoch in bar:
        net.train()
        t_ep = time.perf_counter()
        perm = torch.randperm(len(tr), generator=gen)
        mine = perm[rank::world]
        mine = mine[: steps_per_epoch * cfg.batch_size] if world > 1 else mine
        losses = []
        for s in range(steps_per_epoch):
            idx = mine[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            if idx.numel() == 0:
                idx = mine[:1] if mine.numel() else perm[:1]
            b = Batch.from_data_list([tr[int(i)] for i in idx]).to(device)
            target = (b.y.reshape(-1).float() - y_mean) / y_std
            out = net(b)[:, 0]
            loss = nn.functional.mse_loss(out, target)
            if cfg.rank_weight:
                loss = loss + cfg.rank_weight * pairwise_rank_loss(out, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            seen += int(idx.numel())
        train_time += time.perf_counter() - t_ep
        val_tau = regression_metrics([float(g.y[0]) for g in va], pred.predict(va, prepared=True))["tau"] if va else float("nan")
        hist["train/loss"].append(float(np.mean(losses)))
        hist["val/tau"].append(val_tau)
        score = val_tau if np.isfinite(val_tau) else -hist["train/loss"][-1]
        if score > best[0] or best[2] < 0:
            best = (score, copy.deepcopy(model.state_dict()), epoch)
        bar.set_postfix(loss=f"{hist['train/loss'][-1]:.4f}", val_tau=f"{val_tau:.3f}")
        log.debug("epoch %d loss %.4f val/tau %.4f", epoch, hist["train/loss"][-1], val_tau)
    model.load_state_dict(best[1])
    model.eval()
    hist["train/time_s"] = train_time
    hist["train/graphs_per_s"] = seen * world / max(train_time, 1e-9)
    hist["best_epoch"] = best[2]
    return pred, hist


def pairwise_rank_loss(score: Tensor, target: Tensor, temperature: float = 0.1) -> Tensor:
    """RankNet's logistic loss over all ordered pairs of a batch: ``mean softplus(-(s_i - s_j) / T)``
    over pairs with ``target_i > target_j`` (0 when the batch has no such pair)."""
    higher = target[:, None] > target[None, :]
    if not bool(higher.any()):
        return score.sum() * 0.0
    diff = (score[:, None] - score[None, :])[higher]
    return nn.functional.softplus(-diff / temperature).mean()


def run_predict(zoo: Any, cfg: PredictConfig, out_dir: str | os.PathLike | None = None,
                data: ZooGraphs | None = None) -> tuple[Predictor, dict[str, Any]]:
    """Train on the zoo's train split, select on val, report on test; optionally save the predictor
    and ``metrics.json`` into ``out_dir`` (rank 0 only).

    Returns ``(predictor, metrics)`` with ``test/tau``, ``test/r2``, ``test/mae``, the same for
    ``val`` and for the runs that trained (``test_trained/*``), timings and sizes.
    """
    device = resolve_device(cfg.device)
    maybe_init_distributed(device)
    if data is None:
        data = load_zoo_graphs(zoo, cfg.target, cfg.fractions, cfg.split_seed, cfg.max_runs, cfg.progress,
                               cfg.train_checkpoints)
    pred, hist = train_predictor(data, cfg)
    pred.to("cpu")
    threshold = pred.meta["trained_threshold"]
    metrics: dict[str, Any] = {"metanet": cfg.metanet, "seed": cfg.seed}
    test_prep = [pred.prepare(g, h) for g, h in zip(data.graphs["test"], data.hparams["test"])]
    val_prep = [pred.prepare(g, h) for g, h in zip(data.graphs["val"], data.hparams["val"])]
    for g, src in zip(test_prep + val_prep, data.graphs["test"] + data.graphs["val"]):
        g.y = src.y.reshape(-1)[:1]
    m_val, _, _ = evaluate(pred, val_prep, threshold, "val")
    t0 = time.perf_counter()
    m_test, y, p = evaluate(pred, test_prep, threshold, "test")
    infer = time.perf_counter() - t0
    metrics.update(m_val)
    metrics.update(m_test)
    metrics.update({k: v for k, v in hist.items() if not isinstance(v, list)})
    metrics["test/graphs_per_s_inference"] = len(test_prep) / max(infer, 1e-9)
    metrics["history"] = {k: v for k, v in hist.items() if isinstance(v, list)}
    metrics["test/y_true"] = y.tolist()
    metrics["test/y_pred"] = p.tolist()
    rank, _ = _dist()
    if out_dir is not None and rank == 0:
        out = Path(out_dir)
        pred.save_pretrained(out / "predictor")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        log.info("test/tau %.4f test/r2 %.4f test/mae %.4f -> %s", metrics["test/tau"], metrics["test/r2"],
                 metrics["test/mae"], out)
    return pred, metrics
