"""The config dataclasses behind the verbs' YAML files, registered in Hydra's ConfigStore.

Each entry of :data:`SCHEMAS` is stored as the config ``schema/<name>``; a verb's YAML pulls it into
a node with a defaults-list entry (``- schema/nowcast_model@model``) and then holds only the values
that differ from the dataclass defaults. So the dataclass is the single source of every default,
an override of an unknown key fails at composition with the valid keys of the dataclass, and a
value of the wrong type (``model.hidden=abc``) fails before anything runs.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

__all__ = ["SCHEMAS", "register_schemas", "schema_class"]

#: schema name -> ``"module:Class"`` of a config dataclass
SCHEMAS: dict[str, str] = {
    "trainer": "model_zoo.trainer:TrainerConfig",
    "nowcast_model": "weightspace.nowcast.model:NowcastConfig",
    "nowcast_train": "weightspace.nowcast.train:MetaTrainConfig",
    "nowcast_lm": "weightspace.nowcast.lm:LMRunsConfig",
    "hyper_model": "weightspace.hyper.model:HyperNetworkConfig",
    "hyper_train": "weightspace.hyper.train:HyperTrainConfig",
    "hyper_space": "weightspace.hyper.family:ArchSpace",
    "diffusion_graph": "weightspace.diffusion.graph:GraphDiffusionConfig",
    "diffusion_pdiff": "weightspace.diffusion.pdiff:PDiffConfig",
}


def schema_class(name: str) -> type:
    """The dataclass registered as ``schema/<name>``."""
    module, _, cls = SCHEMAS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def _node(cls: type) -> Any:
    from omegaconf import OmegaConf

    node = OmegaConf.structured(cls)
    OmegaConf.set_readonly(node, False)  # frozen dataclasses are read-only nodes; overrides must apply
    return node


def register_schemas() -> None:
    """Store every schema of :data:`SCHEMAS` in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name in SCHEMAS:
        cls = schema_class(name)
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"schema {name!r} ({SCHEMAS[name]}) is not a dataclass")
        cs.store(group="schema", name=name, node=_node(cls))
