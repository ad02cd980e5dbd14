"""Run many parameter vectors of one architecture at once (``torch.func.vmap`` of ``functional_call``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["batched_logits"]


def batched_logits(model: nn.Module, spec: Any, flat: Tensor, x: Tensor, chunk: int = 256) -> Tensor:
    """Outputs ``[B, n, C]`` of ``B`` parameter vectors ``flat [B, P]`` of ``model``'s architecture on ``x [n, ...]``.

    ``spec`` is the architecture's :class:`~weightspace.GraphSpec` (it gives the flat layout).
    Differentiable in ``flat`` and in ``x``; ``model``'s own weights are never read.
    """
    from torch.func import functional_call, vmap

    names = spec.names

    def one(theta: Tensor) -> Tensor:
        params = spec.unflatten(theta)
        return functional_call(model, {n: params[n] for n in names}, (x,), tie_weights=False, strict=False)

    outs = [vmap(one)(flat[i : i + chunk]) for i in range(0, flat.shape[0], chunk)]
    return torch.cat(outs) if outs else flat.new_zeros(0, x.shape[0], 0)
