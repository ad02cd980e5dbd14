r"""Graph hypernetwork: predict every parameter of an architecture it has never seen.

Follows GHN-2 (Knyazev et al., NeurIPS 2021, "Parameter Prediction for Unseen Deep
Architectures") and GHN-3 (Knyazev et al., ICML 2023), on the project's parameter graph: the target
architecture becomes its :class:`~weightspace.GraphSpec` (a node per neuron, an edge per
connection), a stack of edge-updating message-passing layers (:class:`~weightspace.nn.GMNConv`)
runs over it, and per-edge / per-neuron heads emit every weight, bias and normalization parameter,
decoded exactly through :meth:`GraphSpec.decode`. Training backpropagates the *target network's*
cross-entropy, through a functional call with the predicted weights, into the hypernetwork
(:mod:`weightspace.hyper.train`).

Usage::

    from weightspace.hyper import GraphHyperNetwork
    hyper = GraphHyperNetwork.from_pretrained("hypernet")   # the shipped checkpoint
    model = hyper(MLP(depth=2, width=[48, 24]))              # filled in place and returned

**Symmetry breaking.** The hidden neurons of an untrained architecture are structurally identical,
and a permutation-equivariant GNN maps identical neurons to identical weights (a network whose
hidden units are all equal is a one-unit network). The hypernetwork breaks this deliberately, in
two ways. (1) *Neuron codes*: unit ``k`` of every hidden layer gets a learned code
``codes[k mod num_codes]`` (64 by default), added to its node state and fed to the edge heads, as
GHN-2's decoder gives every output channel a fixed slot of its max-shape tensor and tiles that tensor
for wider layers. (2) *Centring across units*: for every source neuron and kernel slot, the mean of
the predicted weights over the units of the target layer is subtracted, so the units of a layer can
never collapse onto one shared template (without it they do, within a few training steps). A seeded
draw :math:`\epsilon_{ij} \sim N(0, 1)` per connection (``hyper(model, seed=...)``) is added with a
learned gain :math:`g_\tau` per edge type (initialized at 0); training keeps it near 0
(:math:`|g| \le 0.02` in the shipped checkpoint), so seeds change predictions only marginally, and
units ``k`` and ``k + 64`` of a layer wider than 64 share a code and nearly coincide. Resampling codes or initial
weights at every step instead (conditioning on a random init) was tried and stalled at chance level
on digits: the target weights change at every step, so the readout never gets a consistent gradient.

**Normalization of predicted weights.** The edge head's output :math:`v` is standardized per target
neuron over its fan-in (zero mean, unit mean square over the true kernel slots) and scaled as

.. math::
    w_{ij} = \sqrt{\beta_i / \mathrm{fan\_in}_j}\;(1 + m_j)\; \hat v_{ij}

GHN-2's fan-in scaling computed from the graph (``fan_in`` counts the incoming connections of the
target neuron times their kernel area; :math:`\beta_i` is the squared gain of the activation on the
source neuron: 2 for ReLU-like, 25/9 for tanh, 1 for inputs) times a per-neuron magnitude
:math:`1 + m_j` from the node head: the direction/magnitude split of magnitude-invariant
parametrizations (MIP, Ortiz et al.), so every hidden neuron starts at exactly the Kaiming scale
whatever the width or depth. The readout layer (edges into output neurons) comes from a separate,
zero-initialized head, fan-in scaled but not standardized: an untrained hypernetwork gives zero
logits rather than random ones (with random logits, training first kills the hidden units to reach
the uniform prediction). Biases are :math:`\tanh(0.2p)`. Per-neuron scaling does not control the
correlation between units, so activations of predicted networks deeper than the trained range
drift (about x3 per layer with the shipped checkpoint; bounded within depth 1-3, see the tests).

**BatchNorm.** A normalization layer's scale and shift live on the neurons it normalizes (graph node
columns ``weight`` / ``shift``); they are predicted as :math:`2\sigma(0.5p)` (1 at p = 0) and
:math:`\tanh(0.2p)`, as in GHN-2. Running statistics are not predicted: they are set to mean 0 and
variance 1 and the hypernetwork is trained with BatchNorm in training mode (batch statistics). Before
evaluating a predicted network in ``eval()`` mode, recompute the statistics with a few forward passes
in ``train()`` mode (:func:`recalibrate_batchnorm`). The shipped checkpoint is trained on MLPs and
GAP-CNNs without BatchNorm; networks with BatchNorm are filled, but untrained territory.

**Shipped checkpoint.** ``GraphHyperNetwork.from_pretrained("hypernet")`` (``weightspace/checkpoints/hypernet/``;
its ``extras`` hold the training recipe and provenance) is
trained on sklearn digits (inputs ``[B, 1, 8, 8]`` or 64 features, pixels / 16, 10 classes) over
:class:`~weightspace.hyper.family.ArchSpace`: MLPs with 1-3 hidden layers of 16-64 units and
GAP-CNNs (:class:`model_zoo.archs.SmallCNN`) with 1-3 conv layers of 8-32 channels, 3x3 kernels,
stride 1 or 2, ReLU or tanh. ``benchmarks/hyper.py`` measures it outside that range too (wider,
deeper, GELU/SiLU/ELU); ``docs/design-notes/hyper.md`` gives the recipe.

**Supported architectures.** Linear layers, convolutions with kernels up to 3x3, BatchNorm and any
activation; inputs of up to ``max_positions`` features. Anything else (residual additions,
attention, embeddings, larger kernels) raises :class:`~weightspace.UnsupportedModuleError` naming the
module, before the model is touched.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from weightspace.graph import GraphSpec, UnsupportedModuleError
from weightspace.graph.param_graph import resize_kernel_grid
from weightspace.graph.vocab import (
    BIAS,
    RUNNING_MEAN,
    RUNNING_VAR,
    SHIFT,
    WEIGHT,
    Activation,
    EdgeType,
    NodeType,
)
from weightspace.nn import MLP, GMNConv, NeuronEncoder, WeightEncoder
from weightspace.pretrained import CheckpointError, PretrainedMixin, shipped_checkpoint

log = logging.getLogger(__name__)

__all__ = ["GraphHyperNetwork", "HyperNetworkConfig", "HyperTarget", "load_hypernetwork", "recalibrate_batchnorm",
           "default_checkpoint", "SHIPPED", "LEGACY_FORMAT"]

#: Name of the shipped checkpoint (``GraphHyperNetwork.from_pretrained(SHIPPED)``).
SHIPPED = "hypernet"

#: ``format`` entry of the JSON sidecar of the pre-``save_pretrained`` layout (``<stem>.json`` +
#: ``<stem>.safetensors``), still read by :func:`load_hypernetwork` for one release.
LEGACY_FORMAT = "weightspace.hypernet/1"

SUPPORTED_EDGE_TYPES = frozenset({EdgeType.LINEAR, EdgeType.CONV, EdgeType.FLATTEN})
SUPPORTED_NODE_TYPES = frozenset({NodeType.INPUT, NodeType.HIDDEN, NodeType.OUTPUT})

#: Squared gain of the activation feeding a layer (torch.nn.init.calculate_gain; ReLU-like smooth
#: activations count as ReLU).
_GAIN2 = {
    Activation.RELU: 2.0, Activation.LEAKY_RELU: 2.0, Activation.GELU: 2.0, Activation.SILU: 2.0,
    Activation.ELU: 2.0, Activation.MISH: 2.0, Activation.CELU: 2.0, Activation.RELU6: 2.0,
    Activation.HARDSWISH: 2.0, Activation.SOFTPLUS: 2.0, Activation.TANH: 25.0 / 9.0,
    Activation.SELU: 0.5625, Activation.HARDTANH: 25.0 / 9.0,
}


@dataclass(frozen=True, eq=False)
class HyperTarget:
    """What the hypernetwork needs of one target architecture (built once per architecture).

    Attributes:
        spec: the architecture's graph structure.
        scale: ``[E]`` fan-in scale :math:`\\sqrt{\\beta_i / \\mathrm{fan\\_in}_j}` of every edge.
        mask: ``[E, G*G]`` true-kernel slots of each edge in the hypernetwork's ``G x G`` grid.
        node_struct: ``[N, 2]`` ``log1p`` of each neuron's fan-in and fan-out.
    """

    spec: GraphSpec
    grid: int
    scale: Tensor
    mask: Tensor
    node_struct: Tensor
    node_rank: Tensor
    node_group: Tensor

    @property
    def num_nodes(self) -> int:
        return self.spec.num_nodes

    @property
    def num_edges(self) -> int:
        return self.spec.num_edges

    @classmethod
    def from_module(cls, model: nn.Module, grid: int = 3, max_positions: int = 1024, max_depth: int = 64,
                    example_input: Any = None) -> HyperTarget:
        """Trace ``model`` and check that the hypernetwork can fill it.

        Raises:
            UnsupportedModuleError: a module the converter or the hypernetwork cannot handle,
                naming its path and type.
        """
        spec = GraphSpec.from_module(model, example_input)
        return cls.from_spec(spec, model, grid=grid, max_positions=max_positions, max_depth=max_depth)

    @classmethod
    def from_spec(cls, spec: GraphSpec, model: nn.Module | None = None, grid: int = 3, max_positions: int = 1024,
                  max_depth: int = 64) -> HyperTarget:
        _check_supported(spec, model, grid, max_positions, max_depth)
        src, dst = spec.edge_index
        area = (spec.edge_kernel[:, 0] * spec.edge_kernel[:, 1]).to(torch.float32)
        N = spec.num_nodes
        fan_in = torch.zeros(N).index_add_(0, dst, area)
        fan_out = torch.zeros(N).index_add_(0, src, area)
        gain2 = torch.tensor([_GAIN2.get(int(a), 1.0) for a in spec.node_act.tolist()])
        scale = (gain2[src] / fan_in[dst].clamp_min(1.0)).sqrt()
        mask = torch.zeros(spec.num_edges, grid * grid)
        for kh, kw in torch.unique(spec.edge_kernel, dim=0).tolist():
            rows = ((spec.edge_kernel[:, 0] == kh) & (spec.edge_kernel[:, 1] == kw)).nonzero().squeeze(1)
            oh, ow = (grid - kh) // 2, (grid - kw) // 2
            cells = ((torch.arange(kh)[:, None] + oh) * grid + torch.arange(kw)[None, :] + ow).reshape(-1)
            mask[rows[:, None], cells[None, :]] = 1.0
        struct = torch.stack([fan_in.log1p(), fan_out.log1p()], dim=1)
        rank = torch.full((N,), -1, dtype=torch.long)
        hidden = spec.node_type == NodeType.HIDDEN
        for label, nodes in spec.node_groups.items():
            nodes = nodes.long()
            if label == "output" or label.startswith("input:"):
                continue
            keep = hidden[nodes]
            rank[nodes[keep]] = torch.arange(int(keep.sum()))
        group = _group_of(spec)
        group = torch.where(group >= 0, group, group.max() + 1 + torch.arange(N))  # ungrouped: alone
        return cls(spec=spec, grid=grid, scale=scale, mask=mask, node_struct=struct, node_rank=rank,
                   node_group=group)

    def draw_init(self, generator: torch.Generator | None = None) -> Tensor:
        """``eps [E, G*G]``: standard-normal draws on every true kernel slot (the seeded random init)."""
        return torch.randn(self.num_edges, self.grid * self.grid, generator=generator) * self.mask


def _group_of(spec: GraphSpec) -> Tensor:
    """``[N]`` index into ``list(spec.node_groups)`` of the operation that made each node."""
    owner = torch.full((spec.num_nodes,), -1, dtype=torch.long)
    for i, (label, nodes) in enumerate(spec.node_groups.items()):
        if label == "output" or label.startswith("input:"):
            continue
        owner[nodes.long()] = i
    return owner


def _culprit(spec: GraphSpec, model: nn.Module | None, node: int) -> tuple[str, str | None]:
    labels = list(spec.node_groups)
    gi = int(_group_of(spec)[node])
    label = labels[gi] if gi >= 0 else "input"
    kind = None
    if model is not None:
        try:
            kind = type(model.get_submodule(label)).__name__
        except AttributeError:
            kind = None
    return label, kind


def _check_supported(spec: GraphSpec, model: nn.Module | None, grid: int, max_positions: int, max_depth: int) -> None:
    supported_e = torch.tensor(sorted(int(t) for t in SUPPORTED_EDGE_TYPES))
    bad = (~torch.isin(spec.edge_type, supported_e)).nonzero()
    if bad.numel():
        e = int(bad[0, 0])
        path, kind = _culprit(spec, model, int(spec.edge_index[1, e]))
        raise UnsupportedModuleError(
            f"the hypernetwork predicts linear, convolution and normalization parameters only; "
            f"found a {EdgeType(int(spec.edge_type[e])).name.lower()} connection", path=path, kind=kind)
    supported_n = torch.tensor(sorted(int(t) for t in SUPPORTED_NODE_TYPES))
    bad = (~torch.isin(spec.node_type, supported_n)).nonzero()
    if bad.numel():
        n = int(bad[0, 0])
        path, kind = _culprit(spec, model, n)
        raise UnsupportedModuleError(
            f"the hypernetwork does not handle {NodeType(int(spec.node_type[n])).name.lower()} neurons",
            path=path, kind=kind)
    big = ((spec.edge_kernel[:, 0] > grid) | (spec.edge_kernel[:, 1] > grid)).nonzero()
    if big.numel():
        e = int(big[0, 0])
        path, kind = _culprit(spec, model, int(spec.edge_index[1, e]))
        kh, kw = spec.edge_kernel[e].tolist()
        raise UnsupportedModuleError(f"kernel {kh}x{kw} is larger than the hypernetwork's {grid}x{grid} grid",
                                     path=path, kind=kind)
    if int(spec.node_pos.max()) >= max_positions:
        raise UnsupportedModuleError(f"the network has {int(spec.node_pos.max()) + 1} input or output positions; "
                                     f"the hypernetwork embeds at most {max_positions}", path="input")
    if int(spec.node_layer.max()) >= max_depth:
        n = int(spec.node_layer.argmax())
        path, kind = _culprit(spec, model, n)
        raise UnsupportedModuleError(f"the network is {int(spec.node_layer.max())} layers deep; the hypernetwork "
                                     f"embeds at most {max_depth - 1}", path=path, kind=kind)


def _center_across_units(v: Tensor, src: Tensor, dst_group: Tensor) -> Tensor:
    """Subtract, for every source neuron and kernel slot, the mean over the units of the target
    layer: the layer's mean unit is zero, so its units cannot collapse onto one shared template."""
    key = src * (int(dst_group.max()) + 1) + dst_group
    _, inv = torch.unique(key, return_inverse=True)
    K = int(inv.max()) + 1
    tot = v.new_zeros(K, v.shape[1]).index_add_(0, inv, v)
    cnt = v.new_zeros(K).index_add_(0, inv, v.new_ones(v.shape[0]))
    mean = torch.where(cnt[:, None] > 1, tot / cnt.clamp_min(1.0)[:, None], torch.zeros_like(tot))
    return v - mean[inv]


def _standardize_per_neuron(v: Tensor, mask: Tensor, dst: Tensor, num_nodes: int, eps: float = 1e-12) -> Tensor:
    """Zero mean and unit mean square over the fan-in (true kernel slots) of each target neuron.

    Neurons with a single incoming value are only scaled (their mean is the value itself).
    """
    v = v * mask
    cnt = v.new_zeros(num_nodes).index_add_(0, dst, mask.sum(-1))
    tot = v.new_zeros(num_nodes).index_add_(0, dst, v.sum(-1))
    mean = torch.where(cnt > 1, tot / cnt.clamp_min(1.0), torch.zeros_like(tot))
    v = (v - mean[dst][:, None]) * mask
    sq = v.new_zeros(num_nodes).index_add_(0, dst, v.pow(2).sum(-1))
    rms = (sq / cnt.clamp_min(1.0) + eps).sqrt()
    return v / rms[dst][:, None]


@dataclass(frozen=True)
class HyperNetworkConfig:
    """Constructor arguments of :class:`GraphHyperNetwork` (stored in ``config.json``).

    Attributes:
        hidden: width ``D`` of node and edge states.
        layers: message-passing layers.
        grid: side ``G`` of the kernel grid the edge head emits (largest supported kernel).
        max_positions: input/output positions the neuron encoder embeds.
        max_depth: depth table size of the neuron encoder.
        code_dim: size of the learned code of each hidden neuron.
        num_codes: codes in the table (unit ``k`` gets code ``k mod num_codes``).
    """

    hidden: int = 48
    layers: int = 2
    grid: int = 3
    max_positions: int = 1024
    max_depth: int = 64
    code_dim: int = 32
    num_codes: int = 64


class GraphHyperNetwork(PretrainedMixin, nn.Module):
    r"""Graph hypernetwork over parameter graphs (GHN-2, Knyazev et al. 2021; GHN-3, 2023).

    .. math::
        h^{(0)}_i &= \mathrm{NeuronEncoder}(i) + W_s[\log(1+\mathrm{fan\_in}_i), \log(1+\mathrm{fan\_out}_i)]
                     + W_c\, c_{k(i)} \\
        (h^{(l+1)}, e^{(l+1)}) &= \mathrm{GMNConv}(h^{(l)}, e^{(l)}) \\
        v_{ij} &= \mathrm{MLP}_e(f_{ij}) + \langle A_s h_i, A_d h_j\rangle + g_\tau \epsilon_{ij},\quad
        f_{ij} = [e^{(L)}_{ij}, h_i, h_j, c_{k(i)}, c_{k(j)}] \\
        w_{ij} &= \sqrt{\beta_i/\mathrm{fan\_in}_j}\,(1 + m_j)\,\mathrm{std}_j(\mathrm{centre}(v))_{ij}
                 \ \text{(hidden)},\qquad
        w_{jk} = \sqrt{\beta_j/\mathrm{fan\_in}_k}\,\big(\mathrm{MLP}_o(f_{jk}) + \langle B_s h_j, B_d h_k\rangle\big)
                 \ \text{(readout)} \\
        p_i &= \mathrm{MLP}_n(h^{(L)}_i)

    then ``p`` goes through the bounded maps of the module docs (bias, BatchNorm scale and shift)
    and :meth:`GraphSpec.decode` writes everything into the target's parameter vector.

    Args:
        hidden: width ``D`` of node and edge states.
        layers: message-passing layers.
        grid: side ``G`` of the kernel grid the edge head emits (largest supported kernel).
        max_positions: input/output positions the neuron encoder embeds.
        max_depth: depth table size of the neuron encoder.
        code_dim: size of the learned code of each hidden neuron (by its index in its layer).
        num_codes: codes in the table; unit ``k`` of a layer gets code ``k mod num_codes`` (GHN's
            tiling of its fixed-size output for wider layers).

    Shapes:
        - ``hyper(model, seed=0)``: fills ``model`` in place and returns it.
        - :meth:`predict`: ``len(targets)`` flat parameter vectors ``[P_t]``.

    Persistence: :meth:`save_pretrained` / :meth:`from_pretrained` (``config.json`` +
    ``model.safetensors``; :attr:`meta`, the training provenance, is stored as the extras).
    """

    config_class = HyperNetworkConfig
    checkpoint_format = "weightspace.hypernet"

    def __init__(self, hidden: int = 48, layers: int = 2, grid: int = 3, max_positions: int = 1024,
                 max_depth: int = 64, code_dim: int = 32, num_codes: int = 64) -> None:
        super().__init__()
        #: training provenance (saved as the checkpoint's extras).
        self.meta: dict[str, Any] = {}
        self.hidden, self.num_layers, self.grid, self.code_dim = hidden, layers, grid, code_dim
        self.num_codes = num_codes
        self.max_positions, self.max_depth = max_positions, max_depth
        F = grid * grid
        self.node_enc = NeuronEncoder(hidden, max_positions=max_positions, max_depth=max_depth)
        self.edge_enc = WeightEncoder(hidden, F)
        self.struct = nn.Linear(2, hidden)
        self.code = nn.Linear(code_dim, hidden, bias=False)
        self.convs = nn.ModuleList(GMNConv(hidden) for _ in range(layers))
        self.edge_head = MLP([3 * hidden + 2 * code_dim, 2 * hidden, F])
        self.out_head = MLP([3 * hidden + 2 * code_dim, 2 * hidden, F])
        self.head_norm = nn.LayerNorm(hidden)
        self.rank = 16
        self.bilinear = nn.Linear(hidden + code_dim, 4 * F * self.rank, bias=False)  # (src, dst) x (hidden, readout)
        self.node_head = MLP([hidden, hidden, 6])
        # one gain per edge type of the first vocabulary (the shipped checkpoint's shape); dense and conv read
        self.init_gain = nn.Parameter(torch.zeros(int(EdgeType.TOKEN) + 1))
        self.codes = nn.Embedding(num_codes, code_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in (self.node_enc, self.edge_enc, self.struct, self.code, self.codes, *self.convs, *self.edge_head, *self.out_head,
                  *self.node_head, self.head_norm, self.bilinear):
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        for head in (self.out_head, self.node_head):
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)
        with torch.no_grad():  # the readout's dst factor starts at zero (zero logits)
            F, r = self.grid * self.grid, self.rank
            self.bilinear.weight.view(4, F * r, -1)[3].zero_()
        with torch.no_grad():
            self.init_gain.zero_()

    @property
    def config(self) -> HyperNetworkConfig:
        """The constructor arguments (stored in ``config.json`` by :meth:`save_pretrained`)."""
        return HyperNetworkConfig(hidden=self.hidden, layers=self.num_layers, grid=self.grid,
                                  max_positions=self.max_positions, max_depth=self.max_depth,
                                  code_dim=self.code_dim, num_codes=self.num_codes)

    def target(self, model: nn.Module, example_input: Any = None) -> HyperTarget:
        """:class:`HyperTarget` of ``model`` for this hypernetwork (raises on unsupported modules)."""
        return HyperTarget.from_module(model, self.grid, self.max_positions, self.max_depth, example_input)

    def predict(self, targets: Sequence[HyperTarget], inits: Sequence[Tensor]) -> list[Tensor]:
        """Flat parameter vectors of ``targets`` (differentiable), predicted in one batched pass.

        Args:
            targets: architectures (:meth:`target`).
            inits: per target the random draws ``eps [E_t, G*G]`` of :meth:`HyperTarget.draw_init`.
        """
        dev = self.init_gain.device
        node_off, ei, bidx = 0, [], []
        for b, t in enumerate(targets):
            ei.append(t.spec.edge_index.to(dev) + node_off)
            bidx.append(torch.full((t.num_nodes,), b, dtype=torch.long, device=dev))
            node_off += t.num_nodes

        def cat(attr: str) -> Tensor:
            return torch.cat([getattr(t.spec, attr) for t in targets]).to(dev)

        edge_index, batch = torch.cat(ei, 1), torch.cat(bidx)
        node_type, node_layer, edge_type = cat("node_type").long(), cat("node_layer").long(), cat("edge_type").long()
        eps = torch.cat(list(inits)).to(dev)
        rank = torch.cat([t.node_rank for t in targets]).to(dev)
        codes = self.codes(rank.clamp_min(0) % self.num_codes) * (rank >= 0)[:, None].to(eps.dtype)
        x0 = torch.zeros(node_off, 5, device=dev)
        h = self.node_enc(x0, node_type, cat("node_act").long(), node_layer, cat("node_pos").long())
        h = h + self.struct(torch.cat([t.node_struct for t in targets]).to(dev)) + self.code(codes)
        e = self.edge_enc(torch.zeros_like(eps), edge_index, edge_type, node_layer, batch)
        for conv in self.convs:
            h, e = conv(h, e, edge_index)
        src, dst = edge_index
        mask = torch.cat([t.mask for t in targets]).to(dev)
        p = self.node_head(h)
        h = self.head_norm(h)
        feat = torch.cat([e, h[src], h[dst], codes[src], codes[dst]], -1)
        F, r = self.grid * self.grid, self.rank
        fac = self.bilinear(torch.cat([h, codes], -1)).view(-1, 4, F, r)
        v = self.edge_head(feat) + (fac[src, 0] * fac[dst, 1]).sum(-1) / math.sqrt(r)
        v = v + self.init_gain[edge_type][:, None] * eps
        goff, groups = 0, []
        for t in targets:
            groups.append(t.node_group.to(dev) + goff)
            goff += int(t.node_group.max()) + 1
        v = _center_across_units(v, src, torch.cat(groups)[dst])
        v = _standardize_per_neuron(v, mask, dst, node_off)
        scale = torch.cat([t.scale for t in targets]).to(dev)
        w = scale[:, None] * (1.0 + p[:, 5])[dst][:, None] * v
        out_edges = (node_type[dst] == NodeType.OUTPUT).nonzero().squeeze(1)
        so, do = src[out_edges], dst[out_edges]
        raw = self.out_head(feat[out_edges]) + (fac[so, 2] * fac[do, 3]).sum(-1) / math.sqrt(r)
        readout = scale[out_edges, None] * mask[out_edges] * raw
        w = w.index_put((out_edges,), readout)
        x = torch.stack([
            torch.tanh(0.2 * p[:, BIAS]),
            2.0 * torch.sigmoid(0.5 * p[:, WEIGHT]),
            torch.tanh(0.2 * p[:, SHIFT]),
            torch.zeros_like(p[:, RUNNING_MEAN]),
            torch.ones_like(p[:, RUNNING_VAR]),
        ], dim=1)
        out, n0, e0 = [], 0, 0
        for t in targets:
            xt, wt = x[n0 : n0 + t.num_nodes], w[e0 : e0 + t.num_edges]
            n0, e0 = n0 + t.num_nodes, e0 + t.num_edges
            if t.spec.kernel_shape != (self.grid, self.grid):
                wt = resize_kernel_grid(wt, t.spec.edge_kernel.to(dev), (self.grid, self.grid), t.spec.kernel_shape)
            out.append(t.spec.decode(xt.to(t.spec.dtype), wt.to(t.spec.dtype)))
        return out

    @torch.no_grad()
    def predict_state_dict(self, model: nn.Module, seed: int | None = 0, example_input: Any = None
                           ) -> dict[str, Tensor]:
        """Predicted parameters and float buffers of ``model`` (every stored key; the model is not touched).

        Raises:
            UnsupportedModuleError: see :meth:`target`.
        """
        t = self.target(model, example_input)
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        flat = self.predict([t], [t.draw_init(gen)])[0]
        tensors = t.spec.unflatten(flat)
        return {k: tensors[t.spec.aliases.get(k, k)] for k in t.spec.keys if t.spec.aliases.get(k, k) in tensors}

    def forward(self, model: nn.Module, seed: int | None = 0, example_input: Any = None, *,
                force: bool = False) -> nn.Module:
        """Fill ``model`` with predicted weights (all or nothing) and return it.

        Args:
            model: a supported architecture (see module docs); its current values are ignored.
            seed: seed of the random draws added to the predicted directions (None: global RNG).
            example_input: for models only ``torch.export`` can trace (see :func:`weightspace.to_graph`).
            force: fill a model whose inputs/outputs do not match the digits data of a checkpoint
                trained on digits (a warning instead of :class:`~weightspace.hyper.DataMismatchError`).
        """
        state = self.predict_state_dict(model, seed, example_input)  # unsupported modules raise first
        if "digits" in str(self.meta.get("trained_on", "")):
            from .ghn import check_data

            check_data(model, "digits", force=force)
        current = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for k, v in state.items():
                current[k].copy_(v.to(device=current[k].device, dtype=current[k].dtype))
        return model

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return (f"{self.__class__.__name__}(hidden={self.hidden}, layers={self.num_layers}, grid={self.grid}x{self.grid}, "
                f"params={n})")

    # ------------------------------------------------------------------ checkpoints
    def pretrained_extras(self) -> dict[str, Any]:
        return dict(self.meta)

    def set_pretrained_extras(self, extras: dict[str, Any]) -> None:
        self.meta = dict(extras)

    def save(self, path: str | os.PathLike, meta: dict | None = None) -> Path:
        """Alias of :meth:`save_pretrained` (``meta`` is stored as the extras); returns the directory."""
        return self.save_pretrained(path, extras=meta)


def default_checkpoint() -> Path:
    """Directory of the shipped checkpoint (``weightspace/checkpoints/hypernet/``)."""
    return shipped_checkpoint(SHIPPED)


def _load_legacy(stem: Path) -> GraphHyperNetwork:
    """A checkpoint of the old layout ``<stem>.safetensors`` + ``<stem>.json`` (read for one release)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    st, js = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for f in (js, st):
        if not f.is_file():
            raise CheckpointError(f"{f}: missing (a legacy hypernetwork checkpoint is {st.name} + {js.name})")
    try:
        info = json.loads(js.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{js}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format") != LEGACY_FORMAT:
        raise CheckpointError(f"{js}: not a hypernetwork checkpoint (format "
                              f"{info.get('format') if isinstance(info, dict) else None!r}, expected {LEGACY_FORMAT!r})")
    try:
        hyper = GraphHyperNetwork(**info["config"])
        hyper.load_state_dict(load_file(str(st), device="cpu"))
    except (SafetensorError, OSError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{st}: cannot load the hypernetwork weights ({e})") from None
    hyper.meta = dict(info.get("meta", {}))
    return hyper.eval()


def load_hypernetwork(path: str | os.PathLike | None = None,
                      map_location: str | torch.device = "cpu") -> GraphHyperNetwork:
    """Load a saved hypernetwork; ``None`` loads the shipped checkpoint ``hypernet``.

    A checkpoint of :class:`~weightspace.hyper.ghn.GHN` (``hypernet-digits``, ``hypernet-mnist1d``,
    or a directory written by it) loads as a ``GHN``.

    Alias of :meth:`GraphHyperNetwork.from_pretrained` that also reads, for one release, the old
    layout written by earlier versions (``<stem>.safetensors`` + ``<stem>.json``).

    Args:
        path: a directory written by :meth:`~GraphHyperNetwork.save_pretrained`, the name of a shipped
            checkpoint, or ``<stem>`` / ``<stem>.safetensors`` / ``<stem>.json`` of the old layout.
        map_location: device of the loaded hypernetwork.

    Raises:
        CheckpointError: a file is missing, corrupt or not a hypernetwork (the message names it).
    """
    if path is None:
        return GraphHyperNetwork.from_pretrained(SHIPPED, map_location=map_location)
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    if not p.is_dir() and stem.with_suffix(".json").is_file():
        return _load_legacy(stem).to(map_location)
    from weightspace.pretrained import read_checkpoint_doc

    from .ghn import GHN

    _, doc = read_checkpoint_doc(path, "hypernetwork")
    if doc.get("format") == GHN.checkpoint_format:
        return GHN.from_pretrained(path, map_location=map_location)
    return GraphHyperNetwork.from_pretrained(path, map_location=map_location)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: Tensor, batch_size: int = 256) -> nn.Module:
    """Recompute BatchNorm running statistics of ``model`` from inputs ``x`` (cumulative average).

    Predicted networks carry mean 0 / variance 1 statistics (see module docs); call this before
    ``model.eval()``. Models without BatchNorm are returned unchanged.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    saved = [(m, m.momentum) for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i in range(0, len(x), batch_size):
        model(x[i : i + batch_size])
    for m, mom in saved:
        m.momentum = mom
    model.train(was_training)
    return model

