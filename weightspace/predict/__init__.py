"""Generalization prediction: predict a network's accuracy from its weights.

A :class:`Predictor` wraps a metanetwork (:data:`METANETS`: graph metanetwork, probing, StatNN,
hyperparameters; or StatNN's gradient boosting) with the target scaling and encoders it needs.
:func:`run_predict` trains one on a zoo's train split, selects on validation Kendall tau and reports
test metrics; :meth:`Predictor.save_pretrained` / :meth:`Predictor.from_pretrained` persist it.

Usage::

    from weightspace.predict import PredictConfig, Predictor, run_predict
    pred, metrics = run_predict("zoos/cnn", PredictConfig(metanet="gmn"), out_dir="runs/predict")
    pred = Predictor.from_pretrained("runs/predict/predictor")
    acc = pred(model)                       # predicted accuracy of an nn.Module
"""

from .data import ZooGraphs, load_zoo_graphs
from .encoders import HParamEncoder
from .metanets import KINDS, METANETS, build_metanet
from .metrics import evaluate, label_noise_ceiling, regression_metrics
from .predictor import Predictor, PredictorConfig, load_predictor
from .train import PredictConfig, pairwise_rank_loss, run_predict, train_predictor

__all__ = [
    "Predictor",
    "PredictorConfig",
    "load_predictor",
    "PredictConfig",
    "train_predictor",
    "run_predict",
    "pairwise_rank_loss",
    "ZooGraphs",
    "load_zoo_graphs",
    "HParamEncoder",
    "METANETS",
    "KINDS",
    "build_metanet",
    "regression_metrics",
    "label_noise_ceiling",
    "evaluate",
]
