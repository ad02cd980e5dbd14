"""Integer vocabularies of the parameter graph: node types, edge types, activations, node features.

They are part of the stored format: append new members at the end, never renumber.
"""

from __future__ import annotations

from enum import IntEnum


class NodeType(IntEnum):
    """What a node stands for. Only ``HIDDEN``, ``SUM``, ``PRODUCT`` and attention nodes are
    permutable (rotary query/key units only head by head); the others carry their index in
    ``node_pos``."""

    INPUT = 0  #: an input feature / channel of the network
    HIDDEN = 1  #: a hidden unit / channel made by a parametric layer
    OUTPUT = 2  #: an output unit of the network
    VOCAB = 3  #: a row of an embedding table (a token id)
    POSITION = 4  #: a position of a raw positional table or a learned token (class token)
    SUM = 5  #: the result of a residual addition
    PRODUCT = 6  #: the result of an element-wise product of two activations (gating)
    ATTN_Q = 7  #: a query unit of an attention head
    ATTN_K = 8  #: a key unit of an attention head
    ATTN_V = 9  #: a value unit of an attention head
    #: a query unit of a head with rotary position embedding (RoPE): whole heads permute, units
    #: inside a head do not (RoPE gives unit i the frequency of pair i mod d/2); ``node_pos`` holds
    #: the unit's index inside its head
    ROTARY_Q = 10
    ROTARY_K = 11  #: a key unit of a head with rotary position embedding (as ``ROTARY_Q``)
    #: a unit of one query head's attention result where several query heads share a key/value
    #: head (grouped-query attention); permutable together with its value unit
    ATTN_OUT = 12
    #: one head's unit of a learned attention-score bias: the output of a table of per-head biases
    #: looked up by relative position (T5's relative attention bias, Swin's relative position bias
    #: table); ``ATTN_BIAS`` edges add it to the scores of its head
    ATTN_BIAS = 13
    #: one head's learned score scale (Swin V2's ``logit_scale``), stored as the node's ``weight``
    #: feature; ``ATTN_SCALE`` edges join it to the query units of its head
    ATTN_SCALE = 14
    #: the state of a weight parametrization that is neither a weight nor a per-neuron vector:
    #: the spectral-norm node of a layer under ``spectral_norm`` (one per layer, ``sigma = u^T W v``;
    #: ``PARAMETRIZATION`` edges carry ``u`` and ``v`` into it), or a basis column of the ``base`` of
    #: a ``Linear`` under ``orthogonal`` (``PARAMETRIZATION`` edges carry the base from it);
    #: ``node_pos`` holds its index
    PARAMETRIZATION = 15
    #: a parameter of an activation shared by several neurons (the single slope of a ``PReLU``
    #: with ``num_parameters=1``), stored once as the node's ``weight`` feature; ``ACT_PARAM`` edges
    #: join it to every neuron whose activation reads it
    ACT_PARAM = 16


class EdgeType(IntEnum):
    """What an edge stands for. Parametric edges carry weights; structural ones carry 1 at the
    kernel centre."""

    LINEAR = 0  #: a dense weight ``W[out, in]``
    CONV = 1  #: a convolution kernel ``W[out, in, kh, kw]`` (flattened, centred)
    FLATTEN = 2  #: a dense weight after flattening a conv map: the spatial block of one channel
    RESIDUAL = 3  #: an identity connection into the result of an addition (structural)
    EMBEDDING = 4  #: an embedding row's entry ``E[token, unit]``
    POSITION = 5  #: an entry of a positional table added to the activations
    ATTN_Q = 6  #: query projection weight
    ATTN_K = 7  #: key projection weight
    ATTN_V = 8  #: value projection weight
    ATTN_OUT = 9  #: attention output projection weight
    ATTN_QK = 10  #: pairs query unit i with key unit i of the same head (structural)
    ATTN_HEAD = 11  #: joins every key unit of a head to every value unit of that head (structural)
    IDENTITY = 12  #: a copy of a neuron made so that a second per-neuron op gets its own slots
    PRODUCT = 13  #: an operand of an element-wise product (structural)
    TOKEN = 14  #: a learned token (e.g. class token) concatenated to the sequence
    #: a layer that reuses another layer's weight (tied input/output embeddings): joins each row
    #: of the shared table to the output it scores, and each unit of the table's embedding to the
    #: unit of the layer's input it multiplies (structural; the weights are stored once)
    TIED = 15
    ROTARY = 16  #: joins two units of a head that a rotary position embedding mixes (structural)
    #: copies value unit j of a shared key/value head into unit j of the result of every query
    #: head that reads it (grouped-query attention; structural)
    ATTN_GROUP = 17
    #: joins the features of an activation to the units of a layer applied along another axis of
    #: it (MLP-Mixer token mixing: ``Linear`` over the tokens), and those units back to the features
    #: of the result (structural)
    AXIS = 18
    #: joins a head's score-bias unit (``NodeType.ATTN_BIAS``) to every query unit of that head: the
    #: bias is added to the head's attention scores before the softmax (structural)
    ATTN_BIAS = 19
    #: joins a head's score-scale node (``NodeType.ATTN_SCALE``) to every query unit of that head: the
    #: head's scores are multiplied by it before the softmax (structural)
    ATTN_SCALE = 20
    #: an entry of a buffer that a weight parametrization keeps beside the stored weight (the
    #: layer's edges hold the stored tensor ``original``, not the effective weight):
    #: ``spectral_norm``'s power-iteration vectors, ``u[o]`` on the edge from output unit ``o`` and
    #: ``v`` (the kernel of input channel ``c``) on the edge from input unit ``c`` to the layer's
    #: ``PARAMETRIZATION`` node; ``orthogonal``'s ``base``, for a convolution on an edge parallel to
    #: each kernel (its ``m x m`` base, ``m = max(kh, kw)``), for a ``Linear`` ``base[j, k]`` on the
    #: edge from basis node ``k`` to unit ``j`` (the output units, or the input units when the
    #: weight has more columns than rows)
    PARAMETRIZATION = 21
    #: joins a shared activation parameter (``NodeType.ACT_PARAM``, e.g. a ``PReLU``'s single slope)
    #: to each neuron whose activation reads it (structural)
    ACT_PARAM = 22


class Activation(IntEnum):
    """Activation recorded on the node whose output it transforms."""

    NONE = 0
    RELU = 1
    LEAKY_RELU = 2
    ELU = 3
    SELU = 4
    GELU = 5
    SILU = 6
    MISH = 7
    TANH = 8
    SIGMOID = 9
    SOFTPLUS = 10
    HARDTANH = 11
    HARDSWISH = 12
    HARDSIGMOID = 13
    RELU6 = 14
    SOFTMAX = 15
    LOG_SOFTMAX = 16
    CELU = 17
    SOFTSIGN = 18
    TANHSHRINK = 19
    #: ``PReLU``: ``max(0, x) + a * min(0, x)`` with a learned slope ``a``, stored as the ``weight``
    #: feature of the neuron (one slope per channel), or on an ``ACT_PARAM`` node joined to the
    #: neuron by an ``ACT_PARAM`` edge (one slope shared by every channel; the neuron's ``weight``
    #: feature is then 0)
    PRELU = 20


#: Columns of ``ParameterGraph.x``: the per-neuron parameters.
NODE_FEATURES: tuple[str, ...] = ("bias", "weight", "shift", "running_mean", "running_var")
BIAS, WEIGHT, SHIFT, RUNNING_MEAN, RUNNING_VAR = range(len(NODE_FEATURES))

#: Edge types that carry no weights (a constant 1 marking how neurons are wired).
STRUCTURAL_EDGE_TYPES: frozenset[int] = frozenset(
    {EdgeType.RESIDUAL, EdgeType.ATTN_QK, EdgeType.ATTN_HEAD, EdgeType.IDENTITY, EdgeType.PRODUCT,
     EdgeType.TIED, EdgeType.ROTARY, EdgeType.ATTN_GROUP, EdgeType.AXIS, EdgeType.ATTN_BIAS,
     EdgeType.ATTN_SCALE, EdgeType.ACT_PARAM}
)

#: Node types whose members may be permuted among themselves without changing the function.
PERMUTABLE_NODE_TYPES: frozenset[int] = frozenset(
    {NodeType.HIDDEN, NodeType.SUM, NodeType.PRODUCT, NodeType.ATTN_Q, NodeType.ATTN_K, NodeType.ATTN_V,
     NodeType.ATTN_OUT}
)

#: Rows of the metanetworks' type-embedding tables: the first vocabularies' sizes plus 8 spare rows,
#: fixed so that trained checkpoints keep loading when types are appended (append within them).
NODE_TYPE_SLOTS = 18
EDGE_TYPE_SLOTS = 23
#: rows of the metanetworks' activation-embedding tables (the first 20 activations plus 8 spare rows),
#: fixed for the same reason
ACTIVATION_SLOTS = 28
if (len(NodeType) > NODE_TYPE_SLOTS or len(EdgeType) > EDGE_TYPE_SLOTS
        or len(Activation) > ACTIVATION_SLOTS):  # pragma: no cover - vocabulary guard
    raise RuntimeError("the node type, edge type or activation vocabulary outgrew its embedding slots")
