r"""Align the hidden neurons of independently trained MLPs (activation matching).

Independent runs of one architecture compute similar functions with their hidden units in unrelated
orders, so averaging them or fitting a per-coordinate distribution mixes unrelated units. Following
activation matching (Ainsworth et al., ICLR 2023, "Git Re-Basin"; Li et al. 2015), every hidden layer's
units are matched to a reference's by the Hungarian method on the correlation of their activations
on training inputs, and the weights are permuted accordingly (a function-preserving change). The
reference is refined as the mean of the aligned activations (``iterations``).

Supports chains of ``nn.Linear`` layers with elementwise activations in between (the zoo's
:class:`model_zoo.archs.MLP`); anything else raises ``ValueError`` naming the module.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor, nn

from weightspace.graph import GraphSpec

log = logging.getLogger(__name__)

__all__ = ["MLPChain", "align_population"]

_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.GELU, nn.SiLU, nn.ELU, nn.Sigmoid, nn.LeakyReLU, nn.Identity, nn.Flatten,
                nn.Dropout)


class MLPChain:
    """Where each ``nn.Linear`` of a sequential MLP lives in the flat parameter vector of its spec."""

    def __init__(self, model: nn.Module, spec: GraphSpec) -> None:
        seq = [m for m in model.modules() if not list(m.children())]
        self.linears: list[tuple[str, nn.Linear]] = []
        self.acts: list[nn.Module] = []
        names = {id(m): n for n, m in model.named_modules()}
        for m in seq:
            if isinstance(m, nn.Linear):
                self.linears.append((names[id(m)], m))
                self.acts.append(nn.Identity())
            elif isinstance(m, _ELEMENTWISE):
                if self.linears and not isinstance(m, (nn.Flatten, nn.Dropout, nn.Identity)):
                    self.acts[-1] = m
            else:
                raise ValueError(f"neuron alignment supports MLPs (nn.Linear + activations); module "
                                 f"{names[id(m)]!r} is a {type(m).__name__}")
        if not self.linears:
            raise ValueError(f"{type(model).__name__} has no nn.Linear layer to align")
        off = dict(zip(spec.names, spec.offsets))
        self.slices = []
        for name, lin in self.linears:
            w, b = f"{name}.weight", f"{name}.bias"
            if w not in off:
                raise ValueError(f"parameter {w!r} is not stored under its own name in the graph spec")
            ws = slice(off[w], off[w] + lin.weight.numel())
            bs = slice(off[b], off[b] + lin.out_features) if lin.bias is not None else None
            self.slices.append((ws, bs, lin.out_features, lin.in_features))

    def layer(self, flat: Tensor, k: int) -> tuple[Tensor, Tensor | None]:
        ws, bs, o, i = self.slices[k]
        return flat[..., ws].reshape(*flat.shape[:-1], o, i), (flat[..., bs] if bs is not None else None)

    @torch.no_grad()
    def hidden(self, flat: Tensor, x: Tensor) -> list[Tensor]:
        """Post-activation hidden units ``[n, width]`` of every hidden layer for one net ``flat [P]``."""
        h, out = x.reshape(x.shape[0], -1), []
        for k in range(len(self.slices) - 1):
            w, b = self.layer(flat, k)
            h = h @ w.T + (b if b is not None else 0.0)
            h = self.acts[k](h)
            out.append(h)
        return out

    def permute(self, flat: Tensor, perms: list[np.ndarray]) -> Tensor:
        """Apply one permutation per hidden layer (unit ``perm[j]`` moves to slot ``j``)."""
        out = flat.clone()
        for k, p in enumerate(perms):
            p = torch.as_tensor(p, dtype=torch.long)
            ws, bs, o, i = self.slices[k]
            w, b = self.layer(out, k)
            out[ws] = w[p].reshape(-1)
            if bs is not None:
                out[bs] = b[p]
            ws2, bs2, o2, i2 = self.slices[k + 1]
            w2 = out[ws2].reshape(o2, i2)
            out[ws2] = w2[:, p].reshape(-1)
        return out


def _match(ref: Tensor, h: Tensor) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    a = (ref - ref.mean(0)) / (ref.std(0) + 1e-6)
    b = (h - h.mean(0)) / (h.std(0) + 1e-6)
    corr = (a.T @ b / a.shape[0]).numpy()
    _, cols = linear_sum_assignment(-corr)
    return cols


def align_population(model: nn.Module, spec: GraphSpec, flat: Tensor, x: Tensor, iterations: int = 2,
                     reference: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
    """Permute the hidden units of every net in ``flat [B, P]`` to match a common reference.

    Args:
        x: inputs on which activations are compared (training inputs, never the test split).
        iterations: rounds of "match to the reference, reset the reference to the mean aligned activations".
        reference: hidden activations to match (as returned); default: those of ``flat[0]``, then refined.

    Returns:
        ``(aligned [B, P], reference activations)``; each aligned net computes the same function.
    """
    chain = MLPChain(model, spec)
    acts = [chain.hidden(f, x) for f in flat]
    ref = reference if reference is not None else acts[0]
    aligned = flat.clone()
    for _ in range(max(1, iterations if reference is None else 1)):
        sums = [torch.zeros_like(r) for r in ref]
        for n, (f, hs) in enumerate(zip(flat, acts)):
            perms = [_match(r, h) for r, h in zip(ref, hs)]
            aligned[n] = chain.permute(f, perms)
            for s, h, p in zip(sums, hs, perms):
                s += h[:, torch.as_tensor(p, dtype=torch.long)]
        ref = [s / max(len(flat), 1) for s in sums]
    return aligned, ref
