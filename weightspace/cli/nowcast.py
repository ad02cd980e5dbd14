"""Meta-train a parameter nowcaster on dense zoo trajectories: weightspace nowcast [key=value ...]

Generates (or finishes) the zoos of ``configs/nowcast/zoo/*.yaml`` named by the preset under
``work_dir/zoos`` and the byte-level language-model runs of ``lm`` under ``work_dir/lm``
(:func:`~weightspace.nowcast.lm.lm_trajectories`), meta-trains the nowcaster (``model.kind=graph``)
or the per-parameter baseline (``model.kind=mlp``) in ``run_dir`` (default ``work_dir/<kind>``;
resumable: rerun the same command), and saves it to the directory ``out`` (``config.json`` +
``model.safetensors``, :meth:`~weightspace.nowcast.Nowcaster.save_pretrained`). ``report=true`` draws
the logged losses to ``<run_dir>/meta_train.png``. ``preset=laptop`` (default) or ``preset=paper``
(``configs/preset/nowcast/``) picks the zoos and the step budget.

Config nodes: ``model`` is :class:`~weightspace.nowcast.NowcastConfig`, ``train`` is
:class:`~weightspace.nowcast.MetaTrainConfig` (schemas ``schema/nowcast_model`` and
``schema/nowcast_train`` of :mod:`weightspace.cli.schemas`); ``configs/nowcast.yaml`` holds only what
differs from their defaults.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from weightspace.nowcast import MetaTrainConfig, NowcastConfig

log = logging.getLogger(__name__)


def _plot(metrics_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, [r["train/loss"] for r in rows], label="train/loss")
    ax.plot(steps, [r["val/loss"] for r in rows], label="val/loss")
    ax.plot(steps, [r["val/linefit_loss"] for r in rows], "--", label="val/linefit_loss")
    ax.set_xlabel("meta-training step")
    ax.set_ylabel("L1 / horizon (scaled units)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def run(cfg: DictConfig) -> None:
    import model_zoo
    from weightspace.nowcast import Nowcaster, load_trajectories, meta_train

    if int(cfg.get("threads", 0)) > 0:
        torch.set_num_threads(int(cfg.threads))
    work = Path(cfg.work_dir)
    zoo_dirs = []
    for name, zcfg in cfg.zoos.items():
        d = work / "zoos" / str(name)
        log.info("zoo %s -> %s", name, d)
        model_zoo.generate(OmegaConf.to_container(zcfg, resolve=True), d, progress=bool(cfg.progress))
        zoo_dirs.append(d)
    trajs = load_trajectories(zoo_dirs)
    lm = OmegaConf.to_container(cfg.lm, resolve=True) if cfg.get("lm") is not None else {"runs": 0}
    if int(lm.get("runs", 0)) > 0:
        from weightspace.nowcast.lm import lm_trajectories

        trajs += lm_trajectories(work / "lm", progress=bool(cfg.progress), **lm)
    mcfg = _dataclass(NowcastConfig, cfg.get("model"))
    tcfg = _dataclass(MetaTrainConfig, cfg.get("train"))
    torch.manual_seed(tcfg.seed)
    model = Nowcaster(mcfg)
    run_dir = Path(cfg.run_dir) if cfg.get("run_dir") else work / mcfg.kind
    info = {"command": "weightspace nowcast " + " ".join(_overrides()),
            "zoos": {str(k): OmegaConf.to_container(v, resolve=True)["name"] for k, v in cfg.zoos.items()},
            "trajectories": len(trajs), "lm": lm}
    summary = meta_train(model, trajs, run_dir, tcfg, progress=bool(cfg.progress), info=info)
    path = model.save_pretrained(cfg.out)  # meta_train put the summary in model.info (the extras)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    log.info("nowcaster written to %s (%.1f kB); val/loss %.4f vs linefit %.4f", path,
             size / 1024, summary["val/loss"], summary["val/linefit_loss"])
    if cfg.report:
        _plot(run_dir / "metrics.jsonl", run_dir / "meta_train.png")


def _dataclass(cls: type, node: Any) -> Any:
    """``cls`` from a config node (absent keys take the dataclass defaults; lists become tuples)."""
    values = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) and "tuple" in str(types.get(k)) else v
                  for k, v in values.items()})


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # not under Hydra (called directly)
        return []
