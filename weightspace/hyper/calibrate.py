r"""Fold a normalization into the predicted weights of a network that has none.

The GHN's training space (:class:`~weightspace.hyper.space.CellSpace`) gives every CNN and MLP a
BatchNorm or LayerNorm after each convolution or linear layer, and every ViT its LayerNorms. The
GHN therefore never learns the scale and offset of a layer's pre-activations: a normalization
removes them. In a network without any normalization nothing removes them, and on the held-out
``no-norm`` split the predicted networks sit near chance on MNIST-1D (evidence in
``docs/design-notes/hyper.md``, section "Norm-free networks: standardize the units").

:func:`standardize_units` gives such a network what the GHN assumed: a forward pass over a batch of
training inputs, layer by layer in execution order, folds into each convolution and linear layer
(the output layer excepted) the train-mode BatchNorm with :math:`\gamma = 1, \beta = 0` that it
lacks. For unit :math:`u` with pre-activations :math:`z_u = w_u \cdot h + b_u` over the batch (and
over positions for convolutions), mean :math:`\mu_u` and standard deviation :math:`\sigma_u`:

.. math::

    w_u \leftarrow w_u / \sigma_u, \qquad b_u \leftarrow (b_u - \mu_u) / \sigma_u,

so every unit's pre-activation has mean 0 and variance 1 on the batch, measured after the layers
before it were standardized. Rescaling alone (``center=False``) is not enough: centring is what
turns the predictions of a normalized family into working norm-free layers
(``benchmarks/results/hyper.standardize.md``). This is the data-dependent initialization of Krähenbühl et al.
(ICLR 2016) and LSUV (Mishkin & Matas, ICLR 2016), applied to predicted rather than random weights.
It uses no labels and no gradient, as :func:`~weightspace.hyper.recalibrate_batchnorm` does for
networks with BatchNorm.

Networks with any normalization layer are left unchanged: there the GHN's predictions already
match its training family, and standardizing the layers in front of a LayerNorm would change which
features a token keeps (measured on the validation split: the two ViTs of the digits real-library
split fell from 0.87 and 0.94 zero-shot accuracy to 0.32 and 0.38; ``benchmarks/results/hyper.standardize.md``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = ["standardize_units", "UnitStandardization", "has_normalization"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
          nn.LocalResponseNorm, nn.RMSNorm)
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class UnitStandardization:
    """What :func:`standardize_units` did.

    Attributes:
        standardized: names of the layers whose units were standardized, in execution order.
        output_layer: name of the last layer executed, left unchanged (None: no layer ran).
        skipped: why nothing was changed (None when layers were standardized).
    """

    standardized: tuple[str, ...]
    output_layer: str | None
    skipped: str | None = None


def has_normalization(model: nn.Module) -> bool:
    """Whether ``model`` contains a normalization layer (BatchNorm, LayerNorm, GroupNorm,
    InstanceNorm, RMSNorm, LocalResponseNorm, or a module with parameters of its own whose class name
    ends in ``Norm``, as third-party RMSNorm classes are)."""
    return any(isinstance(m, _NORMS)
               or (type(m).__name__.endswith("Norm") and next(m.parameters(recurse=False), None) is not None)
               for m in model.modules())


def _run_with_hooks(model: nn.Module, x: Tensor, modules, hook) -> None:
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def standardize_units(model: nn.Module, x: Tensor, center: bool = True, force: bool = False,
                      eps: float = 1e-6) -> UnitStandardization:
    """Standardize the pre-activations of every layer of a normalization-free network on ``x``.

    See the module docs for the maths and why. Works in place, in one forward pass of ``x`` in eval
    mode (dropout off): a hook on each ``Linear`` / ``Conv1d-3d`` rescales and recenters the layer
    at its first call and passes the standardized output on, so each layer is measured after the
    ones before it. The last layer to run (the classifier) keeps its weights, as do layers called
    only after it and units whose pre-activation is constant on ``x`` (their scale is kept, their
    mean still removed). A layer without a bias is rescaled only. A model that contains any
    normalization layer (:func:`has_normalization`) is returned unchanged.

    Args:
        model: a network filled by a hypernetwork (``ghn(model)``).
        x: a batch of training inputs (a few hundred are enough); no labels.
        center: also remove each unit's mean (through its bias); ``False`` rescales only.
        force: standardize a model that has normalization layers too (measured to hurt; see the
            module docs).
        eps: standard deviations at or below this count as constant units.

    Returns:
        :class:`UnitStandardization`: which layers were standardized, or why none was.

    Shapes:
        x: whatever ``model`` takes, batch first. A ``Linear`` layer's units lie on the last axis
        (statistics over all others), a convolution's on axis 1 (statistics over batch and positions).
    """
    if not force and has_normalization(model):
        log.info("standardize_units: the model has normalization layers; left unchanged")
        return UnitStandardization((), None, "the model has normalization layers")
    names = {m: n for n, m in model.named_modules() if isinstance(m, _LAYERS)}
    if not names:
        return UnitStandardization((), None, "the model has no Linear or Conv layer")
    order: list[nn.Module] = []

    def probe(m: nn.Module, _inp, _out) -> None:
        if m not in order:
            order.append(m)

    was_training = model.training
    model.eval()
    try:
        _run_with_hooks(model, x, names, probe)
        if not order:
            return UnitStandardization((), None, "no Linear or Conv layer ran on the inputs")
        last, done = order[-1], []

        def standardize(m: nn.Module, _inp, out: Tensor) -> Tensor | None:
            if m is last or names[m] in done or not isinstance(out, Tensor):
                return None
            axis = out.dim() - 1 if isinstance(m, nn.Linear) else 1
            dims = [d for d in range(out.dim()) if d != axis]
            mu, sd = out.mean(dims), out.std(dims)
            scale = torch.where(sd > eps, sd, torch.ones_like(sd))
            view = [1] * out.dim()
            view[axis] = -1
            m.weight.div_(scale.view(-1, *([1] * (m.weight.dim() - 1))))
            if m.bias is not None and center:
                m.bias.sub_(mu).div_(scale)
                new = (out - mu.view(view)) / scale.view(view)
            else:
                if m.bias is not None:
                    m.bias.div_(scale)
                new = out / scale.view(view)
            done.append(names[m])
            return new

        _run_with_hooks(model, x, order[:-1], standardize)
    finally:
        model.train(was_training)
    log.info("standardize_units: standardized %d layers on %d inputs (output layer %r kept)",
             len(done), len(x), names[last])
    return UnitStandardization(tuple(done), names[last])
