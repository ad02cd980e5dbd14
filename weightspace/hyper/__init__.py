"""Graph hypernetworks: predict every parameter of an architecture they have never seen.

* :class:`GHN` (:mod:`weightspace.hyper.ghn`): reads any architecture the converter reads --
  convolutions of any kernel size (1-D/2-D, strided, dilated, grouped), residual sums,
  concatenations, attention, class tokens, positional tables, BatchNorm/LayerNorm -- trained on the
  DeepNets-like space :class:`CellSpace` (:mod:`weightspace.hyper.space`) by
  :mod:`weightspace.hyper.recipe`. Shipped: ``hypernet-digits`` (``[B, 1, 8, 8]``) and
  ``hypernet-mnist1d`` (``[B, 1, 40]``), 10 classes each.
* :class:`GraphHyperNetwork` (:mod:`weightspace.hyper.model`): the first hypernetwork, MLPs and
  3x3 GAP-CNNs of :class:`ArchSpace` only (shipped as ``hypernet``; the graph-diffusion decoder
  builds on it).

Usage::

    from weightspace.hyper import GHN, recalibrate_batchnorm, standardize_units
    ghn = GHN.from_pretrained("hypernet-digits")
    model = ghn(my_model)                          # filled in place and returned
    recalibrate_batchnorm(model, x_train)          # BatchNorm statistics, before model.eval()
    standardize_units(model, x_train[:512])        # only acts on networks without normalization layers
    prepare_for_finetuning(model, x_train[:256])   # only before fine-tuning (weightspace.hyper.finetune)
"""

from .calibrate import UnitStandardization, has_normalization, standardize_units
from .family import SPLITS, ArchSpace, config_key, is_held_out
from .finetune import FinetunePrep, prepare_for_finetuning
from .ghn import GHN, SHIPPED_GHN, DataMismatchError, GHNConfig, GHNTarget
from .model import (
    GraphHyperNetwork,
    HyperNetworkConfig,
    HyperTarget,
    default_checkpoint,
    load_hypernetwork,
    recalibrate_batchnorm,
)
from .recipe import GHNTrainConfig, train_ghn
from .space import CellNet, CellSpace, build_arch
from .train import (
    HyperTrainConfig,
    TargetCache,
    accuracy,
    steps_to_target,
    train_hypernetwork,
    zero_shot_accuracy,
)

__all__ = [
    "GHN",
    "GHNConfig",
    "GHNTarget",
    "DataMismatchError",
    "SHIPPED_GHN",
    "CellSpace",
    "CellNet",
    "build_arch",
    "GHNTrainConfig",
    "train_ghn",
    "GraphHyperNetwork",
    "HyperNetworkConfig",
    "HyperTarget",
    "load_hypernetwork",
    "recalibrate_batchnorm",
    "standardize_units",
    "UnitStandardization",
    "has_normalization",
    "prepare_for_finetuning",
    "FinetunePrep",
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
