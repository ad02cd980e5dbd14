r"""Latent weight diffusion: generate new, working networks for a target architecture.

Two generators, trained on the final checkpoints of many *independent* zoo runs (split into
train/val/test by run; selection uses the validation runs and validation inputs only):

* ``kind="pdiff"`` - the p-diff baseline (Wang et al. 2024) for one fixed architecture: flattened
  parameters, 1-D conv autoencoder with input/latent noise, latent DDPM
  (:mod:`~weightspace.diffusion.pdiff`; ``align=True`` adds neuron alignment).
* ``kind="graph"`` - architecture-aware: graph-metanetwork (or probing) encoder, graph-hypernetwork decoder through
  :class:`~weightspace.GraphSpec`, function-space reconstruction, latent DDPM conditioned on the
  architecture and optionally a target accuracy (:mod:`~weightspace.diffusion.graph`).

Usage::

    from weightspace.diffusion import WeightDiffusion
    gen = WeightDiffusion.fit("zoos/digits_mlp_good", kind="graph", seed=0)
    states = gen.sample(100, seed=0)                 # list of state dicts of the zoo's architecture
    z = gen.encode(model); model2 = gen.decode(z)     # network -> latent -> network
    report = gen.evaluate(gen.sample_flat(100))       # test accuracy and novelty (function space)
    gen.save_pretrained("runs/gen")                   # config.json + model.safetensors
    again = WeightDiffusion.from_pretrained("runs/gen")  # samples as gen does; zoo=... to evaluate

Accuracy and novelty (:mod:`~weightspace.diffusion.metrics`) are measured on the test half of the
zoo dataset's test split, which neither training nor model selection reads.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from weightspace.instantiate import instantiate
from weightspace.pretrained import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, read_checkpoint_doc
from weightspace.resolver import Registry

from .data import (
    ArchPopulation,
    Population,
    UnknownArchitectureError,
    accuracy,
    arch_key,
    flat_to_state_dict,
    load_population,
    predictions,
)
from .graph import GraphLatentDiffusion
from .metrics import nearest_training, not_closer_pvalue, pairwise_iou, summarize
from .pdiff import PDiff

log = logging.getLogger(__name__)

__all__ = ["WeightDiffusion", "GENERATORS", "KINDS", "evaluate_flat", "write_samples", "UnknownArchitectureError"]

#: ``kind=`` -> generator class. A generator class has ``config_class``, ``checkpoint_format``, ``kind``,
#: ``single_arch`` (trains on one architecture only) and ``fit_population(population, config, seed, progress)``.
GENERATORS: Registry[type] = Registry("generator kind")
GENERATORS.register("graph", GraphLatentDiffusion)
GENERATORS.register("pdiff", PDiff)

#: The registered kinds.
KINDS = GENERATORS.names()


def generator_class(name_or_path: str | os.PathLike) -> type:
    """The generator class of a saved generator directory (or shipped checkpoint name), read from its
    ``config.json`` ``format``.

    Raises:
        CheckpointError: ``config.json`` is missing, not JSON, or holds no weight generator.
    """
    p = Path(name_or_path)
    if p.is_file() and p.name in (CONFIG_NAME, WEIGHTS_NAME):
        p = p.parent
    if not p.is_dir() and (p.is_absolute() or len(p.parts) > 1):
        raise CheckpointError(f"{p}: no such directory (a saved generator is a directory with {CONFIG_NAME} and "
                              f"{WEIGHTS_NAME})")
    d, doc = read_checkpoint_doc(p if p.is_dir() else name_or_path, "generator")
    cfg = d / CONFIG_NAME
    fmt = doc.get("format")
    by_format = {GENERATORS.resolve(k).checkpoint_format: GENERATORS.resolve(k) for k in GENERATORS}
    if not isinstance(fmt, str) or fmt not in by_format:
        raise CheckpointError(f"{cfg}: holds format {fmt!r}, not a weight generator (formats {sorted(by_format)})")
    return by_format[fmt]


class WeightDiffusion:
    """A trained weight generator, with the population it learned from when that is loaded.

    Args:
        kind: the generator's kind (a name of :data:`GENERATORS`).
        model: the generator (:class:`~weightspace.diffusion.graph.GraphLatentDiffusion` or
            :class:`~weightspace.diffusion.pdiff.PDiff`).
        population: the zoo runs it was trained on (:func:`~weightspace.diffusion.data.load_population`);
            ``None`` for a generator loaded without its zoo, which samples, encodes and decodes but
            cannot :meth:`evaluate`.
        seed: the seed of the run split and the training.
        fractions: the train/val/test fractions of the run split.
        arch: the architecture the training population was restricted to (``None``: all of the zoo's).
    """

    def __init__(self, kind: str, model: nn.Module, population: Population | None, seed: int = 0,
                 fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 arch: Mapping[str, Any] | None = None) -> None:
        self.kind, self.model, self.population, self.seed = kind, model, population, seed
        self.fractions = tuple(float(f) for f in fractions)
        self.arch_filter = None if arch is None else dict(arch)

    # ------------------------------------------------------------------ training
    @classmethod
    def fit(cls, zoo: Any, kind: str = "graph", *, arch: Mapping[str, Any] | None = None, seed: int = 0,
            config: Mapping[str, Any] | None = None, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
            progress: bool = True) -> WeightDiffusion:
        """Train a generator on a zoo's final checkpoints.

        Args:
            zoo: a :class:`model_zoo.Zoo` or its folder.
            kind: a name of :data:`GENERATORS` (``"graph"`` or ``"pdiff"``).
            arch: restrict training to this architecture (``pdiff`` needs exactly one).
            seed: seed of the run split, the initialization and the training draws.
            config: overrides of the kind's config dataclass (:class:`GraphDiffusionConfig` /
                :class:`PDiffConfig`).

        Raises:
            ValueError: unknown ``kind`` or config key; ``pdiff`` on a zoo of several architectures.
            UnknownArchitectureError: ``arch`` is not in the zoo.
        """
        gen_cls = GENERATORS.resolve(kind)
        cfg_cls = gen_cls.config_class
        fields = set(cfg_cls.__dataclass_fields__)
        bad = sorted(set(config or {}) - fields)
        if bad:
            raise ValueError(f"unknown {gen_cls.kind} generator option(s) {bad}; options: {sorted(fields)}")
        opts = dict(config or {})
        for key in ("channels", "scale_grid"):
            if key in opts:
                opts[key] = tuple(opts[key])
        cfg = cfg_cls(**opts)
        pop = load_population(zoo, fractions=fractions, seed=seed, arch=arch, single_arch=gen_cls.single_arch,
                              progress=progress)
        model = gen_cls.fit_population(pop, cfg, seed=seed, progress=progress)
        return cls(gen_cls.kind, model, pop, seed, fractions, arch)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the generator to ``directory`` (``config.json`` + ``model.safetensors``, atomically).

        The generator's config, tensors and what it needs to sample (its architectures, normalization,
        latent statistics and temperature) are stored; so are the zoo path, seed, run split and
        architecture filter (``extras["generator"]``), so that :meth:`from_pretrained` can reattach the
        population. Returns the directory.
        """
        meta = {"kind": self.kind, "seed": int(self.seed), "fractions": list(self.fractions),
                "arch": self.arch_filter, "zoo": None if self.population is None else self.population.zoo_path,
                "population_archs": self.archs}
        return self.model.save_pretrained(directory, extras={"generator": meta})

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, zoo: Any = None, *, progress: bool = False,
                        map_location: str | torch.device = "cpu", trust_code: bool = False) -> WeightDiffusion:
        """Load a generator written by :meth:`save_pretrained`.

        Args:
            name_or_path: its directory (or the name of a shipped checkpoint).
            zoo: the zoo (or its folder) to reattach as :attr:`population` (the same run split as in
                training), needed by :meth:`evaluate`, :meth:`encode_decode_loss` and the report of
                :func:`write_samples`; ``None``: sample, encode and decode only.
            progress: tqdm bar while reading the zoo.
            trust_code: let the architectures named in the files resolve outside the allowlist
                (see :meth:`~weightspace.pretrained.PretrainedMixin.from_pretrained`).

        Raises:
            CheckpointError: a file is missing, corrupt or holds no generator (the message names it).
        """
        gen_cls = generator_class(name_or_path)
        model = gen_cls.from_pretrained(name_or_path, map_location=map_location, trust_code=trust_code)
        where = Path(name_or_path) / CONFIG_NAME if Path(name_or_path).is_dir() else Path(str(name_or_path))
        try:
            meta = model.info.get("generator", {})
            if not isinstance(meta, dict):
                raise TypeError(f"'generator' must be an object, got {type(meta).__name__}")
            seed, fractions, arch = meta.get("seed", 0), meta.get("fractions", [0.8, 0.1, 0.1]), meta.get("arch")
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise TypeError(f"'generator.seed' must be an integer, got {seed!r}")
            if (not isinstance(fractions, list) or len(fractions) != 3
                    or not all(isinstance(f, (int, float)) and not isinstance(f, bool) and 0 <= f <= 1 for f in fractions)):
                raise TypeError(f"'generator.fractions' must be three numbers in [0, 1], got {fractions!r}")
            if arch is not None and not (isinstance(arch, dict) and isinstance(arch.get("_target_"), str)):
                raise TypeError(f"'generator.arch' must be null or a _target_ config, got {arch!r}")
            gen = cls(gen_cls.kind, model, None, seed, tuple(fractions), arch)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: the generator's extras are malformed: {e}") from None
        return gen if zoo is None else gen.attach_zoo(zoo, progress=progress)

    def attach_zoo(self, zoo: Any, progress: bool = False) -> WeightDiffusion:
        """Read the training population again from ``zoo`` (the same run split and architecture filter as
        in training) into :attr:`population`; returns ``self``.

        Raises:
            UnknownArchitectureError, ValueError: as :func:`~weightspace.diffusion.data.load_population`.
        """
        self.population = load_population(zoo, fractions=self.fractions, seed=self.seed, arch=self.arch_filter,
                                          single_arch=GENERATORS.resolve(self.kind).single_arch, progress=progress)
        return self

    @property
    def zoo_path(self) -> str | None:
        """The zoo the generator was trained on (``None`` if unknown)."""
        if self.population is not None:
            return self.population.zoo_path
        return getattr(self.model, "info", {}).get("generator", {}).get("zoo")

    # ------------------------------------------------------------------ architectures
    @property
    def archs(self) -> list[dict]:
        """Architectures of the training population."""
        if self.population is not None:
            return [dict(a.config) for a in self.population.archs]
        saved = getattr(self.model, "info", {}).get("generator", {}).get("population_archs")
        return [dict(a) for a in saved] if saved else [dict(a) for a in self.model.trained_archs()]

    def resolve_arch(self, arch: Mapping[str, Any] | None) -> dict:
        """The architecture to generate: ``arch`` (checked) or, if None, the population's only one.

        Raises:
            UnknownArchitectureError: ``pdiff`` and an architecture other than its own; ``arch`` None
                and several architectures; an architecture the graph decoder cannot build.
        """
        archs = self.archs
        if arch is None:
            if len(archs) > 1:
                raise UnknownArchitectureError(f"the zoo holds {len(archs)} architectures; "
                                               f"pass arch=... (one of {archs})")
            return dict(archs[0])
        arch = dict(arch)
        if self.kind == "pdiff":
            own = archs[0]
            if arch_key(arch) != arch_key(own):
                raise UnknownArchitectureError(f"the p-diff generator is fixed to {own}; cannot generate {arch}")
            return arch
        self.model.check_arch(arch)
        return arch

    def spec(self, arch: Mapping[str, Any]):
        """The :class:`~weightspace.GraphSpec` of an architecture (the order of flat parameter vectors)."""
        if self.population is not None:
            try:
                return self.population.find(arch).spec
            except UnknownArchitectureError:
                pass
        return self.model.arch_spec(dict(arch))

    def _require_population(self, what: str) -> Population:
        if self.population is None:
            raise RuntimeError(f"{what} needs the training zoo: this generator was loaded without it; pass "
                               f"zoo=... to WeightDiffusion.from_pretrained (trained on {self.zoo_path!r})")
        return self.population

    # ------------------------------------------------------------------ encode / decode / sample
    def encode(self, model: nn.Module | Mapping[str, Tensor], arch: Mapping[str, Any] | None = None) -> Tensor:
        """A network (module or state dict) -> its latent ``[D]``."""
        arch = self.resolve_arch(arch)
        spec = self.spec(arch)
        state = model.state_dict() if isinstance(model, nn.Module) else model
        flat = spec.flatten(state).float()[None]
        z = self.model.encode(flat) if self.kind == "pdiff" else self.model.encode(arch, flat)
        return z[0]

    def decode_flat(self, z: Tensor, arch: Mapping[str, Any] | None = None) -> Tensor:
        """Latents ``[B, D]`` -> flat parameter vectors ``[B, P]``."""
        arch = self.resolve_arch(arch)
        return self.model.decode(z) if self.kind == "pdiff" else self.model.decode(arch, z)

    def decode(self, z: Tensor, arch: Mapping[str, Any] | None = None) -> nn.Module:
        """A latent ``[D]`` -> a new ``nn.Module`` of ``arch`` holding the decoded weights (eval mode)."""
        arch = self.resolve_arch(arch)
        model = instantiate(arch)
        model.load_state_dict(flat_to_state_dict(self.spec(arch), self.decode_flat(z[None], arch)[0]))
        return model.eval()

    def sample_flat(self, n: int, arch: Mapping[str, Any] | None = None, seed: int = 0,
                    accuracy: float | None = None, guidance: float = 0.0) -> Tensor:
        """``n`` generated parameter vectors ``[n, P]``; deterministic given ``seed``.

        ``accuracy`` (graph generator only): the target validation accuracy to prompt with.
        """
        arch = self.resolve_arch(arch)
        g = torch.Generator().manual_seed(int(seed))
        if self.kind == "pdiff":
            if accuracy is not None:
                raise ValueError("the p-diff generator is unconditional; accuracy=... needs kind='graph'")
            return self.model.sample(n, g)
        return self.model.sample(arch, n, g, accuracy=accuracy, guidance=guidance)

    def sample(self, n: int, arch: Mapping[str, Any] | None = None, seed: int = 0,
               accuracy: float | None = None) -> list[dict[str, Tensor]]:
        """``n`` generated state dicts (every key of the target module)."""
        arch = self.resolve_arch(arch)
        spec = self.spec(arch)
        return [flat_to_state_dict(spec, f) for f in self.sample_flat(n, arch, seed, accuracy)]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, flat: Tensor, arch: Mapping[str, Any] | None = None) -> dict:
        """Test accuracy and novelty of generated nets ``flat [n, P]`` (see :func:`evaluate_flat`)."""
        population = self._require_population("evaluate()")
        arch = self.resolve_arch(arch)
        try:
            pop = population.find(arch)
        except UnknownArchitectureError:
            pop = None
        if pop is None:  # an architecture without trained references: accuracy only
            spec = self.spec(arch)
            acc = accuracy(instantiate(arch), spec, flat, population.data.x_test, population.data.y_test)
            return {"generated": {"test_accuracy": summarize(acc.numpy()), "values": {"test_accuracy": acc.tolist()}},
                    "references": None}
        return evaluate_flat(pop, population.data, {"generated": flat})

    def encode_decode_loss(self, arch: Mapping[str, Any] | None = None) -> dict:
        """Round trip of the validation runs: test accuracy before and after ``decode(encode(.))``."""
        population = self._require_population("encode_decode_loss()")
        arch = self.resolve_arch(arch)
        pop = population.find(arch)
        src = pop.flat["val"] if len(pop.flat["val"]) else pop.flat["train"][:16]
        z = self.model.encode(src) if self.kind == "pdiff" else self.model.encode(arch, src)
        rec = self.decode_flat(z, arch)
        m, d = pop.build(), population.data
        before = accuracy(m, pop.spec, src, d.x_test, d.y_test).numpy()
        after = accuracy(m, pop.spec, rec, d.x_test, d.y_test).numpy()
        return {"networks": int(len(src)), "test_accuracy_before": float(before.mean()),
                "test_accuracy_after": float(after.mean()), "accuracy_loss": float(before.mean() - after.mean())}


def evaluate_flat(pop: ArchPopulation, data: Any, sets: Mapping[str, Tensor], reference_cap: int | None = None) -> dict:
    """Accuracy and function-space novelty of named sets of networks of one architecture.

    Every set (and the held-out *test runs*, the reference for "new") is scored against the training
    runs: test accuracy, distance to the nearest training net, and pairwise IoU of wrong predictions
    within the set (diversity). Training nets themselves get accuracy and diversity only.

    Returns:
        ``{name: {"test_accuracy": summary, "nearest_tv": summary, "max_iou": summary,
        "max_agreement": summary, "pairwise_iou": float, "values": {...}}}`` plus ``"training"`` and
        ``"heldout"`` entries and ``"notcloser_p"`` per set (one-sided Mann-Whitney, see
        :func:`~weightspace.diffusion.metrics.not_closer_pvalue`).
    """
    model = pop.build()
    x, y = data.x_test, data.y_test
    train = pop.flat["train"] if reference_cap is None else pop.flat["train"][:reference_cap]
    _, prob_t = predictions(model, pop.spec, train, x)
    out: dict[str, Any] = {}
    acc_t = accuracy(model, pop.spec, train, x, y).numpy()
    out["training"] = {"test_accuracy": summarize(acc_t), "pairwise_iou": pairwise_iou(prob_t, y),
                       "values": {"test_accuracy": acc_t.tolist()}}
    named = {"heldout": pop.flat["test"], **dict(sets)}
    for name, flat in named.items():
        if len(flat) == 0:
            continue
        acc = accuracy(model, pop.spec, flat, x, y).numpy()
        _, prob = predictions(model, pop.spec, flat, x)
        nov = nearest_training(prob, prob_t, y)
        entry = {"test_accuracy": summarize(acc), "pairwise_iou": pairwise_iou(prob, y),
                 **{k: summarize(v) for k, v in nov.items()},
                 "values": {"test_accuracy": acc.tolist(), **{k: v.tolist() for k, v in nov.items()}}}
        out[name] = entry
    if "heldout" in out:
        h = np.asarray(out["heldout"]["values"]["nearest_tv"])
        for name in sets:
            if name in out:
                out[name]["notcloser_p"] = not_closer_pvalue(np.asarray(out[name]["values"]["nearest_tv"]), h)
    return out


def write_samples(out: str | Path, gen: WeightDiffusion, n: int, arch: Mapping[str, Any] | None = None,
                  seed: int = 0, accuracy: float | None = None, progress: bool = True, values: bool = False,
                  resume: bool = False) -> dict:
    """Generate ``n`` networks into ``out/*.safetensors`` and write ``out/report.json``.

    With ``arch=None`` on a zoo of several architectures, the ``n`` networks are spread over them.
    A generator loaded without its zoo (``gen.population`` None) writes the networks with test accuracy
    ``None`` and ``results[i]["generated"]`` ``None``.
    Returns the report (``samples``: file + ``_target_`` architecture + test accuracy per network;
    ``results``: accuracy and novelty per architecture; ``throughput``; ``encode_decode``; for the graph
    generator ``latent_scale`` and the validation figures that chose it, ``latent_scale_calibration``).
    ``values=True`` keeps the per-network figures behind each summary (``results[i][set]["values"]``:
    test accuracy and novelty of every generated, training and held-out network), e.g. for plots.
    ``resume=True`` keeps the architectures whose networks an interrupted call with the same arguments
    already wrote (recorded in ``out/.report_partial.json`` until ``report.json`` is written); the caller
    makes sure that ``gen`` is the same generator.
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if arch is None and len(gen.archs) > 1:
        archs = gen.archs
    else:
        archs = [gen.resolve_arch(arch)]
    counts = [n // len(archs) + (1 if i < n % len(archs) else 0) for i in range(len(archs))]
    samples, results, t_sample, made = [], [], 0.0, 0
    partial = out / ".report_partial.json"
    request = json.loads(json.dumps({"n": n, "archs": archs, "seed": seed, "accuracy": accuracy, "values": values}))
    done: dict[str, dict] = {}
    if resume:
        try:
            kept = json.loads(partial.read_text())
            done = dict(kept["groups"]) if kept.get("request") == request else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            done = {}
    bar = tqdm(total=n, desc="generating", disable=not progress)
    for k, (a, c) in enumerate(zip(archs, counts)):
        if c == 0:
            continue
        old = done.get(str(k))
        if old is not None and len(old["samples"]) == c and all((out / s["file"]).is_file() for s in old["samples"]):
            samples += old["samples"]
            results.append(old["result"])
            t_sample += float(old["t_sample"])
            made += c
            bar.update(c)
            log.info("%s: %d networks already written, kept", a, c)
            continue
        t0 = time.perf_counter()
        flat = gen.sample_flat(c, a, seed=seed + 1000 * k, accuracy=accuracy)
        dt = time.perf_counter() - t0
        t_sample += dt
        made += c
        spec = gen.spec(a)
        ev = gen.evaluate(flat, a) if gen.population is not None else None  # loaded without its zoo: no scores
        accs = ev["generated"]["values"]["test_accuracy"] if ev is not None else [None] * c
        for i, f in enumerate(flat):
            name = f"sample_{len(samples):04d}.safetensors"
            state = {kk: v.contiguous() for kk, v in flat_to_state_dict(spec, f).items()}
            save_file(state, str(out / name))
            samples.append({"file": name, "arch": dict(a),
                            "test_accuracy": None if accs[i] is None else float(accs[i])})
            bar.update(1)
        if ev is None:
            entry = {"arch": dict(a), "generated": None}
        else:
            summary = {kk: vv for kk, vv in ev.get("generated", {}).items() if values or kk != "values"}
            entry = {"arch": dict(a), "generated": summary}
            if ev.get("references", True) is not None:
                entry["training"] = {kk: vv for kk, vv in ev["training"].items() if values or kk != "values"}
                if "heldout" in ev:
                    entry["heldout"] = {kk: vv for kk, vv in ev["heldout"].items() if values or kk != "values"}
                entry["encode_decode"] = gen.encode_decode_loss(a)
        results.append(entry)
        if resume:
            done[str(k)] = {"samples": samples[-c:], "result": entry, "t_sample": dt}
            tmp = partial.with_suffix(".tmp")
            tmp.write_text(json.dumps({"request": request, "groups": done}))
            os.replace(tmp, partial)
    bar.close()
    report = {"zoo": gen.zoo_path, "kind": gen.kind, "seed": seed, "n": made,
              "target_accuracy": accuracy,
              "latent_scale": float(gen.model.scale) if gen.kind == "graph" else None,
              "latent_scale_calibration": list(getattr(gen.model, "calibration", [])),
              "throughput_nets_per_s": made / t_sample if t_sample > 0 else None,
              "accuracy_inputs": "test half of the zoo dataset's test split (never used in training or selection)",
              "samples": samples, "results": results}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    partial.unlink(missing_ok=True)
    log.info("wrote %d networks and report.json to %s", made, out)
    return report
