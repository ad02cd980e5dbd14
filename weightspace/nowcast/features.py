r"""Normalized per-parameter features of a window of parameter snapshots (NiNo's input).

A window holds the last ``c`` snapshots ``theta^(0..c-1)`` of a network's flat parameters. Every
parameter belongs to a normalization group ``l`` (:func:`~weightspace.nowcast.layout.normalization_groups`:
a parameter tensor, split by role where it packs several maps), and the features are, for a
parameter ``p`` of group ``l``:

.. math::
    \mu_l, \sigma_l = \operatorname{mean}, \operatorname{std}\ \text{of}\ \{\theta^{(k)}_p : p \in l,\ k < c\},
    \qquad s_l = \operatorname{mean}\,|\theta^{(k)}_p - \theta^{(k-1)}_p| \\
    \text{features}_p = \big[(\theta^{(c-1)}_p - \mu_l)/\sigma_l,\ (\theta^{(k)}_p - \theta^{(k-1)}_p)/s_l\ (k=1..c-1),
    \ \log(s_l/\sigma_l),\ \beta_p\big]

where :math:`\beta_p` is the least-squares slope over the window in units of :math:`s_l`
(:func:`slope_weights`). Predictions are made in units of :math:`s_l` and multiplied back.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "CHANNELS",
    "NUM_FIXED_FEATURES",
    "group_sum",
    "group_stats",
    "finish_stats",
    "slope_weights",
    "param_features",
    "window_features",
    "linefit_deltas",
]

#: features besides the ``c - 1`` differences: last value, log step scale, slope
NUM_FIXED_FEATURES = 3
#: per-parameter scalars that weight a message of the graph nowcaster: 1, normalized value, slope
CHANNELS = 3


def group_sum(values: Tensor, group: Tensor, num: int) -> Tensor:
    """Sum of ``values [B, P]`` over the parameters of each group -> ``[B, num]``."""
    if values.shape[0] == 1:  # a 1-D scatter (index_add_ along dim 1 takes a slow path on CPU)
        return values.new_zeros(num).index_add_(0, group, values[0])[None]
    return values.new_zeros(values.shape[0], num).index_add_(1, group, values)


def group_stats(window: Tensor, tensor_id: Tensor, num_tensors: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-group statistics of a window ``[B, c, P]``: ``(mu, sigma, step)``, each ``[B, num_tensors]``
    (mean and standard deviation of all the group's values in the window, mean absolute step)."""
    window = window.float()
    B, c, P = window.shape
    G = num_tensors
    cnt = window.new_zeros(G).index_add_(0, tensor_id, window.new_ones(P)).clamp_min(1)
    mean_r = window.mean(1)  # per parameter, over the window (torch.var_mean over dim 1 is slow on CPU)
    var_r = (window - mean_r[:, None]).square_().mean(1)
    mu = group_sum(mean_r, tensor_id, G) / cnt  # [B, G]
    mu_p = mu.index_select(1, tensor_id)
    var = group_sum(var_r + (mean_r - mu_p) ** 2, tensor_id, G) / cnt  # mean of (theta - mu)^2
    step = group_sum((window[:, 1:] - window[:, :-1]).abs_().mean(1), tensor_id, G) / cnt
    return mu, *finish_stats(var, step)


def finish_stats(var: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
    """``(sigma, step)`` from a group's variance and mean absolute step, floored away from zero."""
    sigma = var.sqrt() + 1e-12
    return sigma, torch.maximum(step, 1e-7 * sigma) + 1e-20


def slope_weights(c: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    r"""``[c-1]`` weights of the least-squares slope over ``k = 0..c-1`` applied to the differences.

    With :math:`d_j = \theta_{j+1} - \theta_j` and centred positions :math:`\bar k_k = k - (c-1)/2`,
    :math:`\sum_k \bar k_k \theta_k = \sum_j d_j \sum_{k>j} \bar k_k`, so the slope is a weighted sum
    of the differences, so a parameter that did not move gets exactly 0 (see
    ``docs/design-notes/nowcast.md``).
    """
    kc = torch.arange(c, dtype=dtype, device=device) - (c - 1) / 2
    return torch.flip(torch.cumsum(torch.flip(kc, (0,)), 0), (0,))[1:] / (kc * kc).sum()


def param_features(window: Tensor, tensor_id: Tensor | int, mu: Tensor, sigma: Tensor, step: Tensor,
                   features: bool = True) -> tuple[Tensor | None, Tensor, Tensor]:
    """Per-parameter features of a window ``[B, c, P]`` given its groups' statistics (:func:`group_stats`).

    Works on any slice of the parameters (with the slice's ``tensor_id``, or one ``int`` when the
    slice lies in one tensor), which is how :mod:`weightspace.nowcast.stream` bounds memory on
    large models. Returns as :func:`window_features`.
    """
    window = window.float()
    B, c, P = window.shape
    if isinstance(tensor_id, int):
        pick = lambda x: x[:, tensor_id: tensor_id + 1].expand(B, P)  # noqa: E731
    else:
        pick = lambda x: x.index_select(1, tensor_id)  # noqa: E731
    s = pick(step)  # [B, P]
    lastv = window[:, -1]
    mean_r = window.mean(1)
    # least-squares line through theta_k at k = 0..c-1, in units of s (slope from the differences)
    dw = window[:, 1:] - window[:, :-1]
    slope = torch.tensordot(slope_weights(c, window.dtype, window.device), dw, dims=([0], [1])) / s
    at_last = (mean_r - lastv) / s + slope * ((c - 1) / 2)
    line = torch.stack([at_last, slope], dim=-1)
    if not features:
        return None, s, line
    last = (lastv - pick(mu)) / pick(sigma)
    logscale = pick(torch.log(step / sigma).clamp(-20, 5))
    d = dw / s[:, None]
    # built feature-major ([B, F, P]: contiguous copies; stacking along the last axis interleaves slowly)
    # and returned as its [B, P, F] view, which matrix products read without a copy
    feats = torch.stack([last, *d.unbind(1), logscale, slope], dim=1).clamp_(-50, 50)
    return feats.transpose(1, 2), s, line


def window_features(window: Tensor, tensor_id: Tensor, num_tensors: int, features: bool = True
                    ) -> tuple[Tensor | None, Tensor, Tensor]:
    """Normalized per-parameter features of a context window.

    Every statistic is a per-parameter reduction over the window followed by one sum per group
    (:func:`group_stats`, then :func:`param_features`), so this costs a few passes over the window.

    Args:
        window: ``[B, c, P]`` snapshots, oldest first (``c >= 2``).
        tensor_id: ``[P]`` normalization group of each parameter.
        num_tensors: number of groups.
        features: ``False`` skips the feature tensor (``None`` is returned; Linefit needs only the line).

    Returns:
        ``(features [B, P, c+2], scale [B, P], linefit [B, P, 2])`` where ``scale`` is the step scale
        :math:`s_l` broadcast to parameters and ``linefit`` holds the fitted line's ``(value at the
        last snapshot minus the last snapshot, slope)`` in units of ``scale``.
    """
    mu, sigma, step = group_stats(window, tensor_id, num_tensors)
    return param_features(window, tensor_id, mu, sigma, step, features)


def linefit_deltas(line: Tensor, horizons: int) -> Tensor:
    """``[B, P, H]``: the fitted line at ``h = 1..H`` spacings past the last snapshot (scaled units)."""
    h = torch.arange(1, horizons + 1, dtype=line.dtype, device=line.device)
    return line[..., :1] + line[..., 1:] * h
