"""Predict a network's accuracy from its weights: train a metanetwork on a zoo, evaluate, save it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from weightspace.predict import PredictConfig, load_zoo_graphs, run_predict

log = logging.getLogger(__name__)


def positional_overrides(args: list[str]) -> list[str]:
    """``zoo=DIR`` names a folder here, not the ``configs/zoo/`` group: pass it as ``zoo_dir``; ``data=KIND:PATH``
    names a data source, not the ``configs/data/`` group: pass it as ``data_source``."""
    out = []
    for a in args:
        if a.startswith("zoo="):
            a = f"zoo_dir={a[4:]}"
        elif a.startswith("data="):
            a = f"data_source={a[5:]}"
        out.append(a)
    return out


def config_from(cfg: DictConfig) -> PredictConfig:
    """The task's :class:`PredictConfig` from the Hydra config (``predict.yaml`` + ``metanet/*``)."""
    m = cfg.metanet
    model = {k: v for k, v in OmegaConf.to_container(m.model, resolve=True).items() if v is not None}
    return PredictConfig(metanet=str(m.name), model=model, target=str(cfg.target),
                         fractions=tuple(float(f) for f in cfg.fractions), split_seed=int(cfg.split_seed),
                         epochs=int(m.epochs), batch_size=int(m.batch_size), lr=float(m.lr),
                         weight_decay=float(m.weight_decay), seed=int(cfg.seed),
                         trained_threshold=None if cfg.trained_threshold is None else float(cfg.trained_threshold),
                         device=str(cfg.device), progress=bool(cfg.progress),
                         max_runs=None if cfg.max_runs is None else int(cfg.max_runs),
                         train_checkpoints=_checkpoints(cfg.get("train_checkpoints", "final")),
                         rank_weight=float(cfg.get("rank_weight", 0.0)))


def _checkpoints(value):
    """``final`` / ``all`` or a list of epochs, from the Hydra value."""
    if isinstance(value, str):
        return value
    return [float(e) for e in OmegaConf.to_container(value, resolve=True)]


def plot_embedding(pred, data, out: Path) -> Path | None:
    """2-D PCA of the graph embeddings of every run, colored by the target (matplotlib Agg)."""
    if pred.model is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graphs = [g for s in ("train", "val", "test") for g in data.graphs[s]]
    hps = [h for s in ("train", "val", "test") for h in data.hparams[s]]
    z = pred.encode([pred.prepare(g, h) for g, h in zip(graphs, hps)], prepared=True).double()
    z = z - z.mean(0)
    _, _, v = torch.linalg.svd(z, full_matrices=False)
    xy = (z @ v[:2].T).numpy()
    y = np.array([float(g.y.reshape(-1)[0]) for g in graphs])
    fig, ax = plt.subplots(figsize=(5, 4))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=y, cmap="viridis", s=12)
    fig.colorbar(sc, ax=ax, label=pred.meta.get("target", "target"))
    ax.set(title=f"{pred.kind} embeddings (PCA)", xlabel="PC1", ylabel="PC2")
    fig.tight_layout()
    path = out / "embedding.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def open_zoo(cfg: DictConfig):
    """The zoo ``zoo=DIR``, every stored byte checked against its manifest (sha256) before training on it;
    ``trust_code=true`` lets its architectures resolve outside the allowlist (``docs/trust-model.md``).
    ``data=KIND:PATH`` (``cfg.data_source``: ``file:x.npz``, ``folder:DIR``, ``mnist:ROOT``, ... as in
    :mod:`model_zoo.datasets`) attaches that data to the zoo (checked against the fingerprint in ``zoo.json``):
    for zoos made from in-memory data or imported without data."""
    import model_zoo

    try:
        zoo = model_zoo.load(str(cfg.zoo_dir), verify=True, trust_code=bool(cfg.get("trust_code", False)))
    except (model_zoo.ZooFormatError, ValueError) as e:
        raise SystemExit(f"weightspace: zoo={cfg.zoo_dir}: {e}") from None
    source = cfg.get("data_source")
    if source is not None:
        try:
            zoo.attach_data(str(source))
        except (model_zoo.DataMismatchError, model_zoo.DataSourceError, ValueError, OSError) as e:
            raise SystemExit(f"weightspace: data={source}: {e} (the zoo's data is recorded in "
                             f"{Path(str(cfg.zoo_dir)) / 'zoo.json'})") from None
    return zoo


def run(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    pcfg = config_from(cfg)
    data = load_zoo_graphs(open_zoo(cfg), pcfg.target, pcfg.fractions, pcfg.split_seed, pcfg.max_runs, pcfg.progress,
                           pcfg.train_checkpoints)
    pred, metrics = run_predict(None, pcfg, out, data=data)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        dist.barrier()
        if rank != 0:
            return
    (out / "config.json").write_text(json.dumps(OmegaConf.to_container(cfg, resolve=True), indent=1))
    if cfg.embedding_plot:
        path = plot_embedding(pred, data, out)
        if path:
            log.info("embedding plot: %s", path)
    log.info("%s", {k: round(v, 4) for k, v in metrics.items() if k.startswith("test") and isinstance(v, float)})
