"""Metanetworks: networks whose inputs are other networks' parameter graphs.

* :class:`GraphMetaNet` - edge-updating graph metanetwork (layers :class:`GMNConv`, encoders
  :class:`NeuronEncoder` / :class:`WeightEncoder`, readouts :class:`GraphReadout`,
  :class:`NodeReadout`, :class:`EdgeReadout`).
* Baselines with the same ``forward(batch) -> [B, out]`` / ``encode(batch)`` API: :class:`StatNN`
  (and :class:`StatGBM`), :class:`HParamNet`.
"""

from .edge_norm import LayerWeightNorm
from .encoders import NeuronEncoder, WeightEncoder
from .gmn import GraphMetaNet
from .gmn_conv import GMNConv
from .hparam_net import HParamNet
from .readout import EdgeReadout, GraphReadout, NodeReadout
from .statnn import NUM_STATS, StatGBM, StatNN, tensor_statistics

__all__ = [
    "GraphMetaNet",
    "GMNConv",
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
