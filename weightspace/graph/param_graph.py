"""``ParameterGraph``: a network's parameters as a ``torch_geometric`` graph, and batching.

Stored fields (all tensors; ``N`` nodes, ``E`` edges, ``V`` edge values, ``T`` optional leading
checkpoint axis):

========================  ==================  ===================================================
``x``                     ``[N, 5]`` / ``[T, N, 5]``  per-neuron parameters, columns
                                              :data:`~weightspace.graph.vocab.NODE_FEATURES`
``edge_segments``         ``[S, 9]`` int64    the edges ``in-neuron -> out-neuron`` as affine
                                              segments (a few rows per layer), see
                                              :mod:`weightspace.graph.edge_codec`
``edge_rest``             ``[2, X]`` int32    the edges that form no segment, explicitly
``edge_values``           ``[V]`` / ``[T, V]``  every edge's weights at its own kernel size
                                              ``kh x kw`` (row-major), concatenated in edge order:
                                              ``V = sum_e kh_e * kw_e`` (one value per dense weight)
``kernel_runs``           ``[R, 3]`` int64    ``(count, kh, kw)``: the edges, in order, as runs of
                                              one kernel size (``sum count = E``)
``edge_type``             ``[E]`` int8        :class:`~weightspace.graph.vocab.EdgeType`
``node_type``             ``[N]``             :class:`~weightspace.graph.vocab.NodeType`
``node_layer``            ``[N]``             depth of the neuron (inputs 0)
``node_pos``              ``[N]``             index of non-permutable neurons (inputs, outputs,
                                              vocabulary rows, positions); -1 otherwise
``node_act``              ``[N]``             :class:`~weightspace.graph.vocab.Activation`
``kernel_shape``          ``[1, 2]``          the grid ``(KH, KW)`` of the dense view (by default
                                              the largest kernel of the graph)
``scalars``               ``[S]`` / ``[T, S]``  integer buffers (BatchNorm's ``num_batches_tracked``)
                                              as float64
========================  ==================  ===================================================

Derived on demand (properties, not stored):

- ``edge_index`` ``[2, E]`` int32: ``in-neuron -> out-neuron`` (``.long()`` for layers that need
  int64), decoded from ``edge_segments`` on first access and cached outside the stored fields, per
  segment table: every graph of one :class:`~weightspace.graph.GraphSpec` shares one decoded tensor
  (treat it as read-only), and a batch decodes its own once. Assigning an ``edge_index`` stores it
  explicitly (and drops the segments); graphs saved with a stored ``edge_index`` load and work as
  before. :meth:`ParameterGraph.compress_edges` compresses such a graph.

- ``edge_attr`` ``[E, KH*KW]`` / ``[T, E, KH*KW]``: the dense view, each kernel centred in the
  ``KH x KW`` grid (scalars at its centre), zeros elsewhere: offset ``((KH-kh)//2, (KW-kw)//2)``.
  A zero-copy view when every kernel fills the grid (MLPs, transformers); otherwise materialized at
  each access (read it once per step). Assigning a dense tensor stores its true kernels.
- ``edge_kernel`` ``[E, 2]`` int32: each edge's kernel size (a broadcast view when all are equal).
- ``edge_value_ptr`` ``[E + 1]``: where each edge's values start in ``edge_values``.

The dense view costs ``E * KH * KW`` floats: a ResNet-18 with a 7x7 stem has 1.9 M edges, so 49
floats per edge (8.7x its parameter bytes) against ``V = P`` values stored. The structure costs one
byte per edge (``edge_type``) plus the segment table (37 rows for a ResNet-18, 86 for a ResNet-50)
instead of eight more bytes per edge for a stored int32 ``edge_index``. Batches pad to the
largest grid of the batch, nowhere else. Graphs saved before this layout (``edge_attr`` and
``edge_kernel`` stored) still load and work: every accessor reads the stored tensors then.

``param_layout`` (a tuple of ``(name, shape)``) records which architecture the graph came from, so
that writing it into another architecture fails with a message naming the first mismatch.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from .edge_codec import SEGMENT_COLUMNS, SEGMENT_NODE_COLUMNS, compress_edges, edge_index_of

__all__ = [
    "ParameterGraph",
    "batch_graphs",
    "resize_kernel_grid",
    "sample_rows",
    "pad_kernels",
    "unpad_kernels",
    "kernel_runs_of",
    "kernels_of_runs",
]

_PER_CHECKPOINT = ("x", "edge_attr", "scalars")
_COLLATE = threading.local()  # the edge-feature grid of the first graph of a Batch.from_data_list call


# ----------------------------------------------------------------------------- kernel runs
def merge_runs(runs: Tensor) -> list[tuple[int, int, int]]:
    """``kernel_runs`` as a list of ``(count, kh, kw)`` with adjacent runs of one size merged (a
    batch of graphs of one architecture concatenates the same runs many times)."""
    out: list[list[int]] = []
    for n, kh, kw in runs.reshape(-1, 3).tolist():
        if n == 0:
            continue
        if out and out[-1][1] == kh and out[-1][2] == kw:
            out[-1][0] += n
        else:
            out.append([n, kh, kw])
    return [tuple(r) for r in out]  # type: ignore[misc]


def kernel_runs_of(edge_kernel: Tensor) -> Tensor:
    """Run-length encoding ``[R, 3]`` (count, kh, kw) of per-edge kernel sizes ``[E, 2]``."""
    ek = edge_kernel.reshape(-1, 2).long()
    E = int(ek.shape[0])
    if E == 0:
        return torch.zeros(0, 3, dtype=torch.long)
    if edge_kernel.stride(0) == 0:  # a broadcast view: one size
        return torch.tensor([[E, int(ek[0, 0]), int(ek[0, 1])]], dtype=torch.long)
    change = torch.ones(E, dtype=torch.bool)
    change[1:] = (ek[1:] != ek[:-1]).any(1)
    starts = change.nonzero().squeeze(1)
    counts = torch.diff(torch.cat([starts, torch.tensor([E])]))
    return torch.cat([counts[:, None], ek[starts]], 1)


def kernels_of_runs(runs: Tensor) -> Tensor:
    """Per-edge kernel sizes ``[E, 2]`` int32 from ``kernel_runs`` (a broadcast view of one row
    when every edge has the same size)."""
    rl = merge_runs(runs)
    E = sum(r[0] for r in rl)
    if len(rl) <= 1:
        kh, kw = (rl[0][1], rl[0][2]) if rl else (1, 1)
        return torch.tensor([[kh, kw]], dtype=torch.int32, device=runs.device).expand(E, 2)
    r = torch.tensor(rl, dtype=torch.long, device=runs.device)
    return torch.repeat_interleave(r[:, 1:].to(torch.int32), r[:, 0], dim=0)


def value_ptr(runs: Tensor) -> Tensor:
    """``[E + 1]`` int64: edge ``e``'s values are ``edge_values[..., ptr[e]:ptr[e+1]]``."""
    r = runs.reshape(-1, 3).long()
    sizes = torch.repeat_interleave(r[:, 1] * r[:, 2], r[:, 0])
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])


def _max_kernel(rl: list[tuple[int, int, int]]) -> tuple[int, int]:
    return (max([r[1] for r in rl] + [1]), max([r[2] for r in rl] + [1]))


def pad_kernels(values: Tensor, runs: Tensor, grid: tuple[int, int]) -> Tensor:
    """True-size edge values -> the dense ``edge_attr`` layout: each kernel centred in ``grid``.

    Args:
        values: ``[..., V]`` (``edge_values``).
        runs: ``[R, 3]`` ``kernel_runs``.
        grid: ``(KH, KW)``, at least the largest kernel.
    Returns:
        ``[..., E, KH*KW]``: a view of ``values`` when every kernel is ``KH x KW``, else a new
        tensor (differentiable) with zeros outside the true kernels.
    """
    KH, KW = int(grid[0]), int(grid[1])
    batch = values.shape[:-1]
    rl = merge_runs(runs)
    E = sum(r[0] for r in rl)
    kh_max, kw_max = _max_kernel(rl)
    if kh_max > KH or kw_max > KW:
        raise ValueError(f"kernel grid {(KH, KW)} is smaller than the largest kernel of the graph "
                         f"({kh_max}x{kw_max}); pick a grid of at least that size")
    if not rl or (len(rl) == 1 and (rl[0][1], rl[0][2]) == (KH, KW)):
        return values.reshape(*batch, E, KH * KW)
    out = values.new_zeros(*batch, E, KH, KW)
    e0 = v0 = 0
    for n, kh, kw in rl:
        oh, ow = (KH - kh) // 2, (KW - kw) // 2
        out[..., e0 : e0 + n, oh : oh + kh, ow : ow + kw] = values[..., v0 : v0 + n * kh * kw].reshape(*batch, n, kh, kw)
        e0, v0 = e0 + n, v0 + n * kh * kw
    return out.view(*batch, E, KH * KW)


def unpad_kernels(dense: Tensor, runs: Tensor, grid: tuple[int, int]) -> Tensor:
    """Inverse of :func:`pad_kernels`: ``[..., E, KH*KW]`` -> ``[..., V]`` (the true kernel
    entries; whatever lies outside them is dropped). Differentiable."""
    KH, KW = int(grid[0]), int(grid[1])
    batch = dense.shape[:-2]
    rl = merge_runs(runs)
    E = sum(r[0] for r in rl)
    if dense.shape[-1] != KH * KW or dense.shape[-2] != E:
        raise ValueError(f"dense edge features have shape {tuple(dense.shape)}; expected [..., {E}, {KH * KW}] "
                         f"(E edges, a {KH}x{KW} grid)")
    kh_max, kw_max = _max_kernel(rl)
    if kh_max > KH or kw_max > KW:
        raise ValueError(f"kernel grid {(KH, KW)} is smaller than the largest kernel of the graph ({kh_max}x{kw_max})")
    if not rl or (len(rl) == 1 and (rl[0][1], rl[0][2]) == (KH, KW)):
        return dense.reshape(*batch, E * KH * KW)
    d4 = dense.reshape(*batch, E, KH, KW)
    parts, e0 = [], 0
    for n, kh, kw in rl:
        oh, ow = (KH - kh) // 2, (KW - kw) // 2
        parts.append(d4[..., e0 : e0 + n, oh : oh + kh, ow : ow + kw].reshape(*batch, n * kh * kw))
        e0 += n
    return torch.cat(parts, dim=-1)


def edge_value_index(runs: Tensor, edges: Tensor) -> Tensor:
    """Positions in ``edge_values`` of the values of ``edges`` (concatenated in that order)."""
    ptr = value_ptr(runs)
    edges = edges.long()
    start, size = ptr[edges], ptr[edges + 1] - ptr[edges]
    first = torch.repeat_interleave(start - torch.cat([size.new_zeros(1), size.cumsum(0)[:-1]]), size)
    return first + torch.arange(int(size.sum()))


# ----------------------------------------------------------------------------- the graph
class ParameterGraph(Data):
    """A network as a graph: neurons are nodes, weights are edge features (see module docs).

    Made by :func:`weightspace.to_graph` or :meth:`weightspace.GraphSpec.to_graph`; a
    ``torch_geometric.data.Data``, so ``Batch.from_data_list`` and PyG's ``DataLoader`` batch
    graphs of any architectures (``edge_values`` are concatenated; a batch's dense ``edge_attr``
    uses the largest grid of the batch). :func:`batch_graphs` is the fast path and also gives
    every graph of the batch the same ``kernel_shape`` row. ``torch.load(path, weights_only=True)``
    reads a saved graph.
    """

    def __cat_dim__(self, key: str, value, *args, **kwargs):
        if key in ("edge_values", "edge_rest"):
            return -1
        if key == "edge_segments":
            return 0
        if key == "edge_attr" and isinstance(value, Tensor):  # graphs saved in the dense layout
            _COLLATE.grid = (tuple(self.grid), int(value.shape[-1]))  # the first graph of a collation
        if key in _PER_CHECKPOINT and isinstance(value, Tensor) and value.dim() == (3 if key != "scalars" else 2):
            return 1
        return super().__cat_dim__(key, value, *args, **kwargs)

    def __inc__(self, key: str, value, *args, **kwargs):
        if key == "edge_attr" and isinstance(value, Tensor):
            first = getattr(_COLLATE, "grid", None)
            if first is not None and first[1] != int(value.shape[-1]):
                raise ValueError(
                    f"Batch.from_data_list got parameter graphs in the dense layout with different kernel grids "
                    f"({first[0]} and {tuple(self.grid)}): their edge features cannot be concatenated; batch them "
                    "with weightspace.graph.batch_graphs(graphs), which re-centres every graph's kernels in the "
                    "largest grid"
                )
        if key in ("edge_values", "kernel_runs"):
            return 0
        if key == "edge_rest":
            return self.num_nodes
        if key == "edge_segments":  # the node offset moves each segment's first source and target
            inc = torch.zeros(len(SEGMENT_COLUMNS), dtype=value.dtype, device=value.device)
            inc[list(SEGMENT_NODE_COLUMNS)] = self.num_nodes
            return inc
        return super().__inc__(key, value, *args, **kwargs)

    # ------------------------------------------------------------------ edges
    @property
    def edge_index(self) -> Tensor | None:
        """``[2, E]`` int32 ``in-neuron -> out-neuron``: the stored tensor, or decoded from
        ``edge_segments`` (cached; see module docs)."""
        st = self._store
        if "edge_segments" in st:
            return edge_index_of(st["edge_segments"], st["edge_rest"])
        return st["edge_index"] if "edge_index" in st else None

    @edge_index.setter
    def edge_index(self, value: Tensor | None) -> None:
        st = self._store
        st.pop("edge_segments", None)
        st.pop("edge_rest", None)
        if value is None:
            st.pop("edge_index", None)
        else:
            st["edge_index"] = value

    @property
    def edges_compressed(self) -> bool:
        """Whether the edges are stored as segments (``edge_segments``, ``edge_rest``) rather than
        as an ``edge_index`` tensor."""
        return "edge_segments" in self._store

    def compress_edges(self) -> ParameterGraph:
        """This graph with its edges stored as segments: itself when they already are, else a shallow
        copy whose stored ``edge_index`` is replaced by ``edge_segments`` and ``edge_rest`` (the
        other tensors are shared)."""
        if self.edges_compressed or "edge_index" not in self._store:
            return self
        g = copy.copy(self)
        st = g._store
        seg, rest = compress_edges(st["edge_index"])
        del st["edge_index"]
        st["edge_segments"], st["edge_rest"] = seg, rest
        return g

    # ------------------------------------------------------------------ layout
    @property
    def true_size(self) -> bool:
        """Whether the graph stores ``edge_values`` (every kernel at its own size); False for a graph
        saved in the older dense layout (``edge_attr`` stored)."""
        return "edge_values" in self._store

    @property
    def edge_attr(self) -> Tensor | None:
        """The dense view ``[..., E, KH*KW]`` at :attr:`grid` (see module docs)."""
        st = self._store
        if "edge_values" in st:
            return pad_kernels(st["edge_values"], st["kernel_runs"], self.grid)
        return st["edge_attr"] if "edge_attr" in st else None

    @edge_attr.setter
    def edge_attr(self, value: Tensor | None) -> None:
        st = self._store
        if value is not None and "kernel_runs" in st:
            grid = self.grid
            if value.shape[-1] != grid[0] * grid[1]:
                raise ValueError(f"edge_attr has {value.shape[-1]} features per edge, the graph's grid {grid} has "
                                 f"{grid[0] * grid[1]}; set kernel_shape first (or assign edge_values)")
            st["edge_values"] = unpad_kernels(value, st["kernel_runs"], grid)
            return
        if value is None:
            for k in ("edge_attr", "edge_values"):
                if k in st:
                    del st[k]
            return
        st["edge_attr"] = value  # a graph built from a dense tensor (no kernel_runs yet)

    @property
    def edge_kernel(self) -> Tensor | None:
        """``[E, 2]`` int32 true kernel size of every edge."""
        st = self._store
        if "kernel_runs" in st:
            return kernels_of_runs(st["kernel_runs"])
        return st["edge_kernel"] if "edge_kernel" in st else None

    @edge_kernel.setter
    def edge_kernel(self, value: Tensor | None) -> None:
        st = self._store
        if "kernel_runs" in st or "edge_values" in st:
            if value is not None:
                raise ValueError("edge_kernel of a true-size graph is derived from kernel_runs; assign kernel_runs")
            return
        if value is None:
            st.pop("edge_kernel", None)
        else:
            st["edge_kernel"] = value

    @property
    def edge_value_ptr(self) -> Tensor:
        """``[E + 1]``: edge ``e``'s values are ``edge_values[..., ptr[e]:ptr[e+1]]``."""
        return value_ptr(self._runs())

    def _runs(self) -> Tensor:
        st = self._store
        return st["kernel_runs"] if "kernel_runs" in st else kernel_runs_of(st["edge_kernel"])

    @property
    def num_checkpoints(self) -> int | None:
        """``T`` for a graph holding a stack of checkpoints, else None."""
        x = self.x
        return int(x.shape[0]) if x is not None and x.dim() == 3 else None

    @property
    def grid(self) -> tuple[int, int]:
        """The dense view's grid ``(KH, KW)``: the largest ``kernel_shape`` row (a batch's rows differ
        when its graphs do)."""
        ks = self.kernel_shape.reshape(-1, 2)
        return int(ks[:, 0].max()), int(ks[:, 1].max())

    def with_kernel_grid(self, kh: int, kw: int) -> ParameterGraph:
        """A graph whose dense ``edge_attr`` view uses a ``kh x kw`` grid (the stored values are
        shared, not copied; a dense-layout graph is re-centred, padded or cropped)."""
        if not self.true_size:
            g = self.clone()
            g.edge_attr = resize_kernel_grid(self.edge_attr, self.edge_kernel, self.grid, (kh, kw))
            g.kernel_shape = torch.tensor([[kh, kw]])
            return g
        mh, mw = _max_kernel(merge_runs(self.kernel_runs))
        if mh > kh or mw > kw:
            raise ValueError(f"kernel grid {(kh, kw)} is smaller than the largest kernel of the graph ({mh}x{mw})")
        g = copy.copy(self)
        g.kernel_shape = torch.tensor([[kh, kw]])
        return g

    def to_true_size(self) -> ParameterGraph:
        """This graph in the true-size layout (``edge_values`` + ``kernel_runs``): itself when it is
        already; a converted copy for a graph saved in the dense layout."""
        if self.true_size:
            return self
        g = copy.copy(self)
        st = g._store
        runs = kernel_runs_of(st["edge_kernel"])
        values = unpad_kernels(st["edge_attr"], runs, self.grid)
        del st["edge_attr"], st["edge_kernel"]
        st["kernel_runs"], st["edge_values"] = runs, values
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
    """Move each edge's true kernel from a centred place in grid ``src`` to grid ``dst`` (dense
    ``edge_attr`` tensors; for a true-size graph use :meth:`ParameterGraph.with_kernel_grid`).

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

    The true-size values are concatenated as they are; every graph's ``kernel_shape`` is set to the
    largest grid of the batch, so ``batch.edge_attr`` is the dense ``[E, KH*KW]`` view with each
    edge's kernel centred in that grid (each edge keeps its true size in ``edge_kernel``). Graphs
    saved in the older dense layout are re-centred into that grid; graphs that store an
    ``edge_index`` batched with graphs that store segments are compressed first
    (:meth:`ParameterGraph.compress_edges`), since a batch holds one or the other.
    """
    if not graphs:
        raise ValueError("batch_graphs needs at least one graph")
    KH = max(g.grid[0] for g in graphs)
    KW = max(g.grid[1] for g in graphs)
    if any(g.true_size for g in graphs) and not all(g.true_size for g in graphs):
        graphs = [g.to_true_size() for g in graphs]
    if any(g.edges_compressed for g in graphs) and not all(g.edges_compressed for g in graphs):
        graphs = [g.compress_edges() for g in graphs]
    same = [g if g.grid == (KH, KW) and g.kernel_shape.reshape(-1, 2).shape[0] == 1 else g.with_kernel_grid(KH, KW)
            for g in graphs]
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

    g = g.to_true_size()
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
        kernel_runs=kernel_runs_of(g.edge_kernel[keep_edge]) if keep_edge.numel() else torch.zeros(0, 3,
                                                                                                     dtype=torch.long),
        edge_values=g.edge_values[..., edge_value_index(g.kernel_runs, keep_edge)],
        edge_type=g.edge_type[keep_edge],
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
