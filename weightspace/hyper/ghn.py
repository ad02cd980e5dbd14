r"""A graph hypernetwork for any architecture the converter reads (GHN-2/GHN-3 on the parameter graph).

:class:`GHN` predicts every parameter of a network it has never seen: convolutions of any kernel
size (1-D or 2-D, strided, dilated, depthwise/grouped), linear layers, flatten heads, residual sums,
concatenations, multi-head attention, class tokens and positional tables, BatchNorm and LayerNorm.
It follows GHN-2 (Knyazev et al., NeurIPS 2021, "Parameter Prediction for Unseen Deep
Architectures") and GHN-3 (Knyazev et al., ICML 2023, "Can We Scale Transformers to Predict
Parameters of Diverse ImageNet Models?"): the architecture becomes a graph, a message-passing
network runs over it, and decoders emit the parameters; the target network's loss on real data,
through a functional call with the predicted parameters, trains the hypernetwork
(:func:`weightspace.hyper.recipe.train_ghn`).

Usage::

    from weightspace.hyper import GHN
    ghn = GHN.from_pretrained("hypernet-digits")     # or "hypernet-mnist1d"
    model = ghn(my_model)                             # filled in place and returned

**Graph.** The target's :class:`~weightspace.GraphSpec` (a node per neuron/channel, an edge per
connection, typed: :class:`~weightspace.graph.vocab.EdgeType`). Every edge and node type takes part
in message passing (residual SUM nodes, attention query/key/value units and their structural
edges, positional and token nodes); parameters are emitted for the *parametric* edges and for the
per-neuron columns (bias, normalization scale/shift).

**Any kernel size: a kernel-position decoder.** An edge ``i -> j`` with a ``kh x kw`` kernel owns
``kh*kw`` values (a flatten edge: one per spatial position of the flattened map). Instead of a
fixed output grid (GHN-2's 3x3 or 7x7 max-shape tensor, sliced), each value is

.. math::
    v_{ij,s} = \tfrac{1}{\sqrt R}\,\langle a_{ij},\ \psi(s)\rangle + g_\tau\,\epsilon_{ij,s},
    \qquad a_{ij} = \mathrm{MLP}_e([e_{ij}, h_i, h_j, c_i, c_j]) + (U[h_i, c_i]) \odot (V[h_j, c_j])

where :math:`a_{ij} \in \mathbb{R}^R` is the edge's code and :math:`\psi(s)` a learned function
of the slot's descriptor (offset from the kernel centre, kernel size, dilation-free position in a
flattened map, edge kind): a low-rank, size-agnostic decoder, so a 7x7 or a 1x40 kernel needs no
new output head. Values are stored at their true size and scattered into the parameter vector by
an index computed once per architecture (:class:`GHNTarget`).

**Symmetry breaking** (as :class:`~weightspace.hyper.GraphHyperNetwork`): permutable unit ``k``
of every operation (hidden, residual-sum and attention units) gets a learned code
:math:`c = \mathrm{codes}[k \bmod 64]`, and output neuron ``c`` (class ``c``) the code of its index,
so the readout of every class starts distinct (in an operation of more than 64 units, units ``k`` and
``k + 64`` share a code and come out alike; filling such a model logs a warning that names those
operations, :meth:`GHNTarget.wide_operations`); predicted weights are centred across the units of the
target operation (for each source unit and kernel slot); a seeded draw :math:`\epsilon` enters
through a learned per-edge-type gain :math:`g_\tau` (initialized at 0).

**Scale.** Hidden weights are standardized per target neuron over its fan-in and scaled by
GHN-2's fan-in factor times a learned per-neuron magnitude:
:math:`w = \sqrt{\beta_i / \mathrm{fan\_in}_j}\,(1 + m_j)\,\hat v` (:math:`\beta`: squared gain
of the source's activation). The readout (edges into output neurons) is fan-in scaled but not
standardized and comes from a zero-initialized head (an untrained GHN gives zero logits). Tables
(positional entries, class tokens, embedding rows) are standardized and scaled by a learned
per-type factor (initialized at 0.1).

**Normalization layers.** BatchNorm/LayerNorm scale and shift are predicted per neuron as
:math:`2\sigma(0.5p)` and :math:`\tanh(0.2p)`; running statistics are set to 0/1 and the GHN is
trained with BatchNorm in training mode, so before ``eval()`` recompute the statistics with
:func:`~weightspace.hyper.recalibrate_batchnorm` (a test checks that eval-mode accuracy after
recalibration is at least train-mode accuracy, within 1 point on the mean of six networks). The
training space normalizes every layer, so a network with no normalization layer at all needs
:func:`~weightspace.hyper.standardize_units` after filling (:mod:`weightspace.hyper.calibrate`).

**Patch embeddings.** A ViT may embed its patches with a strided convolution or cut its input into
patches by a reshape and embed them with a ``Linear``: the same function, but different graphs (one
input node per position in a patch). A GHN trained on convolution embeddings only fills the
``Linear`` form near chance, and filling one logs a warning with the convolution to write instead;
the shipped checkpoints trained on both forms (``ghn_recipe --linear-embed``,
:attr:`GHN.trained_on_linear_embeddings`) and do not warn.

**Data check.** A checkpoint records the data it was trained on (``config.data``: ``"digits"``,
``[B, 1, 8, 8]``, or ``"mnist1d"``, ``[B, 1, 40]``, 10 classes). Before filling, the model is run
once on a zero batch of that shape (or its flattened form); a model that refuses it or does not
return 10 outputs raises :class:`DataMismatchError` naming both, unless ``force=True``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from weightspace.graph import GraphSpec, UnsupportedModuleError, resize_kernel_grid
from weightspace.graph.vocab import (
    BIAS,
    EDGE_TYPE_SLOTS,
    NODE_FEATURES,
    PERMUTABLE_NODE_TYPES,
    RUNNING_MEAN,
    RUNNING_VAR,
    SHIFT,
    STRUCTURAL_EDGE_TYPES,
    WEIGHT,
    Activation,
    EdgeType,
    NodeType,
)
from weightspace.nn import MLP, GMNConv, NeuronEncoder
from weightspace.pretrained import PretrainedMixin

from .calibrate import has_normalization
from .space import DATASETS

log = logging.getLogger(__name__)

__all__ = ["GHN", "GHNConfig", "GHNTarget", "DataMismatchError", "SHIPPED_GHN", "check_data"]

#: Shipped checkpoints of :class:`GHN` (``GHN.from_pretrained(name)``), one per dataset.
SHIPPED_GHN: dict[str, str] = {"digits": "hypernet-digits", "mnist1d": "hypernet-mnist1d"}

#: Edges whose values are weights multiplying an activation (fan-in scaled).
WEIGHT_EDGES = frozenset({EdgeType.LINEAR, EdgeType.CONV, EdgeType.FLATTEN, EdgeType.ATTN_Q, EdgeType.ATTN_K,
                          EdgeType.ATTN_V, EdgeType.ATTN_OUT})
#: Edges whose values are table entries added to activations (positional tables, tokens, embeddings).
TABLE_EDGES = frozenset({EdgeType.EMBEDDING, EdgeType.POSITION, EdgeType.TOKEN})

_STRUCT, _HIDDEN, _TABLE, _READOUT = 0, 1, 2, 3
_NF = len(NODE_FEATURES)
_DESC = 12  # slot descriptor features

#: Squared gain of the activation on the source neuron (torch.nn.init.calculate_gain; smooth
#: ReLU-like activations count as ReLU).
_GAIN2 = {
    Activation.RELU: 2.0, Activation.LEAKY_RELU: 2.0, Activation.PRELU: 2.0, Activation.GELU: 2.0, Activation.SILU: 2.0,
    Activation.ELU: 2.0, Activation.MISH: 2.0, Activation.CELU: 2.0, Activation.RELU6: 2.0,
    Activation.HARDSWISH: 2.0, Activation.SOFTPLUS: 2.0, Activation.TANH: 25.0 / 9.0,
    Activation.SELU: 0.5625, Activation.HARDTANH: 25.0 / 9.0,
}


class DataMismatchError(ValueError):
    """A model's input or output size does not match the data a hypernetwork was trained on."""


def _slot_descriptors(kind: Tensor, kh: Tensor, kw: Tensor) -> tuple[Tensor, Tensor]:
    """Per edge the slot ids ``[S]`` (edge of each slot) and the descriptor ``[S, _DESC]`` of each
    slot: offsets from the kernel centre (/3), kernel size (/7), position in a flattened map
    (sin/cos at 3 frequencies), flatten / table flags."""
    area = kh * kw
    edge = torch.repeat_interleave(torch.arange(len(kh)), area)
    start = torch.cumsum(area, 0) - area
    local = torch.arange(int(area.sum())) - start[edge]
    a, b = local // kw[edge], local % kw[edge]
    KH, KW = kh[edge].float(), kw[edge].float()
    flat = (kind[edge] == EdgeType.FLATTEN).float()
    conv = 1.0 - flat
    dy, dx = (a - (KH - 1) / 2) / 3 * conv, (b - (KW - 1) / 2) / 3 * conv
    t = (b.float() + 0.5) / KW * flat
    freqs = [math.pi * f * t for f in (1, 2, 4)]
    table = torch.isin(kind[edge], torch.tensor(sorted(int(x) for x in TABLE_EDGES))).float()
    desc = torch.stack([dy, dx, KH / 7 * conv, KW / 7 * conv, flat, table, *[torch.sin(f) * flat for f in freqs],
                        *[torch.cos(f) * flat for f in freqs]], dim=1)
    return edge, desc


@dataclass(frozen=True, eq=False)
class GHNTarget:
    """Everything :class:`GHN` needs of one architecture (built once per architecture, cached).

    Attributes:
        spec: the architecture's :class:`~weightspace.GraphSpec`.
        category: ``[E]`` 0 structural, 1 hidden weight, 2 table, 3 readout weight.
        scale: ``[E]`` fan-in scale :math:`\\sqrt{\\beta_i/\\mathrm{fan\\_in}_j}` (weights).
        slot_edge: ``[S]`` edge of each true kernel value of the parametric edges.
        slot_desc: ``[S, 12]`` descriptor of each value's position in its kernel.
        center_id / std_id: ``[S]`` groups of the centring and standardization steps (-1: none).
        gather: ``[P]`` position of every parameter in ``[x.flatten() (N*5), slot values (S)]``.
        node_struct / node_rank: ``[N, 2]`` log fan-in/fan-out; ``[N]`` unit index in its operation.
    """

    spec: GraphSpec
    category: Tensor
    scale: Tensor
    slot_edge: Tensor
    slot_desc: Tensor
    center_id: Tensor
    num_center: int
    std_id: Tensor
    num_std: int
    gather: Tensor
    node_struct: Tensor
    node_rank: Tensor

    @property
    def num_nodes(self) -> int:
        return self.spec.num_nodes

    @property
    def num_edges(self) -> int:
        return self.spec.num_edges

    @property
    def num_slots(self) -> int:
        return int(self.slot_edge.numel())

    def draw_init(self, generator: torch.Generator | None = None) -> Tensor:
        """``eps [S]``: standard-normal draws, one per predicted kernel value (the seeded draw)."""
        return torch.randn(self.num_slots, generator=generator)

    def wide_operations(self, num_codes: int) -> dict[str, int]:
        """Operations with more permutable units than ``num_codes`` (name -> number of units).

        Unit ``k`` takes the symmetry-breaking code ``k mod num_codes``, so in these operations units
        ``k`` and ``k + num_codes`` get the same code and come out alike."""
        out = {}
        for label, nodes in self.spec.node_groups.items():
            if label == "output" or label.startswith("input:"):
                continue
            r = self.node_rank[nodes.long()]
            if bool((r >= num_codes).any()):
                out[label] = int((r >= 0).sum())
        return out

    @classmethod
    def from_module(cls, model: nn.Module, example_input: Any = None, max_positions: int = 1024) -> GHNTarget:
        """Trace ``model`` and index its parameters.

        Raises:
            UnsupportedModuleError: the converter cannot read a module, or an edge type is unknown
                to the hypernetwork (the message names the module).
        """
        spec = GraphSpec.from_module(model, example_input)
        return cls.from_spec(spec, model, max_positions=max_positions)

    @classmethod
    def from_spec(cls, spec: GraphSpec, model: nn.Module | None = None, max_positions: int = 1024) -> GHNTarget:
        src, dst = spec.edge_index.long()
        et = spec.edge_type.long()
        known = torch.tensor(sorted(int(t) for t in WEIGHT_EDGES | TABLE_EDGES | STRUCTURAL_EDGE_TYPES))
        bad = (~torch.isin(et, known)).nonzero()
        if bad.numel():
            e = int(bad[0, 0])
            raise UnsupportedModuleError(f"the hypernetwork has no decoder for {EdgeType(int(et[e])).name.lower()} "
                                         "connections; extend GHN's WEIGHT_EDGES/TABLE_EDGES",
                                         path=_label_of(spec, int(dst[e])), kind=_kind_of(spec, model, int(dst[e])))
        if int(spec.node_pos.max()) >= max_positions:
            raise UnsupportedModuleError(f"the network has {int(spec.node_pos.max()) + 1} input or output positions; "
                                         f"the hypernetwork embeds at most {max_positions}", path="input")
        N, E = spec.num_nodes, spec.num_edges
        is_w = torch.isin(et, torch.tensor(sorted(int(t) for t in WEIGHT_EDGES)))
        is_t = torch.isin(et, torch.tensor(sorted(int(t) for t in TABLE_EDGES)))
        readout = is_w & (spec.node_type[dst] == NodeType.OUTPUT)
        category = torch.full((E,), _STRUCT, dtype=torch.long)
        category[is_w], category[is_t], category[readout] = _HIDDEN, _TABLE, _READOUT
        kh, kw = spec.edge_kernel[:, 0].long(), spec.edge_kernel[:, 1].long()
        area = (kh * kw).float() * is_w.float()
        fan_in = torch.zeros(N).index_add_(0, dst, area)
        fan_out = torch.zeros(N).index_add_(0, src, area)
        gain2 = torch.tensor([_GAIN2.get(int(a), 1.0) for a in spec.node_act.tolist()])
        scale = (gain2[src] / fan_in[dst].clamp_min(1.0)).sqrt()
        # slots of parametric edges only
        pe = (category != _STRUCT).nonzero().squeeze(1)
        local_edge, desc = _slot_descriptors(et[pe], kh[pe], kw[pe])
        slot_edge = pe[local_edge]
        # flat-vector index: decode index-valued tensors once
        n_x = N * _NF
        kshape = tuple(int(k) for k in spec.kernel_shape)
        e_ids = torch.zeros(E, kshape[0] * kshape[1], dtype=torch.float64)
        slot_start = torch.zeros(E, dtype=torch.long)
        area_p = kh[pe] * kw[pe]
        slot_start[pe] = torch.cumsum(area_p, 0) - area_p
        for h, w in torch.unique(spec.edge_kernel[pe], dim=0).tolist():
            rows = pe[((kh[pe] == h) & (kw[pe] == w))]
            ids = (n_x + slot_start[rows][:, None] + torch.arange(h * w)[None, :] + 1).to(torch.float64)
            e_ids[rows] = resize_kernel_grid(ids, spec.edge_kernel[rows], (h, w), kshape)
        x_ids = (torch.arange(n_x, dtype=torch.float64) + 1).view(N, _NF)
        gather = spec.decode(x_ids, e_ids).round().long() - 1
        if gather.numel() and int(gather.min()) < 0:
            raise UnsupportedModuleError("a parameter of the network maps to a structural connection of its graph; "
                                         "the hypernetwork cannot place it", path=spec.names[0])
        # centring (hidden weights): key (source, target operation, slot descriptor)
        groups = _group_of(spec)
        groups = torch.where(groups >= 0, groups, groups.max() + 1 + torch.arange(N))
        s_src, s_dst = src[slot_edge], dst[slot_edge]
        s_cat = category[slot_edge]
        _, desc_id = torch.unique(desc, dim=0, return_inverse=True)
        key = torch.stack([s_src, groups[s_dst], desc_id], 1)
        hid = s_cat == _HIDDEN
        center_id = torch.full_like(s_src, -1)
        num_center = 0
        if bool(hid.any()):
            _, inv = torch.unique(key[hid], dim=0, return_inverse=True)
            center_id[hid] = inv
            num_center = int(inv.max()) + 1
        std_key = torch.stack([s_dst, (s_cat == _TABLE).long()], 1)
        std_mask = (s_cat == _HIDDEN) | (s_cat == _TABLE)
        std_id = torch.full_like(s_src, -1)
        num_std = 0
        if bool(std_mask.any()):
            _, inv = torch.unique(std_key[std_mask], dim=0, return_inverse=True)
            std_id[std_mask] = inv
            num_std = int(inv.max()) + 1
        rank = torch.full((N,), -1, dtype=torch.long)
        perm = torch.isin(spec.node_type.long(), torch.tensor(sorted(int(t) for t in PERMUTABLE_NODE_TYPES)))
        for label, nodes in spec.node_groups.items():
            nodes = nodes.long()
            if label == "output" or label.startswith("input:"):
                continue
            keep = perm[nodes]
            rank[nodes[keep]] = torch.arange(int(keep.sum()))
        out_nodes = spec.node_type == NodeType.OUTPUT  # outputs: a fixed code per class index
        rank[out_nodes] = spec.node_pos[out_nodes].long().clamp_min(0)
        struct = torch.stack([fan_in.log1p(), fan_out.log1p()], dim=1)
        return cls(spec=spec, category=category, scale=scale, slot_edge=slot_edge, slot_desc=desc,
                   center_id=center_id, num_center=num_center, std_id=std_id, num_std=num_std, gather=gather,
                   node_struct=struct, node_rank=rank)


def _group_of(spec: GraphSpec) -> Tensor:
    owner = torch.full((spec.num_nodes,), -1, dtype=torch.long)
    for i, (label, nodes) in enumerate(spec.node_groups.items()):
        if label == "output" or label.startswith("input:"):
            continue
        owner[nodes.long()] = i
    return owner


def _label_of(spec: GraphSpec, node: int) -> str:
    gi = int(_group_of(spec)[node])
    return list(spec.node_groups)[gi] if gi >= 0 else "input"


def _kind_of(spec: GraphSpec, model: nn.Module | None, node: int) -> str | None:
    if model is None:
        return None
    try:
        return type(model.get_submodule(_label_of(spec, node))).__name__
    except AttributeError:
        return None


def _segment_mean(v: Tensor, seg: Tensor, num: int) -> tuple[Tensor, Tensor]:
    """Per-segment mean of ``v [S]`` (``seg`` >= 0) and the segment sizes."""
    tot = v.new_zeros(num).index_add_(0, seg, v)
    cnt = v.new_zeros(num).index_add_(0, seg, torch.ones_like(v))
    return tot / cnt.clamp_min(1.0), cnt


def check_data(model: nn.Module | None, data: str, *, force: bool = False) -> Tensor | None:
    """A ``[1, ...]`` zero input of dataset ``data`` that ``model`` accepts and maps to its classes.

    Tries ``[2, C, L]`` / ``[2, C, H, W]``, then the flattened ``[2, C*H*W]`` (MLPs that take
    vectors), in eval mode without gradients; the output must be ``[2, classes]``.

    Args:
        model: the network (``None``: just the data's input).
        data: a key of :data:`weightspace.hyper.space.DATASETS`.
        force: log the mismatch as a warning and return ``None`` instead of raising.

    Raises:
        DataMismatchError: neither shape works or the outputs differ (names the model, the shapes
            and what each attempt raised).
    """
    dims, c, size, k = DATASETS[data]
    shapes = [(2, c, *([size] * dims)), (2, c * size**dims)]
    if model is None:
        return torch.zeros(shapes[0])[:1]
    errors = []
    was = model.training
    model.eval()
    try:
        for shape in shapes:
            x = torch.zeros(shape)
            try:
                with torch.no_grad():
                    out = model(x)
            except Exception as e:  # noqa: BLE001 - any failure means: not this input shape
                errors.append(f"{list(shape)}: {type(e).__name__}: {str(e)[:200]}")
                continue
            if isinstance(out, Tensor) and tuple(out.shape) == (2, k):
                return x[:1]
            errors.append(f"{list(shape)}: output {tuple(out.shape) if isinstance(out, Tensor) else type(out)}, "
                          f"expected (2, {k})")
    finally:
        model.train(was)
    msg = (f"{type(model).__name__} does not fit the data of this hypernetwork ({data}: inputs "
           f"{list(shapes[0][1:])} or {list(shapes[1][1:])}, {k} classes): " + "; ".join(errors) +
           ". Use the checkpoint trained on your data (weightspace.hyper.SHIPPED_GHN), adapt the model's input "
           "and output layers, or pass force=True to fill it anyway (predictions outside the training data)")
    if force:
        log.warning("%s", msg)
        return None
    raise DataMismatchError(msg)


@dataclass(frozen=True)
class GHNConfig:
    """Constructor arguments of :class:`GHN` (stored in ``config.json``).

    Attributes:
        hidden: width of node and edge states; layers: message-passing layers.
        rank: size ``R`` of an edge's code and of the slot functions :math:`\\psi`.
        code_dim / num_codes: symmetry-breaking unit codes (unit ``k`` takes ``k mod num_codes``).
        max_positions / max_depth: tables of the neuron encoder.
        data: the dataset the checkpoint was trained on (a key of
            :data:`weightspace.hyper.space.DATASETS`; ``""``: no data check).
    """

    hidden: int = 48
    layers: int = 2
    rank: int = 16
    code_dim: int = 32
    num_codes: int = 64
    max_positions: int = 1024
    max_depth: int = 128
    data: str = ""


class GHN(PretrainedMixin, nn.Module):
    r"""Graph hypernetwork for any architecture the converter reads (see the module docs).

    .. math::
        h^{(0)}_i &= \mathrm{NeuronEncoder}(i) + W_s[\log(1+\mathrm{fan\_in}_i), \log(1+\mathrm{fan\_out}_i)]
                     + W_c\,c_i,\qquad e^{(0)}_{ij} = E[\tau_{ij}] + W_k\,\kappa_{ij} \\
        (h^{(l+1)}, e^{(l+1)}) &= \mathrm{GMNConv}(h^{(l)}, e^{(l)}),\quad l < L \\
        v_{ij,s} &= \langle a_{ij}, \psi(s)\rangle/\sqrt R + g_\tau\epsilon_{ij,s},\qquad p_i = \mathrm{MLP}_n(h^{(L)}_i)

    Args: see :class:`GHNConfig`.

    Shapes:
        - ``ghn(model, seed=0)``: fills ``model`` in place and returns it.
        - :meth:`predict`: ``len(targets)`` flat parameter vectors ``[P_t]`` (differentiable).
    """

    config_class = GHNConfig
    checkpoint_format = "weightspace.ghn"

    def __init__(self, hidden: int = 48, layers: int = 2, rank: int = 16, code_dim: int = 32, num_codes: int = 64,
                 max_positions: int = 1024, max_depth: int = 128, data: str = "") -> None:
        super().__init__()
        if data and data not in DATASETS:
            raise ValueError(f"data must be one of {sorted(DATASETS)} or '', got {data!r}")
        self._config = GHNConfig(hidden, layers, rank, code_dim, num_codes, max_positions, max_depth, data)
        #: training provenance (saved as the checkpoint's extras).
        self.meta: dict[str, Any] = {}
        D = hidden
        self.node_enc = NeuronEncoder(D, max_positions=max_positions, max_depth=max_depth)
        self.struct = nn.Linear(2, D)
        self.code = nn.Linear(code_dim, D, bias=False)
        self.codes = nn.Embedding(num_codes, code_dim)
        self.edge_type_emb = nn.Embedding(EDGE_TYPE_SLOTS, D)
        self.edge_kernel = nn.Linear(4, D)
        self.convs = nn.ModuleList(GMNConv(D) for _ in range(layers))
        self.head_norm = nn.LayerNorm(D)
        self.edge_head = MLP([3 * D + 2 * code_dim, 2 * D, rank])
        self.out_head = MLP([3 * D + 2 * code_dim, 2 * D, rank])
        self.bilinear = nn.Linear(D + code_dim, 4 * rank, bias=False)  # (src, dst) x (hidden, readout)
        self.slot_fn = MLP([_DESC, 2 * rank, rank])
        self.node_head = MLP([D, D, 6])
        self.init_gain = nn.Parameter(torch.zeros(EDGE_TYPE_SLOTS))
        self.table_gain = nn.Parameter(torch.full((EDGE_TYPE_SLOTS,), math.log(0.1)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        def reset(m: nn.Module) -> None:  # a module's own reset wins over its children's
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            else:
                for c in m.children():
                    reset(c)

        for child in self.children():
            reset(child)
        for head in (self.out_head, self.node_head):
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)
        with torch.no_grad():
            r = self._config.rank
            self.bilinear.weight[3 * r:].zero_()  # readout dst factor: zero logits at init
            self.init_gain.zero_()
            self.table_gain.fill_(math.log(0.1))

    @property
    def config(self) -> GHNConfig:
        return self._config

    @property
    def data(self) -> str:
        """Dataset of the checkpoint (``""``: unknown, no data check)."""
        return self._config.data

    def __repr__(self) -> str:
        c, n = self._config, sum(p.numel() for p in self.parameters())
        return f"GHN(hidden={c.hidden}, layers={c.layers}, rank={c.rank}, data={c.data!r}, params={n})"

    # ------------------------------------------------------------------ targets
    def example_input(self, model: nn.Module | None = None, *, force: bool = False) -> Tensor | None:
        """A zero batch of the checkpoint's data that ``model`` accepts (``None`` without ``data``);
        see :func:`check_data`."""
        if not self.data:
            return None
        return check_data(model, self.data, force=force)

    def target(self, model: nn.Module, example_input: Any = None, *, force: bool = False) -> GHNTarget:
        """:class:`GHNTarget` of ``model`` (checks the data, see :meth:`example_input`)."""
        ex = self.example_input(model, force=force)
        if example_input is None:
            example_input = ex
        return GHNTarget.from_module(model, example_input, self._config.max_positions)

    # ------------------------------------------------------------------ prediction
    def predict(self, targets: Sequence[GHNTarget], inits: Sequence[Tensor] | None = None) -> list[Tensor]:
        """Flat parameter vectors of ``targets``, predicted in one batched pass (differentiable).

        Args:
            targets: architectures (:meth:`target`).
            inits: per target the draws ``eps [S_t]`` of :meth:`GHNTarget.draw_init` (None: zeros).
        """
        dev = self.init_gain.device
        R = self._config.rank
        n_off = e_off = c_off = s_off = 0
        ei, sl_edge, cen, std = [], [], [], []
        for t in targets:
            ei.append(t.spec.edge_index.to(dev) + n_off)
            sl_edge.append(t.slot_edge.to(dev) + e_off)
            cen.append(torch.where(t.center_id >= 0, t.center_id + c_off, -1).to(dev))
            std.append(torch.where(t.std_id >= 0, t.std_id + s_off, -1).to(dev))
            n_off, e_off = n_off + t.num_nodes, e_off + t.num_edges
            c_off, s_off = c_off + t.num_center, s_off + t.num_std

        def cat(attr: str, spec: bool = True) -> Tensor:
            return torch.cat([getattr(t.spec if spec else t, attr) for t in targets]).to(dev)

        edge_index = torch.cat(ei, 1).long()
        src, dst = edge_index
        node_type, edge_type = cat("node_type").long(), cat("edge_type").long()
        category, kernel = cat("category", False), cat("edge_kernel").float()
        rank = cat("node_rank", False)
        codes = self.codes(rank.clamp_min(0) % self._config.num_codes) * (rank >= 0)[:, None].float()
        h = self.node_enc(torch.zeros(n_off, _NF, device=dev), node_type, cat("node_act").long(),
                          cat("node_layer").long(), cat("node_pos").long())
        h = h + self.struct(cat("node_struct", False)) + self.code(codes)
        kfeat = torch.stack([kernel[:, 0] / 7, kernel[:, 1] / 7, (kernel[:, 0] * kernel[:, 1]).log() / 4,
                             (category == _READOUT).float()], 1)
        e = self.edge_type_emb(edge_type.clamp_max(EDGE_TYPE_SLOTS - 1)) + self.edge_kernel(kfeat)
        for conv in self.convs:
            h, e = conv(h, e, edge_index)
        p = self.node_head(h)
        hn = self.head_norm(h)
        hc = torch.cat([hn, codes], -1)
        fac = self.bilinear(hc).view(-1, 4, R)
        # edge codes of the parametric edges
        slot_edge = torch.cat(sl_edge)
        pe, pe_inv = torch.unique(slot_edge, return_inverse=True)
        ps, pd = src[pe], dst[pe]
        feat = torch.cat([e[pe], hn[ps], hn[pd], codes[ps], codes[pd]], -1)
        is_out = category[pe] == _READOUT
        a = torch.where(is_out[:, None], self.out_head(feat) + fac[ps, 2] * fac[pd, 3],
                        self.edge_head(feat) + fac[ps, 0] * fac[pd, 1])
        desc = cat("slot_desc", False)
        psi = self.slot_fn(desc)
        psi = psi / psi.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()  # unit RMS per slot
        v = (a[pe_inv] * psi).sum(-1) / math.sqrt(R)
        if inits is not None:
            eps = torch.cat(list(inits)).to(dev)
            v = v + self.init_gain[edge_type[slot_edge]] * eps
        s_cat = category[slot_edge]
        # centring across the units of the target operation
        cid = torch.cat(cen)
        m = cid >= 0
        if bool(m.any()):
            mean, cnt = _segment_mean(v[m], cid[m], c_off)
            mean = torch.where(cnt > 1, mean, torch.zeros_like(mean))
            v = v.masked_scatter(m, v[m] - mean[cid[m]])
        # standardization per target neuron (hidden weights; tables separately)
        sid = torch.cat(std)
        m = sid >= 0
        if bool(m.any()):
            vm = v[m]
            mean, cnt = _segment_mean(vm, sid[m], s_off)
            vm = vm - torch.where(cnt > 1, mean, torch.zeros_like(mean))[sid[m]]
            ms, _ = _segment_mean(vm.pow(2), sid[m], s_off)
            vm = vm / (ms + 1e-12).sqrt()[sid[m]]
            v = v.masked_scatter(m, vm)
        scale = cat("scale", False)[slot_edge]
        s_dst = dst[slot_edge]
        w = torch.where(s_cat == _HIDDEN, scale * (1.0 + p[s_dst, 5]) * v,
                        torch.where(s_cat == _READOUT, scale * v,
                                    self.table_gain[edge_type[slot_edge]].exp() * v))
        x = torch.stack([
            torch.tanh(0.2 * p[:, BIAS]),
            2.0 * torch.sigmoid(0.5 * p[:, WEIGHT]),
            torch.tanh(0.2 * p[:, SHIFT]),
            torch.zeros_like(p[:, RUNNING_MEAN]),
            torch.ones_like(p[:, RUNNING_VAR]),
        ], dim=1)
        out, n0, s0 = [], 0, 0
        for t in targets:
            xt = x[n0 : n0 + t.num_nodes].reshape(-1)
            wt = w[s0 : s0 + t.num_slots]
            n0, s0 = n0 + t.num_nodes, s0 + t.num_slots
            out.append(torch.cat([xt, wt]).index_select(0, t.gather.to(dev)).to(t.spec.dtype))
        return out

    @torch.no_grad()
    def predict_state_dict(self, model: nn.Module, seed: int | None = 0, example_input: Any = None, *,
                           force: bool = False) -> dict[str, Tensor]:
        """Predicted parameters and float buffers of ``model`` (every stored key; the model is untouched).

        Raises:
            DataMismatchError: see :meth:`example_input`.
            UnsupportedModuleError: the converter cannot read the model (names the module).
        """
        t = self.target(model, example_input, force=force)
        wide = t.wide_operations(self._config.num_codes)
        if wide:
            names = ", ".join(f"'{k}' ({n})" for k, n in list(wide.items())[:4]) + (", ..." if len(wide) > 4 else "")
            log.warning("%s: %d operation(s) have more units than this GHN's %d unit codes: %s. Unit k takes code "
                        "k mod %d, so units k and k+%d come out alike (docs/design-notes/hyper.md, 'Left: layers "
                        "wider than the unit codes')", type(model).__name__, len(wide), self._config.num_codes, names,
                        self._config.num_codes, self._config.num_codes)
        if self.data:
            dims, c, size, _ = DATASETS[self.data]
            n_in = sum(len(v) for k, v in t.spec.node_groups.items() if k.startswith("input:"))
            if c < n_in < c * size**dims and not self.trained_on_linear_embeddings:
                log.warning("%s reads its input as %d features per position (the input is cut into patches "
                            "by a reshape before its first layer, as in a ViT whose patch embedding is a "
                            "Linear); this GHN was trained on patch embeddings written as strided "
                            "convolutions only and fills this form near chance: write it as nn.Conv%dd(%d, dim, "
                            "kernel_size=p, stride=p), or use a GHN trained on both forms (the shipped "
                            "checkpoints; ghn_recipe --linear-embed) (docs/guides/hypernetwork.md, 'Patch "
                            "embeddings')",
                            type(model).__name__, n_in, dims, c)
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        flat = self.predict([t], [t.draw_init(gen)])[0]
        tensors = t.spec.unflatten(flat)
        return {k: tensors[t.spec.aliases.get(k, k)] for k in t.spec.keys if t.spec.aliases.get(k, k) in tensors}

    @property
    def trained_on_linear_embeddings(self) -> bool:
        """Whether this checkpoint, or one it continues, trained on ViTs whose patch embedding is a
        reshape + ``Linear`` (``ghn_recipe --linear-embed``; recorded in the extras' ``train`` and
        ``init``)."""
        meta = self.meta
        while isinstance(meta, dict):
            if float((meta.get("train") or {}).get("linear_embed") or 0.0) > 0.0:
                return True
            meta = meta.get("init")
        return False

    def forward(self, model: nn.Module, seed: int | None = 0, example_input: Any = None, *,
                force: bool = False) -> nn.Module:
        """Fill ``model`` with predicted parameters (all or nothing) and return it.

        Args:
            model: any network the converter reads, for the checkpoint's data.
            seed: seed of the random draws (None: the global RNG).
            example_input: inputs for tracing (default: a zero batch of the checkpoint's data).
            force: fill a model whose input/output sizes do not match the checkpoint's data
                (logs a warning instead of raising :class:`DataMismatchError`).

        A model without any normalization layer is filled and a warning logged: it needs
        :func:`~weightspace.hyper.standardize_units` before use.
        """
        state = self.predict_state_dict(model, seed, example_input, force=force)
        current = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for k, v in state.items():
                current[k].copy_(v.to(device=current[k].device, dtype=current[k].dtype))
        if not has_normalization(model):
            log.warning("%s has no normalization layer, and this GHN was trained on normalized networks only: "
                        "call weightspace.hyper.standardize_units(model, x_train[:512]) before using it "
                        "(on held-out norm-free networks it raises zero-shot accuracy 1.9-2.5x; docs/guides/hypernetwork.md)",
                        type(model).__name__)
        return model

    # ------------------------------------------------------------------ checkpoints
    def pretrained_extras(self) -> dict[str, Any]:
        return dict(self.meta)

    def set_pretrained_extras(self, extras: dict[str, Any]) -> None:
        self.meta = dict(extras)

    def save(self, path: str | os.PathLike, meta: dict | None = None) -> Path:
        """Alias of :meth:`save_pretrained` (``meta`` stored as the extras)."""
        return self.save_pretrained(path, extras=meta)
