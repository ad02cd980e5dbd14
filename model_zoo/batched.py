"""Explicitly batched forward passes of many models of one architecture (MLP and SmallCNN).

``torch.func.vmap`` over ``functional_call`` runs any architecture, but on CPU its per-operator
overhead and layouts dominate the cost of tiny networks: a vmapped conv lowers to a grouped
convolution (slow in oneDNN for hundreds of groups of 16 channels) and ``cross_entropy`` over
``[M·B, 10]`` logits is memory-bound. :class:`BatchedNet` instead writes the forward pass of the
two families most zoos are made of as a handful of batched matrix products on stacked parameters,
with activations laid out ``[M, features, (positions,) batch]``:

* ``Linear``: ``z = W @ h + b`` — one ``baddbmm`` for the stacked ``[M, out, in]`` weights;
* ``Conv1d``/``Conv2d``: im2col by one ``index_select`` on the zero-padded, flattened positions,
  ordered ``(channel, kernel offset)`` like the PyTorch weight ``[out, in, *kernel]`` (kernel offsets
  that only ever see padding are left out, e.g. 5 of 9 for a stride-2 2×2 → 1×1 conv), then one
  ``baddbmm`` ``[M, out, in·K] @ [M, in·K, P·B]`` (Chellapilla et al. 2006, "High Performance
  Convolutional Neural Networks for Document Processing");
* global average pooling: a mean over positions; the class dimension is dim 1, so
  ``cross_entropy`` reduces over a short outer axis.

Gradients come from autograd on these ops; the result per model is the same function as the
module's (same activation modules, same weight layout), which ``tests/model_zoo`` checks against
``torch.optim`` training of single models. When the input is shared by all models (evaluation),
the first layer is one GEMM over all models' stacked weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .archs import MLP, SmallCNN

__all__ = ["BatchedNet", "dropout_mask"]


@dataclass(frozen=True)
class _Layer:
    kind: str  # "linear", "conv", "act", "gap"
    name: str = ""  # parameter prefix ("net.1") for linear / conv
    module: nn.Module | None = None  # the activation module (hooks bypassed via .forward)
    index: Tensor | None = None  # conv: [K*P] positions into the padded input (S = zero slot)
    taps: Tensor | None = None  # conv: the kernel offsets kept when some only ever see padding
    positions: int = 0  # conv: input positions S; output positions P
    out_positions: int = 0
    zero_out: bool = False  # conv: the output carries a zero slot after its positions (read by the next conv)
    width: int = 0  # elements per sample of the layer's largest intermediate (im2col columns, output)


def _conv_index(size: Sequence[int], kernel: int, stride: int, padding: int) -> tuple[Tensor, list[int]]:
    """Flattened input position of every (kernel offset, output position); ``S`` for padding."""
    outs = [(n + 2 * padding - kernel) // stride + 1 for n in size]
    S = math.prod(size)
    grids = torch.meshgrid(*[torch.arange(kernel)] * len(size), *[torch.arange(o) for o in outs], indexing="ij")
    d = len(size)
    flat = torch.zeros_like(grids[0])
    valid = torch.ones_like(grids[0], dtype=torch.bool)
    for a in range(d):
        pos = grids[d + a] * stride + grids[a] - padding
        valid &= (pos >= 0) & (pos < size[a])
        flat = flat * size[a] + pos.clamp(0, size[a] - 1)
    flat = torch.where(valid, flat, torch.full_like(flat, S))
    return flat.reshape(-1), outs


class BatchedNet:
    """Forward pass of ``M`` models of one :class:`~model_zoo.archs.MLP` or
    :class:`~model_zoo.archs.SmallCNN` architecture on stacked parameters.

    Args:
        model: a module of the architecture (its parameters are not used).
        input_shape: one sample's shape, e.g. ``(1, 8, 8)`` or ``(64,)``.

    Shapes:
        parameters ``{name: [M, *shape]}``; input ``[M, *input_shape, B]`` (each model its own batch)
        or ``[*input_shape, B]`` (one batch shared by all models) -> logits ``[M, outputs, B]``.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int]) -> None:
        if not self.supports(model):
            raise TypeError(f"BatchedNet supports MLP and SmallCNN, got {type(model).__name__}")
        self.input_shape = tuple(int(s) for s in input_shape)
        layers: list[_Layer] = []
        if isinstance(model, MLP):
            self.spatial: tuple[int, ...] = ()
            self.in_features = math.prod(self.input_shape)
            self.zero_slots = False
            for name, mod in model.net.named_children():
                if isinstance(mod, nn.Linear):
                    layers.append(_Layer("linear", f"net.{name}", width=max(mod.in_features, mod.out_features)))
                elif not isinstance(mod, nn.Flatten):
                    layers.append(_Layer("act", module=mod))
        else:
            size = list(self.input_shape[1:])
            self.spatial = tuple(size)
            self.in_features = self.input_shape[0]
            for name, mod in model.features.named_children():
                if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
                    k, s, p = mod.kernel_size[0], mod.stride[0], mod.padding[0]
                    index, outs = _conv_index(size, k, s, p)
                    S, P = math.prod(size), math.prod(outs)
                    by_tap = index.view(-1, P)
                    used = (by_tap != S).any(1)  # kernel offsets that ever see the input (not only padding)
                    taps = None if bool(used.all()) else used.nonzero().flatten()
                    if taps is not None:
                        index = by_tap[taps].reshape(-1)
                    layers.append(_Layer("conv", f"features.{name}", index=index, taps=taps, positions=S,
                                         out_positions=math.prod(outs),
                                         width=max(mod.in_channels * index.numel(), mod.out_channels * math.prod(outs))))
                    size = outs
                else:
                    layers.append(_Layer("act", module=mod))
            layers += [_Layer("gap"), _Layer("linear", "head", width=max(model.head.in_features, model.head.out_features))]
            # Zero slots instead of padding copies: when every activation maps 0 to 0, a conv whose
            # output feeds another conv computes one extra position whose taps all read the input's
            # zero slot and whose bias is zeroed, so the next im2col reads it without F.pad; the
            # input batches carry their zero slot from the sample table.
            acts = [layer.module for layer in layers if layer.kind == "act"]
            self.zero_slots = all(float(a(torch.zeros(1))) == 0.0 for a in acts)
            if self.zero_slots:
                convs = [i for i, layer in enumerate(layers) if layer.kind == "conv"]
                for i in convs[:-1]:
                    c = layers[i]
                    P = c.out_positions
                    by_tap = c.index.view(-1, P)
                    index = torch.cat([by_tap, torch.full((by_tap.shape[0], 1), c.positions)], 1).reshape(-1)
                    layers[i] = _Layer("conv", c.name, index=index, taps=c.taps, positions=c.positions,
                                       out_positions=P, zero_out=True, width=c.width)
        self.layers = layers

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Exactly the MLP and SmallCNN families (subclasses may change the forward pass)."""
        if type(model) is MLP:
            return True
        if type(model) is SmallCNN:
            return all(m.kernel_size[0] == m.kernel_size[-1] and m.padding != "same" and m.dilation[0] == 1
                       and m.groups == 1 and m.padding_mode == "zeros" and len(set(m.stride)) == 1
                       and len(set(m.padding)) == 1 for m in model.features if isinstance(m, (nn.Conv1d, nn.Conv2d)))
        return False

    def activation_elements(self) -> int:
        """Largest intermediate per model and per sample (for sizing evaluation blocks)."""
        return max([layer.width for layer in self.layers] + [math.prod(self.input_shape)])

    def layout(self, x: Tensor) -> Tensor:
        """Samples ``[..., B, *input_shape]`` -> ``[..., features, (positions (+ zero slot),) B]``."""
        lead = x.shape[: x.dim() - 1 - len(self.input_shape)]
        x = x.reshape(*lead, x.shape[len(lead)], self.in_features, -1) if self.spatial else \
            x.reshape(*lead, x.shape[len(lead)], self.in_features, 1)
        if self.zero_slots:
            x = F.pad(x, (0, 1))
        x = x.movedim(len(lead), -1)  # [..., C, S, B]
        return (x if self.spatial else x.squeeze(-2)).contiguous()

    def rows(self, x: Tensor) -> Tensor:
        """Samples ``[N, *input_shape]`` -> a contiguous sample-major table ``[N, C·S]`` (``C·(S+1)``
        with zero slots) for :meth:`batch`."""
        if self.zero_slots:
            return F.pad(x.reshape(x.shape[0], self.in_features, -1), (0, 1)).reshape(x.shape[0], -1).contiguous()
        return x.reshape(x.shape[0], -1).contiguous()

    def batch(self, table: Tensor, index: Tensor) -> Tensor:
        """Per-model batches ``[M, C, (S,) B]`` (a strided view) from a :meth:`rows` table ``[N, C·S]``
        and indices ``[M, B]``: one gather of contiguous rows (about 10× faster on CPU than gathering
        single elements along the sample axis of a ``[C, S, N]`` table), no transposing copy; the
        first layer's product or padding reads the view."""
        M, B = index.shape
        g = table.index_select(0, index.reshape(-1))
        if self.spatial:
            return g.view(M, B, self.in_features, -1).permute(0, 2, 3, 1)
        return g.view(M, B, -1).transpose(1, 2)

    def forward(self, params: dict[str, Tensor], x: Tensor, dropout: Tensor | None = None) -> Tensor:
        """Logits ``[M, outputs, B]``; ``dropout`` (``[M]`` rates) masks every hidden activation.

        ``x`` is in :meth:`layout`'s layout, ``[M, C, (S,) B]`` or shared ``[C, (S,) B]``.
        """
        M = next(iter(params.values())).shape[0]
        shared = x.dim() == (3 if self.spatial else 2)
        scale = None if dropout is None else 1.0 / (1.0 - dropout)
        h = x
        for layer in self.layers:
            if layer.kind == "linear":
                w, b = params[f"{layer.name}.weight"], params[f"{layer.name}.bias"]
                h = torch.matmul(w, h).add_(b.unsqueeze(-1)) if shared else torch.baddbmm(b.unsqueeze(-1), w, h)
                shared = False
            elif layer.kind == "conv":
                w, b = params[f"{layer.name}.weight"], params[f"{layer.name}.bias"]
                n_out, C = w.shape[1], w.shape[2]
                # [(M,) C, K*P, B]; S = zero slot. Gathered on a 3-D view: index_select along dim 1 of
                # [M*C, S+1, B] is about twice as fast as along dim -2 of the 4-D tensor on CPU
                padded = h if self.zero_slots else F.pad(h, (0, 0, 0, 1))
                B = h.shape[-1]
                Q = layer.out_positions + layer.zero_out
                cols = padded.reshape(-1, *padded.shape[-2:]).index_select(1, layer.index)
                cols = cols.view(*padded.shape[:-2], layer.index.numel(), B)
                cols = cols.reshape(*cols.shape[:-3], C * (layer.index.numel() // Q), Q * B)
                wf = w.reshape(M, n_out, C, -1)
                wf = (wf if layer.taps is None else wf.index_select(-1, layer.taps)).reshape(M, n_out, -1)
                z = torch.matmul(wf, cols).add_(b.unsqueeze(-1)) if shared else torch.baddbmm(b.unsqueeze(-1), wf, cols)
                h = z.reshape(M, n_out, Q, B)
                if layer.zero_out:  # the extra position read only zeros: drop its bias (baddbmm keeps no output)
                    h[:, :, -1].zero_()
                shared = False
            elif layer.kind == "gap":
                h = h.mean(-2)
            else:
                h = layer.module.forward(h)
                if dropout is not None:
                    h = h * dropout_mask(h.shape, dropout, scale)
        return h


def dropout_mask(shape: Sequence[int], rate: Tensor, scale: Tensor | None = None) -> Tensor:
    """Inverted-dropout multipliers of shape ``[M, ...]``: ``scale[m] = 1 / (1 - rate[m])`` where kept,
    0 where dropped; an element is kept when ``torch.rand`` draws at least ``rate[m]`` (as in
    :class:`torch.nn.Dropout`). Uses the global torch generator.
    """
    col = (-1, *([1] * (len(shape) - 1)))
    scale = 1.0 / (1.0 - rate) if scale is None else scale
    return torch.rand(shape).ge_(rate.view(col)).mul_(scale.view(col))
