"""``GraphMetaNet``: the graph metanetwork over parameter graphs."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from weightspace.graph.param_graph import pad_kernels, resize_kernel_grid

from ._utils import batch_grid, graph_index, num_graphs, reset_all
from .encoders import NeuronEncoder, WeightEncoder
from .gmn_conv import GMNConv
from .mlp import MLP, FeatureNormalizer
from .readout import EdgeReadout, GraphReadout, NodeReadout
from .statnn import NUM_STATS, tensor_statistics

__all__ = ["GraphMetaNet"]


class GraphMetaNet(nn.Module):
    r"""A graph metanetwork: encoders, ``L`` edge-updating layers, invariant and equivariant readouts.

    Follows Graph Metanetworks (Lim et al., "Graph Metanetworks for Processing Diverse Neural
    Architectures", ICLR 2024) and neural-graph GNNs (Kofinas et al., ICLR 2024). It takes a
    :class:`~weightspace.ParameterGraph` or a batch of them of any mix of architectures (from
    :func:`weightspace.graph.batch_graphs` or ``Batch.from_data_list``); kernels are re-centred into
    the model's ``kernel_grid``.

    * :meth:`forward` -> ``[B, out]``: invariant to permutations of hidden neurons.
    * :meth:`encode` -> ``[B, embed_dim]``: the graph-level representation (for clustering/retrieval).
    * :meth:`node_outputs` / :meth:`edge_outputs` -> ``[N, node_out]`` / ``[E, edge_out]``:
      equivariant heads (present when ``node_out`` / ``edge_out`` > 0).

    Args:
        hidden: node and edge state width ``D``.
        num_layers: message-passing layers.
        out: graph-level outputs.
        embed_dim: width of the graph embedding.
        kernel_grid: ``(KH, KW)`` the edge encoder expects; larger kernels raise ``ValueError``.
        node_out, edge_out: widths of the equivariant heads (0: none).
        dropout: dropout in node updates.
        max_positions: size of the learned table of input/output neuron positions.
        layer_bins: relative-depth bins of the graph readout (:class:`GraphReadout`; 0: global
            pools only).
        stat_tensors: when ``> 0``, the graph embedding is fused with StatNN's per-tensor statistics
            (:func:`~weightspace.nn.tensor_statistics`, padded to this many tensors, standardized by
            :meth:`fit_normalizer`): quantiles of every layer's weights are permutation invariant, so
            the hybrid stays invariant; the message-passing path adds what statistics cannot see.

    Shapes:
        - input: a batch with ``x [N, 5]``, ``edge_index [2, E]``, ``edge_attr [E, kh*kw]``,
          ``edge_type``, ``edge_kernel``, ``node_type``, ``node_layer``, ``node_pos``, ``node_act``,
          ``batch [N]``
        - output: ``[B, out]``
    """

    def __init__(self, hidden: int = 64, num_layers: int = 4, out: int = 1, embed_dim: int = 64,
                 kernel_grid: tuple[int, int] = (5, 5), node_out: int = 0, edge_out: int = 0,
                 dropout: float = 0.0, max_positions: int = 1024, stat_tensors: int = 0,
                 layer_bins: int = 0) -> None:
        super().__init__()
        self.hparams: dict[str, Any] = dict(hidden=hidden, num_layers=num_layers, out=out, embed_dim=embed_dim,
                                            kernel_grid=[int(k) for k in kernel_grid], node_out=node_out,
                                            edge_out=edge_out, dropout=dropout, max_positions=max_positions,
                                            stat_tensors=stat_tensors, layer_bins=layer_bins)
        self.kernel_grid = (int(kernel_grid[0]), int(kernel_grid[1]))
        self.node_enc = NeuronEncoder(hidden, max_positions=max_positions)
        self.edge_enc = WeightEncoder(hidden, self.kernel_grid[0] * self.kernel_grid[1])
        self.convs = nn.ModuleList(GMNConv(hidden, dropout) for _ in range(num_layers))
        self.readout = GraphReadout(hidden, embed_dim, layer_bins=layer_bins)
        self.stat_tensors = int(stat_tensors)
        if self.stat_tensors > 0:
            stat_dim = NUM_STATS * self.stat_tensors + 1
            self.stat_norm = FeatureNormalizer(stat_dim)
            self.stat_mlp = MLP([stat_dim, 2 * embed_dim, embed_dim])
            self.fuse = nn.Sequential(nn.SiLU(), nn.Linear(2 * embed_dim, embed_dim))
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, out))
        self.node_head = NodeReadout(hidden, node_out) if node_out > 0 else None
        self.edge_head = EdgeReadout(hidden, edge_out) if edge_out > 0 else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_all(self)

    def _edge_attr(self, batch) -> Tensor:
        """The batch's weights as ``[E, KH*KW]`` in this network's grid: true-size graphs are padded
        straight into it (once per forward), dense-layout graphs re-centred."""
        if "edge_values" in batch:
            ev = batch.edge_values
            if ev.dim() != 1:
                raise ValueError(f"GraphMetaNet takes one checkpoint per graph (edge_values [V]), got "
                                 f"{tuple(ev.shape)}")
            return pad_kernels(ev, batch.kernel_runs, self.kernel_grid)
        grid = batch_grid(batch)
        ea = batch.edge_attr
        if grid == self.kernel_grid:
            return ea
        if ea.dim() != 2:
            raise ValueError(f"GraphMetaNet takes one checkpoint per graph (edge_attr [E, F]), got {tuple(ea.shape)}")
        return resize_kernel_grid(ea, batch.edge_kernel, grid, self.kernel_grid)

    def _streamed(self, batch) -> bool:
        """Without gradients, graphs of more than ``GMNConv.chunk_edges`` edges are streamed."""
        return not torch.is_grad_enabled() and batch.edge_index.shape[1] > GMNConv.chunk_edges

    def embed(self, batch) -> tuple[Tensor, Tensor]:
        """Node and edge states after the last layer: ``([N, D], [E, D])`` (equivariant)."""
        if batch.x.dim() != 2:
            raise ValueError(f"GraphMetaNet takes one checkpoint per graph (x [N, 5]), got {tuple(batch.x.shape)}")
        if self._streamed(batch):
            return self._embed_streamed(batch, keep_edges=True)
        b = graph_index(batch)
        h = self.node_enc(batch.x, batch.node_type, batch.node_act, batch.node_layer, batch.node_pos)
        e = self.edge_enc(self._edge_attr(batch), batch.edge_index, batch.edge_type, batch.node_layer, b)
        for conv in self.convs:
            h, e = conv(h, e, batch.edge_index)
        return h, e

    def _embed_streamed(self, batch, keep_edges: bool, pools=None) -> tuple[Tensor, Tensor | None]:
        """:meth:`embed` without gradients, edge chunk by edge chunk (same result): the edge encoder
        runs per chunk inside the first layer, the edge states live in one ``[E, D]`` buffer updated in
        place (none at all with one layer), and the last layer's edge states go, chunk by chunk, to
        ``pools`` (:meth:`GraphReadout.edge_pools`) and are only kept when ``keep_edges``."""
        b = graph_index(batch)
        ei = batch.edge_index
        h = self.node_enc(batch.x, batch.node_type, batch.node_act, batch.node_layer, batch.node_pos)
        n, D = h.shape
        E, c = ei.shape[1], GMNConv.chunk_edges
        enc = self.edge_enc.chunked(self._edge_attr(batch), ei, batch.edge_type, batch.node_layer, b, c)
        L = len(self.convs)
        buf = h.new_empty(E, D) if keep_edges or L > 1 else None
        scratch = h.new_empty(4, min(c, E), D)
        if L:
            deg_in = torch.bincount(ei[1], minlength=n).to(h.dtype)
            deg_out = torch.bincount(ei[0], minlength=n).to(h.dtype)
        for layer in range(max(L, 1)):
            conv = self.convs[layer] if L else None
            if conv is not None:
                tables = conv._node_tables(h)
                fwd, bwd = h.new_zeros(n, D), h.new_zeros(n, D)
            last = layer == max(L, 1) - 1
            for s in range(0, E, c):
                t = min(s + c, E)
                src, dst = ei[0, s:t].long(), ei[1, s:t].long()
                ec = enc(s, t, dst, out=None if buf is None else buf[s:t]) if layer == 0 else buf[s:t]
                if conv is not None:
                    ec = conv._edge_chunk(ec, src, dst, tables, fwd, bwd, scratch, inplace=True)
                if last and pools is not None:
                    pools.add(ec, src, dst)
            if conv is not None:
                h = conv._node_update(h, fwd, bwd, deg_in, deg_out)
        return h, buf if keep_edges else None

    def stat_features(self, batch) -> Tensor:
        """``[B, 7*stat_tensors+1]`` raw statistics (the cached ``stat_feats`` when present)."""
        f = getattr(batch, "stat_feats", None)
        if f is not None:
            return f.reshape(num_graphs(batch), -1)
        graphs = batch.to_data_list() if hasattr(batch, "to_data_list") else [batch]
        return torch.stack([tensor_statistics(g, self.stat_tensors) for g in graphs]).to(batch.x.device)

    def fit_normalizer(self, feats: Tensor) -> None:
        """Fit the standardization of the statistics path on training features ``[B, F]``."""
        if self.stat_tensors <= 0:
            raise RuntimeError("this GraphMetaNet was built with stat_tensors=0")
        self.stat_norm.fit(feats)

    def encode(self, batch) -> Tensor:
        """Graph-level embedding ``[B, embed_dim]``, invariant to hidden-neuron permutations.

        Without gradients, a graph (batch) of more than ``GMNConv.chunk_edges`` edges is embedded
        in edge chunks (same result): with ``L`` layers the only per-edge tensor is one ``[E, D]``
        buffer of edge states (none for ``L = 1``), the last layer's states go straight to the
        readout's pools."""
        if self._streamed(batch) and batch.x.dim() == 2:  # the readout pools edge chunks as they come
            pools = self.readout.edge_pools(graph_index(batch), num_graphs(batch), batch.node_layer,
                                            self.hparams["hidden"], self.readout.mlp[0].weight.dtype)
            h, _ = self._embed_streamed(batch, keep_edges=False, pools=pools)
            z = self.readout.pooled(h, pools)
        else:
            h, e = self.embed(batch)
            z = self.readout(h, e, batch.edge_index, graph_index(batch), num_graphs(batch), batch.node_layer)
        if self.stat_tensors > 0:
            s = self.stat_mlp(self.stat_norm(self.stat_features(batch).to(z.dtype)))
            z = self.fuse(torch.cat([z, s], dim=-1))
        return z

    def forward(self, batch) -> Tensor:
        return self.head(self.encode(batch))

    def node_outputs(self, batch) -> Tensor:
        """Equivariant per-neuron outputs ``[N, node_out]``."""
        if self.node_head is None:
            raise RuntimeError("this GraphMetaNet was built with node_out=0")
        return self.node_head(self.embed(batch)[0])

    def edge_outputs(self, batch) -> Tensor:
        """Equivariant per-weight outputs ``[E, edge_out]``."""
        if self.edge_head is None:
            raise RuntimeError("this GraphMetaNet was built with edge_out=0")
        h, e = self.embed(batch)
        return self.edge_head(h, e, batch.edge_index)

    def __repr__(self) -> str:
        hp = self.hparams
        return (f"{self.__class__.__name__}(hidden={hp['hidden']}, layers={hp['num_layers']}, out={hp['out']}, "
                f"embed_dim={hp['embed_dim']}, kernel_grid={tuple(hp['kernel_grid'])}, node_out={hp['node_out']}, "
                f"edge_out={hp['edge_out']}, stat_tensors={hp['stat_tensors']}, layer_bins={hp['layer_bins']})")
