"""Meta-training of a nowcaster on windows of dense trajectories (NiNo's recipe at a small scale).

Each step samples a batch of windows of ``context`` snapshots of one run at a random stride
(:func:`~weightspace.nowcast.data.sample_windows`) and regresses the future changes of every
parameter, normalized per group (:mod:`~weightspace.nowcast.features`):

.. math::
    \\mathcal{L} = \\frac{1}{|\\mathcal{M}|} \\sum_{(b, h) \\in \\mathcal{M}} \\frac{1}{h\\,P}
    \\sum_p \\big|\\hat\\delta_{p,h} - (\\theta^{(c-1+h)}_p - \\theta^{(c-1)}_p)/s_l\\big|

(an L1 loss divided by the horizon, over the horizons ``M`` that lie inside the run), with AdamW,
cosine decay and gradient clipping. The training state (model and optimizer tensors) is written
every ``save_every`` steps so that rerunning resumes; the final nowcaster is saved with
:meth:`~weightspace.nowcast.Nowcaster.save_pretrained`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from weightspace.pretrained import write_json_atomic

from .data import Trajectory, sample_windows
from .features import window_features
from .layout import NowcastLayout
from .model import NowcastConfig, Nowcaster

log = logging.getLogger(__name__)

__all__ = ["MetaTrainConfig", "meta_train", "window_loss"]


@dataclass(frozen=True)
class MetaTrainConfig:
    """Meta-training schedule (AdamW with cosine decay, as NiNo, at a small scale).

    Attributes:
        steps: optimizer steps.
        batch: windows per step (of one run, i.e. one architecture).
        lr, weight_decay, clip: AdamW learning rate, weight decay, gradient-norm clip.
        strides: spacings (in stored snapshots) between the window's snapshots; sampled per step.
        val_fraction: runs held out for the logged validation loss.
        log_every, save_every: steps between log lines / checkpoints.
        seed: sampling seed (the sample of step ``k`` depends only on ``seed`` and ``k``).
    """

    steps: int = 8000
    batch: int = 4
    lr: float = 3e-3
    weight_decay: float = 1e-2
    clip: float = 1.0
    strides: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16)
    val_fraction: float = 0.1
    log_every: int = 50
    save_every: int = 100
    seed: int = 0


def window_loss(model: Nowcaster, traj: Trajectory, win: Tensor, tgt: Tensor, mask: Tensor) -> Tensor:
    """The meta-training loss of ``model`` on windows of ``traj`` (see module docs).

    Shapes: ``win [B, c, P]``, ``tgt [B, H, P]``, ``mask [B, H]`` (:func:`sample_windows`) -> scalar.
    """
    lay = NowcastLayout.from_spec(traj.spec)
    feats, s, line = window_features(win, lay.slot_tensor, lay.num_tensors)
    pred = model(lay, feats, line)  # [B, P, H]
    err = (pred - tgt.transpose(1, 2) / s[..., None]).abs()  # scaled units
    h = torch.arange(1, model.horizons + 1, dtype=err.dtype)
    err = err.mean(1) / h  # [B, H]
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp_min(1)


def _opt_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    sd = opt.state_dict()
    tensors, rest = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        rest["state"][str(pid)] = []
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = v.detach().cpu().reshape(-1) if v.dim() == 0 else v.detach().cpu()
            rest["state"][str(pid)].append([k, v.dim() == 0])
    return tensors, rest


def _opt_load(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], rest: dict) -> None:
    state = {}
    for pid, keys in rest["state"].items():
        state[int(pid)] = {k: (tensors[f"opt.{pid}.{k}"].reshape(()) if scalar else tensors[f"opt.{pid}.{k}"])
                           for k, scalar in keys}
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def meta_train(model: Nowcaster, trajectories: Sequence[Trajectory], out: str | os.PathLike,
               cfg: MetaTrainConfig | None = None, *, progress: bool = True, info: dict | None = None
               ) -> dict[str, Any]:
    """Meta-train ``model`` on windows of ``trajectories``; resumable from ``out``.

    Writes ``<out>/last.safetensors|json`` (training state) every ``save_every`` steps,
    ``<out>/metrics.jsonl`` (``train/loss``, ``val/loss``, ``val/linefit_loss``) every ``log_every``
    steps, and the final nowcaster to ``<out>/nowcaster/`` (:meth:`~weightspace.nowcast.Nowcaster.save_pretrained`,
    the summary in its ``info``). Rerunning with the same
    arguments continues from the last saved step; a step with a non-finite loss or gradient is
    skipped (logged), never applied.

    Returns:
        Summary: steps, final ``val/loss`` and ``val/linefit_loss``, seconds.
    """
    cfg = cfg or MetaTrainConfig()
    if model.kind == "linefit":
        raise ValueError("linefit has no parameters to meta-train")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trajs = list(trajectories)
    if len(trajs) < 2:
        raise ValueError(f"meta-training needs at least 2 trajectories, got {len(trajs)}")
    perm = torch.randperm(len(trajs), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    n_val = max(1, int(round(cfg.val_fraction * len(trajs))))
    val = [trajs[i] for i in perm[:n_val]]
    train = [trajs[i] for i in perm[n_val:]]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, elapsed = 0, 0.0
    last = out / "last.json"
    if last.exists():
        meta = json.loads(last.read_text())
        if meta["config"] != json.loads(json.dumps(asdict(model.config))):
            raise ValueError(f"{out} holds a run of another nowcaster config; choose a new folder")
        tensors = load_file(str(out / "last.safetensors"))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        _opt_load(opt, {k: v for k, v in tensors.items() if k.startswith("opt.")}, meta["opt"])
        start, elapsed = int(meta["step"]), float(meta["seconds"])
        log.info("resuming meta-training at step %d from %s", start, out)
    c, H = model.context, model.horizons
    val_gen = torch.Generator().manual_seed(cfg.seed + 1)
    val_batches = []
    for j in range(16):
        tr = val[j % len(val)]
        b = sample_windows(tr, c, H, cfg.strides[j % len(cfg.strides)], cfg.batch, val_gen)
        if b is not None:
            val_batches.append((tr, *b))
    linefit = Nowcaster(NowcastConfig(kind="linefit", context=c, horizons=H))

    def evaluate(m: Nowcaster) -> float:
        m.eval()
        with torch.no_grad():
            vals = [float(window_loss(m, tr, *b)) for tr, *b in val_batches]
        m.train()
        return sum(vals) / max(1, len(vals))

    lf_val = evaluate(linefit)
    metrics = (out / "metrics.jsonl").open("a")
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc="meta-train", unit="step")
    t0 = time.perf_counter()
    running, n_run, skipped = 0.0, 0, 0
    model.train()
    step = start
    val_loss = float("nan")
    for step in range(start, cfg.steps):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        batch = None
        while batch is None:
            tr = train[int(torch.randint(len(train), (1,), generator=gen))]
            stride = cfg.strides[int(torch.randint(len(cfg.strides), (1,), generator=gen))]
            batch = sample_windows(tr, c, H, stride, cfg.batch, gen)
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = window_loss(model, tr, *batch)
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            skipped += 1
            log.warning("step %d: non-finite loss, skipped", step)
        else:
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            if torch.isfinite(gnorm):
                opt.step()
                running += loss.item()
                n_run += 1
            else:
                skipped += 1
                log.warning("step %d: non-finite gradient, skipped", step)
        bar.update(1)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            val_loss = evaluate(model)
            rec = {"step": done, "train/loss": running / max(1, n_run), "val/loss": val_loss,
                   "val/linefit_loss": lf_val, "lr": lr, "skipped": skipped}
            metrics.write(json.dumps(rec) + "\n")
            metrics.flush()
            log.info("step %d train/loss %.4f val/loss %.4f (linefit %.4f)", done, rec["train/loss"], val_loss, lf_val)
            bar.set_postfix(loss=f"{rec['train/loss']:.3f}", val=f"{val_loss:.3f}")
            running, n_run = 0.0, 0
        if done % cfg.save_every == 0 or done == cfg.steps:
            tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
            ot, orest = _opt_tensors(opt)
            tensors.update(ot)
            save_file(tensors, str(out / "last.tmp.safetensors"))
            os.replace(out / "last.tmp.safetensors", out / "last.safetensors")
            write_json_atomic(last, {"step": done, "config": asdict(model.config), "opt": orest,
                                     "seconds": elapsed + time.perf_counter() - t0, "meta_train": asdict(cfg)})
    bar.close()
    metrics.close()
    seconds = elapsed + time.perf_counter() - t0
    if not math.isfinite(val_loss):
        val_loss = evaluate(model)
    summary = {"steps": cfg.steps, "val/loss": val_loss, "val/linefit_loss": lf_val, "seconds": round(seconds, 1),
               "train_runs": len(train), "val_runs": len(val), "skipped_steps": skipped,
               "meta_train": asdict(cfg), **(info or {})}
    model.info = summary
    model.save_pretrained(out / "nowcaster")
    return summary
