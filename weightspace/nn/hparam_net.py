"""Hyperparameters-only baseline: predicts a network's accuracy from how it was trained."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._utils import reset_all
from .mlp import MLP, FeatureMLP, FeatureNormalizer

__all__ = ["HParamNet"]


class HParamNet(FeatureMLP):
    r"""An MLP on encoded training hyperparameters (learning rate, optimizer, ...), no weights.

    The reference point of Unterthiner et al. (2020, "Predicting Neural Network Accuracy from
    Weights"): how much of the accuracy is explained by the configuration alone. The task attaches
    the encoded hyperparameters to each graph as ``hparams`` (see
    :class:`weightspace.predict.HParamEncoder`).

    Args:
        in_dim: encoded hyperparameter width ``H``.
        hidden: hidden layer widths.
        out: outputs.

    Shapes:
        - input: a batch with ``hparams [B, H]``
        - output: ``[B, out]``
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...] = (256, 256), out: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.hparams: dict[str, Any] = dict(in_dim=in_dim, hidden=list(hidden), out=out, dropout=dropout)
        self.in_dim = in_dim
        self.norm = FeatureNormalizer(in_dim)
        self.body = MLP([in_dim, *hidden], dropout=dropout)
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(hidden[-1], out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_all(self)

    def features(self, batch) -> Tensor:
        f = getattr(batch, "hparams", None)
        if f is None:
            raise ValueError("HParamNet needs the training hyperparameters (batch.hparams); a bare network has none")
        return f.reshape(-1, self.in_dim).to(torch.get_default_dtype())

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(in_dim={self.in_dim}, hidden={self.hparams['hidden']})"
