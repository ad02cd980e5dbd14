"""Probing metanetwork: a network is represented by its answers to learned input probes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from weightspace.graph import ArchitectureMismatchError, GraphSpec, UnsupportedModuleError
from weightspace.graph.param_graph import resize_kernel_grid
from weightspace.instantiate import instantiate

from ._utils import reset_all
from .functional import batched_logits
from .mlp import MLP, FeatureNormalizer
from .statnn import NUM_STATS, tensor_statistics

__all__ = ["ProbeNet"]


class ProbeNet(nn.Module):
    r"""Probing with a deep linear probe generator (ProbeGen; Kahana et al., "Deep Linear Probe
    Generators for Weight Space Learning", ICLR 2025).

    Every input network is *run*: its parameters (decoded from the parameter graph through the
    architecture's :class:`~weightspace.GraphSpec`) are applied with ``torch.func.functional_call``
    to ``num_probes`` learned inputs, all networks of one architecture at once (``vmap``). The
    probes come from a shared generator, a stack of linear layers without nonlinearities applied to
    one learned latent code per probe (the paper's inductive bias against overfitting the probes);
    its output is standardized and given a learned scale and shift. The features of a network are
    its class probabilities and its top probability on every probe; optionally StatNN's per-tensor
    statistics (:func:`tensor_statistics`) are appended; an MLP maps them to the target.

    The representation depends on the network's function only, so it is exactly invariant to every
    symmetry that leaves the function unchanged (hidden-neuron permutations included), and it reads
    no data: the probes are parameters of the predictor. Activations are part of an architecture:
    the same weights under ``relu`` and ``tanh`` are different networks here.

    Args:
        archs: the architectures it can read, as ``_target_`` configs (built with
            :func:`model_zoo.instantiate`); they share ``input_shape`` and the number of outputs.
        input_shape: one input's shape (without the batch dimension).
        num_probes: learned inputs.
        latent_dim, gen_hidden, gen_layers: the generator ``latent [P, latent_dim] -> Linear x
            gen_layers -> [P, prod(input_shape)]``.
        hidden: widths of the MLP's hidden layers.
        out: outputs.
        dropout: dropout between hidden layers.
        stat_tensors: when > 0, StatNN statistics of up to this many tensors are appended.

    Shapes:
        - input: a batch of prepared graphs (:meth:`prepare`): ``flat [B, max_params]``, ``arch [B]``
          (and ``stat_feats [B, 7*stat_tensors+1]`` with statistics)
        - output: ``[B, out]``
    """

    def __init__(self, archs: Sequence[Mapping[str, Any]], input_shape: Sequence[int], num_probes: int = 256,
                 latent_dim: int = 32, gen_hidden: int = 128, gen_layers: int = 3,
                 hidden: Sequence[int] = (256, 256), out: int = 1, dropout: float = 0.0,
                 stat_tensors: int = 0) -> None:
        super().__init__()
        if not archs:
            raise ValueError("ProbeNet needs at least one architecture config")
        if num_probes < 1 or gen_layers < 1:
            raise ValueError(f"num_probes and gen_layers must be >= 1, got {num_probes}, {gen_layers}")
        self.hparams: dict[str, Any] = dict(
            archs=[dict(a) for a in archs], input_shape=[int(d) for d in input_shape], num_probes=num_probes,
            latent_dim=latent_dim, gen_hidden=gen_hidden, gen_layers=gen_layers, hidden=list(hidden), out=out,
            dropout=dropout, stat_tensors=stat_tensors)
        self.input_shape = tuple(int(d) for d in input_shape)
        example = torch.zeros(1, *self.input_shape)
        # the networks only lend their forward code; kept outside the module tree (not parameters)
        self._nets: list[nn.Module] = []
        self.specs: list[GraphSpec] = []
        classes = set()
        for a in archs:
            net = instantiate(dict(a)).eval()
            try:
                spec = GraphSpec.from_module(net)
            except UnsupportedModuleError:
                spec = GraphSpec.from_module(net, example_input=(example,))
            with torch.no_grad():
                classes.add(int(net(example).shape[-1]))
            self._nets.append(net)
            self.specs.append(spec)
        if len(classes) != 1:
            raise ValueError(f"the architectures give different numbers of outputs {sorted(classes)}; "
                             "probing compares answers class by class")
        self.num_classes = classes.pop()
        self.max_params = max(s.num_params for s in self.specs)
        numel = int(torch.tensor(self.input_shape).prod())
        self.latent = nn.Parameter(torch.empty(num_probes, latent_dim))
        dims = [latent_dim] + [gen_hidden] * (gen_layers - 1) + [numel]
        self.generator = nn.Sequential(*[nn.Linear(dims[i], dims[i + 1]) for i in range(gen_layers)])
        self.probe_scale = nn.Parameter(torch.ones(()))
        self.probe_shift = nn.Parameter(torch.zeros(()))
        self.stat_tensors = int(stat_tensors)
        feat = num_probes * (self.num_classes + 1)
        if self.stat_tensors > 0:
            self.stat_norm = FeatureNormalizer(NUM_STATS * self.stat_tensors + 1)
            feat += NUM_STATS * self.stat_tensors + 1
        self.body = MLP([feat, *hidden], act=nn.GELU, dropout=dropout)
        self.head = nn.Sequential(nn.GELU(), nn.Linear(list(hidden)[-1], out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_all(self)
        nn.init.normal_(self.latent)
        with torch.no_grad():
            self.probe_scale.fill_(1.0)
            self.probe_shift.zero_()

    # -------------------------------------------------------------- inputs
    def arch_index(self, graph) -> int:
        """Which of :attr:`specs` the graph is (same structure and activations).

        Raises:
            ArchitectureMismatchError: none of the known architectures.
        """
        for k, spec in enumerate(self.specs):
            try:
                spec.check_graph(graph)  # structure and activations
            except ArchitectureMismatchError:
                continue
            return k
        known = ", ".join(f"{a.get('_target_')}({', '.join(f'{k}={v}' for k, v in a.items() if k != '_target_')})"
                          for a in self.hparams["archs"])
        raise ArchitectureMismatchError(f"the network is none of the architectures this probing predictor runs: {known}")

    def prepare(self, graph) -> Data:
        """What :meth:`forward` reads for one graph: its flat parameters (zero padded to
        ``max_params``), its architecture index and, with ``stat_tensors``, its statistics."""
        k = self.arch_index(graph)
        spec = self.specs[k]
        if "edge_values" in graph:  # true-size values: no dense view needed
            e = graph.edge_values
        else:
            e = graph.edge_attr
            if tuple(graph.grid) != tuple(spec.kernel_shape):
                e = resize_kernel_grid(e, spec.edge_kernel, graph.grid, spec.kernel_shape)
        flat = spec.decode(graph.x.detach().cpu().float(), e.detach().cpu().float())
        if flat.dim() != 1:
            raise ValueError("ProbeNet takes one checkpoint per graph")
        d = Data(flat=nn.functional.pad(flat, (0, self.max_params - flat.numel()))[None],
                 arch=torch.tensor([k]), num_nodes=1)
        if self.stat_tensors > 0:
            d.stat_feats = tensor_statistics(graph, self.stat_tensors)[None]
        return d

    def fit_normalizer(self, feats: Tensor) -> None:
        """Fit the standardization of the statistics path on training features ``[B, F]``."""
        if self.stat_tensors <= 0:
            raise RuntimeError("this ProbeNet was built with stat_tensors=0")
        self.stat_norm.fit(feats)

    # -------------------------------------------------------------- outputs
    def probes(self) -> Tensor:
        """The learned inputs ``[num_probes, *input_shape]``."""
        z = self.generator(self.latent)
        z = (z - z.mean()) / (z.std() + 1e-6)
        return (z * self.probe_scale + self.probe_shift).reshape(-1, *self.input_shape)

    def responses(self, batch) -> Tensor:
        """Logits of every network on every probe ``[B, num_probes, C]`` (non-finite values zeroed)."""
        flat = batch.flat.reshape(-1, self.max_params)
        arch = batch.arch.reshape(-1)
        x = self.probes()
        out = flat.new_zeros(flat.shape[0], x.shape[0], self.num_classes)
        for k in arch.unique().tolist():
            rows = (arch == k).nonzero()[:, 0]
            spec = self.specs[k]
            out = out.index_put((rows,), batched_logits(self._nets[k], spec, flat[rows, : spec.num_params], x))
        return torch.nan_to_num(out, nan=0.0, posinf=1e4, neginf=-1e4)

    def encode(self, batch) -> Tensor:
        """Penultimate representation ``[B, hidden[-1]]`` (invariant to function-preserving changes)."""
        p = self.responses(batch).softmax(-1)
        feats = [p.flatten(1), p.amax(-1)]
        if self.stat_tensors > 0:
            feats.append(self.stat_norm(batch.stat_feats.reshape(p.shape[0], -1).to(p.dtype)))
        return self.body(torch.cat(feats, 1))

    def forward(self, batch) -> Tensor:
        return self.head(self.encode(batch))

    def _apply(self, fn, recurse=True):  # keep the borrowed networks on the predictor's device
        super()._apply(fn, recurse)
        self._nets = [n._apply(fn) for n in self._nets]
        return self

    def __repr__(self) -> str:
        hp = self.hparams
        return (f"{self.__class__.__name__}(archs={len(hp['archs'])}, probes={hp['num_probes']}, "
                f"input_shape={tuple(hp['input_shape'])}, stat_tensors={hp['stat_tensors']}, hidden={hp['hidden']})")
