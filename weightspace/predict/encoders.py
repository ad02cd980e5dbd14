"""Encoders of what a predictor reads besides the weights: a run's training hyperparameters."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["HParamEncoder"]


@dataclass
class HParamEncoder:
    """Encodes a run's ``config.*`` values as a vector: numbers (log10 when positive and spanning
    more than a decade), strings one-hot over the values seen in training. Seeds are skipped."""

    numeric: dict[str, bool] = field(default_factory=dict)  # name -> log scale
    categorical: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, rows: Sequence[Mapping[str, Any]]) -> HParamEncoder:
        enc = cls()
        keys = sorted({k for r in rows for k in r if "seed" not in k})
        for k in keys:
            vals = [r.get(k) for r in rows]
            nums = [v for v in vals if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)]
            if len(nums) == len(vals):
                arr = np.asarray(nums, dtype=np.float64)
                if np.all(np.isfinite(arr)) and arr.min() != arr.max():
                    enc.numeric[k] = bool(arr.min() > 0 and arr.max() / arr.min() > 10)
            else:
                cats = sorted({str(v) for v in vals})
                if len(cats) > 1:
                    enc.categorical[k] = cats
        return enc

    @property
    def dim(self) -> int:
        return len(self.numeric) + sum(len(c) for c in self.categorical.values())

    def __call__(self, row: Mapping[str, Any]) -> Tensor:
        out = []
        for k, logscale in self.numeric.items():
            if k not in row:
                raise KeyError(f"hyperparameter {k!r} is missing; the predictor was trained with {sorted(self.numeric)}")
            v = float(row[k])
            out.append(math.log10(max(v, 1e-30)) if logscale else v)
        for k, cats in self.categorical.items():
            v = str(row.get(k))
            out.extend(1.0 if v == c else 0.0 for c in cats)
        return torch.tensor(out, dtype=torch.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HParamEncoder:
        return cls(numeric=dict(d.get("numeric", {})), categorical={k: list(v) for k, v in d.get("categorical", {}).items()})
