r"""Accuracy and novelty of generated networks, measured in function space.

Generated weights can be near-copies of training networks that only *look* new in weight space,
and two independently trained networks can be far apart in weight space and compute the same
function (hidden-neuron permutations). Novelty is therefore measured on the networks' outputs on
held-out inputs, which no neuron permutation changes (Zeng et al. 2025, "Generative Modeling of
Weights: Generalization or Memorization?"):

* ``nearest_tv``: :math:`\min_{t \in \text{train}} \frac{1}{n}\sum_x \tfrac12 \lVert p_g(x) - p_t(x) \rVert_1`,
  the mean total-variation distance between the predicted class distributions of a generated net
  and its closest training net (higher: more novel);
* ``max_iou``: :math:`\max_t |W_g \cap W_t| / |W_g \cup W_t|` over the sets :math:`W` of wrongly
  classified inputs (Zeng et al.'s measure; 1 when both sets are empty; lower: more novel);
* ``max_agreement``: the largest fraction of inputs on which a training net predicts the same label.

The same figures for held-out, independently trained networks are the reference for "new".
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["nearest_training", "pairwise_iou", "summarize", "not_closer_pvalue", "farther_probability"]


def _iou(wa: Tensor, wb: Tensor) -> Tensor:
    """IoU ``[A, B]`` of wrong-prediction sets ``wa [A, n]``, ``wb [B, n]`` (bool)."""
    a, b = wa.float(), wb.float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(inter))


def nearest_training(prob: Tensor, prob_train: Tensor, y: Tensor, chunk: int = 128) -> dict[str, np.ndarray]:
    """Per-network distance to the nearest training network (see the module docstring).

    Args:
        prob: ``[B, n, C]`` class probabilities of the networks to score on ``n`` held-out inputs.
        prob_train: ``[T, n, C]`` the same for the training networks.
        y: ``[n]`` labels.

    Returns:
        ``{"nearest_tv": [B], "max_iou": [B], "max_agreement": [B]}``.
    """
    pred, pred_t = prob.argmax(-1), prob_train.argmax(-1)
    n = prob.shape[1]
    flat_train = prob_train.reshape(prob_train.shape[0], -1)
    tv, agree = [], []
    for i in range(0, prob.shape[0], chunk):
        p = prob[i : i + chunk]
        # mean over inputs of 0.5 * |p - q|_1 per input = 0.5 * (L1 distance of the flattened tables) / n
        d = 0.5 / n * torch.cdist(p.reshape(len(p), -1), flat_train, p=1)  # [b, T]
        tv.append(d.min(1).values)
        agree.append((pred[i : i + chunk, None] == pred_t[None]).float().mean(-1).max(1).values)
    iou = _iou(pred != y[None], pred_t != y[None]).max(1).values
    return {"nearest_tv": torch.cat(tv).numpy(), "max_iou": iou.numpy(), "max_agreement": torch.cat(agree).numpy()}


def pairwise_iou(prob: Tensor, y: Tensor) -> float:
    """Mean IoU of wrong-prediction sets over distinct pairs of one set (diversity; lower: more diverse)."""
    if prob.shape[0] < 2:
        return float("nan")
    w = prob.argmax(-1) != y[None]
    m = _iou(w, w)
    off = ~torch.eye(m.shape[0], dtype=torch.bool)
    return float(m[off].mean())


def summarize(values: np.ndarray) -> dict[str, float]:
    """best / mean / median / std / worst of a 1-D array (NaN-free)."""
    v = np.asarray(values, dtype=np.float64)
    return {"best": float(v.max()), "mean": float(v.mean()), "median": float(np.median(v)),
            "std": float(v.std()), "worst": float(v.min()), "n": int(v.size)}


def not_closer_pvalue(generated_tv: np.ndarray, heldout_tv: np.ndarray) -> float:
    """One-sided Mann-Whitney U p-value of "generated nets are closer to the training set than held-out
    trained nets are" (smaller ``nearest_tv``). A large p-value: no evidence that they are closer."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(generated_tv, heldout_tv, alternative="less").pvalue)


def farther_probability(generated_tv: np.ndarray | Tensor, reference_tv: np.ndarray | Tensor) -> float:
    r""":math:`P(d_g > d_r) + \tfrac12 P(d_g = d_r)` for a generated net's and a reference net's nearest-training
    distances drawn independently: the Mann-Whitney statistic :math:`U / (n_g n_r)` (the AUC). 0.5: the two
    sets are as far from the training set as each other; below 0.5: the generated nets are closer."""
    g = torch.as_tensor(np.asarray(generated_tv), dtype=torch.float64).reshape(-1, 1)
    r = torch.as_tensor(np.asarray(reference_tv), dtype=torch.float64).reshape(1, -1)
    if g.numel() == 0 or r.numel() == 0:
        raise ValueError(f"farther_probability needs two non-empty sets, got {g.numel()} and {r.numel()} values")
    return float((g > r).double().mean() + 0.5 * (g == r).double().mean())
