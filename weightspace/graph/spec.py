"""``GraphSpec``: the structure of one architecture's parameter graph and its index maps.

Built once by tracing (:func:`GraphSpec.from_module`), then every checkpoint of that architecture
is encoded with one ``torch.cat`` and one gather, and decoded with one gather — batched over any
leading axes (``[T, ...]`` trajectories) and differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ArchitectureMismatchError, NonFiniteWeightsError
from .param_graph import ParameterGraph, kernel_slots, resize_kernel_grid
from .signature import first_difference
from .trace import trace_structure
from .vocab import NODE_FEATURES, Activation

__all__ = ["GraphSpec"]

_ZERO, _ONE, _MINUS_ONE = 0, 1, 2  # offsets of the constants appended after the parameters

#: Storage types of the per-edge structure: 9 bytes per edge (17 when kernel sizes differ) instead of
#: 40 with int64 fields, plus the weights. ``edge_index`` as int32 works with indexing and ``index_add_``;
#: pass ``edge_index.long()`` to layers that insist on int64. ``edge_kernel`` is a broadcast view
#: of one row when every edge has the same kernel size.
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
        node_*, edge_*: the graph's structure (see :class:`ParameterGraph`).
        kernel_shape: the edge-feature grid ``(KH, KW)``.
        node_groups: label of the operation that made a group of neurons -> their node ids
            (``"fc1"``, ``"layer1.0.conv2"``, ``"input:x"``, ``"output"``, ...).
        encode_index: ``[N*5 + E*KH*KW]`` positions in ``[theta, 0, 1, -1]`` (int32 unless huge).
        decode_index: ``[P]`` positions in ``[x.flatten(), edge_attr.flatten()]``.
        signature: the structural signature, every non-tensor argument that changes the function
            (strides, padding, pooling, eps, activation parameters, constants; see
            :mod:`weightspace.graph.signature`), a tuple of plain values.
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
    edge_index: Tensor
    edge_type: Tensor
    edge_kernel: Tensor
    kernel_shape: tuple[int, int]
    node_groups: dict[str, Tensor]
    encode_index: Tensor
    decode_index: Tensor
    _consts: Tensor = field(repr=False)
    copy_segments: tuple[tuple[int, int, int], ...] = field(default=(), repr=False)
    signature: tuple = field(default=(), repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = self.num_nodes * len(NODE_FEATURES)
        F = self.kernel_shape[0] * self.kernel_shape[1]
        self._cache.update(
            sizes=[torch.Size(s) for s in self.shapes],
            uniform=all(d == self.dtype for d in self.dtypes),
            split=[n, self.num_edges * F],
            x_shape=(self.num_nodes, len(NODE_FEATURES)),
            e_shape=(self.num_edges, F),
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
        KH = max([b.kh for b in s.edge_blocks] + [1])
        KW = max([b.kw for b in s.edge_blocks] + [1])
        Fe = KH * KW
        E = sum(int(b.src.numel()) for b in s.edge_blocks)
        M = N * Fn + E * Fe
        idt = torch.int32 if max(P + 3, M) < 2**31 else torch.long
        enc = torch.full((M,), P + _ZERO, dtype=idt)  # graph slot -> position in [theta, 0, 1, -1]
        dec = torch.empty(P, dtype=idt)  # theta position -> graph slot
        seen = torch.zeros(P, dtype=torch.bool)
        assigned = 0
        segments: list[tuple[int, int, int]] = []
        for nb in s.node_blocks:
            pos = (nb.nodes * Fn + nb.col).to(idt)
            vals = (off[nb.param] + nb.index).to(torch.long)
            enc[pos.long()] = vals.to(idt)
            dec[vals] = pos
            seen[vals] = True
            assigned += int(vals.numel())
        edge_index = torch.empty(2, E, dtype=EDGE_INDEX_DTYPE)
        edge_type = torch.empty(E, dtype=EDGE_TYPE_DTYPE)
        kernels = {(b.kh, b.kw) for b in s.edge_blocks}
        edge_kernel = None if len(kernels) <= 1 else torch.empty(E, 2, dtype=EDGE_KERNEL_DTYPE)
        center = int(kernel_slots(1, 1, KH, KW))
        e0 = 0
        blocks, s.edge_blocks = s.edge_blocks, []
        while blocks:  # consume the blocks so that their index tensors are freed as we go
            eb = blocks.pop(0)
            n = int(eb.src.numel())
            edge_index[0, e0 : e0 + n] = eb.src
            edge_index[1, e0 : e0 + n] = eb.dst
            edge_type[e0 : e0 + n] = eb.etype if isinstance(eb.etype, torch.Tensor) else int(eb.etype)
            if edge_kernel is not None:
                edge_kernel[e0 : e0 + n, 0] = eb.kh
                edge_kernel[e0 : e0 + n, 1] = eb.kw
            base = N * Fn + e0 * Fe
            rows = enc[base : base + n * Fe].view(n, Fe)
            if eb.param is None:
                rows[:, center] = P + (_ONE if eb.value == 1.0 else _MINUS_ONE)
            else:
                K = eb.kh * eb.kw
                slots = kernel_slots(eb.kh, eb.kw, KH, KW)
                if eb.index is None:  # a contiguous range of the parameter
                    v0 = off[eb.param] + eb.offset
                    if K == Fe:  # graph slots == a run of the parameter: two aranges
                        torch.arange(v0, v0 + n * K, dtype=idt, out=rows.view(-1))
                        torch.arange(base, base + n * K, dtype=idt, out=dec[v0 : v0 + n * K])
                        segments.append((base, v0, n * K))
                    else:
                        graph_pos = base + torch.arange(n, dtype=idt)[:, None] * Fe + slots.to(idt)[None, :]
                        rows[:, slots] = torch.arange(v0, v0 + n * K, dtype=idt).view(n, K)
                        dec[v0 : v0 + n * K] = graph_pos.view(-1)
                    seen[v0 : v0 + n * K] = True
                else:
                    graph_pos = base + torch.arange(n, dtype=idt)[:, None] * Fe + slots.to(idt)[None, :]
                    vals = (off[eb.param] + eb.index).long()
                    rows[:, slots] = vals.to(idt).view(n, K)
                    dec[vals.view(-1)] = graph_pos.view(-1)
                    seen[vals.view(-1)] = True
                assigned += n * K
            e0 += n
        if edge_kernel is None:  # one kernel size for every edge: a broadcast view, no memory per edge
            kh, kw = next(iter(kernels)) if kernels else (1, 1)
            edge_kernel = torch.tensor([[kh, kw]], dtype=EDGE_KERNEL_DTYPE).expand(E, 2)
        if assigned != P or not bool(seen.all()):
            bad = int((~seen).nonzero()[0]) if not bool(seen.all()) else 0
            name = next(nm for nm, o, sz in zip(names, offsets, sizes) if o <= bad < o + sz)
            raise RuntimeError(f"internal error: the scalars of {name!r} are not stored exactly once")
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
            edge_index=edge_index,
            edge_type=edge_type,
            edge_kernel=edge_kernel,
            kernel_shape=(KH, KW),
            node_groups=dict(s.groups),
            encode_index=enc,
            decode_index=dec,
            copy_segments=tuple(segments),
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
        return int(self.decode_index.numel())

    @property
    def layout(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return tuple(zip(self.names, self.shapes)) + tuple((n, ()) for n in self.scalar_names)

    def __repr__(self) -> str:
        return (f"GraphSpec(nodes={self.num_nodes}, edges={self.num_edges}, params={self.num_params}, "
                f"tensors={len(self.names)}, kernel_grid={self.kernel_shape})")

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
        """State dict (or flat ``[..., P]`` vector) -> ``(x [..., N, 5], edge_attr [..., E, KH*KW])``.

        One concatenation and one gather; differentiable; leading axes are batch axes.
        """
        if isinstance(state, Tensor):
            flat = state if state.dtype == self.dtype else state.to(self.dtype)
            if flat.shape[-1] != self.num_params:
                raise ArchitectureMismatchError(f"flat vector has {flat.shape[-1]} values, the architecture "
                                                f"stores {self.num_params}")
            batch = tuple(flat.shape[:-1])
            parts = [flat]
        else:
            tensors, batch = self._check_state(state)
            parts = self._flat_parts(tensors, batch)
        device = parts[0].device
        consts, idx = self._on(device)
        if batch:
            consts = consts.expand(*batch, 3)
        parts.append(consts)
        ext = torch.cat(parts, dim=-1)
        if not allow_nonfinite:
            self._check_finite(ext)
        n = self._cache["split"][0]
        if math.prod(batch) * idx.numel() >= _COPY_PLAN_MIN:
            out = self._encode_by_copies(ext, batch)
        else:
            out = ext.index_select(-1, idx)
        if not batch:  # the hot path of per-checkpoint encoding: plain slices
            return out[:n].view(self._cache["x_shape"]), out[n:].view(self._cache["e_shape"])
        return out[..., :n].view(*batch, *self._cache["x_shape"]), out[..., n:].view(*batch, *self._cache["e_shape"])

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The constants and the encode index on ``device`` (cached per device)."""
        key = ("on", device)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = (self._consts.to(device), self.encode_index.to(device))
        return hit

    # Large inputs (many checkpoints, big networks): the graph layout is mostly long runs of
    # consecutive parameter scalars (every dense layer whose kernel fills the grid), so encode and
    # decode copy those runs as slices and gather only the rest; same result, memcpy speed.
    def _plan(self, device: torch.device) -> dict:
        key = ("plan", device)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        enc = self.encode_index
        P, M, n_x = self.num_params, self.encode_index.numel(), self._cache["split"][0]
        segments = [seg for seg in self.copy_segments if seg[2] >= _COPY_RUN_MIN]
        in_copy = torch.zeros(M, dtype=torch.bool)
        for g0, _, length in segments:
            in_copy[g0 : g0 + length] = True
        enc_rest = ((enc != P + _ZERO) & ~in_copy).nonzero().flatten()
        dec_rest = ((enc < P) & ~in_copy).nonzero().flatten()
        node = dec_rest < n_x
        to = lambda t: t.to(device)  # noqa: E731
        hit = self._cache[key] = {
            "segments": segments, "n_x": n_x,
            "enc_g": to(enc_rest), "enc_t": to(enc[enc_rest].long()),
            "dec_xg": to(dec_rest[node]), "dec_xt": to(enc[dec_rest[node]].long()),
            "dec_eg": to(dec_rest[~node] - n_x), "dec_et": to(enc[dec_rest[~node]].long()),
        }
        return hit

    def _encode_by_copies(self, ext: Tensor, batch: tuple[int, ...]) -> Tensor:
        plan = self._plan(ext.device)
        out = ext.new_zeros(*batch, self.encode_index.numel())
        for g0, t0, length in plan["segments"]:
            out[..., g0 : g0 + length] = ext[..., t0 : t0 + length]
        out[..., plan["enc_g"]] = ext.index_select(-1, plan["enc_t"])
        return out

    def decode(self, x: Tensor, edge_attr: Tensor) -> Tensor:
        """``(x, edge_attr)`` -> flat parameter vector ``[..., P]`` (one gather, differentiable)."""
        batch = x.shape[:-2]
        if math.prod(batch) * self.encode_index.numel() >= _COPY_PLAN_MIN:
            plan = self._plan(x.device)
            xf, ef = x.reshape(*batch, -1), edge_attr.reshape(*batch, -1)
            theta = xf.new_empty(*batch, self.num_params)
            n_x = plan["n_x"]
            for g0, t0, length in plan["segments"]:
                src, g = (xf, g0) if g0 < n_x else (ef, g0 - n_x)
                theta[..., t0 : t0 + length] = src[..., g : g + length]
            theta[..., plan["dec_xt"]] = xf.index_select(-1, plan["dec_xg"])
            theta[..., plan["dec_et"]] = ef.index_select(-1, plan["dec_eg"])
            return theta
        flat = torch.cat([x.reshape(*batch, -1), edge_attr.reshape(*batch, -1)], dim=-1)
        idx = self.decode_index if self.decode_index.device == flat.device else self.decode_index.to(flat.device)
        return flat.index_select(-1, idx)

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
        x, e = self.encode(state, allow_nonfinite=allow_nonfinite)
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
            edge_index=self.edge_index,
            edge_attr=e,
            edge_type=self.edge_type,
            edge_kernel=self.edge_kernel,
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
            ("number of edges", int(g.edge_index.shape[1]), self.num_edges),
        ]
        for what, a, b in checks:
            if a != b:
                raise ArchitectureMismatchError(f"the graph's {what} is {a}, the model's is {b}")
        for what, a, b in [("edge_index", g.edge_index, self.edge_index), ("edge_type", g.edge_type, self.edge_type),
                           ("edge_kernel", g.edge_kernel, self.edge_kernel), ("node_type", g.node_type, self.node_type)]:
            if a.shape != b.shape or not torch.equal(a.cpu().to(b.dtype), b):
                raise ArchitectureMismatchError(f"the graph's {what} differs from the model's: another architecture")
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

    def to_state_dict(self, g: ParameterGraph, *, check: bool = True) -> dict[str, Tensor]:
        """Decode a graph (one checkpoint or a stack) into a state dict with every key of the
        architecture, tied keys included; exact inverse of :meth:`to_graph`."""
        if check:
            self.check_graph(g)
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
