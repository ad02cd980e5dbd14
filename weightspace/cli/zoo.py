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
(``arch.in_channels=3`` for colour images). Quote a path holding ``~`` or spaces for Hydra:
``'zoo.data.name="cifar10:~/my data/cifar"'``.

Short forms: ``arch.<key>=V``, ``data.<key>=V``, ``trainer.<key>=V`` and ``space.<key>=V`` set
``zoo.arch.<key>`` etc. (a leading ``+`` changes nothing). ``arch=small_cnn`` takes a built-in
architecture config (``configs/arch/``), ``trainer=fast`` a trainer config, ``data=KIND:PATH`` a data
source. ``arch=my_pkg.nets.Net arch.width=64`` trains your own class: the other keys of the zoo's
architecture are dropped, so the config is ``{_target_: my_pkg.nets.Net, width: 64}``. The class must
import and be allowed: registered through the ``weightspace.architectures`` entry point group, or
``trust_code=true`` (which runs its module; modules in the current folder are then found without
``PYTHONPATH``). Everything is checked before anything is written: an architecture key the class does
not take fails with the list of the keys it takes, and an unknown top-level key fails too.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

USAGE = "weightspace zoo <name> [size=N] [out=DIR] [key=value ...]"
EXAMPLES = (
    "weightspace zoo digits_mlp_demo out=runs/zoo_demo",
    "weightspace zoo digits_cnn size=200 out=zoos/digits_cnn zoo.trainer.epochs=10",
    "weightspace zoo digits_cnn out=zoos/digits_cnn num_shards=2 shard=0,1 hydra/launcher=zoo_joblib --multirun",
    "weightspace zoo digits_cnn out=zoos/cifar10_cnn data=cifar10:/data/cifar-10-batches-bin "
    "data.limit_train=5000 arch.in_channels=3",
    "weightspace zoo digits_mlp_demo out=runs/zoo_deep arch.depth=3 arch.width=64 trainer.epochs=10",
    "weightspace zoo digits_mlp_demo out=runs/zoo_mine arch=my_nets.Net arch.hidden=64 trust_code=true",
)

#: the zoo config nodes the short forms ``<node>.<key>=V`` and ``<node>=V`` address
SHORT_NODES = ("arch", "data", "trainer", "space")
#: the top-level keys of ``configs/zoo.yaml`` (anything else, e.g. ``+depth=3``, is refused)
TOP_KEYS = frozenset({"zoo", "out", "size", "shard", "num_shards", "progress", "trust_code", "report", "threads"})


def positional_overrides(argv: list[str]) -> list[str]:
    """The zoo verb's command line as Hydra overrides.

    ``["digits_cnn", "size=10"]`` -> ``["zoo=digits_cnn", "size=10"]`` (one positional: the zoo), and the
    short forms: ``[+|++]arch.K=V`` -> ``++zoo.arch.K=V`` (likewise ``data``, ``trainer``, ``space``;
    ``~arch.K`` -> ``~zoo.arch.K``), ``arch=NAME`` -> ``arch@zoo.arch=NAME`` (a ``configs/arch/`` file),
    ``arch=pkg.mod.Class`` -> the zoo's architecture replaced by ``{_target_: pkg.mod.Class}`` (before
    any ``arch.K=V``), ``trainer=NAME`` -> ``trainer@zoo.trainer=NAME``, ``data=KIND:PATH`` ->
    ``zoo.data.name=KIND:PATH`` and ``data=NAME`` -> ``data@zoo.data=NAME``.
    """
    from ._args import first_positional_as

    out, head = [], []
    for a in first_positional_as("zoo", argv):
        key, eq, value = a.partition("=")
        bare = key.lstrip("+")
        node, _, rest = bare.partition(".")
        if eq and node in SHORT_NODES and rest:
            out.append(f"++zoo.{bare}={value}")
        elif key.startswith("~") and key[1:].partition(".")[0] in SHORT_NODES and "." in key:
            out.append(f"~zoo.{key[1:]}" + (f"={value}" if eq else ""))
        elif eq and bare == "arch" and "." in value:
            head += ["~zoo.arch", f"+zoo.arch._target_={value}"]  # a class: the old keys do not apply to it
        elif eq and bare == "data" and ":" in value:
            out.append(f"zoo.data.name={value}")
        elif eq and bare in ("arch", "data", "trainer"):
            out.append(f"{bare}@zoo.{bare}={value}")
        else:
            out.append(a)
    return head + out


def check_zoo_config(cfg: DictConfig) -> dict:
    """The generator config of ``cfg`` (:func:`zoo_config`), normalized and with every architecture it
    would train checked against its class's signature: nothing is written before this passes.

    Raises:
        SystemExit: an unknown top-level key, an unknown zoo/trainer/space key, an architecture argument
            the class does not take (the message lists those it takes), or a class outside the allowlist.
    """
    from model_zoo.generator import normalize_config
    from model_zoo.sampling import sample_runs
    from weightspace.instantiate import check_config

    extra = sorted(set(cfg) - TOP_KEYS)
    if extra:
        raise SystemExit(f"weightspace zoo: unknown option(s) {extra}; options: {sorted(TOP_KEYS)}. Architecture, "
                         "data, trainer and search-space keys are written arch.KEY=V, data.KEY=V, trainer.KEY=V, "
                         "space.KEY=V")
    try:
        z = normalize_config(zoo_config(cfg))
        archs = {json.dumps(r.arch, sort_keys=True): r.arch for r in sample_runs(z["space"], z["arch"], z["size"], z["seed"])}
        for arch in archs.values():
            check_config(arch, trust_code=bool(cfg.get("trust_code", False)))
    except ValueError as e:  # ArchConfigError, UntrustedTargetError and bad keys are ValueErrors
        hint = (" (your own class: register it through the 'weightspace.architectures' entry point group or pass "
                "trust_code=true)") if "not an allowed architecture" in str(e) else ""
        raise SystemExit(f"weightspace zoo {cfg.zoo.get('name', '')}: {e}{hint}; nothing was written") from None
    return z


def _discard_hydra_only(out: Path) -> None:
    """Remove ``out`` when it holds nothing but the ``.hydra`` logs of this failed call (never the folder the
    command runs in, or one above it)."""
    if not out.is_dir() or Path.cwd().resolve().is_relative_to(out.resolve()):
        return
    if [p.name for p in out.iterdir()] == [".hydra"]:
        shutil.rmtree(out, ignore_errors=True)


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

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    elif hasattr(os, "getloadavg"):
        msg = contention_warning(torch.get_num_threads(), os.getloadavg()[0], os.cpu_count() or 1)
        if msg:
            log.warning(msg)
    out = Path(str(cfg.out))
    here = os.getcwd()
    add_cwd = bool(cfg.get("trust_code", False)) and here not in sys.path and "" not in sys.path
    if add_cwd:  # trusted: your own modules in the current folder import without PYTHONPATH
        sys.path.insert(0, here)
    try:
        _generate_and_report(cfg, out)
    finally:
        if add_cwd and here in sys.path:
            sys.path.remove(here)


def _generate_and_report(cfg: DictConfig, out: Path) -> None:
    import model_zoo

    from ._zoo_report import write_report

    try:
        config = check_zoo_config(cfg)
    except SystemExit:
        _discard_hydra_only(out)
        raise
    zoo = model_zoo.generate(config, out, shard=int(cfg.shard), num_shards=int(cfg.num_shards),
                             progress=bool(cfg.progress), trust_code=bool(cfg.get("trust_code", False)))
    if zoo is None:
        log.info("shard %d of %d done; %s completes when the other shards finish", cfg.shard, cfg.num_shards, out)
        return
    if cfg.report:
        s = write_report(zoo, out)
        m = s["metric"]
        log.info("zoo %s: %d runs; final %s mean %s, median %s; counts %s; histogram %s", out, s["runs"], m,
                 s[m]["mean"], s[m]["median"], s["counts"], out / "summary.png")
