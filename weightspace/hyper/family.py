"""Architecture space of the hypernetwork: MLPs and small GAP-CNNs for 8x8 digits, with held-out splits.

A configuration is a Hydra-style ``_target_`` dict of :class:`model_zoo.archs.MLP` or
:class:`model_zoo.archs.SmallCNN` (heterogeneous widths per layer), so every sampled network can be
rebuilt with :func:`weightspace.instantiate.instantiate`. Training draws from the *in-distribution* space minus a
deterministic held-out tenth (chosen by a hash of the configuration, so it does not depend on the
order of sampling); the benchmark measures that tenth (``unseen``) and three out-of-distribution
splits in the spirit of GHN-2's wide/deep test sets:

========== ============================================================================
split      what differs from training
========== ============================================================================
unseen     nothing: same ranges, configurations never drawn in training
wide       MLP widths 96-128, CNN channels 48-64 (training: 16-64 / 8-32)
deep       MLP depth 4-6, CNN layers 4-5 (training: 1-3)
activation GELU, SiLU or ELU (training: ReLU and tanh)
========== ============================================================================
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ArchSpace", "SPLITS", "config_key", "is_held_out"]

SPLITS: tuple[str, ...] = ("unseen", "wide", "deep", "activation")

_MLP = "model_zoo.archs.MLP"
_CNN = "model_zoo.archs.SmallCNN"


def config_key(config: dict) -> str:
    """Canonical JSON of an architecture config (the cache and hash key)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def is_held_out(config: dict, fraction: float = 0.1) -> bool:
    """Whether ``config`` belongs to the held-out share (a stable hash, not the sampling order)."""
    h = int(hashlib.sha256(config_key(config).encode()).hexdigest()[:8], 16)
    return h % 1000 < int(round(fraction * 1000))


@dataclass(frozen=True)
class ArchSpace:
    """Ranges of the architecture family (defaults: the shipped hypernetwork's training space).

    Attributes:
        mlp_depths / mlp_widths: hidden layers of an MLP and the widths each layer draws from.
        cnn_layers / cnn_channels / cnn_strides: conv layers of a SmallCNN (3x3, padding 1),
            channels and stride each layer draws from.
        activations: activation of the whole network.
        mlp_share: probability that a draw is an MLP (else a CNN).
        held_out: share of configurations reserved for evaluation (see :func:`is_held_out`).
    """

    mlp_depths: tuple[int, ...] = (1, 2, 3)
    mlp_widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    cnn_layers: tuple[int, ...] = (1, 2, 3)
    cnn_channels: tuple[int, ...] = (8, 12, 16, 24, 32)
    cnn_strides: tuple[int, ...] = (1, 2)
    activations: tuple[str, ...] = ("relu", "tanh")
    mlp_share: float = 0.5
    held_out: float = 0.1

    def draw(self, rng: np.random.Generator) -> dict:
        """One configuration from the whole space (held-out ones included)."""
        act = str(rng.choice(self.activations))
        if rng.random() < self.mlp_share:
            depth = int(rng.choice(self.mlp_depths))
            widths = [int(rng.choice(self.mlp_widths)) for _ in range(depth)]
            return {"_target_": _MLP, "in_features": 64, "num_outputs": 10, "depth": depth, "width": widths,
                    "activation": act}
        layers = int(rng.choice(self.cnn_layers))
        chans = [int(rng.choice(self.cnn_channels)) for _ in range(layers)]
        strides = [int(rng.choice(self.cnn_strides)) for _ in range(layers)]
        return {"_target_": _CNN, "in_channels": 1, "num_classes": 10, "channels": chans, "layers": layers,
                "kernel_size": 3, "strides": strides, "activation": act, "dims": 2}

    def sample_train(self, rng: np.random.Generator) -> dict:
        """A configuration of the training share (rejection sampling over the held-out tenth)."""
        while True:
            c = self.draw(rng)
            if not is_held_out(c, self.held_out):
                return c

    def split(self, name: str, n: int, seed: int = 0) -> list[dict]:
        """``n`` distinct configurations of a benchmark split (see the module docs).

        Raises:
            ValueError: unknown split, or fewer than ``n`` distinct configurations exist.
        """
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
        rng = np.random.default_rng([seed, SPLITS.index(name)])
        if name == "unseen":
            space, keep = self, lambda c: is_held_out(c, self.held_out)
        elif name == "wide":
            space, keep = self._replace(mlp_widths=(96, 112, 128), cnn_channels=(48, 56, 64)), None
        elif name == "deep":
            space, keep = self._replace(mlp_depths=(4, 5, 6), cnn_layers=(4, 5)), None
        else:
            space, keep = self._replace(activations=("gelu", "silu", "elu")), None
        out: dict[str, dict] = {}
        for _ in range(200 * n):
            c = space.draw(rng)
            if keep is None or keep(c):
                out.setdefault(config_key(c), c)
            if len(out) == n:
                return list(out.values())
        raise ValueError(f"split {name!r} has fewer than {n} distinct configurations")

    def _replace(self, **kw) -> ArchSpace:
        from dataclasses import replace

        return replace(self, **kw)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v)
                for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> ArchSpace:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})
