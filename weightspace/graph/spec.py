"""``GraphSpec``: the structure of one architecture's parameter graph and its index maps.

Built once by tracing (:func:`GraphSpec.from_module`), then every checkpoint of that architecture
is encoded and decoded with slice copies and one gather — batched over any leading axes (``[T, ...]``
trajectories) and differentiable.

Graph slots: ``[x.flatten() (N*5), edge_values (V)]``; every edge holds its kernel at its own size, so
``V`` is the number of weights plus one constant per structural edge. The maps are kept as
``segments`` (runs of consecutive parameter scalars that land on consecutive slots: every dense
layer) and one gather for the rest (node features, structural constants, permuted blocks), so a
spec costs little beyond its edge structure; the full index maps are built on request. The edge
structure itself is stored compressed (:mod:`weightspace.graph.edge_codec`: affine segments, one per
dense block, explicit edges for the rest), computed once per spec and shared by every graph made
from it; :attr:`GraphSpec.edge_index` decodes it on request (cached).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .edge_codec import compress_edge_lists, concat_segments, edge_index_of, segment_edges
from .errors import ArchitectureMismatchError, NonFiniteWeightsError
from .param_graph import (
    ParameterGraph,
    kernel_slots,
    merge_runs,
    pad_kernels,
    resize_kernel_grid,
)
from .signature import first_difference
from .trace import trace_structure
from .vocab import NODE_FEATURES, Activation

__all__ = ["GraphSpec"]

_ZERO, _ONE, _MINUS_ONE = 0, 1, 2  # offsets of the constants appended after the parameters

#: Storage types of the per-edge structure: one byte per edge (``edge_type``) plus the weights at
#: their true size; ``edge_index`` is stored as affine segments (``edge_segments``, a few rows per
#: layer) and derived on access as int32 ``[2, E]``, which works with indexing and ``index_add_``;
#: pass ``edge_index.long()`` to layers that insist on int64. Kernel sizes are stored per run of
#: edges (``kernel_runs``); ``edge_kernel`` (derived) is a broadcast view of one row when every edge
#: has the same kernel size.
EDGE_INDEX_DTYPE = torch.int32
EDGE_TYPE_DTYPE = torch.int8
EDGE_KERNEL_DTYPE = torch.int32
_COPY_PLAN_MIN = 1 << 18  # graph slots (times checkpoints) from which encode/decode copy runs as slices
_COPY_RUN_MIN = 256  # the shortest run of consecutive scalars copied as one slice


@dataclass(frozen=True, eq=False)
class GraphSpec:
    """Structure and encode/decode index maps of one architecture's parameter graph.

    Attributes:
        keys: every state-dict key, in ``state_dict()`` order (tied tensors included).
        names / shapes / dtypes / offsets: the floating-point tensors stored in the graph
            (canonical keys), and where each starts in the flat parameter vector.
        scalar_names / scalar_dtypes: integer buffers stored in ``ParameterGraph.scalars``.
        aliases: tied key -> canonical key.
        node_*, edge_type: the graph's structure (see :class:`ParameterGraph`).
        edge_segments / edge_rest: the edges, compressed (:mod:`weightspace.graph.edge_codec`);
            :attr:`edge_index` is the decoded ``[2, E]`` int32 tensor (built on request, cached).
        kernel_runs: ``[R, 3]`` ``(count, kh, kw)``, the edges as runs of one kernel size;
            :attr:`edge_kernel` is the per-edge ``[E, 2]`` view.
        kernel_shape: the grid ``(KH, KW)`` of the dense ``edge_attr`` view: the largest kernel.
        node_groups: label of the operation that made a group of neurons -> their node ids
            (``"fc1"``, ``"layer1.0.conv2"``, ``"input:x"``, ``"output"``, ...).
        num_values: ``V``, the length of ``edge_values``.
        segments: ``[S, 3]`` ``(graph slot, parameter position, length)``: runs copied as slices.
        gather_slot / gather_src: every other graph slot and its position in ``[theta, 0, 1, -1]``
            (int32 unless huge).
        signature: the structural signature, every non-tensor argument that changes the function
            (strides, padding, pooling, eps, activation parameters, constants; see
            :mod:`weightspace.graph.signature`), a tuple of plain values.

    Index maps built on request and cached: :attr:`value_encode_index` / :attr:`value_decode_index`
    (the true-size layout) and :attr:`encode_index` / :attr:`decode_index` (the dense ``edge_attr``
    layout, ``[N*5 + E*KH*KW]`` and ``[P]``, for code that indexes the dense view).
    """

    keys: tuple[str, ...]
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    offsets: tuple[int, ...]
    scalar_names: tuple[str, ...]
    scalar_dtypes: tuple[torch.dtype, ...]
    aliases: dict[str, str]
    dtype: torch.dtype
    node_type: Tensor
    node_layer: Tensor
    node_pos: Tensor
    node_act: Tensor
    edge_segments: Tensor
    edge_rest: Tensor
    edge_type: Tensor
    kernel_runs: Tensor
    kernel_shape: tuple[int, int]
    node_groups: dict[str, Tensor]
    num_values: int
    segments: Tensor
    gather_slot: Tensor
    gather_src: Tensor
    _consts: Tensor = field(repr=False)
    signature: tuple = field(default=(), repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = self.num_nodes * len(NODE_FEATURES)
        self._cache.update(
            sizes=[torch.Size(s) for s in self.shapes],
            uniform=all(d == self.dtype for d in self.dtypes),
            split=[n, self.num_values],
            x_shape=(self.num_nodes, len(NODE_FEATURES)),
            runs=merge_runs(self.kernel_runs),
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_module(cls, model: nn.Module, example_input: Any = None, *, tracer: str = "auto") -> GraphSpec:
        """Trace ``model`` (see :mod:`weightspace.graph.trace`) and build its index maps.

        Args:
            model: the module; its weights are not read, only its structure and shapes.
            example_input: a tensor or tuple of tensors for one forward pass (shapes; export).
            tracer: ``"auto"`` (``torch.fx.symbolic_trace``, falling back to ``torch.export`` when
                that fails and ``example_input`` is given), ``"fx"`` or ``"export"``.

        Raises:
            UnsupportedModuleError: a module, operation or parameter use the converter cannot
                represent, naming its path.
        """
        s, canonical, tensors = trace_structure(model, example_input, tracer)
        scalar_set = set(s.scalars)
        names, shapes, dtypes, scalar_names, scalar_dtypes = [], [], [], [], []
        for k in dict.fromkeys(canonical.values()):
            t = tensors[k]
            if k in scalar_set:
                scalar_names.append(k)
                scalar_dtypes.append(t.dtype)
            elif t.is_floating_point():
                names.append(k)
                shapes.append(tuple(t.shape))
                dtypes.append(t.dtype)
            else:
                from .errors import UnsupportedModuleError

                raise UnsupportedModuleError(f"non-floating-point tensor {k!r} ({t.dtype}) cannot be stored",
                                             path=k)
        dtype = _common_dtype(dtypes)
        sizes = [math.prod(sh) for sh in shapes]
        offsets = [0]
        for n in sizes:
            offsets.append(offsets[-1] + n)
        P = offsets[-1]
        off = dict(zip(names, offsets))

        N = s.num_nodes
        Fn = len(NODE_FEATURES)
        n_x = N * Fn
        KH = max([b.kh for b in s.edge_blocks] + [1])
        KW = max([b.kw for b in s.edge_blocks] + [1])
        E = sum(int(b.src.numel()) for b in s.edge_blocks)
        V = sum(int(b.src.numel()) * b.kh * b.kw for b in s.edge_blocks)
        idt = torch.int32 if max(P + 3, n_x + V) < 2**31 else torch.long
        seen = torch.zeros(P, dtype=torch.bool)
        assigned = 0
        g_slot: list[Tensor] = []  # graph slots filled by the gather ...
        g_src: list[Tensor] = []  # ... and their positions in [theta, 0, 1, -1]
        x_written = torch.zeros(n_x, dtype=torch.bool)
        for nb in s.node_blocks:
            pos = nb.nodes.long() * Fn + nb.col
            vals = off[nb.param] + nb.index.long()
            g_slot.append(pos)
            g_src.append(vals)
            x_written[pos] = True
            seen[vals] = True
            assigned += int(vals.numel())
        zero = (~x_written).nonzero().squeeze(1)
        g_slot.append(zero)
        g_src.append(torch.full_like(zero, P + _ZERO))
        del x_written
        compressed: list[tuple[Tensor, Tensor]] = []  # each block's edges as affine segments
        edge_type = torch.empty(E, dtype=EDGE_TYPE_DTYPE)
        runs: list[list[int]] = []
        segments: list[tuple[int, int, int]] = []
        e0 = v0 = 0
        blocks, s.edge_blocks = s.edge_blocks, []
        while blocks:  # consume the blocks so that their index tensors are freed as we go
            eb = blocks.pop(0)
            n = int(eb.src.numel())
            K = eb.kh * eb.kw
            compressed.append(compress_edge_lists(eb.src, eb.dst))
            edge_type[e0 : e0 + n] = eb.etype if isinstance(eb.etype, torch.Tensor) else int(eb.etype)
            if runs and runs[-1][1:] == [eb.kh, eb.kw]:
                runs[-1][0] += n
            elif n:
                runs.append([n, eb.kh, eb.kw])
            base = n_x + v0
            if eb.param is None:  # structural edges: a constant at the kernel centre
                src = torch.full((n, K), P + _ZERO, dtype=torch.long)
                src[:, int(kernel_slots(1, 1, eb.kh, eb.kw))] = P + (_ONE if eb.value == 1.0 else _MINUS_ONE)
                g_slot.append(torch.arange(base, base + n * K))
                g_src.append(src.view(-1))
            elif eb.index is None:  # a contiguous range of the parameter, in edge order
                t0 = off[eb.param] + eb.offset
                if n * K >= _COPY_RUN_MIN:
                    segments.append((base, t0, n * K))
                else:
                    g_slot.append(torch.arange(base, base + n * K))
                    g_src.append(torch.arange(t0, t0 + n * K))
                seen[t0 : t0 + n * K] = True
                assigned += n * K
            else:
                vals = (off[eb.param] + eb.index.reshape(-1)).long()
                g_slot.append(torch.arange(base, base + n * K))
                g_src.append(vals)
                seen[vals] = True
                assigned += n * K
            e0 += n
            v0 += n * K
        if assigned != P or not bool(seen.all()):
            bad = int((~seen).nonzero()[0]) if not bool(seen.all()) else 0
            name = next(nm for nm, o, sz in zip(names, offsets, sizes) if o <= bad < o + sz)
            raise RuntimeError(f"internal error: the scalars of {name!r} are not stored exactly once")
        del seen
        edge_segments, edge_rest = concat_segments(compressed)
        return cls(
            keys=tuple(canonical.keys()),
            names=tuple(names),
            shapes=tuple(shapes),
            dtypes=tuple(dtypes),
            offsets=tuple(offsets[:-1]),
            scalar_names=tuple(scalar_names),
            scalar_dtypes=tuple(scalar_dtypes),
            aliases={k: c for k, c in canonical.items() if k != c},
            dtype=dtype,
            node_type=torch.tensor(s.node_type, dtype=torch.long),
            node_layer=torch.tensor(s.node_layer, dtype=torch.long),
            node_pos=torch.tensor(s.node_pos, dtype=torch.long),
            node_act=torch.tensor(s.node_act, dtype=torch.long),
            edge_segments=edge_segments,
            edge_rest=edge_rest,
            edge_type=edge_type,
            kernel_runs=torch.tensor(runs, dtype=torch.long).reshape(-1, 3),
            kernel_shape=(KH, KW),
            node_groups=dict(s.groups),
            num_values=V,
            segments=torch.tensor(segments, dtype=torch.long).reshape(-1, 3),
            gather_slot=torch.cat(g_slot).to(idt),
            gather_src=torch.cat(g_src).to(idt),
            signature=tuple(s.signature),
            _consts=torch.tensor([0.0, 1.0, -1.0], dtype=dtype),
        )

    # ------------------------------------------------------------------ sizes
    @property
    def num_nodes(self) -> int:
        return int(self.node_type.numel())

    @property
    def num_edges(self) -> int:
        return int(self.edge_type.numel())

    @property
    def num_params(self) -> int:
        """Number of floating-point scalars stored (every parameter and float buffer)."""
        return sum(math.prod(s) for s in self.shapes)

    @property
    def layout(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return tuple(zip(self.names, self.shapes)) + tuple((n, ()) for n in self.scalar_names)

    def __repr__(self) -> str:
        return (f"GraphSpec(nodes={self.num_nodes}, edges={self.num_edges}, params={self.num_params}, "
                f"tensors={len(self.names)}, kernel_grid={self.kernel_shape})")

    @property
    def edge_index(self) -> Tensor:
        """``[2, E]`` int32 ``in-neuron -> out-neuron``, decoded from :attr:`edge_segments` on first
        access and cached (shared with every graph of this spec; treat it as read-only)."""
        return edge_index_of(self.edge_segments, self.edge_rest)

    @property
    def edge_kernel(self) -> Tensor:
        """``[E, 2]`` int32 true kernel size of every edge (a broadcast view when all are equal)."""
        hit = self._cache.get("edge_kernel")
        if hit is None:
            from .param_graph import kernels_of_runs

            hit = self._cache["edge_kernel"] = kernels_of_runs(self.kernel_runs)
        return hit

    # ------------------------------------------------------------------ index maps (on request)
    @property
    def value_encode_index(self) -> Tensor:
        """``[N*5 + V]``: the position in ``[theta, 0, 1, -1]`` of every slot of
        ``[x.flatten(), edge_values]`` (int32 unless huge). Built on request and cached."""
        hit = self._cache.get("value_enc")
        if hit is None:
            n_x = self._cache["split"][0]
            idt = self.gather_src.dtype
            hit = torch.empty(n_x + self.num_values, dtype=idt)
            for g0, t0, length in self.segments.tolist():
                torch.arange(t0, t0 + length, dtype=idt, out=hit[g0 : g0 + length])
            hit[self.gather_slot.long()] = self.gather_src
            self._cache["value_enc"] = hit
        return hit

    @property
    def value_decode_index(self) -> Tensor:
        """``[P]``: the slot of ``[x.flatten(), edge_values]`` holding each parameter scalar."""
        hit = self._cache.get("value_dec")
        if hit is None:
            P = self.num_params
            idt = self.gather_src.dtype
            hit = torch.empty(P, dtype=idt)
            for g0, t0, length in self.segments.tolist():
                torch.arange(g0, g0 + length, dtype=idt, out=hit[t0 : t0 + length])
            params = self.gather_src < P
            hit[self.gather_src[params].long()] = self.gather_slot[params]
            self._cache["value_dec"] = hit
        return hit

    def dense_slots(self, slots: Tensor) -> Tensor:
        """Slots of ``[x.flatten(), edge_values]`` -> the same entries' slots in
        ``[x.flatten(), edge_attr.flatten()]`` (the dense view, grid :attr:`kernel_shape`)."""
        n_x = self._cache["split"][0]
        KH, KW = self.kernel_shape
        rl = self._cache["runs"]
        out = slots.long().clone()
        v = out[out >= n_x] - n_x
        if not rl:
            return out
        r = torch.tensor(rl, dtype=torch.long)
        v_start = torch.cat([r.new_zeros(1), (r[:, 0] * r[:, 1] * r[:, 2]).cumsum(0)])
        e_start = torch.cat([r.new_zeros(1), r[:, 0].cumsum(0)])
        run = torch.searchsorted(v_start[1:], v, right=True)
        kh, kw = r[run, 1], r[run, 2]
        local = v - v_start[run]
        K = kh * kw
        e = e_start[run] + local.div(K, rounding_mode="floor")
        k = local % K
        row, col = k.div(kw, rounding_mode="floor"), k % kw
        out[out >= n_x] = n_x + e * (KH * KW) + (row + (KH - kh) // 2) * KW + col + (KW - kw) // 2
        return out

    @property
    def encode_index(self) -> Tensor:
        """``[N*5 + E*KH*KW]``: the encode map of the dense layout (``[x.flatten(),
        edge_attr.flatten()]``), positions in ``[theta, 0, 1, -1]``; zero slots point at the 0.
        ``E * KH * KW`` entries: built on request, for code that indexes the dense view."""
        hit = self._cache.get("dense_enc")
        if hit is None:
            n_x, P = self._cache["split"][0], self.num_params
            KH, KW = self.kernel_shape
            enc = self.value_encode_index
            idt = torch.int32 if max(P + 3, n_x + self.num_edges * KH * KW) < 2**31 else torch.long
            hit = torch.full((n_x + self.num_edges * KH * KW,), P + _ZERO, dtype=idt)
            hit[self.dense_slots(torch.arange(enc.numel()))] = enc.to(idt)
            self._cache["dense_enc"] = hit
        return hit

    @property
    def decode_index(self) -> Tensor:
        """``[P]``: the slot of ``[x.flatten(), edge_attr.flatten()]`` (the dense view) holding each
        parameter scalar. Built on request and cached."""
        hit = self._cache.get("dense_dec")
        if hit is None:
            KH, KW = self.kernel_shape
            n = self._cache["split"][0] + self.num_edges * KH * KW
            dec = self.value_decode_index
            hit = self.dense_slots(dec).to(torch.int32 if n < 2**31 else torch.long)
            self._cache["dense_dec"] = hit
        return hit

    # ------------------------------------------------------------------ flat vectors
    def flatten(self, state: Mapping[str, Tensor], *, allow_nonfinite: bool = False) -> Tensor:
        """Concatenate the stored tensors of a state dict into ``[..., P]`` (leading axes kept)."""
        tensors, batch = self._check_state(state)
        flat = torch.cat(self._flat_parts(tensors, batch), dim=-1)
        if not allow_nonfinite:
            self._check_finite(flat)
        return flat

    def _flat_parts(self, tensors: list[Tensor], batch: tuple[int, ...]) -> list[Tensor]:
        if not batch and self._uniform_dtype:
            return [t.flatten() for t in tensors]
        return [t.reshape(*batch, -1).to(self.dtype) for t in tensors]

    @property
    def _sizes(self) -> list[torch.Size]:
        return self._cache["sizes"]

    @property
    def _uniform_dtype(self) -> bool:
        return self._cache["uniform"]

    def _check_state(self, state: Mapping[str, Tensor]) -> tuple[list[Tensor], tuple[int, ...]]:
        """The stored tensors of ``state`` in order, and the leading (checkpoint) axes."""
        try:
            tensors = [state[n] for n in self.names]
        except KeyError as err:
            raise ArchitectureMismatchError(
                f"state dict has no entry {err.args[0]!r} (the architecture differs)"
            ) from None
        if [t.shape for t in tensors] == self._sizes:  # the common case: one checkpoint
            return tensors, ()
        if not tensors:
            return tensors, ()
        nb = tensors[0].dim() - len(self.shapes[0])
        batch = tuple(tensors[0].shape[:nb]) if nb > 0 else ()
        for t, shape, name in zip(tensors, self.shapes, self.names):
            if t.shape[nb:] != shape or t.dim() != nb + len(shape) or (nb and tuple(t.shape[:nb]) != batch):
                raise ArchitectureMismatchError(
                    f"parameter {name!r} has shape {tuple(t.shape)}, the architecture needs {shape}"
                    + (f" (after {len(batch)} leading checkpoint axes)" if nb else "")
                )
        return tensors, batch

    def _check_finite(self, flat: Tensor) -> None:
        flat = flat.detach()
        if math.isfinite(flat.sum().item()):  # fast path; a non-finite sum may also be an overflow
            return
        bad_mask = ~torch.isfinite(flat)
        if not bool(bad_mask.any()):
            return
        bad = bad_mask.reshape(-1, flat.shape[-1]).any(0).nonzero()[0].item()
        for name, o, shape in zip(self.names, self.offsets, self.shapes):
            if o <= bad < o + math.prod(shape):
                raise NonFiniteWeightsError(
                    f"parameter {name!r} holds NaN or inf values; pass allow_nonfinite=True to keep them"
                )
        raise NonFiniteWeightsError("non-finite values")  # pragma: no cover

    # ------------------------------------------------------------------ encode / decode
    def encode(self, state: Mapping[str, Tensor] | Tensor, *, allow_nonfinite: bool = False
               ) -> tuple[Tensor, Tensor]:
        """State dict (or flat ``[..., P]`` vector) -> ``(x [..., N, 5], edge_attr [..., E, KH*KW])``,
        the dense layout (each kernel centred in the grid :attr:`kernel_shape`, as a graph's
        ``edge_attr``). :meth:`encode_values` gives the stored true-size ``edge_values`` instead.

        Differentiable; leading axes are batch axes.
        """
        return self._encode(state, allow_nonfinite, dense=True)

    def encode_values(self, state: Mapping[str, Tensor] | Tensor, *, allow_nonfinite: bool = False
                      ) -> tuple[Tensor, Tensor]:
        """State dict (or flat ``[..., P]`` vector) -> ``(x [..., N, 5], edge_values [..., V])``: every
        edge's weights at its own kernel size, in edge order (what :meth:`to_graph` stores).

        Small networks: one concatenation and one gather; large inputs: slice copies of every dense
        layer's weights straight from the state's tensors and one gather for the rest.
        Differentiable; leading axes are batch axes.
        """
        return self._encode(state, allow_nonfinite, dense=False)

    def _encode(self, state: Mapping[str, Tensor] | Tensor, allow_nonfinite: bool, dense: bool
                ) -> tuple[Tensor, Tensor]:
        if isinstance(state, Tensor):
            flat = state if state.dtype == self.dtype else state.to(self.dtype)
            if flat.shape[-1] != self.num_params:
                raise ArchitectureMismatchError(f"flat vector has {flat.shape[-1]} values, the architecture "
                                                f"stores {self.num_params}")
            batch = tuple(flat.shape[:-1])
            parts, tensors = [flat], None
        else:
            tensors, batch = self._check_state(state)
            parts = None
        device = (parts[0] if parts is not None else tensors[0] if tensors else self._consts).device
        n = self._cache["split"][0]
        KH, KW = self.kernel_shape
        M = n + (self.num_edges * KH * KW if dense else self.num_values)
        if math.prod(batch) * M >= _COPY_PLAN_MIN:
            out = self._encode_by_copies(tensors, parts[0] if parts is not None else None, batch, device, dense)
            if not allow_nonfinite:
                self._check_finite_out(out, tensors, parts)
            x, e = out[..., :n].view(*batch, *self._cache["x_shape"]), out[..., n:]
            return (x, e.view(*batch, self.num_edges, KH * KW)) if dense else (x, e)
        if parts is None:
            parts = self._flat_parts(tensors, batch)
        consts, idx = self._on(device, dense)
        ext = torch.cat([*parts, consts.expand(*batch, 3) if batch else consts], dim=-1)
        if not allow_nonfinite:
            self._check_finite(ext)
        out = ext.index_select(-1, idx)
        e_shape = (self.num_edges, KH * KW) if dense else (self.num_values,)
        if not batch:  # the hot path of per-checkpoint encoding: plain slices
            return out[:n].view(self._cache["x_shape"]), out[n:].view(e_shape)
        return out[..., :n].view(*batch, *self._cache["x_shape"]), out[..., n:].view(*batch, *e_shape)

    def dense_edges(self, edge_values: Tensor) -> Tensor:
        """``[..., V]`` -> the dense view ``[..., E, KH*KW]`` (grid :attr:`kernel_shape`)."""
        return pad_kernels(edge_values, self.kernel_runs, self.kernel_shape)

    def _on(self, device: torch.device, dense: bool) -> tuple[Tensor, Tensor]:
        """The constants and the full encode index (dense or true-size layout) on ``device``
        (cached per device)."""
        key = ("on", device, dense)
        hit = self._cache.get(key)
        if hit is None:
            idx = self.encode_index if dense else self.value_encode_index
            hit = self._cache[key] = (self._consts.to(device), idx.to(device))
        return hit

    # Large inputs (many checkpoints, big networks): the graph layout is mostly long runs of
    # consecutive parameter scalars (every dense layer), so encode and decode copy those runs as
    # slices and gather only the rest; same result, memcpy speed, and no full index map.
    def _plan(self, device: torch.device, dense: bool = False) -> dict:
        """Slice copies and the rest's gather, for the true-size layout or (``dense``) straight
        into / out of the dense ``[E, KH, KW]`` layout (a strided copy per dense layer)."""
        key = ("plan", device, dense)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        P, n_x = self.num_params, self._cache["split"][0]
        offsets = torch.tensor(list(self.offsets) + [P], dtype=torch.long)
        rl = self._cache["runs"]
        v_start, e_start = [0], [0]
        for cnt, kh, kw in rl:
            v_start.append(v_start[-1] + cnt * kh * kw)
            e_start.append(e_start[-1] + cnt)
        seg = []  # (graph slot, theta position, length, tensor index, offset in the tensor, e0, n, kh, kw)
        for g0, t0, length in self.segments.tolist():
            ti = int(torch.searchsorted(offsets, t0, right=True)) - 1
            v = g0 - n_x
            r = int(torch.searchsorted(torch.tensor(v_start[1:]), v, right=True))
            _, kh, kw = rl[r]
            e0 = e_start[r] + (v - v_start[r]) // (kh * kw)
            seg.append((g0, t0, length, ti, t0 - int(offsets[ti]), e0, length // (kh * kw), kh, kw))
        slot, src = self.gather_slot.long(), self.gather_src.long()
        if dense:
            slot = self.dense_slots(slot)
        # the gather's sources as positions in [the tensors it reads, flattened, 0, 1, -1]
        is_param = src < P
        tid = torch.searchsorted(offsets, src[is_param], right=True) - 1
        used = torch.unique(tid)
        sizes = offsets[1:] - offsets[:-1]
        base = torch.zeros(len(self.names), dtype=torch.long)
        base[used] = torch.cat([sizes.new_zeros(1), sizes[used].cumsum(0)[:-1]])
        local = src.clone()
        local[is_param] = base[tid] + src[is_param] - offsets[tid]
        local[~is_param] = int(sizes[used].sum()) + src[~is_param] - P
        x_part = slot < n_x
        dec = is_param
        to = lambda t: t.to(device)  # noqa: E731
        hit = self._cache[key] = {
            "segments": seg, "n_x": n_x, "used": used.tolist(),
            "enc_g": to(slot), "enc_t": to(src), "enc_local": to(local),
            "dec_xg": to(slot[dec & x_part]), "dec_xt": to(src[dec & x_part]),
            "dec_eg": to(slot[dec & ~x_part] - n_x), "dec_et": to(src[dec & ~x_part]),
        }
        return hit

    def _encode_by_copies(self, tensors: list[Tensor] | None, flat: Tensor | None, batch: tuple[int, ...],
                          device: torch.device, dense: bool = False) -> Tensor:
        """``[..., N*5 + V]`` (or, ``dense``, ``[..., N*5 + E*KH*KW]``) by slice copies and one gather."""
        plan = self._plan(device, dense)
        consts = self._consts.to(device)
        n_x = plan["n_x"]
        KH, KW = self.kernel_shape
        if dense:
            out = torch.zeros(*batch, n_x + self.num_edges * KH * KW, dtype=self.dtype, device=device)
            e4 = out[..., n_x:].view(*batch, self.num_edges, KH, KW)
        else:
            out = torch.empty(*batch, n_x + self.num_values, dtype=self.dtype, device=device)
        flats = None if tensors is None else [t.reshape(*batch, -1) for t in tensors]
        for g0, t0, length, ti, o, e0, n, kh, kw in plan["segments"]:
            src = flat[..., t0 : t0 + length] if flats is None else flats[ti][..., o : o + length]
            if dense:
                oh, ow = (KH - kh) // 2, (KW - kw) // 2
                e4[..., e0 : e0 + n, oh : oh + kh, ow : ow + kw] = src.reshape(*batch, n, kh, kw)
            else:
                out[..., g0 : g0 + length] = src
        if flats is None:  # a flat vector
            ext = torch.cat([flat, consts.expand(*batch, 3) if batch else consts], dim=-1)
            out[..., plan["enc_g"]] = ext.index_select(-1, plan["enc_t"])
            return out
        rest = [flats[i].to(self.dtype) for i in plan["used"]]
        ext = torch.cat([*rest, consts.expand(*batch, 3) if batch else consts], dim=-1)
        out[..., plan["enc_g"]] = ext.index_select(-1, plan["enc_local"])
        return out

    def _check_finite_out(self, out: Tensor, tensors: list[Tensor] | None, parts: list[Tensor] | None) -> None:
        """NaN/inf check of an encoded graph (it holds every parameter once, plus 0/1/-1)."""
        if math.isfinite(out.detach().sum().item()):
            return
        if tensors is None:
            self._check_finite(parts[0])
            return
        for name, t in zip(self.names, tensors):
            if not bool(torch.isfinite(t.detach()).all()):
                raise NonFiniteWeightsError(
                    f"parameter {name!r} holds NaN or inf values; pass allow_nonfinite=True to keep them"
                )

    def decode(self, x: Tensor, edges: Tensor) -> Tensor:
        """``(x, edge_values)`` -> flat parameter vector ``[..., P]`` (differentiable).

        Args:
            x: ``[..., N, 5]``.
            edges: ``edge_values [..., V]``, or the dense view ``[..., E, KH*KW]`` at this spec's
                grid :attr:`kernel_shape` (entries outside the true kernels are ignored).
        """
        batch = x.shape[:-2]
        n_x = self._cache["split"][0]
        if edges.dim() == x.dim():  # the dense view
            KH, KW = self.kernel_shape
            if edges.shape[-2:] != (self.num_edges, KH * KW):
                raise ArchitectureMismatchError(
                    f"dense edge features have shape {tuple(edges.shape)}; the architecture needs "
                    f"[..., {self.num_edges}, {KH * KW}] (its {KH}x{KW} grid): resize them with "
                    "weightspace.graph.resize_kernel_grid first")
            if math.prod(batch) * (n_x + edges.shape[-2] * edges.shape[-1]) < _COPY_PLAN_MIN:  # small: one gather
                flat = torch.cat([x.reshape(*batch, -1), edges.reshape(*batch, -1)], dim=-1)
                return flat.index_select(-1, self._index_on("dense_dec", flat.device))
            return self._decode_by_copies(x, edges, batch, dense=True)
        if edges.shape[-1] != self.num_values:
            raise ArchitectureMismatchError(f"edge_values has {edges.shape[-1]} values, the architecture "
                                            f"stores {self.num_values}")
        if math.prod(batch) * (n_x + self.num_values) >= _COPY_PLAN_MIN:
            return self._decode_by_copies(x, edges, batch, dense=False)
        flat = torch.cat([x.reshape(*batch, -1), edges], dim=-1)
        return flat.index_select(-1, self._index_on("value_dec", flat.device))

    def _decode_by_copies(self, x: Tensor, edges: Tensor, batch: tuple[int, ...], dense: bool) -> Tensor:
        plan = self._plan(x.device, dense)
        xf = x.reshape(*batch, -1)
        theta = xf.new_empty(*batch, self.num_params)
        n_x = plan["n_x"]
        KH, KW = self.kernel_shape
        e4 = edges.reshape(*batch, self.num_edges, KH, KW) if dense else None
        for g0, t0, length, _, _, e0, n, kh, kw in plan["segments"]:
            if dense:
                oh, ow = (KH - kh) // 2, (KW - kw) // 2
                theta[..., t0 : t0 + length] = e4[..., e0 : e0 + n, oh : oh + kh, ow : ow + kw].reshape(*batch, length)
            else:
                theta[..., t0 : t0 + length] = edges[..., g0 - n_x : g0 - n_x + length]
        theta[..., plan["dec_xt"]] = xf.index_select(-1, plan["dec_xg"])
        ef = edges.reshape(*batch, -1) if dense else edges
        theta[..., plan["dec_et"]] = ef.index_select(-1, plan["dec_eg"])
        return theta

    def _index_on(self, which: str, device: torch.device) -> Tensor:
        """A decode map (``"value_dec"`` or ``"dense_dec"``) on ``device``, cached per device."""
        key = (which, device)
        hit = self._cache.get(key)
        if hit is None:
            idx = self.value_decode_index if which == "value_dec" else self.decode_index
            hit = self._cache[key] = idx.to(device)
        return hit

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Flat ``[..., P]`` -> ``{name: tensor}`` in each tensor's own dtype (views where possible)."""
        batch = flat.shape[:-1]
        out = {}
        for name, o, shape, dt in zip(self.names, self.offsets, self.shapes, self.dtypes):
            t = flat[..., o : o + math.prod(shape)].reshape(*batch, *shape)
            out[name] = t if t.dtype == dt else t.to(dt)
        return out

    # ------------------------------------------------------------------ graphs
    def to_graph(self, state: Mapping[str, Tensor] | Tensor, *, allow_nonfinite: bool = False
                 ) -> ParameterGraph:
        """A :class:`ParameterGraph` for one checkpoint, or for a stack ``[T, ...]`` of them.

        Raises:
            ArchitectureMismatchError: ``state`` lacks a parameter or has another shape.
            NonFiniteWeightsError: NaN/inf values, unless ``allow_nonfinite``.
        """
        x, e = self.encode_values(state, allow_nonfinite=allow_nonfinite)
        batch = x.shape[:-2]
        if isinstance(state, Mapping):
            vals = []
            for k in self.scalar_names:
                if k not in state:
                    raise ArchitectureMismatchError(f"state dict has no entry {k!r} (the architecture differs)")
                vals.append(torch.as_tensor(state[k]).to(torch.float64).reshape(*batch, 1))
            scalars = torch.cat(vals, -1) if vals else torch.zeros(*batch, 0, dtype=torch.float64)
        else:
            scalars = torch.zeros(*batch, len(self.scalar_names), dtype=torch.float64)
        return ParameterGraph(
            x=x,
            edge_segments=self.edge_segments,
            edge_rest=self.edge_rest,
            edge_values=e,
            kernel_runs=self.kernel_runs,
            edge_type=self.edge_type,
            node_type=self.node_type,
            node_layer=self.node_layer,
            node_pos=self.node_pos,
            node_act=self.node_act,
            kernel_shape=torch.tensor([list(self.kernel_shape)]),
            scalars=scalars,
            num_nodes=self.num_nodes,
            param_layout=self.layout,
            signature=self.signature,
        )

    def check_signature(self, signature: Any) -> None:
        """Raise :class:`ArchitectureMismatchError` unless ``signature`` (of a graph or another
        spec) equals this spec's structural signature, naming the first difference: module path,
        operation, field, the graph's value and the model's."""
        diff = first_difference(signature, self.signature)
        if diff is not None:
            raise ArchitectureMismatchError(f"the graph was made from another function: {diff}")

    def check_graph(self, g: ParameterGraph) -> None:
        """Raise :class:`ArchitectureMismatchError` unless ``g`` has exactly this structure,
        naming the first parameter whose shape or presence differs, then the first structural
        difference (wiring, activation, and the signature: strides, pooling, eps, activation
        parameters, constants). A graph without a signature (made before signatures existed) is
        checked without it."""
        layout = getattr(g, "param_layout", None)
        if layout is not None:
            layout = tuple((str(n), tuple(int(d) for d in s)) for n, s in layout)
            mine = self.layout
            for (n1, s1), (n2, s2) in zip(layout, mine):
                if n1 != n2 or s1 != s2:
                    raise ArchitectureMismatchError(
                        f"the graph holds {n1!r} with shape {s1} where the model has {n2!r} with shape {s2}"
                    )
            if len(layout) != len(mine):
                longer, which = (layout, "graph") if len(layout) > len(mine) else (mine, "model")
                extra = longer[min(len(layout), len(mine))][0]
                raise ArchitectureMismatchError(f"the {which} has an extra parameter {extra!r}")
        checks = [
            ("number of nodes", g.num_nodes, self.num_nodes),
            ("number of edges", int(g.edge_type.numel()), self.num_edges),
        ]
        for what, a, b in checks:
            if a != b:
                raise ArchitectureMismatchError(f"the graph's {what} is {a}, the model's is {b}")
        if not self._same_edges(g):
            raise ArchitectureMismatchError("the graph's edge_index differs from the model's: another architecture")
        for what, a, b in [("edge_type", g.edge_type, self.edge_type), ("node_type", g.node_type, self.node_type)]:
            if a.shape != b.shape or not torch.equal(a.cpu().to(b.dtype), b):
                raise ArchitectureMismatchError(f"the graph's {what} differs from the model's: another architecture")
        runs = merge_runs(g.kernel_runs) if "edge_values" in g else None
        if runs is not None and runs != self._cache["runs"] or runs is None and not torch.equal(
                g.edge_kernel.cpu().to(torch.int32), self.edge_kernel):
            raise ArchitectureMismatchError("the graph's edge_kernel (kernel sizes) differs from the model's: another "
                                            "architecture")
        act = getattr(g, "node_act", None)
        if act is not None:  # same node count, checked above
            diff = (act.cpu().to(self.node_act.dtype) != self.node_act).nonzero().flatten()
            if diff.numel():
                i = int(diff[0])
                raise ArchitectureMismatchError(
                    f"node {i} (layer {int(self.node_layer[i])}) applies {_act_name(act[i])} in the graph but "
                    f"{_act_name(self.node_act[i])} in the model: same shapes, another activation"
                )
        signature = getattr(g, "signature", None)
        if signature is not None and not _is_batch_list(signature):
            self.check_signature(signature)

    def _same_edges(self, g: ParameterGraph) -> bool:
        """Whether ``g``'s edges are this spec's: the compressed tables when ``g`` stores them (the
        same tensors for a graph of this spec, compared without decoding), else the decoded lists."""
        st = g._store
        if "edge_segments" in st:
            seg, rest = st["edge_segments"], st["edge_rest"]
            if seg is self.edge_segments and rest is self.edge_rest:
                return True
            if seg.shape == self.edge_segments.shape and rest.shape == self.edge_rest.shape and torch.equal(
                    seg.cpu(), self.edge_segments) and torch.equal(rest.cpu().to(torch.int32), self.edge_rest):
                return True
            if segment_edges(seg) != self.num_edges:
                return False
        ei = g.edge_index
        return ei.shape == (2, self.num_edges) and torch.equal(ei.cpu().to(EDGE_INDEX_DTYPE), self.edge_index)

    def to_state_dict(self, g: ParameterGraph, *, check: bool = True) -> dict[str, Tensor]:
        """Decode a graph (one checkpoint or a stack) into a state dict with every key of the
        architecture, tied keys included; exact inverse of :meth:`to_graph`."""
        if check:
            self.check_graph(g)
        if "edge_values" in g:
            e = g.edge_values
        else:  # a graph saved in the dense layout
            e = g.edge_attr
            if tuple(g.grid) != self.kernel_shape:
                e = resize_kernel_grid(e, self.edge_kernel, g.grid, self.kernel_shape)
        flat = self.decode(g.x, e)
        tensors = self.unflatten(flat)
        batch = flat.shape[:-1]
        scalars = getattr(g, "scalars", None)
        for i, (k, dt) in enumerate(zip(self.scalar_names, self.scalar_dtypes)):
            tensors[k] = scalars[..., i].to(dt).reshape(batch) if scalars is not None else torch.zeros(batch, dtype=dt)
        canon = {k: self.aliases.get(k, k) for k in self.keys}
        return {k: tensors[c] for k, c in canon.items()}


def _is_batch_list(v: Any) -> bool:
    """A collated ``Batch`` turns a graph attribute into a list with one item per graph."""
    # one signature: [entry, ...] with entry = (path, op, fields); a batch: [signature, ...]
    return isinstance(v, list) and bool(v) and isinstance(v[0], (list, tuple)) and bool(v[0]) \
        and isinstance(v[0][0], (list, tuple))


def _act_name(code: Tensor | int) -> str:
    try:
        return Activation(int(code)).name.lower()
    except ValueError:
        return f"activation code {int(code)}"


def _common_dtype(dtypes: list[torch.dtype]) -> torch.dtype:
    if not dtypes:
        return torch.get_default_dtype()
    out = dtypes[0]
    for d in dtypes[1:]:
        out = torch.promote_types(out, d)
    return out
