"""Operation handlers of the converter, one registry, one module per op family.

:mod:`~weightspace.graph.ops.registry` maps every way an operation is written (an ``nn.Module``
type, a Python function, a ``Tensor`` method, an ATen name under ``torch.export``) to a handler;
:mod:`weightspace.graph.trace` looks each traced operation up there. Families:

- :mod:`~weightspace.graph.ops.linear`: ``Linear``, convolutions, embeddings, matrix products with a
  parameter; recurrent layers refused;
- :mod:`~weightspace.graph.ops.norms`: batch/layer/group/instance/RMS normalization;
- :mod:`~weightspace.graph.ops.attention`: ``MultiheadAttention``, ``TransformerEncoder(Layer)``,
  ``scaled_dot_product_attention``;
- :mod:`~weightspace.graph.ops.shape`: reshapes, transposes, concatenation, splits, indexing,
  reductions, broadcasting;
- :mod:`~weightspace.graph.ops.arithmetic`: ``+ - * /`` between tensors;
- :mod:`~weightspace.graph.ops.activations`: activations, element-wise functions, operations that
  keep every neuron (dropout, pooling, padding);
- :mod:`~weightspace.graph.ops.idioms`: third-party idioms, consulted before the others.

Adding an operation is one handler in its family's module and one test; see
``docs/design-notes/converter-coverage.md``.
"""

from __future__ import annotations

from . import activations, arithmetic, attention, idioms, linear, norms, shape  # noqa: F401 - registers the handlers
from .common import SCORE_TYPES, TRACKED_TYPES, Transposed, arg, first_tracked, flat, in_shape, node_shape
from .idioms import (
    FOLDED_OPS,
    PRODUCTS,
    RECURRENT_REASON,
    Folded,
    Grid,
    MaskedParam,
    Stacked,
    Unusable,
    column_table,
    one_head,
    unfold_or_act,
)
from .registry import CORE, IDIOMS, Handler, ModuleHandler, Registry, register

#: the idiom tier's tables (ATen name / Python callable / ``Tensor`` method -> handler)
ATEN, FUNCTIONS, METHODS = IDIOMS.aten, IDIOMS.functions, IDIOMS.methods

__all__ = [
    "ATEN", "CORE", "FOLDED_OPS", "FUNCTIONS", "IDIOMS", "METHODS", "PRODUCTS", "RECURRENT_REASON", "SCORE_TYPES",
    "TRACKED_TYPES", "Folded", "Grid", "Handler", "MaskedParam", "ModuleHandler", "Registry", "Stacked", "Transposed",
    "Unusable", "arg", "column_table", "first_tracked", "flat", "in_shape", "node_shape", "one_head", "register",
    "unfold_or_act",
]
