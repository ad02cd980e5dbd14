"""Zoo generation: sample runs, train them in batched groups, store them chunk by chunk.

``generate(config, out_dir)`` is the whole pipeline; rerunning it on the same folder finishes what is
missing (see :mod:`model_zoo.store`). The data is an embedded dataset, a source ``KIND:PATH`` named in
``config["data"]["name"]`` or the user's own tensors / torch Dataset passed as ``data=`` (see
:mod:`model_zoo.datasets`); its fingerprint is recorded in ``zoo.json`` and a resumed run must use
the same data. ``shard``/``num_shards`` split the chunks between workers
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

from weightspace.instantiate import check_config

from .data import Dataset
from .datasets import IN_MEMORY, check_fingerprint, fingerprint, load_data
from .lock import ZooLock, ZooLockedError, describe_lock, is_stale, read_lock, shard_lock_path
from .sampling import RunConfig, sample_runs
from .store import (
    SCHEMA_VERSION,
    ZooFormatError,
    chunk_done,
    chunk_paths,
    chunk_record_path,
    clean_stale_tmp,
    finalize,
    read_json,
    run_key,
    verify_chunk,
    write_chunk,
    write_json,
)
from .trainer import RunResult, TrainerConfig, group_key, train_group

log = logging.getLogger(__name__)

__all__ = ["generate", "normalize_config", "plan_chunks", "Chunk", "ZooExistsError", "ZooLockedError"]

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

    ``data`` may be a mapping (``name``: an embedded dataset or a source ``KIND:PATH``, plus options,
    see :func:`model_zoo.datasets.load_data`) or just the name/source string. Limits left at ``None``
    are dropped, so a config that spells them out equals one that does not.

    Raises:
        ValueError: unknown top-level or trainer keys; ``data`` that is neither a mapping nor a string
            (in-memory data goes to ``generate(..., data=...)``); a non-positive size or chunk size.
    """
    config = dict(config)
    d = config.get("data")
    if isinstance(d, str):
        config["data"] = {"name": d}
    elif d is not None and not isinstance(d, Mapping):
        raise ValueError(f"zoo config 'data' must be a mapping or a dataset name/source string, got a "
                         f"{type(d).__name__}; pass tensors or a torch Dataset as generate(config, out_dir, data=...)")
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
    cfg["data"] = {k: v for k, v in cfg["data"].items() if not (k in ("limit_train", "limit_test") and v is None)}
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


def _live_shard_locks(root: Path) -> list[tuple[Path, dict]]:
    out = []
    for p in sorted(root.glob(".lock-shard*")):
        rec = read_lock(p)
        if rec is not None and not is_stale(rec, p):
            out.append((p, rec))
    return out


def _open_or_create(root: Path, cfg: dict, info: dict, desc: dict, data: Dataset) -> None:
    """Create ``zoo.json`` and ``split.json``, or check that the existing zoo has the same config and
    data (its recorded fingerprint). Called with the zoo lock held, so two writers never both find the
    folder empty."""
    zpath = root / "zoo.json"
    if zpath.exists():
        old = read_json(zpath)
        try:
            same = normalize_config(old.get("generator") or {}) == cfg
        except (ValueError, TypeError, AttributeError):
            same = False
        if not same:
            raise ZooExistsError(f"{root} holds a zoo generated from another configuration ({zpath}); "
                                 "choose a new output folder or delete it")
        recorded = (old.get("dataset") or {}).get("fingerprint") if isinstance(old.get("dataset"), dict) else None
        if isinstance(recorded, Mapping):
            check_fingerprint(data, recorded, f"{zpath} (resuming)")
        removed = clean_stale_tmp(root)
        if removed:
            log.info("removed %d temporary files left by an interrupted run", removed)
    else:
        write_json(root / "split.json", {"train_index": desc["train_index"], "test_index": desc["test_index"]})
        write_json(zpath, info)


def generate(config: Mapping[str, Any], out_dir: str | os.PathLike, *, data: Any = None, shard: int = 0,
             num_shards: int = 1, progress: bool = True, trust_code: bool = False) -> Any:
    """Generate (or finish) a zoo in ``out_dir``.

    One process writes a zoo at a time (see :mod:`model_zoo.lock`): an unsharded run holds
    ``out_dir/.lock`` throughout; the shards of a sharded run each hold their own
    ``.lock-shard<k>`` and take ``.lock`` only while creating or checking ``zoo.json``. Before
    counting a stored chunk as done, a resumed run checks its size and sha256 against the record
    written with it, and trains it again (with a warning naming the file) when they differ.

    Args:
        config: generator config (see ``configs/zoo/*.yaml``): ``name``, ``size``, ``seed``,
            ``chunk_size``, ``data``, ``arch`` (a ``_target_`` dict), ``space`` (see
            :mod:`model_zoo.sampling`), ``trainer`` (see :class:`~model_zoo.trainer.TrainerConfig`).
        out_dir: the zoo folder; created if missing, resumed if it holds the same zoo.
        data: your own data instead of ``config["data"]["name"]``: ``(x_train, y_train, x_test, y_test)``
            tensors or arrays, a map-style torch ``Dataset`` (or a pair train/test), a source string, ...
            (anything :func:`model_zoo.datasets.load_data` takes); ``config["data"]`` then holds only
            options (``flatten``, ``limit_train``, ``limit_test``, ``seed``, ``test_fraction``). In-memory
            data is recorded as ``"in-memory"`` with its fingerprint: pass the same data to resume and
            to ``Zoo.dataset(data=...)``.
        shard, num_shards: train only chunks with ``id % num_shards == shard``.
        progress: show a tqdm bar over models.
        trust_code: allow architecture ``_target_`` s outside the allowlist (see ``docs/trust-model.md``).

    Returns:
        The :class:`~model_zoo.zoo.Zoo` when every chunk is done, else ``None`` (other shards remain).

    Raises:
        ZooExistsError: ``out_dir`` holds a zoo made from a different configuration.
        DataMismatchError: resuming with data that differs from the fingerprint recorded in ``zoo.json``.
        DataSourceError: a data source whose files are missing (naming the files expected) or malformed.
        ZooLockedError: another process is writing the zoo (or the same shard of it), naming it.
        UntrustedTargetError: an architecture outside the allowlist without ``trust_code``.
        ArchConfigError: architecture arguments that do not fit the class.
        ZooWriteError: a file cannot be written (e.g. a full disk), naming the file.
    """
    config = dict(config)
    if data is not None:
        opts = config.get("data") or {}
        if isinstance(opts, str) or (isinstance(opts, Mapping) and opts.get("name", IN_MEMORY) != IN_MEMORY):
            name = opts if isinstance(opts, str) else opts["name"]
            raise ValueError(f"data given twice: config data.name={name!r} and data=...; drop data.name from the "
                             "config (keep only options such as flatten or limit_train) or do not pass data=")
        config["data"] = {**opts, "name": IN_MEMORY}
    cfg = normalize_config(config)
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard must lie in [0, num_shards={num_shards}), got {shard}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "chunks").mkdir(exist_ok=True)
    init = "creating or checking zoo.json"
    if num_shards == 1:
        writer = ZooLock(root / ".lock", "generating", wait=60, wait_if=(init,)).acquire()
        try:
            live = _live_shard_locks(root)
            if live:
                raise ZooLockedError(f"{root}: shards of a sharded run are writing this zoo: "
                                     f"{describe_lock(*live[0])}; wait for them or rerun with the same num_shards")
            return _generate_locked(cfg, root, shard, num_shards, progress, trust_code, data)
        finally:
            writer.release()
    with ZooLock(root / ".lock", init, wait=60, wait_if=(init,)):
        others = [(p, r) for p, r in _live_shard_locks(root) if r.get("num_shards") != num_shards]
        if others:
            raise ZooLockedError(f"{root}: a run with num_shards={others[0][1].get('num_shards')} is writing this "
                                 f"zoo ({describe_lock(*others[0])}); shards must share num_shards")
        writer = ZooLock(shard_lock_path(root, shard), f"generating shard {shard} of {num_shards}",
                         extra={"num_shards": num_shards}).acquire()
    try:
        return _generate_locked(cfg, root, shard, num_shards, progress, trust_code, data)
    finally:
        writer.release()


def _generate_locked(cfg: dict, root: Path, shard: int, num_shards: int, progress: bool, trust_code: bool,
                     user_data: Any = None) -> Any:
    from .zoo import load

    options = {k: v for k, v in cfg["data"].items() if k != "name"}
    if user_data is not None:
        data = load_data(user_data, **options)
    elif cfg["data"]["name"] == IN_MEMORY:
        raise ValueError(f"{root}: the zoo config names in-memory data; pass the same data as generate(..., data=...)")
    else:
        data = load_data(cfg["data"])
    runs = sample_runs(cfg["space"], cfg["arch"], cfg["size"], cfg["seed"])
    for arch in {json.dumps(r.arch, sort_keys=True): r.arch for r in runs}.values():
        check_config(arch, trust_code=trust_code)  # before anything is written
    chunks = plan_chunks(runs, cfg["chunk_size"])
    desc = {**data.describe(), "fingerprint": fingerprint(data)}
    info = _zoo_info(cfg, desc, runs, chunks)
    if num_shards == 1:
        _open_or_create(root, cfg, info, desc, data)
    else:
        with ZooLock(root / ".lock", "creating or checking zoo.json", wait=60,
                     wait_if=("creating or checking zoo.json",)):
            _open_or_create(root, cfg, info, desc, data)
    tcfg = trainer_config(cfg)
    tcfg.schedule()  # validate before training
    mine = [c for c in chunks if c.id % num_shards == shard]
    for c in mine:
        if chunk_done(root, c.id):
            problem = verify_chunk(root, c.id, hashes=True)
            if problem:
                log.warning("%s; training chunk %d again", problem, c.id)
                chunk_paths(root, c.id)[1].unlink(missing_ok=True)
                chunk_record_path(root, c.id).unlink(missing_ok=True)
                (root / "manifest.json").unlink(missing_ok=True)
    todo = [c for c in mine if not chunk_done(root, c.id)]
    done = sum(len(c.runs) for c in mine) - sum(len(c.runs) for c in todo)
    log.info("zoo %s: %d runs in %d chunks; shard %d/%d trains %d runs (%d already stored)",
             cfg["name"], len(runs), len(chunks), shard, num_shards, sum(len(c.runs) for c in todo), done)
    by_index = {r.index: r for r in runs}
    bar = tqdm(total=sum(len(c.runs) for c in todo), unit="model", disable=not progress, desc=cfg["name"],
               bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} models [{elapsed}<{remaining}]")
    finished = 0
    for c in todo:
        members = [by_index[i] for i in c.runs]
        steps = max(math.ceil(max(1, round(r.train_fraction * len(data.x_train))) / r.batch_size) for r in members)
        per_step = len(members) / max(1, tcfg.epochs * steps)

        def advance(k: int, p: float = per_step, cap: int = finished + len(c.runs)) -> None:
            # the step count is an estimate: never move the bar past this chunk's models
            bar.update(min(p * k, max(0.0, cap - bar.n)))

        results = train_group(members, data, tcfg, progress=advance, trust_code=trust_code)
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
    if finalize(root):
        zoo = load(root, trust_code=trust_code)
        zoo.attach_data(data)  # zoo.dataset() works at once, in-memory data included
        return zoo
    if num_shards == 1:  # every chunk was verified or trained above: only a change during the run gets here
        raise ZooFormatError(f"{root}: a chunk changed on disk while the zoo was generated (see the warning "
                             "above); rerun the same command to train it again")
    return None
