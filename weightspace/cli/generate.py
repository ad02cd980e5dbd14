"""Generate new networks with latent weight diffusion: weightspace generate zoo=DIR n=100 out=OUT [arch=...]

Trains a generator on the zoo's final checkpoints (``kind=graph``: the architecture-aware graph
latent diffusion; ``kind=pdiff``: the fixed-architecture p-diff baseline), samples ``n`` networks
and writes ``OUT/sample_XXXX.safetensors`` (keys = the target module's ``state_dict`` keys) and
``OUT/report.json`` (each sample's file, ``_target_`` architecture and test accuracy; accuracy and
novelty figures against the zoo's training and held-out runs; sampling throughput; for ``kind=graph``
the latent temperature, chosen on the validation split unless ``graph.sample_scale`` fixes it).
``arch={_target_:model_zoo.archs.MLP,depth:3,width:24}`` generates for one architecture (for
``kind=graph`` also one the zoo does not hold); without it a mixed zoo's architectures share ``n``.
``accuracy=0.97`` prompts the graph generator with a target (validation) accuracy.

The trained generator is saved into ``OUT`` too (``config.json`` + ``model.safetensors``);
``weightspace generate generator=OUT n=100 out=OUT2`` samples from it again without training (the
report's accuracy and novelty need its zoo: ``zoo=DIR``, by default the folder it was trained on if
that still exists; without one the networks are written unscored).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def positional_overrides(args: list[str]) -> list[str]:
    """``zoo=DIR`` and ``arch={...}`` name a folder and an architecture here, not the ``configs/zoo/`` and
    ``configs/arch/`` groups: they become ``zoo_dir`` and ``target_arch``. (``graph.KEY=V`` / ``pdiff.KEY=V``
    set fields of ``GraphDiffusionConfig`` / ``PDiffConfig``, the schemas of those nodes.)"""
    out = []
    for a in args:
        if a.startswith("zoo="):
            a = "zoo_dir=" + a[4:]
        elif a.startswith("arch="):
            a = "target_arch=" + a[5:]
        out.append(a)
    return out


def run(cfg: DictConfig) -> None:
    from weightspace.diffusion import WeightDiffusion, write_samples

    source = cfg.get("generator")
    if source is None and cfg.zoo_dir is None:
        raise SystemExit("weightspace generate: pass zoo=DIR (a zoo folder made by `weightspace zoo`) or "
                         "generator=DIR (a generator saved by an earlier `weightspace generate`)")
    if cfg.zoo_dir is not None and not Path(str(cfg.zoo_dir)).is_dir():
        raise SystemExit(f"weightspace generate: zoo folder {cfg.zoo_dir!r} does not exist")
    if int(cfg.n) < 1:
        raise SystemExit(f"weightspace generate: n must be at least 1, got {cfg.n}")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    arch = OmegaConf.to_container(cfg.target_arch, resolve=True) if cfg.target_arch is not None else None
    if arch is not None and (not isinstance(arch, dict) or "_target_" not in arch):
        raise SystemExit(f"weightspace generate: arch must be a _target_ config such as "
                         f"{{_target_:model_zoo.archs.MLP,depth:2,width:32}}, got {arch!r}")
    if arch is not None:  # fill the constructor defaults so it compares equal to the zoo's configs
        arch = _complete(arch)
    if source is not None:
        gen = _load(str(source), None if cfg.zoo_dir is None else str(cfg.zoo_dir), bool(cfg.progress))
    else:
        options = OmegaConf.to_container(cfg[cfg.kind], resolve=True) if cfg.get(cfg.kind) is not None else {}
        from .predict import open_zoo

        gen = WeightDiffusion.fit(open_zoo(cfg), kind=str(cfg.kind), arch=arch if cfg.kind == "pdiff" else None,
                                  seed=int(cfg.seed), config=options, progress=bool(cfg.progress))
        gen.save_pretrained(str(cfg.out))
        log.info("generator saved in %s (weightspace generate generator=%s samples from it again)", cfg.out, cfg.out)
    report = write_samples(str(cfg.out), gen, int(cfg.n), arch=arch, seed=int(cfg.seed),
                           accuracy=None if cfg.accuracy is None else float(cfg.accuracy),
                           progress=bool(cfg.progress))
    for r in report["results"]:
        if r["generated"] is None:
            log.info("%s: not scored (the generator was loaded without its zoo; pass zoo=DIR)", r["arch"])
            continue
        g = r["generated"]["test_accuracy"]
        line = f"{r['arch']}: generated test accuracy best {g['best']:.3f} mean {g['mean']:.3f} median {g['median']:.3f}"
        if "training" in r:
            line += f" (training nets mean {r['training']['test_accuracy']['mean']:.3f})"
        log.info(line)
    if report["latent_scale"] is not None:
        log.info("latent temperature %.2f", report["latent_scale"])
    log.info("%d networks in %s (%.1f nets/s)", report["n"], cfg.out, report["throughput_nets_per_s"] or 0.0)


def _load(source: str, zoo: str | None, progress: bool):
    """The saved generator ``source`` with its zoo reattached (``zoo``, else the folder it was trained on if it
    still exists, else none)."""
    from weightspace.diffusion import WeightDiffusion
    from weightspace.pretrained import CheckpointError

    try:
        gen = WeightDiffusion.from_pretrained(source)
    except CheckpointError as e:
        raise SystemExit(f"weightspace generate: generator={source!r}: {e}") from None
    zoo = zoo if zoo is not None else gen.zoo_path
    if zoo is not None and Path(zoo).is_dir():
        gen.attach_zoo(zoo, progress=progress)
    else:
        log.warning("the zoo of generator %s (%s) is not available: the networks are written without scores; "
                    "pass zoo=DIR to score them", source, zoo)
    return gen


def _complete(arch: dict) -> dict:
    import inspect

    from model_zoo.archs import resolve_target

    try:
        target = resolve_target(arch["_target_"])
    except ValueError as e:
        raise SystemExit(f"weightspace generate: unknown architecture: {e}") from None
    full = {"_target_": arch["_target_"]}
    for name, p in inspect.signature(target).parameters.items():
        if p.default is not inspect.Parameter.empty:
            full[name] = p.default
    unknown = sorted(set(arch) - set(full))
    if unknown:
        raise SystemExit(f"weightspace generate: {arch['_target_']} has no argument(s) {unknown}")
    full.update(arch)
    return full
