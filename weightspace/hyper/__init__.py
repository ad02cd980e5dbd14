"""Graph hypernetwork: predict every parameter of an architecture it has never seen.

:class:`GraphHyperNetwork` (GHN-2/3 on the parameter graph, :mod:`weightspace.hyper.model`), its
training loop and zero-shot evaluation (:mod:`weightspace.hyper.train`) and the architecture family
it is trained and benchmarked on (:mod:`weightspace.hyper.family`).

Usage::

    from weightspace.hyper import GraphHyperNetwork
    hyper = GraphHyperNetwork.from_pretrained("hypernet")   # the shipped checkpoint
    model = hyper(my_mlp)                                    # filled in place and returned
"""

from .family import SPLITS, ArchSpace, config_key, is_held_out
from .model import (
    GraphHyperNetwork,
    HyperNetworkConfig,
    HyperTarget,
    default_checkpoint,
    load_hypernetwork,
    recalibrate_batchnorm,
)
from .train import (
    HyperTrainConfig,
    TargetCache,
    accuracy,
    steps_to_target,
    train_hypernetwork,
    zero_shot_accuracy,
)

__all__ = [
    "GraphHyperNetwork",
    "HyperNetworkConfig",
    "HyperTarget",
    "load_hypernetwork",
    "recalibrate_batchnorm",
    "default_checkpoint",
    "ArchSpace",
    "SPLITS",
    "config_key",
    "is_held_out",
    "HyperTrainConfig",
    "TargetCache",
    "train_hypernetwork",
    "accuracy",
    "zero_shot_accuracy",
    "steps_to_target",
]
