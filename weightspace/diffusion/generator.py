r"""Latent weight diffusion: generate new, working networks for a target architecture.

Two generators, trained on the final checkpoints of many *independent* zoo runs (split into
train/val/test by run; selection uses the validation runs and validation inputs only):

* ``kind="pdiff"`` - the p-diff baseline (Wang et al. 2024) for one fixed architecture: flattened
  parameters, 1-D conv autoencoder with input/latent noise, latent DDPM
  (:mod:`~weightspace.tasks.diffusion_pdiff`; ``align=True`` adds neuron alignment).
* ``kind="graph"`` - architecture-aware: graph-metanetwork (or probing) encoder, graph-hypernetwork decoder through
  :class:`~weightspace.GraphSpec`, function-space reconstruction, latent DDPM conditioned on the
  architecture and optionally a target accuracy (:mod:`~weightspace.tasks.diffusion_graph`).

Usage::

    from weightspace.tasks.diffusion import WeightDiffusion
    gen = WeightDiffusion.fit("zoos/digits_mlp_good", kind="graph", seed=0)
    states = gen.sample(100, seed=0)                 # list of state dicts of the zoo's architecture
    z = gen.encode(model); model2 = gen.decode(z)     # network -> latent -> network
    report = gen.evaluate(gen.sample_flat(100))       # test accuracy and novelty (function space)

Accuracy and novelty (:mod:`~weightspace.tasks.diffusion_metrics`) are measured on the test half of the
zoo dataset's test split, which neither training nor model selection reads.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .diffusion_data import (
    ArchPopulation,
    Population,
    UnknownArchitectureError,
    accuracy,
    arch_key,
    flat_to_state_dict,
    load_population,
    predictions,
)
from .diffusion_graph import GraphDiffusionConfig, GraphLatentDiffusion
from .diffusion_metrics import nearest_training, not_closer_pvalue, pairwise_iou, summarize
from .diffusion_pdiff import PDiff, PDiffConfig

log = logging.getLogger(__name__)

__all__ = ["WeightDiffusion", "KINDS", "evaluate_flat", "write_samples", "UnknownArchitectureError"]

KINDS = ("graph", "pdiff")


class WeightDiffusion:
    """A trained weight generator with the population it learned from (see the module docstring)."""

    def __init__(self, kind: str, model: nn.Module, population: Population, seed: int = 0) -> None:
        self.kind, self.model, self.population, self.seed = kind, model, population, seed

    # ------------------------------------------------------------------ training
    @classmethod
    def fit(cls, zoo: Any, kind: str = "graph", *, arch: Mapping[str, Any] | None = None, seed: int = 0,
            config: Mapping[str, Any] | None = None, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
            progress: bool = True) -> WeightDiffusion:
        """Train a generator on a zoo's final checkpoints.

        Args:
            zoo: a :class:`model_zoo.Zoo` or its folder.
            kind: ``"graph"`` or ``"pdiff"``.
            arch: restrict training to this architecture (``pdiff`` needs exactly one).
            seed: seed of the run split, the initialization and the training draws.
            config: overrides of :class:`GraphDiffusionConfig` / :class:`PDiffConfig`.

        Raises:
            ValueError: unknown ``kind`` or config key; ``pdiff`` on a zoo of several architectures.
            UnknownArchitectureError: ``arch`` is not in the zoo.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown generator kind {kind!r}; choose one of {KINDS}")
        cfg_cls = GraphDiffusionConfig if kind == "graph" else PDiffConfig
        fields = set(cfg_cls.__dataclass_fields__)
        bad = sorted(set(config or {}) - fields)
        if bad:
            raise ValueError(f"unknown {kind} generator option(s) {bad}; options: {sorted(fields)}")
        opts = dict(config or {})
        for key in ("channels", "scale_grid"):
            if key in opts:
                opts[key] = tuple(opts[key])
        cfg = cfg_cls(**opts)
        pop = load_population(zoo, fractions=fractions, seed=seed, arch=arch, single_arch=(kind == "pdiff"),
                              progress=progress)
        if kind == "pdiff":
            model: nn.Module = PDiff.fit(pop.archs[0], pop.data, cfg, seed=seed, progress=progress)
        else:
            model = GraphLatentDiffusion.fit(pop, cfg, seed=seed, progress=progress)
        return cls(kind, model, pop, seed)

    # ------------------------------------------------------------------ architectures
    @property
    def archs(self) -> list[dict]:
        """Architectures of the training population."""
        return [dict(a.config) for a in self.population.archs]

    def resolve_arch(self, arch: Mapping[str, Any] | None) -> dict:
        """The architecture to generate: ``arch`` (checked) or, if None, the population's only one.

        Raises:
            UnknownArchitectureError: ``pdiff`` and an architecture other than its own; ``arch`` None
                and several architectures; an architecture the graph decoder cannot build.
        """
        if arch is None:
            if len(self.population.archs) > 1:
                raise UnknownArchitectureError(f"the zoo holds {len(self.population.archs)} architectures; "
                                               f"pass arch=... (one of {self.archs})")
            return dict(self.population.archs[0].config)
        arch = dict(arch)
        if self.kind == "pdiff":
            own = self.population.archs[0].config
            if arch_key(arch) != arch_key(own):
                raise UnknownArchitectureError(f"the p-diff generator is fixed to {own}; cannot generate {arch}")
            return arch
        self.model.check_arch(arch)
        return arch

    def _spec(self, arch: dict):
        try:
            return self.population.find(arch).spec
        except UnknownArchitectureError:
            return self.model.target(arch).spec

    # ------------------------------------------------------------------ encode / decode / sample
    def encode(self, model: nn.Module | Mapping[str, Tensor], arch: Mapping[str, Any] | None = None) -> Tensor:
        """A network (module or state dict) -> its latent ``[D]``."""
        arch = self.resolve_arch(arch)
        spec = self._spec(arch)
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
        from model_zoo import instantiate

        arch = self.resolve_arch(arch)
        model = instantiate(arch)
        model.load_state_dict(flat_to_state_dict(self._spec(arch), self.decode_flat(z[None], arch)[0]))
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
        spec = self._spec(arch)
        return [flat_to_state_dict(spec, f) for f in self.sample_flat(n, arch, seed, accuracy)]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, flat: Tensor, arch: Mapping[str, Any] | None = None) -> dict:
        """Test accuracy and novelty of generated nets ``flat [n, P]`` (see :func:`evaluate_flat`)."""
        arch = self.resolve_arch(arch)
        try:
            pop = self.population.find(arch)
        except UnknownArchitectureError:
            pop = None
        if pop is None:  # an architecture without trained references: accuracy only
            from model_zoo import instantiate

            spec = self._spec(arch)
            acc = accuracy(instantiate(arch), spec, flat, self.population.data.x_test, self.population.data.y_test)
            return {"generated": {"test_accuracy": summarize(acc.numpy()), "values": {"test_accuracy": acc.tolist()}},
                    "references": None}
        return evaluate_flat(pop, self.population.data, {"generated": flat})

    def encode_decode_loss(self, arch: Mapping[str, Any] | None = None) -> dict:
        """Round trip of the validation runs: test accuracy before and after ``decode(encode(.))``."""
        arch = self.resolve_arch(arch)
        pop = self.population.find(arch)
        src = pop.flat["val"] if len(pop.flat["val"]) else pop.flat["train"][:16]
        z = self.model.encode(src) if self.kind == "pdiff" else self.model.encode(arch, src)
        rec = self.decode_flat(z, arch)
        m, d = pop.build(), self.population.data
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
        :func:`~weightspace.tasks.diffusion_metrics.not_closer_pvalue`).
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
                  seed: int = 0, accuracy: float | None = None, progress: bool = True) -> dict:
    """Generate ``n`` networks into ``out/*.safetensors`` and write ``out/report.json``.

    With ``arch=None`` on a zoo of several architectures, the ``n`` networks are spread over them.
    Returns the report (``samples``: file + ``_target_`` architecture + test accuracy per network;
    ``results``: accuracy and novelty per architecture; ``throughput``; ``encode_decode``; for the graph
    generator ``latent_scale`` and the validation figures that chose it, ``latent_scale_calibration``).
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if arch is None and len(gen.population.archs) > 1:
        archs = gen.archs
    else:
        archs = [gen.resolve_arch(arch)]
    counts = [n // len(archs) + (1 if i < n % len(archs) else 0) for i in range(len(archs))]
    samples, results, t_sample, made = [], [], 0.0, 0
    bar = tqdm(total=n, desc="generating", disable=not progress)
    for k, (a, c) in enumerate(zip(archs, counts)):
        if c == 0:
            continue
        t0 = time.perf_counter()
        flat = gen.sample_flat(c, a, seed=seed + 1000 * k, accuracy=accuracy)
        t_sample += time.perf_counter() - t0
        made += c
        spec = gen._spec(a)
        ev = gen.evaluate(flat, a)
        accs = ev["generated"]["values"]["test_accuracy"]
        for i, f in enumerate(flat):
            name = f"sample_{len(samples):04d}.safetensors"
            state = {kk: v.contiguous() for kk, v in flat_to_state_dict(spec, f).items()}
            save_file(state, str(out / name))
            samples.append({"file": name, "arch": dict(a),
                            "test_accuracy": float(accs[i])})
            bar.update(1)
        summary = {kk: vv for kk, vv in ev.get("generated", {}).items() if kk != "values"}
        entry = {"arch": dict(a), "generated": summary}
        if ev.get("references", True) is not None:
            entry["training"] = {kk: vv for kk, vv in ev["training"].items() if kk != "values"}
            if "heldout" in ev:
                entry["heldout"] = {kk: vv for kk, vv in ev["heldout"].items() if kk != "values"}
            entry["encode_decode"] = gen.encode_decode_loss(a)
        results.append(entry)
    bar.close()
    report = {"zoo": gen.population.zoo_path, "kind": gen.kind, "seed": seed, "n": made,
              "target_accuracy": accuracy,
              "latent_scale": float(gen.model.scale) if gen.kind == "graph" else None,
              "latent_scale_calibration": list(getattr(gen.model, "calibration", [])),
              "throughput_nets_per_s": made / t_sample if t_sample > 0 else None,
              "accuracy_inputs": "test half of the zoo dataset's test split (never used in training or selection)",
              "samples": samples, "results": results}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    log.info("wrote %d networks and report.json to %s", made, out)
    return report
