"""Metrics of generalization prediction: Kendall tau, R^2, MAE, and the label-noise ceiling of tau."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from weightspace.graph import ParameterGraph

if TYPE_CHECKING:
    from .predictor import Predictor

__all__ = ["regression_metrics", "label_noise_ceiling", "evaluate"]


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Kendall tau-b, R^2 and MAE (NaN when fewer than two points)."""
    from scipy.stats import kendalltau
    from sklearn.metrics import r2_score

    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y_true.size < 2:
        return {"tau": float("nan"), "r2": float("nan"), "mae": float("nan"), "n": int(y_true.size)}
    tau = kendalltau(y_true, y_pred).statistic if np.ptp(y_pred) > 0 else float("nan")
    return {"tau": float(tau), "r2": float(r2_score(y_true, y_pred)), "mae": float(np.abs(y_true - y_pred).mean()),
            "n": int(y_true.size)}


def label_noise_ceiling(correct: np.ndarray, draws: int = 200, seed: int = 0) -> dict[str, float]:
    """Kendall tau-b that a perfect predictor reaches against accuracies measured on a finite test set.

    A zoo's targets are accuracies on ``n`` test samples. Even an oracle that knows every network's
    accuracy on the whole input distribution does not rank the measured values perfectly: networks
    of near-equal accuracy swap places by sampling noise. This bootstrap resamples the test set
    (one resample shared by all networks, so correlated mistakes and networks that output the same
    constant class stay tied) and scores the measured accuracies against the resampled ones.

    Args:
        correct: ``[networks, n]`` booleans, whether each network classifies each test sample correctly.

    Returns:
        ``{"tau": mean, "tau_std": std over draws, "n_eval": n}``.
    """
    from scipy.stats import kendalltau

    c = np.asarray(correct, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] < 1:
        raise ValueError(f"correct must be a [networks, test samples] matrix, got shape {c.shape}")
    n = c.shape[1]
    if c.shape[0] < 2:
        return {"tau": float("nan"), "tau_std": float("nan"), "n_eval": n}
    acc = c.mean(1)
    rng = np.random.default_rng(seed)
    taus = [kendalltau(acc, c[:, rng.integers(0, n, n)].mean(1)).statistic for _ in range(draws)]
    return {"tau": float(np.nanmean(taus)), "tau_std": float(np.nanstd(taus)), "n_eval": n}


def evaluate(predictor: Predictor, graphs: Sequence[ParameterGraph], threshold: float, prefix: str,
             prepared: bool = True) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Metrics on all graphs and on the runs that trained (target >= ``threshold``), namespaced
    ``{prefix}/tau``, ``{prefix}_trained/tau``, ...; returns ``(metrics, y_true, y_pred)``."""
    y = np.array([float(g.y.reshape(-1)[0]) for g in graphs])
    p = predictor.predict(graphs, prepared=prepared)
    out = {f"{prefix}/{k}": v for k, v in regression_metrics(y, p).items()}
    keep = y >= threshold
    out.update({f"{prefix}_trained/{k}": v for k, v in regression_metrics(y[keep], p[keep]).items()})
    return out, y, p
