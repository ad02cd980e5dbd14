"""Parameter nowcasting (NiNo): predict where training goes and jump there.

* :class:`Nowcaster` (:class:`NowcastConfig`; kinds ``graph``, ``mlp``, ``linefit`` in
  :data:`NOWCASTER_KINDS`): predicts the future change of every parameter from a window of past
  snapshots; ``Nowcaster.from_pretrained("nowcaster")`` loads the shipped one.
* :class:`NowcastHook` (``nowcaster.attach(model, optimizer)``): periodic jumps inside an ordinary
  training loop, at a period chosen so that they pay for themselves (:class:`AutoPeriod`), undone
  when the loss spikes (``report_loss``), with ``summary()`` and :func:`plot`;
  :class:`~weightspace.nowcast.lightning.NowcastCallback` for Lightning and
  :class:`~weightspace.nowcast.hf.NowcastTrainerCallback` for a Hugging Face ``Trainer`` (optional
  extras, import :mod:`weightspace.nowcast.lightning` / :mod:`weightspace.nowcast.hf`).
* :class:`NowcastEnsemble`: ``K`` nowcasters (e.g. several meta-training seeds) whose predictions
  are averaged in one jump.
* Language models: :mod:`weightspace.nowcast.lm` (offline byte corpora from the installed
  distributions, small causal LMs, dense LM trajectories for meta-training).
* Meta-training: :func:`meta_train` (:class:`MetaTrainConfig`) on :class:`Trajectory` windows
  (:func:`load_trajectories` from dense zoos).
* Building blocks: :class:`NowcastLayout` (where each flat parameter sits in the graph),
  :func:`window_features`, :func:`predict_stream` (bounded-memory one-window prediction),
  :class:`JumpPlan` (a small model's prepared jump).
"""

from .data import Trajectory, load_trajectories, sample_windows
from .ensemble import EnsemblePlan, NowcastEnsemble
from .features import group_stats, param_features, window_features
from .hook import (
    AUTO_BUDGET,
    HOLD_DEFAULT,
    JUMP_YIELD,
    OPTIMIZER_STATE_CHOICES,
    SPIKE_GUARD_DEFAULT,
    AutoPeriod,
    NowcastHook,
    held_mask,
    horizon_schedule,
    jump_paid,
    total_steps_from_scheduler,
)
from .layout import NowcastLayout
from .model import KINDS, NOWCASTER_KINDS, NowcastConfig, Nowcaster, NowcasterKind
from .plan import PLAN_MAX, JumpPlan
from .plotting import plot
from .stream import StreamIndex, predict_stream
from .train import MetaTrainConfig, meta_train, window_loss

__all__ = [
    "Nowcaster",
    "NowcastConfig",
    "NowcastEnsemble",
    "EnsemblePlan",
    "NowcasterKind",
    "NOWCASTER_KINDS",
    "KINDS",
    "NowcastHook",
    "horizon_schedule",
    "held_mask",
    "jump_paid",
    "HOLD_DEFAULT",
    "OPTIMIZER_STATE_CHOICES",
    "AutoPeriod",
    "AUTO_BUDGET",
    "JUMP_YIELD",
    "SPIKE_GUARD_DEFAULT",
    "total_steps_from_scheduler",
    "plot",
    "NowcastLayout",
    "Trajectory",
    "load_trajectories",
    "sample_windows",
    "MetaTrainConfig",
    "meta_train",
    "window_loss",
    "window_features",
    "group_stats",
    "param_features",
    "predict_stream",
    "StreamIndex",
    "JumpPlan",
    "PLAN_MAX",
]
