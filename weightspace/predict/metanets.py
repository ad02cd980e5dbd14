"""Metanetworks a predictor can be built on, by name (``PredictConfig(metanet=...)``).

=========== ====================================================================================
kind        model
=========== ====================================================================================
gmn         :class:`~weightspace.nn.GraphMetaNet`: edge-updating message passing over parameter graphs
probe       :class:`~weightspace.nn.ProbeNet`: runs each network on learned inputs (ProbeGen-style)
statnn      :class:`~weightspace.nn.StatNN`: per-tensor statistics -> MLP (Unterthiner et al. 2020)
statnn_gbm  :class:`~weightspace.nn.StatGBM`: gradient boosting on the same statistics (not a module)
hparams     :class:`~weightspace.nn.HParamNet`: the run's training hyperparameters -> MLP
=========== ====================================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from weightspace.nn import GraphMetaNet, HParamNet, ProbeNet, StatNN
from weightspace.resolver import Registry

__all__ = ["METANETS", "KINDS", "build_metanet"]

#: Trained metanetworks (``nn.Module`` classes) by kind; :func:`build_metanet` builds them.
METANETS: Registry[type[nn.Module]] = Registry("metanet")
METANETS.register("gmn", GraphMetaNet)
METANETS.register("probe", ProbeNet)
METANETS.register("statnn", StatNN)
METANETS.register("hparams", HParamNet)

#: Every predictor kind: the registered metanetworks plus ``statnn_gbm`` (a fitted boosting model).
KINDS: tuple[str, ...] = ("gmn", "probe", "statnn", "statnn_gbm", "hparams")


def build_metanet(kind: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """A fresh metanetwork of ``kind`` built from its keyword arguments.

    Raises:
        ValueError: ``kind`` is not registered in :data:`METANETS` (the message lists those that are).
    """
    return METANETS.build(kind, **dict(kwargs))
