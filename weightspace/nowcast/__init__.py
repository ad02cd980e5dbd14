"""Parameter nowcasting (NiNo): predict where training goes and jump there.

* :class:`Nowcaster` (:class:`NowcastConfig`; kinds ``graph``, ``mlp``, ``linefit`` in
  :data:`NOWCASTER_KINDS`): predicts the future change of every parameter from a window of past
  snapshots; ``Nowcaster.from_pretrained("nowcaster")`` loads the shipped one.
* :class:`NowcastHook` (``nowcaster.attach(model, optimizer)``): periodic jumps inside an ordinary
  training loop; :class:`~weightspace.nowcast.lightning.NowcastCallback` for Lightning (optional
  extra, import :mod:`weightspace.nowcast.lightning`).
* Meta-training: :func:`meta_train` (:class:`MetaTrainConfig`) on :class:`Trajectory` windows
  (:func:`load_trajectories` from dense zoos).
* Building blocks: :class:`NowcastLayout` (where each flat parameter sits in the graph),
  :func:`window_features`, :func:`predict_stream` (bounded-memory one-window prediction),
  :class:`JumpPlan` (a small model's prepared jump).
"""

from .data import Trajectory, load_trajectories, sample_windows
from .features import group_stats, param_features, window_features
from .hook import HOLD_DEFAULT, OPTIMIZER_STATE_CHOICES, NowcastHook, held_mask, horizon_schedule
from .layout import NowcastLayout
from .model import KINDS, NOWCASTER_KINDS, NowcastConfig, Nowcaster, NowcasterKind
from .plan import PLAN_MAX, JumpPlan
from .stream import StreamIndex, predict_stream
from .train import MetaTrainConfig, meta_train, window_loss

__all__ = [
    "Nowcaster",
    "NowcastConfig",
    "NowcasterKind",
    "NOWCASTER_KINDS",
    "KINDS",
    "NowcastHook",
    "horizon_schedule",
    "held_mask",
    "HOLD_DEFAULT",
    "OPTIMIZER_STATE_CHOICES",
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
