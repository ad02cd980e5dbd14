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
from .param_graph import ParameterGraph, _slots, resize_kernel_grid
from .trace import trace_structure
from .vocab import NODE_FEATURES

__all__ = ["GraphSpec"]

_ZERO, _ONE, _MINUS_ONE = 0, 1, 2  # offsets of the constants appended after the parameters


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
        encode_index: ``[N*5 + E*KH*KW]`` positions in ``[theta, 0, 1, -1]``.
        decode_index: ``[P]`` positions in ``[x.flatten(), edge_attr.flatten()]``.
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

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_module(cls, model: nn.Module, example_input: Any = None) -> GraphSpec:
        """Trace ``model`` (see :mod:`weightspace.graph.trace`) and build its index maps.

        Raises:
            UnsupportedModuleError: a module, operation or parameter use the converter cannot
                represent, naming its path.
        """
        s, canonical, tensors = trace_structure(model, example_input)
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
        enc = torch.full((N * Fn + E * Fe,), P + _ZERO, dtype=torch.long)
        for nb in s.node_blocks:
            enc[nb.nodes * Fn + nb.col] = off[nb.param] + nb.index
        e0 = 0
        srcs, dsts, types, kernels = [], [], [], []
        for eb in s.edge_blocks:
            n = int(eb.src.numel())
            rows = (e0 + torch.arange(n)) * Fe + N * Fn
            if eb.param is not None:
                pos = rows[:, None] + _slots(eb.kh, eb.kw, KH, KW)[None, :]
                enc[pos.reshape(-1)] = off[eb.param] + eb.index.reshape(-1)
            else:
                centre = _slots(1, 1, KH, KW)
                const = _ONE if eb.value == 1.0 else _MINUS_ONE
                enc[rows + centre] = P + const
            srcs.append(eb.src)
            dsts.append(eb.dst)
            types.append(torch.full((n,), int(eb.etype), dtype=torch.long))
            kernels.append(torch.tensor([[eb.kh, eb.kw]]).expand(n, 2))
            e0 += n
        real = enc < P
        counts = torch.bincount(enc[real], minlength=P)
        if P and (counts != 1).any():
            bad = int((counts != 1).nonzero()[0])
            name = next(nm for nm, o, sz in zip(names, offsets, sizes) if o <= bad < o + sz)
            raise RuntimeError(f"internal error: a scalar of {name!r} is stored {int(counts[bad])} times")
        dec = torch.empty(P, dtype=torch.long)
        dec[enc[real]] = real.nonzero().squeeze(1)
        cat = lambda xs, shape: torch.cat(xs) if xs else torch.zeros(shape, dtype=torch.long)  # noqa: E731
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
            edge_index=torch.stack([cat(srcs, (0,)), cat(dsts, (0,))]),
            edge_type=cat(types, (0,)),
            edge_kernel=cat(kernels, (0, 2)).contiguous(),
            kernel_shape=(KH, KW),
            node_groups=dict(s.groups),
            encode_index=enc,
            decode_index=dec,
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
        tensors = self._check_state(state)
        batch = tensors[0].shape[: tensors[0].dim() - len(self.shapes[0])] if tensors else ()
        flat = torch.cat([t.reshape(*batch, -1).to(self.dtype) for t in tensors], dim=-1)
        if not allow_nonfinite:
            self._check_finite(flat)
        return flat

    def _check_state(self, state: Mapping[str, Tensor]) -> list[Tensor]:
        out = []
        for name, shape in zip(self.names, self.shapes):
            if name not in state:
                raise ArchitectureMismatchError(f"state dict has no entry {name!r} (the architecture differs)")
            t = state[name]
            if tuple(t.shape[t.dim() - len(shape):]) != shape or t.dim() < len(shape):
                raise ArchitectureMismatchError(
                    f"parameter {name!r} has shape {tuple(t.shape)}, the architecture needs {shape}"
                )
            out.append(t)
        return out

    def _check_finite(self, flat: Tensor) -> None:
        if bool(torch.isfinite(flat).all()):
            return
        bad = (~torch.isfinite(flat)).reshape(-1, flat.shape[-1]).any(0).nonzero()[0].item()
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
            flat = state.to(self.dtype)
            if not allow_nonfinite:
                self._check_finite(flat)
            batch = flat.shape[:-1]
            ext = torch.cat([flat, self._consts.expand(*batch, 3)], dim=-1)
        else:
            tensors = self._check_state(state)
            batch = tensors[0].shape[: tensors[0].dim() - len(self.shapes[0])] if tensors else ()
            parts = [t.reshape(*batch, -1).to(self.dtype) for t in tensors]
            ext = torch.cat(parts + [self._consts.expand(*batch, 3)], dim=-1)
            if not allow_nonfinite:
                self._check_finite(ext[..., :-3])
        out = ext.index_select(-1, self.encode_index) if ext.dim() == 1 else ext[..., self.encode_index]
        n = self.num_nodes * len(NODE_FEATURES)
        x = out[..., :n].reshape(*batch, self.num_nodes, len(NODE_FEATURES))
        e = out[..., n:].reshape(*batch, self.num_edges, self.kernel_shape[0] * self.kernel_shape[1])
        return x, e

    def decode(self, x: Tensor, edge_attr: Tensor) -> Tensor:
        """``(x, edge_attr)`` -> flat parameter vector ``[..., P]`` (one gather, differentiable)."""
        batch = x.shape[:-2]
        flat = torch.cat([x.reshape(*batch, -1), edge_attr.reshape(*batch, -1)], dim=-1)
        return flat.index_select(-1, self.decode_index) if flat.dim() == 1 else flat[..., self.decode_index]

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
        )

    def check_graph(self, g: ParameterGraph) -> None:
        """Raise :class:`ArchitectureMismatchError` unless ``g`` has exactly this structure,
        naming the first parameter whose shape or presence differs."""
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
            if not torch.equal(a.cpu(), b):
                raise ArchitectureMismatchError(f"the graph's {what} differs from the model's: another architecture")

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


def _common_dtype(dtypes: list[torch.dtype]) -> torch.dtype:
    if not dtypes:
        return torch.get_default_dtype()
    out = dtypes[0]
    for d in dtypes[1:]:
        out = torch.promote_types(out, d)
    return out
