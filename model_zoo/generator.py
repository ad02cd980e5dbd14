"""Zoo generation: sample runs, train them in batched groups, store them chunk by chunk.

``generate(config, out_dir)`` is the whole pipeline; rerunning it on the same folder finishes what is
missing (see :mod:`model_zoo.store`). ``shard``/``num_shards`` split the chunks between workers
(Hydra multirun) that write into the same folder; the last one to finish merges the metrics.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .data import load_dataset
from .sampling import RunConfig, sample_runs
from .store import (
    SCHEMA_VERSION,
    chunk_done,
    chunk_paths,
    clean_stale_tmp,
    finalize,
    read_json,
    run_key,
    write_chunk,
    write_json,
)
from .trainer import RunResult, TrainerConfig, group_key, train_group

log = logging.getLogger(__name__)

__all__ = ["generate", "normalize_config", "plan_chunks", "Chunk", "ZooExistsError"]

_DEFAULTS: dict[str, Any] = {
    "name": "zoo",
    "size": 32,
    "seed": 0,
    "chunk_size": 500,
    "data": {"name": "digits", "test_fraction": 0.2, "seed": 0, "flatten": False},
    "arch": {"_target_": "model_zoo.archs.MLP", "in_features": 64, "num_outputs": 10, "depth": 2, "width": 32},
    "space": {},
    "trainer": {"epochs": 20, "checkpoints": None, "dense_every": 0},
}


class ZooExistsError(RuntimeError):
    """The output folder holds a zoo generated from another configuration."""


@dataclass(frozen=True)
class Chunk:
    """Runs trained together and stored in one shard file."""

    id: int
    runs: tuple[int, ...]


def normalize_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults and check the keys of a generator config (a plain dict, e.g. from Hydra).

    Raises:
        ValueError: unknown top-level, data or trainer keys; a non-positive size or chunk size.
    """
    cfg = copy.deepcopy(_DEFAULTS)
    unknown = sorted(set(config) - set(cfg))
    if unknown:
        raise ValueError(f"unknown zoo config keys {unknown}; allowed: {sorted(cfg)}")
    for k, v in config.items():
        if k in ("data", "trainer") and v is not None:
            cfg[k].update(dict(v))
        elif k == "arch":
            cfg[k] = dict(v)
        elif k == "space":
            cfg[k] = {str(a): (dict(b) if isinstance(b, Mapping) else b) for a, b in dict(v or {}).items()}
        else:
            cfg[k] = v
    bad = sorted(set(cfg["trainer"]) - set(TrainerConfig.__dataclass_fields__))
    if bad:
        raise ValueError(f"unknown trainer keys {bad}; allowed: {sorted(TrainerConfig.__dataclass_fields__)}")
    # every trainer field, defaults filled in: the same schedule always reads the same, whether a
    # field came from a YAML file, the TrainerConfig schema or the defaults
    cfg["trainer"] = {**dataclasses.asdict(TrainerConfig()), **cfg["trainer"]}
    if int(cfg["size"]) < 1 or int(cfg["chunk_size"]) < 1:
        raise ValueError(f"size and chunk_size must be positive, got size={cfg['size']} chunk_size={cfg['chunk_size']}")
    cfg["size"], cfg["chunk_size"], cfg["seed"] = int(cfg["size"]), int(cfg["chunk_size"]), int(cfg["seed"])
    return json.loads(json.dumps(cfg))  # plain JSON types (lists, not tuples / ListConfig)


def trainer_config(cfg: Mapping[str, Any]) -> TrainerConfig:
    t = dict(cfg["trainer"])
    if t.get("checkpoints") is not None:
        t["checkpoints"] = tuple(int(e) for e in t["checkpoints"])
    if "betas" in t:
        t["betas"] = tuple(t["betas"])
    return TrainerConfig(**t)


def plan_chunks(runs: list[RunConfig], chunk_size: int) -> list[Chunk]:
    """Group runs (architecture, optimizer, batch size) and cut each group into chunks, in run order."""
    groups: dict[str, list[int]] = {}
    for r in runs:
        groups.setdefault(group_key(r), []).append(r.index)
    chunks = []
    for members in groups.values():
        for i in range(0, len(members), chunk_size):
            chunks.append(Chunk(len(chunks), tuple(members[i : i + chunk_size])))
    return chunks


def _rows(result: RunResult, run: RunConfig, arch_id: str) -> list[dict[str, Any]]:
    hp = {f"config.{k}": v for k, v in run.hparams().items()}
    hp["config.arch_id"] = arch_id
    return [{"run": run.index, "step": s, "epoch": e, **m, **hp}
            for s, e, m in zip(result.steps, result.epochs, result.metrics)]


def _zoo_info(cfg: dict, data_desc: dict, runs: list[RunConfig], chunks: list[Chunk]) -> dict:
    archs: dict[str, dict] = {}
    run_arch = []
    for r in runs:
        key = json.dumps(r.arch, sort_keys=True)
        if key not in archs:
            archs[key] = {"id": f"a{len(archs):04d}", "config": r.arch}
        run_arch.append(archs[key]["id"])
    return {
        "schema_version": SCHEMA_VERSION,
        "format": "weightspace-zoo",
        "name": cfg["name"],
        "size": cfg["size"],
        "dataset": data_desc,  # train_index / test_index: the exact split (also in split.json)
        "split_file": "split.json",
        "generator": cfg,
        "archs": {a["id"]: a["config"] for a in archs.values()},
        "run_arch": run_arch,
        "chunks": [{"id": c.id, "file": str(chunk_paths(Path("."), c.id)[0]), "runs": list(c.runs)} for c in chunks],
        "software": {"torch": torch.__version__, "python": platform.python_version()},
    }


def generate(config: Mapping[str, Any], out_dir: str | os.PathLike, *, shard: int = 0, num_shards: int = 1,
             progress: bool = True) -> Any:
    """Generate (or finish) a zoo in ``out_dir``.

    Args:
        config: generator config (see ``configs/zoo/*.yaml``): ``name``, ``size``, ``seed``,
            ``chunk_size``, ``data``, ``arch`` (a ``_target_`` dict), ``space`` (see
            :mod:`model_zoo.sampling`), ``trainer`` (see :class:`~model_zoo.trainer.TrainerConfig`).
        out_dir: the zoo folder; created if missing, resumed if it holds the same zoo.
        shard, num_shards: train only chunks with ``id % num_shards == shard``.
        progress: show a tqdm bar over models.

    Returns:
        The :class:`~model_zoo.zoo.Zoo` when every chunk is done, else ``None`` (other shards remain).

    Raises:
        ZooExistsError: ``out_dir`` holds a zoo made from a different configuration.
    """
    from .zoo import load

    cfg = normalize_config(config)
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard must lie in [0, num_shards={num_shards}), got {shard}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "chunks").mkdir(exist_ok=True)
    data = load_dataset(cfg["data"]["name"], **{k: v for k, v in cfg["data"].items() if k != "name"})
    runs = sample_runs(cfg["space"], cfg["arch"], cfg["size"], cfg["seed"])
    chunks = plan_chunks(runs, cfg["chunk_size"])
    desc = data.describe()
    info = _zoo_info(cfg, desc, runs, chunks)
    if (root / "zoo.json").exists():
        old = read_json(root / "zoo.json")
        try:
            same = normalize_config(old.get("generator") or {}) == cfg
        except (ValueError, TypeError, AttributeError):
            same = False
        if not same:
            raise ZooExistsError(f"{root} holds a zoo generated from another configuration; "
                                 "choose a new output folder or delete it")
        removed = clean_stale_tmp(root)
        if removed:
            log.info("removed %d temporary files left by an interrupted run", removed)
    else:
        write_json(root / "split.json", {"train_index": desc["train_index"], "test_index": desc["test_index"]})
        write_json(root / "zoo.json", info)
    tcfg = trainer_config(cfg)
    tcfg.schedule()  # validate before training
    todo = [c for c in chunks if c.id % num_shards == shard and not chunk_done(root, c.id)]
    done = sum(len(c.runs) for c in chunks if c.id % num_shards == shard) - sum(len(c.runs) for c in todo)
    log.info("zoo %s: %d runs in %d chunks; shard %d/%d trains %d runs (%d already stored)", cfg["name"],
             len(runs), len(chunks), shard, num_shards, sum(len(c.runs) for c in todo), done)
    by_index = {r.index: r for r in runs}
    bar = tqdm(total=sum(len(c.runs) for c in todo), unit="model", disable=not progress, desc=cfg["name"],
               bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} models [{elapsed}<{remaining}]")
    finished = 0
    for c in todo:
        members = [by_index[i] for i in c.runs]
        n_max = max(max(1, round(r.train_fraction * len(data.x_train))) for r in members)
        per_step = len(members) / max(1, tcfg.epochs * math.ceil(n_max / members[0].batch_size))
        results = train_group(members, data, tcfg, progress=lambda k, p=per_step: bar.update(p * k))
        tensors, rows = {}, []
        for res, run in zip(results, members):
            for name, t in res.state.items():
                tensors[f"{run_key(run.index)}/{name}"] = t
            rows += _rows(res, run, info["run_arch"][run.index])
        write_chunk(root, c.id, tensors, rows)
        finished += len(c.runs)
        bar.n = finished  # exact count once the chunk is stored
        bar.refresh()
    bar.close()
    return load(root) if finalize(root) else None
