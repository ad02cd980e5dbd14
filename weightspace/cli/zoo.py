"""Generate or resume a model zoo: weightspace zoo <name> size=N out=DIR [key=value ...]

``<name>`` is a built-in zoo config (``configs/zoo/<name>.yaml``: digits_mlp, digits_cnn,
digits_hetero, mnist1d_cnn, ...). Rerunning the same command on the same ``out`` finishes an
interrupted zoo. Sharded generation is a Hydra multirun::

    weightspace zoo digits_cnn out=DIR num_shards=2 shard=0,1 hydra/launcher=zoo_joblib --multirun

One process writes a zoo at a time (``DIR/.lock``; shards each hold ``DIR/.lock-shard<k>``). An
architecture ``_target_`` outside the allowlist (``docs/trust-model.md``) needs ``trust_code=true``.

Your own data (never downloaded; see :mod:`model_zoo.datasets`): ``zoo.data.name=KIND:PATH`` with KIND
``file`` (``.npz``), ``folder`` (images, one subfolder per class), ``mnist``, ``fashion_mnist``,
``cifar10``, ``cifar100`` or ``svhn`` (the standard files in a local folder), or a ready data config
``data@zoo.data=cifar10`` (root from ``$CIFAR10_ROOT``); ``zoo.data.limit_train=N`` /
``zoo.data.limit_test=N`` subsample for CPU budgets. Set the architecture to the data's shape
(``zoo.arch.in_channels=3`` for colour images). Quote a path holding ``~`` or spaces for Hydra:
``'zoo.data.name="cifar10:~/my data/cifar"'``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

USAGE = "weightspace zoo <name> [size=N] [out=DIR] [key=value ...]"
EXAMPLES = (
    "weightspace zoo digits_mlp_demo out=runs/zoo_demo",
    "weightspace zoo digits_cnn size=200 out=zoos/digits_cnn zoo.trainer.epochs=10",
    "weightspace zoo digits_cnn out=zoos/digits_cnn num_shards=2 shard=0,1 hydra/launcher=zoo_joblib --multirun",
    "weightspace zoo digits_cnn out=zoos/cifar10_cnn zoo.data.name=cifar10:/data/cifar-10-batches-bin "
    "zoo.data.limit_train=5000 zoo.arch.in_channels=3",
)


def positional_overrides(argv: list[str]) -> list[str]:
    """``["digits_cnn", "size=10"]`` -> ``["zoo=digits_cnn", "size=10"]`` (one positional: the zoo)."""
    from ._args import first_positional_as

    return first_positional_as("zoo", argv)


def zoo_config(cfg: DictConfig) -> dict:
    """The generator config: ``cfg.zoo`` with the top-level ``size`` applied."""
    z = OmegaConf.to_container(cfg.zoo, resolve=True)
    if cfg.get("size") is not None:
        z["size"] = int(cfg.size)
    return z


def contention_warning(threads: int, load: float, cores: int) -> str | None:
    """A warning when several torch threads would compete with other jobs for every core
    (intra-op threads then wait on each other at every op; see ``docs/design-notes/model_zoo.md``)."""
    if threads > 1 and load >= cores - 0.5:
        return (f"load average {load:.1f} on {cores} cores: other jobs hold the CPUs, and {threads} torch threads "
                "will wait on each other; threads=1 is usually much faster here")
    return None


def run(cfg: DictConfig) -> None:
    import torch

    import model_zoo

    from ._zoo_report import write_report

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    elif hasattr(os, "getloadavg"):
        msg = contention_warning(torch.get_num_threads(), os.getloadavg()[0], os.cpu_count() or 1)
        if msg:
            log.warning(msg)
    out = Path(str(cfg.out))
    zoo = model_zoo.generate(zoo_config(cfg), out, shard=int(cfg.shard), num_shards=int(cfg.num_shards),
                             progress=bool(cfg.progress), trust_code=bool(cfg.get("trust_code", False)))
    if zoo is None:
        log.info("shard %d of %d done; %s completes when the other shards finish", cfg.shard, cfg.num_shards, out)
        return
    if cfg.report:
        s = write_report(zoo, out)
        m = s["metric"]
        log.info("zoo %s: %d runs; final %s mean %s, median %s; counts %s; histogram %s", out, s["runs"], m,
                 s[m]["mean"], s[m]["median"], s["counts"], out / "summary.png")
