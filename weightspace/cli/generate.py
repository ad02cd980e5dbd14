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
``preset=laptop`` (the default) trains with reduced step budgets (``configs/preset/generate/laptop.yaml``);
``preset=paper`` with the dataclass defaults, the shipped recipe.

The trained generator is saved into ``OUT`` too (``config.json`` + ``model.safetensors``);
``weightspace generate generator=OUT n=100 out=OUT2`` samples from it again without training (the
report's accuracy and novelty need its zoo: ``zoo=DIR``, by default the folder it was trained on if
that still exists; without one the networks are written unscored).

Rerunning the same command on the same ``OUT`` resumes: the generator saved there is reused when it was
trained from the same zoo (same ``zoo.json`` and ``manifest.json``) with the same kind, seed, options and
architecture, and the samples and ``report.json`` are kept when they were drawn with the same generator,
``n``, ``seed``, ``accuracy`` and ``arch`` (``OUT/generate.json`` records both); after an interruption
while sampling, the architectures whose networks were already written are kept. ``OUT/report.png`` plots
the test accuracy of the samples beside the zoo's training and held-out runs, and their novelty: the
distance of each sample (and of each held-out run) to its nearest training run in function space.

``data=KIND:PATH`` (``file:x.npz``, ``folder:DIR``, ``mnist:ROOT``, ``cifar10:ROOT``, ... as in
:mod:`model_zoo.datasets`) gives a zoo made from in-memory data, or imported without data, its data; it
is checked against the fingerprint in ``zoo.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


STATE = "generate.json"  # what OUT's generator and samples were made from (resuming compares it)

USAGE = "weightspace generate zoo=DIR n=100 out=OUT [arch={...}] [data=KIND:PATH] [key=value ...]"
EXAMPLES = (
    "weightspace generate zoo=zoos/digits_mlp_good n=100 out=runs/gen",
    "weightspace generate zoo=zoos/digits_mlp_good n=100 out=runs/gen   # again: reuses the generator and samples",
    "weightspace generate zoo=zoos/digits_mlp_good n=100 out=runs/gen_paper preset=paper   # the shipped recipe's budgets",
    "weightspace generate generator=runs/gen n=20 out=runs/gen2 seed=1",
    "weightspace generate zoo=zoos/mine data=file:my_data.npz n=50 out=runs/gen_mine",
)


def positional_overrides(args: list[str]) -> list[str]:
    """``zoo=DIR``, ``arch={...}`` and ``data=KIND:PATH`` name a folder, an architecture and a data source
    here, not the ``configs/zoo/``, ``configs/arch/`` and ``configs/data/`` groups: they become ``zoo_dir``,
    ``target_arch`` and ``data_source``. (``graph.KEY=V`` / ``pdiff.KEY=V`` set fields of
    ``GraphDiffusionConfig`` / ``PDiffConfig``, the schemas of those nodes.)"""
    out = []
    for a in args:
        if a.startswith("zoo="):
            a = "zoo_dir=" + a[4:]
        elif a.startswith("arch="):
            a = "target_arch=" + a[5:]
        elif a.startswith("data="):
            a = "data_source=" + a[5:]
        out.append(a)
    return out


def _sha256(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes() if p.is_file() else b"-")
    return h.hexdigest()


def _read_state(out: Path) -> dict:
    try:
        state = json.loads((out / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(out: Path, state: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{STATE}.tmp"
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out / STATE)


def training_key(cfg: DictConfig, options: dict, arch: dict | None) -> dict:
    """What a generator trained by ``cfg`` depends on: the zoo's identity (its folder, ``zoo.json`` and
    ``manifest.json``), the data source, kind, seed, options and the ``pdiff`` architecture."""
    zoo = Path(str(cfg.zoo_dir)).resolve()
    return {"zoo": str(zoo), "zoo_sha256": _sha256(zoo / "zoo.json", zoo / "manifest.json"),
            "data": cfg.get("data_source"), "kind": str(cfg.kind), "seed": int(cfg.seed),
            "options": json.loads(json.dumps(options)), "arch": arch if cfg.kind == "pdiff" else None}


def _has_generator(out: Path) -> bool:
    return (out / "config.json").is_file() and (out / "model.safetensors").is_file()


def _reusable_report(out: Path, state: dict, key: dict) -> dict | None:
    """``OUT/report.json`` if it was written for ``key`` and every sample file it lists is still there."""
    if state.get("samples") != key:
        return None
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return None
    if all((out / s["file"]).is_file() for s in report.get("samples", [])):
        return report
    return None


def _drop_old_samples(out: Path) -> None:
    """Remove the sample files an earlier ``report.json`` in ``out`` lists (drawn for another request)."""
    try:
        old = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return
    for s in old.get("samples", []):
        name = str(s.get("file", ""))
        if name.startswith("sample_") and "/" not in name and "\\" not in name:
            (out / name).unlink(missing_ok=True)


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
    out = Path(str(cfg.out))
    state = _read_state(out)
    if source is not None:
        gen = _load(str(source), None if cfg.zoo_dir is None else str(cfg.zoo_dir), bool(cfg.progress), cfg)
        src = Path(str(source))
        made_by = {"generator": str(src.resolve()) if src.is_dir() else str(source),
                   "sha256": _sha256(src / "config.json", src / "model.safetensors") if src.is_dir() else None}
    else:
        options = OmegaConf.to_container(cfg[cfg.kind], resolve=True) if cfg.get(cfg.kind) is not None else {}
        from .predict import open_zoo

        zoo = open_zoo(cfg)
        made_by = training_key(cfg, options, arch)
        if state.get("generator") == made_by and _has_generator(out):
            log.info("reusing the generator in %s (trained on the same zoo with the same config; "
                     "another out=DIR trains a new one)", out)
            gen = WeightDiffusion.from_pretrained(str(out), zoo=zoo, progress=bool(cfg.progress))
        else:
            gen = WeightDiffusion.fit(zoo, kind=str(cfg.kind), arch=arch if cfg.kind == "pdiff" else None,
                                      seed=int(cfg.seed), config=options, progress=bool(cfg.progress))
            gen.save_pretrained(str(out))
            state = {"generator": made_by}
            _write_state(out, state)
            log.info("generator saved in %s (weightspace generate generator=%s samples from it again)", out, out)
    key = {"made_by": made_by, "n": int(cfg.n), "seed": int(cfg.seed), "arch": arch,
           "accuracy": None if cfg.accuracy is None else float(cfg.accuracy), "scored": gen.population is not None}
    report = _reusable_report(out, state, key)
    if report is not None:
        log.info("the %d networks and report.json in %s were drawn with the same generator and options: kept",
                 report["n"], out)
    else:
        resume = state.get("pending") == key  # an interrupted call drew these: keep what it wrote
        if not resume:
            (out / ".report_partial.json").unlink(missing_ok=True)
            _drop_old_samples(out)
        base = {k: v for k, v in state.items() if k not in ("samples", "pending")}
        _write_state(out, {**base, "pending": key})
        report = write_samples(str(out), gen, int(cfg.n), arch=arch, seed=int(cfg.seed),
                               accuracy=None if cfg.accuracy is None else float(cfg.accuracy),
                               progress=bool(cfg.progress), values=True, resume=True)
        _write_state(out, {**base, "samples": key})
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
    if cfg.get("plot", True):
        path = plot_report(report, out / "report.png")
        if path is not None:
            log.info("accuracy and novelty plot: %s", path)
    log.info("%d networks in %s (%.1f nets/s)", report["n"], out, report["throughput_nets_per_s"] or 0.0)


def _values(entry: dict | None, name: str) -> list[float]:
    """Per-network figures of one set of a report entry (``[]`` when the report kept only summaries)."""
    if not entry:
        return []
    return [float(v) for v in entry.get("values", {}).get(name, []) if v is not None]


def plot_report(report: dict, path: Path) -> Path | None:
    """``report.png``: per architecture, the test accuracy of the generated networks beside the zoo's training
    and held-out runs (a strip plot), and novelty: the nearest-training-run distance (``nearest_tv``) of the
    generated networks and of the held-out runs (histograms). ``None`` (nothing written) when no network
    was scored."""
    import matplotlib

    matplotlib.use("Agg")
    import textwrap

    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in report["results"] if r.get("generated") is not None]
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3.2 * len(rows)), squeeze=False)
    rng = np.random.default_rng(0)
    colors = {"training": "#8c8c8c", "held-out": "#4c72b0", "generated": "#c44e52"}
    for (ax_acc, ax_nov), r in zip(axes, rows):
        name = ", ".join(f"{k}={v}" for k, v in r["arch"].items() if k != "_target_")
        name = f"{str(r['arch'].get('_target_', '')).rpartition('.')[2]}({name})"
        acc = {"training": _values(r.get("training"), "test_accuracy"),
               "held-out": _values(r.get("heldout"), "test_accuracy"),
               "generated": _values(r.get("generated"), "test_accuracy")}
        if not acc["generated"]:  # a report without values: one point per sample from its list
            acc["generated"] = [s["test_accuracy"] for s in report["samples"]
                                if s["arch"] == r["arch"] and s["test_accuracy"] is not None]
        labels = [k for k, v in acc.items() if v]
        for i, k in enumerate(labels):
            v = np.asarray(acc[k])
            ax_acc.scatter(v, i + rng.uniform(-0.2, 0.2, len(v)), s=10, alpha=0.6, color=colors[k])
            ax_acc.plot([np.median(v)] * 2, [i - 0.3, i + 0.3], color="k", lw=1.5)
        ax_acc.set_yticks(range(len(labels)), [f"{k} ({len(acc[k])})" for k in labels])
        ax_acc.set(xlabel="test accuracy (bar: median)")
        ax_acc.set_title(textwrap.fill(name, 60), fontsize=9)
        nov = {"held-out": _values(r.get("heldout"), "nearest_tv"), "generated": _values(r.get("generated"), "nearest_tv")}
        if any(nov.values()):
            hi = max(max(v) for v in nov.values() if v)
            bins = np.linspace(0.0, max(hi, 1e-6) * 1.05, 25)
            for k, v in nov.items():
                if v:
                    ax_nov.hist(v, bins=bins, alpha=0.55, color=colors[k], label=f"{k} ({len(v)})")
            ax_nov.legend(frameon=False, fontsize=8)
            ax_nov.set(xlabel="distance to the nearest training run (nearest_tv)", ylabel="networks")
            ax_nov.set_title("novelty: generated vs held-out runs", fontsize=9)
            ax_nov.locator_params(axis="x", nbins=5)
        else:
            ax_nov.text(0.5, 0.5, "no trained runs of this architecture\n(novelty needs references)",
                        ha="center", va="center", transform=ax_nov.transAxes)
            ax_nov.set_axis_off()
        for ax in (ax_acc, ax_nov):
            ax.spines["top"].set_visible(False)
            ax.spines["right"].set_visible(False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _load(source: str, zoo: str | None, progress: bool, cfg: DictConfig | None = None):
    """The saved generator ``source`` with its zoo reattached (``zoo``, else the folder it was trained on if it
    still exists, else none; opened by :func:`~weightspace.cli.predict.open_zoo`, so verified and given
    ``data=`` when set)."""
    from weightspace.diffusion import WeightDiffusion
    from weightspace.pretrained import CheckpointError

    try:
        gen = WeightDiffusion.from_pretrained(source)
    except CheckpointError as e:
        raise SystemExit(f"weightspace generate: generator={source!r}: {e}") from None
    zoo = zoo if zoo is not None else gen.zoo_path
    if zoo is not None and Path(zoo).is_dir():
        from .predict import open_zoo

        opts = {"zoo_dir": zoo, "trust_code": False, "data_source": None}
        opts.update({k: cfg.get(k) for k in ("trust_code", "data_source") if cfg is not None and k in cfg})
        gen.attach_zoo(open_zoo(OmegaConf.create(opts)), progress=progress)
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
