"""Train the graph hypernetwork or measure a checkpoint: weightspace hyper train|eval [key=value ...]

``weightspace hyper train`` trains on sklearn digits (embedded) over the architecture family of
``configs/hyper.yaml`` and writes the directory ``out`` (``config.json`` + ``model.safetensors``,
:meth:`~weightspace.hyper.GraphHyperNetwork.save_pretrained`), plus ``history.json`` and ``loss.png``
in the run directory; ``init=DIR_OR_NAME`` continues from a checkpoint. The shipped checkpoint
(``weightspace/checkpoints/hypernet/``) is ``weightspace hyper train`` followed by
``weightspace hyper train init=hypernet train.lr=0.0015 train.max_minutes=11``. ``weightspace hyper eval``
reports the zero-shot test accuracy of predicted weights on held-out architectures of each split.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

MODES = ("train", "eval")


def positional_overrides(argv: list[str]) -> list[str]:
    """``["train", "train.steps=5"]`` -> ``["mode=train", "train.steps=5"]``."""
    from ._args import first_positional_as

    return first_positional_as("mode", argv)


def _space(cfg: DictConfig):
    from weightspace.hyper import ArchSpace

    return ArchSpace.from_dict(OmegaConf.to_container(cfg.space, resolve=True))


def train(cfg: DictConfig, run_dir: Path) -> None:
    from model_zoo import load_dataset
    from weightspace.hyper import GraphHyperNetwork, HyperNetworkConfig, HyperTrainConfig, train_hypernetwork

    from ._report import markdown_table

    data = load_dataset("digits", seed=int(cfg.seed))
    torch.manual_seed(int(cfg.seed))
    if cfg.get("init"):  # continue from a checkpoint (its architecture wins over cfg.model)
        from weightspace.hyper import load_hypernetwork

        hyper = load_hypernetwork(str(cfg.init))
        previous = dict(hyper.meta)
    else:
        hyper = GraphHyperNetwork.from_config(HyperNetworkConfig(**OmegaConf.to_container(cfg.model, resolve=True)))
        previous = None
    # the top-level seed also seeds the data split and initialization, so it wins over train.seed
    tcfg = HyperTrainConfig(**{**OmegaConf.to_container(cfg.train, resolve=True), "seed": int(cfg.seed)})
    space = _space(cfg)
    t0 = time.perf_counter()
    history = train_hypernetwork(hyper, data.x_train, data.y_train, space, tcfg, progress=bool(cfg.progress))
    minutes = (time.perf_counter() - t0) / 60
    meta = {"trained_on": f"sklearn digits (pixels / 16), model_zoo.load_dataset('digits', seed={int(cfg.seed)}) "
            "train split", "space": space.to_dict(), "train": tcfg.to_dict(), "train_minutes": round(minutes, 2),
            "final": history[-1] if history else {},
            "command": "weightspace hyper train " + " ".join(HydraConfig.get().overrides.task)}
    if previous is not None:
        meta["continued_from"] = {k: v for k, v in previous.items() if k != "space"}
    out = hyper.save_pretrained(str(cfg.out), extras=meta)
    log.info("wrote %s (%.1f kB of weights)", out, (out / "model.safetensors").stat().st_size / 1e3)
    (run_dir / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    _plot_history(history, run_dir / "loss.png")
    print(markdown_table(history[-5:], ["step", "train/loss", "train/accuracy"]))
    print(f"\ncheckpoint: {out}")


def _plot_history(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([h["step"] for h in history], [h["train/loss"] for h in history])
    ax.set_xlabel("step")
    ax.set_ylabel("train/loss (target networks)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(cfg: DictConfig, run_dir: Path) -> None:
    import numpy as np

    from model_zoo import load_dataset
    from weightspace.hyper import load_hypernetwork, zero_shot_accuracy

    from ._report import markdown_table

    data = load_dataset("digits", seed=int(cfg.seed))
    hyper = load_hypernetwork(cfg.checkpoint)  # None: the shipped checkpoint
    space = _space(cfg)
    rows = []
    for split in cfg.eval.splits:
        configs = space.split(str(split), int(cfg.eval.per_split), seed=int(cfg.seed))
        acc = zero_shot_accuracy(hyper, configs, data.x_test, data.y_test, seed=int(cfg.seed))
        rows.append({"split": str(split), "architectures": len(acc), "zero-shot accuracy": f"{np.mean(acc):.3f}",
                     "min": f"{np.min(acc):.3f}", "max": f"{np.max(acc):.3f}"})
    table = markdown_table(rows, list(rows[0]))
    print(table)
    (run_dir / "eval.md").write_text("# hypernetwork zero-shot accuracy (digits test split)\n\n" + table + "\n")


def run(cfg: DictConfig) -> None:
    if cfg.mode not in MODES:
        raise SystemExit(f"weightspace hyper: unknown mode {cfg.mode!r}; choose one of {MODES}")
    torch.set_num_threads(int(cfg.threads))
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (train if cfg.mode == "train" else evaluate)(cfg, run_dir)
