"""Multi-layer perceptron and feature standardization shared by every model of the library."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MLP", "FeatureNormalizer", "FeatureMLP"]


class MLP(nn.Sequential):
    r"""``Linear -> act -> (Dropout) -> ... -> Linear`` through the widths ``dims``.

    .. math::
        h_0 = x,\qquad h_{l+1} = \sigma(W_l h_l + b_l)\ (l < L-1),\qquad y = W_{L-1} h_{L-1} + b_{L-1}

    No activation after the last layer. A subclass of :class:`torch.nn.Sequential`, so the
    parameters are named ``0.weight``, ``0.bias``, ``2.weight``, ... and ``mlp[-1]`` is the last
    :class:`~torch.nn.Linear`.

    Its layers keep their own ``reset_parameters`` (the MLP defines none, so a recursive reset
    draws each layer's initialization once).

    Args:
        dims: ``[in, hidden_1, ..., out]``; at least two entries.
        act: activation class placed between layers.
        dropout: dropout probability after each hidden activation (``0`` adds no module).

    Shapes:
        - input: ``[*, dims[0]]``
        - output: ``[*, dims[-1]]``
    """

    def __init__(self, dims: Sequence[int], act: type[nn.Module] = nn.SiLU, dropout: float = 0.0) -> None:
        dims = [int(d) for d in dims]
        if len(dims) < 2:
            raise ValueError(f"an MLP needs at least an input and an output width, got dims={dims}")
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(act())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        super().__init__(*layers)
        self.dims = tuple(dims)

    def __getitem__(self, idx: int | slice) -> nn.Module:
        """One layer, or a plain :class:`~torch.nn.Sequential` of the layers of a slice."""
        if isinstance(idx, slice):
            return nn.Sequential(*list(self)[idx])
        return super().__getitem__(idx)


class FeatureNormalizer(nn.Module):
    r"""Standardizes features with statistics fitted once on a training set, stored as buffers.

    .. math::
        y = \mathrm{clip}\big((x - \mu) / \max(\sigma, 10^{-6}),\ -10,\ 10\big)

    Args:
        dim: feature width ``F``.

    Shapes:
        - input: ``[*, F]``
        - output: ``[*, F]``
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, feats: Tensor) -> None:
        """Set :math:`\\mu, \\sigma` to the column statistics of ``feats [N, F]``."""
        self.mean.copy_(feats.mean(0))
        self.std.copy_(feats.std(0, unbiased=False).clamp_min(1e-6))

    def forward(self, feats: Tensor) -> Tensor:
        return ((feats - self.mean) / self.std).clamp(-10, 10)


class FeatureMLP(nn.Module):
    """Base of the fixed-size-feature models: ``features(batch)`` -> :class:`FeatureNormalizer`
    ``norm`` (fitted on the training set) -> :class:`MLP` ``body`` -> ``head``.

    Subclasses define ``norm``, ``body``, ``head`` and ``features(batch) -> [B, F]``.
    """

    norm: FeatureNormalizer
    body: nn.Module
    head: nn.Module

    def features(self, batch) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit_normalizer(self, feats: Tensor) -> None:
        """Fit the standardization on the training features ``[N, F]``."""
        self.norm.fit(feats)

    def encode(self, batch) -> Tensor:
        """Penultimate representation ``[B, hidden[-1]]``."""
        return self.body(self.norm(self.features(batch)))

    def forward(self, batch) -> Tensor:
        return self.head(self.encode(batch))
