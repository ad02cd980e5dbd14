"""Weight diffusion: generate new, working networks for a target architecture.

* :class:`WeightDiffusion` (:mod:`~weightspace.diffusion.generator`): train a generator on a zoo's final
  checkpoints, sample, encode/decode, evaluate, save and reload it;
* :class:`GraphLatentDiffusion` (:mod:`~weightspace.diffusion.graph`): architecture-aware graph latent
  diffusion (``kind="graph"``);
* :class:`PDiff` (:mod:`~weightspace.diffusion.pdiff`): the fixed-architecture p-diff baseline
  (``kind="pdiff"``);
* :class:`LatentDDPM` (:mod:`~weightspace.diffusion.ddpm`): the conditional latent DDPM both use;
* :mod:`~weightspace.diffusion.data` (populations of zoo runs), :mod:`~weightspace.diffusion.metrics`
  (accuracy and function-space novelty), :mod:`~weightspace.diffusion.align` (neuron alignment) and
  :mod:`~weightspace.diffusion.baselines` (non-learned baselines).
"""

from .data import (
    ArchPopulation,
    EvalData,
    Population,
    UnknownArchitectureError,
    load_population,
)
from .ddpm import LatentDDPM, NoiseSchedule
from .generator import GENERATORS, KINDS, WeightDiffusion, evaluate_flat, write_samples
from .graph import GraphDiffusionConfig, GraphLatentDiffusion
from .pdiff import PDiff, PDiffConfig

__all__ = [
    "WeightDiffusion",
    "GENERATORS",
    "KINDS",
    "GraphLatentDiffusion",
    "GraphDiffusionConfig",
    "PDiff",
    "PDiffConfig",
    "LatentDDPM",
    "NoiseSchedule",
    "ArchPopulation",
    "EvalData",
    "Population",
    "UnknownArchitectureError",
    "load_population",
    "evaluate_flat",
    "write_samples",
]
