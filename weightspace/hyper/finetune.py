r"""Turn predicted parameters into a starting point that trains at the pace of a default initialization.

Predicted layers differ from a default initialization in two ways that slow gradient descent down,
measured on ``hypernet-digits`` fills of held-out digits architectures
(``docs/design-notes/hyper.md``):

* **Scale.** Weights followed by BatchNorm/LayerNorm get magnitudes 3-12x the default
  initialization's: the GHN's training loss does not see the scale of a layer whose output is
  normalized, so it drifts. With Adam, whose step is about ``lr`` per weight whatever the gradient,
  the relative change per step is that many times smaller, so such a network learns slowly.
* **Rank.** Units of one operation are functions of shared unit codes, so predicted weight matrices
  have an effective rank (:math:`\exp H(\sigma/\lVert\sigma\rVert_1)` of the singular values) of
  about a third of a random matrix's; gradient descent diversifies such units slowly.

:func:`prepare_for_finetuning` addresses the first: it rescales, tensor by tensor, each weight (and
its bias) to the root-mean-square of PyTorch's default initialization, :math:`1/\sqrt{3\,\mathrm{fan\_in}}`,
*only where the network's outputs do not change* (checked on the given inputs, in training mode:
the layers whose output a normalization makes scale-invariant). The function is kept, so the
fine-tuning run starts from the predicted network's accuracy. Optionally (``noise > 0``) it then adds
Gaussian noise of ``noise`` times each weight tensor's root-mean-square, aimed at the rank; on 12
validation architectures per dataset, noise of 0.5 made fine-tuning slower and the 1-epoch accuracy
lower than rescaling alone (``docs/design-notes/hyper.md``), so the default is none. Zero-shot use
needs neither: call it between ``ghn(model)`` and fine-tuning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = ["prepare_for_finetuning", "FinetunePrep"]


@dataclass(frozen=True)
class FinetunePrep:
    """What :func:`prepare_for_finetuning` did.

    Attributes:
        rescaled: names of the modules whose weight (and bias) were rescaled.
        kept: names of the modules left at their scale (rescaling them changed the outputs).
        noise: the relative noise added to every weight tensor.
    """

    rescaled: tuple[str, ...]
    kept: tuple[str, ...]
    noise: float


def _default_rms(weight: Tensor) -> float:
    fan_in = weight[0].numel() if weight.dim() > 1 else 1
    return 1.0 / math.sqrt(3.0 * max(1, fan_in))


def _max_rel_change(out: Tensor, ref: Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


@torch.no_grad()
def prepare_for_finetuning(model: nn.Module, x: Tensor, noise: float = 0.0, seed: int | None = 0,
                           tol: float = 1e-3) -> FinetunePrep:
    """Rescale scale-invariant layers to the default initialization's size (optionally add relative noise).

    See the module docs for why. Works in place on any module whose layers keep their weights in a
    ``weight`` parameter of two or more dimensions (``Linear``, ``Conv*``, ``transformers`` layers);
    embedding tables and normalization parameters are left alone.

    Args:
        model: a network filled by a hypernetwork (``ghn(model)``), before fine-tuning.
        x: a batch of training inputs (a few hundred are enough) on which a rescaling must leave the
            outputs unchanged (training mode, so BatchNorm uses batch statistics).
        noise: Gaussian noise added to every ``weight`` of two or more dimensions, as a multiple of
            that tensor's root-mean-square after rescaling (default 0: none, the outputs are kept).
        seed: seed of the noise (None: the global generator).
        tol: largest relative change of the outputs (max abs change / max abs output) for which a
            rescaling is kept. Checking costs one forward pass of ``x`` per layer.

    Returns:
        :class:`FinetunePrep`: which modules were rescaled.

    Raises:
        ValueError: ``noise`` is negative.

    Shapes:
        x: whatever ``model`` takes, batch first.
    """
    if noise < 0:
        raise ValueError(f"prepare_for_finetuning: noise is a non-negative multiple of the weights' size, got {noise}")
    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() >= 2
              and not isinstance(m, nn.Embedding)]
    was_training = model.training
    model.train()
    rng_state = torch.get_rng_state()
    try:
        torch.manual_seed(0)  # dropout, if any, draws the same masks in every forward pass below
        ref = model(x)
        rescaled, kept = [], []
        for name, m in layers:
            rms = float(m.weight.pow(2).mean().sqrt())
            if rms == 0.0:
                kept.append(name)
                continue
            c = _default_rms(m.weight) / rms
            bias = getattr(m, "bias", None)
            bias = bias if isinstance(bias, Tensor) else None
            saved = (m.weight.clone(), bias.clone() if bias is not None else None)
            m.weight.mul_(c)
            if bias is not None:
                bias.mul_(c)
            torch.manual_seed(0)
            if _max_rel_change(model(x), ref) <= tol:
                rescaled.append(name)
            else:  # restored bit for bit
                m.weight.copy_(saved[0])
                if bias is not None:
                    bias.copy_(saved[1])
                kept.append(name)
    finally:
        torch.set_rng_state(rng_state)
        model.train(was_training)
    if noise > 0:
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        for _, m in layers:
            w = m.weight
            eps = torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
            w.add_(noise * w.pow(2).mean().sqrt() * eps)
    log.info("prepare_for_finetuning: rescaled %d of %d layers to the default initialization's size; "
             "noise %.2f of each weight's size", len(rescaled), len(layers), noise)
    return FinetunePrep(tuple(rescaled), tuple(kept), float(noise))
