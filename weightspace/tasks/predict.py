"""Deprecated: moved to :mod:`weightspace.predict` (this shim goes away in the next release)."""

import warnings

warnings.warn("weightspace.tasks.predict moved to weightspace.predict", DeprecationWarning, stacklevel=2)

from weightspace.predict import KINDS as METANETS  # noqa: E402  (a tuple of kind names, as before)
from weightspace.predict import (  # noqa: E402
    HParamEncoder,
    PredictConfig,
    Predictor,
    ZooGraphs,
    build_metanet,
    evaluate,
    label_noise_ceiling,
    load_predictor,
    load_zoo_graphs,
    pairwise_rank_loss,
    regression_metrics,
    run_predict,
    train_predictor,
)
from weightspace.predict.train import maybe_init_distributed  # noqa: E402

__all__ = ["PredictConfig", "HParamEncoder", "Predictor", "load_zoo_graphs", "train_predictor", "evaluate",
           "regression_metrics", "label_noise_ceiling", "run_predict", "load_predictor", "METANETS",
           "ZooGraphs", "build_metanet", "pairwise_rank_loss", "maybe_init_distributed"]
