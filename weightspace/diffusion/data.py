"""Training data of weight generators: final checkpoints of independent zoo runs, split by run.

:func:`load_population` reads a zoo's final checkpoints as flat parameter vectors grouped by
architecture, with a seeded train/val/test split *of runs* (every run is independent: its own seed,
initialization and batch order). :class:`EvalData` holds the zoo's dataset with its test split cut
in two halves: ``val`` (conditioning labels, model selection) and ``test`` (the reported accuracy
and novelty); nothing that trains or selects a generator reads ``test``.
:func:`batched_logits` (re-exported from :mod:`weightspace.nn.functional`) runs a stack of flat parameter
vectors of one architecture in one call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from weightspace.graph import GraphSpec
from weightspace.instantiate import instantiate
from weightspace.nn.functional import batched_logits

log = logging.getLogger(__name__)

__all__ = ["ArchPopulation", "Population", "EvalData", "load_population", "batched_logits", "accuracy",
           "predictions", "arch_key", "flat_to_state_dict", "UnknownArchitectureError"]


class UnknownArchitectureError(ValueError):
    """An architecture that the zoo (or the trained generator) does not hold."""


def arch_key(config: Mapping[str, Any]) -> str:
    """A canonical string of a ``_target_`` architecture config (lists and ints normalized)."""
    def norm(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        if isinstance(v, Mapping):
            return {k: norm(v[k]) for k in sorted(v)}
        return v

    return repr(norm(dict(config)))


@dataclass(eq=False)
class ArchPopulation:
    """The final checkpoints of one architecture's runs.

    Attributes:
        config: the ``_target_`` config.
        spec: its :class:`~weightspace.GraphSpec`.
        runs: zoo run ids per split (``train``/``val``/``test``).
        flat: flat parameter vectors ``[n, P]`` per split (the spec's order).
        val_accuracy: accuracy on :attr:`EvalData.x_val` per split (conditioning labels).
    """

    config: dict
    spec: GraphSpec
    runs: dict[str, list[int]]
    flat: dict[str, Tensor]
    val_accuracy: dict[str, Tensor] = field(default_factory=dict)

    def build(self) -> nn.Module:
        return instantiate(self.config)


@dataclass(eq=False)
class EvalData:
    """Inputs/labels: ``train`` (the zoo's training split), ``val`` and ``test`` (halves of its test split)."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor

    @classmethod
    def from_zoo(cls, zoo: Any, seed: int = 0) -> EvalData:
        """The zoo's own dataset and split (:meth:`model_zoo.Zoo.dataset`: rebuilt with the zoo's generator
        options and checked against the stored split); the test half is a seeded half of the zoo's test split.

        Raises:
            model_zoo.ZooFormatError: the zoo's data cannot be rebuilt (not an embedded dataset) or its
                split differs from the one stored with the zoo.
        """
        data = zoo.dataset()
        perm = torch.randperm(len(data.y_test), generator=torch.Generator().manual_seed(10_000 + seed))
        half = len(perm) // 2
        va, te = perm[:half], perm[half:]
        return cls(data.x_train, data.y_train, data.x_test[va], data.y_test[va], data.x_test[te], data.y_test[te])


@dataclass(eq=False)
class Population:
    """All architectures of a zoo's final checkpoints (see :func:`load_population`)."""

    zoo_path: str
    archs: list[ArchPopulation]
    data: EvalData

    def find(self, config: Mapping[str, Any]) -> ArchPopulation:
        key = arch_key(config)
        for a in self.archs:
            if arch_key(a.config) == key:
                return a
        raise UnknownArchitectureError(f"architecture {dict(config)} is not in zoo {self.zoo_path}; it holds "
                                       f"{[a.config for a in self.archs]}")


def flat_to_state_dict(spec: GraphSpec, flat: Tensor) -> dict[str, Tensor]:
    """One flat vector ``[P]`` -> a full state dict (every key of the module, tied ones included)."""
    return spec.to_state_dict(spec.to_graph(flat.detach().float().contiguous()), check=False)


def load_population(zoo: Any, *, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                    arch: Mapping[str, Any] | None = None, single_arch: bool = False,
                    min_accuracy: float | None = None, progress: bool = True) -> Population:
    """Final checkpoints of a zoo's runs, split train/val/test by run.

    Args:
        zoo: a :class:`model_zoo.Zoo` or its path.
        fractions, seed: the run split (:func:`model_zoo.split_runs`).
        arch: keep only this architecture (a ``_target_`` config).
        single_arch: raise if the (filtered) zoo holds more than one architecture (fixed-architecture
            generators such as p-diff).
        min_accuracy: drop runs below this *validation* accuracy (never the test half).
        progress: tqdm bar over runs.

    Raises:
        UnknownArchitectureError: ``arch`` not in the zoo.
        ValueError: ``single_arch`` and several architectures, naming them; too few runs.
    """
    from tqdm.auto import tqdm

    import model_zoo

    if not isinstance(zoo, model_zoo.Zoo):
        zoo = model_zoo.load(zoo)
    split = zoo.split_runs(fractions, seed)
    split_of = {r: s for s, rs in split.items() for r in rs}
    data = EvalData.from_zoo(zoo, seed)
    groups: dict[str, dict] = {}
    keys = {}
    for i in range(len(zoo)):
        k = arch_key(zoo.arch_config(i))
        keys[i] = k
        groups.setdefault(k, {"config": zoo.arch_config(i), "runs": []})["runs"].append(i)
    if arch is not None:
        k = arch_key(arch)
        if k not in groups:
            raise UnknownArchitectureError(f"architecture {dict(arch)} is not in zoo {zoo.path}; it holds "
                                           f"{[g['config'] for g in groups.values()]}")
        groups = {k: groups[k]}
    if single_arch and len(groups) > 1:
        raise ValueError(f"zoo {zoo.path} mixes {len(groups)} architectures "
                         f"({[g['config'] for g in groups.values()][:4]} ...); a fixed-architecture generator "
                         "needs one - pass arch=... to pick one")
    archs = []
    bar = tqdm(total=sum(len(g["runs"]) for g in groups.values()), desc="reading zoo", disable=not progress)
    for g in groups.values():
        spec = zoo.graph_spec(g["runs"][0])
        flats: dict[str, list[Tensor]] = {"train": [], "val": [], "test": []}
        runs: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        for r in g["runs"]:
            sd = zoo.state_dict(r)
            v = spec.flatten(sd, allow_nonfinite=True).float()
            bar.update(1)
            if not torch.isfinite(v).all():
                continue
            flats[split_of[r]].append(v)
            runs[split_of[r]].append(r)
        flat = {s: torch.stack(v) if v else torch.zeros(0, spec.num_params) for s, v in flats.items()}
        pop = ArchPopulation(config=g["config"], spec=spec, runs=runs, flat=flat)
        model = pop.build()
        for s in flat:
            pop.val_accuracy[s] = accuracy(model, spec, flat[s], data.x_val, data.y_val)
        if min_accuracy is not None:
            for s in flat:
                keep = pop.val_accuracy[s] >= min_accuracy
                pop.flat[s] = flat[s][keep]
                pop.runs[s] = [r for r, k in zip(runs[s], keep.tolist()) if k]
                pop.val_accuracy[s] = pop.val_accuracy[s][keep]
        archs.append(pop)
    bar.close()
    if not any(len(a.runs["train"]) for a in archs):
        raise ValueError(f"zoo {zoo.path}: no training runs left after the split/filters")
    for a in archs:
        log.info("population %s: %s runs", a.config, {s: len(r) for s, r in a.runs.items()})
    return Population(str(zoo.path), archs, data)


@torch.no_grad()
def accuracy(model: nn.Module, spec: GraphSpec, flat: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Classification accuracy ``[B]`` of each parameter vector on ``(x, y)``; non-finite nets score 0."""
    if flat.shape[0] == 0:
        return torch.zeros(0)
    model = model.eval()
    logits = batched_logits(model, spec, torch.nan_to_num(flat.float(), nan=0.0, posinf=0.0, neginf=0.0), x)
    acc = (logits.argmax(-1) == y[None]).float().mean(-1)
    return torch.where(torch.isfinite(flat).all(-1), acc, torch.zeros_like(acc))


def predictions(model: nn.Module, spec: GraphSpec, flat: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(labels [B, n], probabilities [B, n, C])`` of each parameter vector on ``x``."""
    with torch.no_grad():
        logits = batched_logits(model.eval(), spec, torch.nan_to_num(flat.float(), nan=0.0, posinf=0.0,
                                                                     neginf=0.0), x)
        return logits.argmax(-1), logits.softmax(-1)
