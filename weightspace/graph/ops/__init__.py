"""Operation handlers of the converter, one registry, one module per op family.

:mod:`~weightspace.graph.ops.registry` maps every way an operation is written (an ``nn.Module``
type, a Python function, a ``Tensor`` method, an ATen name under ``torch.export``) to a handler;
:mod:`weightspace.graph.trace` looks each traced operation up there. Families:

- :mod:`~weightspace.graph.ops.linear`: ``Linear``, convolutions (transposed ones included) and
  their weight parametrizations, embeddings, matrix products with a parameter; recurrent layers
  and 3-D convolutions refused;
- :mod:`~weightspace.graph.ops.norms`: batch/layer/group/instance/RMS normalization, ``normalize``;
- :mod:`~weightspace.graph.ops.attention`: ``MultiheadAttention``, ``TransformerEncoder(Layer)``,
  ``scaled_dot_product_attention``, attention written with ``einsum``/``baddbmm``;
- :mod:`~weightspace.graph.ops.shape`: reshapes, transposes, concatenation, splits, indexing,
  reductions, broadcasting, padding (zero channels on the feature axis are new neurons), masks
  (``where``/``masked_fill``), fused q/k/v split in three axes, parameter tables indexed by
  position;
- :mod:`~weightspace.graph.ops.arithmetic`: ``+ - * /`` between tensors, ``addcmul``, per-position
  masks from inputs, one-channel gates broadcast over the channels;
- :mod:`~weightspace.graph.ops.activations`: activations (``PReLU``'s learned slopes included),
  element-wise functions, operations that keep every neuron (dropout, pooling, resampling).

Each module holds both tiers of its family (:mod:`~weightspace.graph.ops.registry`): the idiom
handlers of third-party code (after its ``idioms (first tier)`` line) and the core handlers.
:mod:`~weightspace.graph.ops.values` holds the walker's values beside the builder's.

Adding an operation is one handler in its family's module and one test; see
``docs/design-notes/converter-coverage.md``.
"""

from __future__ import annotations

from . import activations, arithmetic, attention, linear, norms, shape  # noqa: F401 - registers the handlers
from .attention import PRODUCTS, one_head
from .common import SCORE_TYPES, TRACKED_TYPES, Transposed, arg, first_tracked, flat, in_shape, node_shape
from .linear import RECURRENT_REASON, check_parametrizations
from .registry import CORE, IDIOMS, Handler, ModuleHandler, Registry, register
from .shape import column_table
from .values import FOLDED_OPS, Folded, Grid, MaskedParam, Stacked, Unusable, tracked, unfold_or_act

__all__ = [
    "CORE", "FOLDED_OPS", "IDIOMS", "PRODUCTS", "RECURRENT_REASON", "SCORE_TYPES",
    "TRACKED_TYPES", "Folded", "Grid", "Handler", "MaskedParam", "ModuleHandler", "Registry", "Stacked", "Transposed",
    "Unusable", "arg", "check_parametrizations", "column_table", "first_tracked", "flat", "in_shape", "node_shape", "one_head", "register",
    "tracked", "unfold_or_act",
]
