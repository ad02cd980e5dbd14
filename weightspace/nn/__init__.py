"""Metanetworks: networks whose inputs are other networks' parameter graphs.

* :class:`GraphMetaNet` - edge-updating graph metanetwork (layers :class:`GMNConv`, encoders
  :class:`NeuronEncoder` / :class:`WeightEncoder`, readouts :class:`GraphReadout`,
  :class:`NodeReadout`, :class:`EdgeReadout`).
* :class:`ProbeNet` - probing: runs each network on learned inputs from a deep linear generator
  (ProbeGen), optionally with StatNN's statistics; :func:`batched_logits` runs many parameter
  vectors of one architecture at once.
* Shared blocks: :class:`MLP`, :class:`FeatureNormalizer`, :class:`FeatureMLP`.
* Baselines with the same ``forward(batch) -> [B, out]`` / ``encode(batch)`` API: :class:`StatNN`
  (and :class:`StatGBM`), :class:`HParamNet`.
"""

from .edge_norm import LayerWeightNorm
from .encoders import NeuronEncoder, WeightEncoder
from .functional import batched_logits
from .gmn import GraphMetaNet
from .gmn_conv import GMNConv
from .hparam_net import HParamNet
from .mlp import MLP, FeatureMLP, FeatureNormalizer
from .probe import ProbeNet
from .readout import EdgeReadout, GraphReadout, NodeReadout
from .statnn import NUM_STATS, StatGBM, StatNN, tensor_statistics

__all__ = [
    "MLP",
    "FeatureNormalizer",
    "FeatureMLP",
    "GraphMetaNet",
    "GMNConv",
    "ProbeNet",
    "batched_logits",
    "NeuronEncoder",
    "WeightEncoder",
    "LayerWeightNorm",
    "GraphReadout",
    "NodeReadout",
    "EdgeReadout",
    "StatNN",
    "StatGBM",
    "HParamNet",
    "tensor_statistics",
    "NUM_STATS",
]
