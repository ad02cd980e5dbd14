"""weightspace.predict.metrics: regression metrics and the label-noise ceiling of Kendall tau."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weightspace.predict import label_noise_ceiling, regression_metrics


def test_regression_metrics():
    m = regression_metrics(np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.4, 0.95]))
    assert m["tau"] == pytest.approx(1.0) and m["mae"] == pytest.approx(0.25 / 3) and m["n"] == 3
    assert math.isnan(regression_metrics(np.array([0.5]), np.array([0.5]))["tau"])


def test_label_noise_ceiling_falls_with_fewer_test_samples():
    rng = np.random.default_rng(0)

    def nets(acc, n):  # independent per-sample correctness with the given accuracies
        return rng.random((len(acc), n)) < np.asarray(acc)[:, None]

    close = np.linspace(0.48, 0.52, 40)  # a few hundred samples cannot rank these, a hundred thousand can
    small, large = label_noise_ceiling(nets(close, 300), draws=50), label_noise_ceiling(nets(close, 100_000), draws=20)
    assert large["tau"] > 0.9 and small["tau"] < large["tau"] - 0.25 and small["tau_std"] > 0 and small["n_eval"] == 300
    assert label_noise_ceiling(nets(np.linspace(0.1, 0.9, 40), 300), draws=50)["tau"] > 0.9
    # networks answering one constant class tie in every resample: they cost the oracle nothing
    const = np.zeros((10, 300), dtype=bool)
    const[:5, ::10] = True  # five networks predicting class 0 (10% of the samples) ...
    const[5:, 1::10] = True  # ... and five predicting class 1
    mixed = np.concatenate([const, nets(np.linspace(0.3, 0.9, 10), 300)])
    assert label_noise_ceiling(mixed, draws=50)["tau"] > 0.9
    with pytest.raises(ValueError, match="matrix"):
        label_noise_ceiling(np.ones(5))
