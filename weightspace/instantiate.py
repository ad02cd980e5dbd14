"""Build objects from Hydra-style ``{"_target_": "pkg.mod.Name", **kwargs}`` dicts without importing Hydra.

Zoos record every network's architecture this way (``zoo.json``), so a model can be rebuilt from
the file alone. This is the one implementation; ``model_zoo.instantiate`` is the same function.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

__all__ = ["instantiate", "resolve_target"]


def resolve_target(path: str) -> Any:
    """Import ``package.module.Name`` (a Hydra ``_target_``) and return the object."""
    if not isinstance(path, str) or "." not in path:
        raise ValueError(f"_target_ must be a dotted path like 'model_zoo.archs.MLP', got {path!r}")
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot resolve _target_ {path!r}: {e}") from e


def instantiate(config: Mapping[str, Any], **overrides: Any) -> Any:
    """Build ``config["_target_"](**rest, **overrides)``; Hydra-compatible for flat configs."""
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise ValueError(f"an architecture config needs a '_target_' key, got {dict(config) if isinstance(config, Mapping) else config!r}")
    kwargs = {k: v for k, v in config.items() if k != "_target_" and not k.startswith("_")}
    kwargs.update(overrides)
    return resolve_target(config["_target_"])(**kwargs)
