"""``ParameterGraph``: a network's parameters as a ``torch_geometric`` graph, and batching.

Fields (all tensors; ``N`` nodes, ``E`` edges, ``T`` optional leading checkpoint axis):

========================  ==================  ===================================================
``x``                     ``[N, 5]`` / ``[T, N, 5]``  per-neuron parameters, columns
                                              :data:`~weightspace.graph.vocab.NODE_FEATURES`
``edge_index``            ``[2, E]`` int32    ``in-neuron -> out-neuron`` (``.long()`` for layers
                                              that need int64)
``edge_attr``             ``[E, KH*KW]`` / ``[T, E, KH*KW]``  weights: kernels centred in a
                                              ``KH x KW`` grid, scalars at its centre
``edge_type``             ``[E]`` int8        :class:`~weightspace.graph.vocab.EdgeType`
``edge_kernel``           ``[E, 2]`` int32    true kernel size ``(kh, kw)`` of each edge (a
                                              broadcast view of one row when all are equal)
``node_type``             ``[N]``             :class:`~weightspace.graph.vocab.NodeType`
``node_layer``            ``[N]``             depth of the neuron (inputs 0)
``node_pos``              ``[N]``             index of non-permutable neurons (inputs, outputs,
                                              vocabulary rows, positions); -1 otherwise
``node_act``              ``[N]``             :class:`~weightspace.graph.vocab.Activation`
``kernel_shape``          ``[1, 2]``          the grid ``(KH, KW)``
``scalars``               ``[S]`` / ``[T, S]``  integer buffers (BatchNorm's ``num_batches_tracked``)
                                              as float64
========================  ==================  ===================================================

``param_layout`` (a tuple of ``(name, shape)``) records which architecture the graph came from, so
that writing it into another architecture fails with a message naming the first mismatch.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

__all__ = ["ParameterGraph", "batch_graphs", "resize_kernel_grid", "sample_rows"]

_PER_CHECKPOINT = ("x", "edge_attr", "scalars")
_COLLATE = threading.local()  # the edge-feature grid of the first graph of a Batch.from_data_list call


class ParameterGraph(Data):
    """A network as a graph: neurons are nodes, weights are edge features (see module docs).

    Made by :func:`weightspace.to_graph` or :meth:`weightspace.GraphSpec.to_graph`; a
    ``torch_geometric.data.Data``, so ``Batch.from_data_list`` and PyG loaders work for graphs
    with one kernel grid; graphs of architectures with different grids make
    ``Batch.from_data_list`` raise a ``ValueError`` naming :func:`batch_graphs`, which batches
    them. ``torch.load(path, weights_only=True)`` reads a saved graph.
    """

    def __cat_dim__(self, key: str, value, *args, **kwargs):
        if key == "edge_attr" and isinstance(value, Tensor):
            _COLLATE.grid = (tuple(self.grid), int(value.shape[-1]))  # the first graph of a collation
        if key in _PER_CHECKPOINT and isinstance(value, Tensor) and value.dim() == (3 if key != "scalars" else 2):
            return 1 if key != "scalars" else 1
        return super().__cat_dim__(key, value, *args, **kwargs)

    def __inc__(self, key: str, value, *args, **kwargs):
        if key == "edge_attr" and isinstance(value, Tensor):
            first = getattr(_COLLATE, "grid", None)
            if first is not None and first[1] != int(value.shape[-1]):
                raise ValueError(
                    f"Batch.from_data_list got parameter graphs with different kernel grids ({first[0]} and "
                    f"{tuple(self.grid)}): their edge features cannot be concatenated; batch them with "
                    "weightspace.graph.batch_graphs(graphs), which re-centres every graph's kernels in the "
                    "largest grid"
                )
        return super().__inc__(key, value, *args, **kwargs)

    @property
    def num_checkpoints(self) -> int | None:
        """``T`` for a graph holding a stack of checkpoints, else None."""
        x = self.x
        return int(x.shape[0]) if x is not None and x.dim() == 3 else None

    @property
    def grid(self) -> tuple[int, int]:
        ks = self.kernel_shape.reshape(-1, 2)
        return int(ks[0, 0]), int(ks[0, 1])

    def with_kernel_grid(self, kh: int, kw: int) -> ParameterGraph:
        """A copy whose edge features are re-centred in a ``kh x kw`` grid (pad or crop)."""
        g = self.clone()
        g.edge_attr = resize_kernel_grid(self.edge_attr, self.edge_kernel, self.grid, (kh, kw))
        g.kernel_shape = torch.tensor([[kh, kw]])
        return g


def register_safe_globals() -> None:
    """Allow ``torch.load(path, weights_only=True)`` to read a saved :class:`ParameterGraph`: the
    class and the ``torch_geometric`` storage classes of a ``Data`` (the graph's other attributes
    are tensors and plain tuples)."""
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import BaseStorage, EdgeStorage, GlobalStorage, NodeStorage

    torch.serialization.add_safe_globals([ParameterGraph, DataEdgeAttr, DataTensorAttr, GlobalStorage,
                                          BaseStorage, NodeStorage, EdgeStorage])


def kernel_slots(kh: int, kw: int, KH: int, KW: int) -> Tensor:
    """Flat positions of a ``kh x kw`` kernel centred in a ``KH x KW`` grid."""
    oh, ow = (KH - kh) // 2, (KW - kw) // 2
    r = torch.arange(kh)[:, None] + oh
    c = torch.arange(kw)[None, :] + ow
    return (r * KW + c).reshape(-1)


def resize_kernel_grid(edge_attr: Tensor, edge_kernel: Tensor, src: tuple[int, int], dst: tuple[int, int]) -> Tensor:
    """Move each edge's true kernel from a centred place in grid ``src`` to grid ``dst``.

    Args:
        edge_attr: ``[..., E, src_h*src_w]``.
        edge_kernel: ``[E, 2]`` true kernel sizes.
    Returns:
        ``[..., E, dst_h*dst_w]``; the true kernel values are moved exactly, the rest is zero.
    """
    if tuple(src) == tuple(dst):
        return edge_attr
    (SH, SW), (DH, DW) = src, dst
    E = edge_kernel.shape[0]
    Fs, Fd = SH * SW, DH * DW
    if E and (int(edge_kernel[:, 0].max()) > DH or int(edge_kernel[:, 1].max()) > DW):
        raise ValueError(f"kernel grid {dst} is smaller than the largest kernel of the graph")
    index = torch.full((E, Fd), E * Fs, dtype=torch.long)  # points at an appended zero
    for kh, kw in torch.unique(edge_kernel, dim=0).tolist():
        rows = ((edge_kernel[:, 0] == kh) & (edge_kernel[:, 1] == kw)).nonzero().squeeze(1)
        s, d = kernel_slots(kh, kw, SH, SW), kernel_slots(kh, kw, DH, DW)
        index[rows[:, None], d[None, :]] = rows[:, None] * Fs + s[None, :]
    flat = edge_attr.reshape(*edge_attr.shape[:-2], E * Fs)
    flat = torch.cat([flat, flat.new_zeros(*flat.shape[:-1], 1)], dim=-1)
    return flat[..., index.reshape(-1)].reshape(*edge_attr.shape[:-2], E, Fd)


def batch_graphs(graphs: Sequence[ParameterGraph]) -> Batch:
    """One ``torch_geometric`` ``Batch`` of graphs of any architectures.

    Edge features are re-centred into the largest kernel grid of the batch (each edge keeps its
    true kernel size in ``edge_kernel``).
    """
    if not graphs:
        raise ValueError("batch_graphs needs at least one graph")
    KH = max(g.grid[0] for g in graphs)
    KW = max(g.grid[1] for g in graphs)
    same = [g if g.grid == (KH, KW) else g.with_kernel_grid(KH, KW) for g in graphs]
    return Batch.from_data_list(same)


def sample_rows(g: ParameterGraph, num_rows: int | None = None, *, rows: Tensor | None = None,
                generator: torch.Generator | None = None) -> ParameterGraph:
    """A view of ``g`` for metanetworks with only some rows of its embedding tables (as NiNo
    samples rows per example): the other ``VOCAB`` nodes and every edge touching them are dropped.

    The converter keeps every row (``decode`` needs them all); the table dominates small language
    models (BERT-base: 30,522 x 768 of 110M weights), so a metanetwork reading many such graphs may
    read a sample instead. Kept rows keep their token id in ``node_pos``; the result records the
    kept node ids in ``sampled_nodes`` and cannot be decoded (it has fewer nodes than the spec).

    Args:
        g: a graph (one checkpoint or a ``[T, ...]`` stack).
        num_rows: rows to keep, drawn uniformly without replacement over all tables' rows.
        rows: instead, the node ids of the ``VOCAB`` rows to keep.
        generator: for the draw.
    """
    from .vocab import NodeType

    vocab = (g.node_type == NodeType.VOCAB).nonzero().squeeze(1)
    if rows is None:
        if num_rows is None:
            raise ValueError("pass num_rows or rows")
        pick = torch.randperm(vocab.numel(), generator=generator)[: max(0, int(num_rows))]
        rows = vocab[pick.sort().values]
    rows = torch.as_tensor(rows, dtype=torch.long)
    if rows.numel() and not bool((g.node_type[rows] == NodeType.VOCAB).all()):
        raise ValueError("rows must be node ids of VOCAB nodes")
    keep_node = g.node_type != NodeType.VOCAB
    keep_node[rows] = True
    new_id = torch.full((g.num_nodes,), -1, dtype=torch.long)
    kept = keep_node.nonzero().squeeze(1)
    new_id[kept] = torch.arange(kept.numel())
    src, dst = g.edge_index.long()
    keep_edge = (keep_node[src] & keep_node[dst]).nonzero().squeeze(1)
    out = ParameterGraph(
        x=g.x[..., kept, :],
        edge_index=new_id[g.edge_index[:, keep_edge].long()].to(g.edge_index.dtype),
        edge_attr=g.edge_attr[..., keep_edge, :],
        edge_type=g.edge_type[keep_edge],
        edge_kernel=(g.edge_kernel[:1].expand(keep_edge.numel(), 2) if g.edge_kernel.stride(0) == 0
                     else g.edge_kernel[keep_edge]),
        node_type=g.node_type[kept],
        node_layer=g.node_layer[kept],
        node_pos=g.node_pos[kept],
        node_act=g.node_act[kept],
        kernel_shape=g.kernel_shape,
        scalars=g.scalars,
        num_nodes=int(kept.numel()),
        sampled_nodes=kept,
    )
    return out
