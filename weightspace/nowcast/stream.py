r"""Streamed nowcasting of one window: the jump of :class:`~weightspace.nowcast.Nowcaster` on a
large model in bounded memory.

:meth:`Nowcaster.forward <weightspace.nowcast.Nowcaster.forward>` takes a batch of windows and
materializes every per-parameter tensor (features, encodings, channel values) at once, which is
what meta-training on small networks wants. A jump of the hook predicts one window, and on a
transformer the parameters number in the tens of millions; this module computes the same function
for one window in chunks of parameters, so that besides the window and the output it holds only
node-sized tensors and one chunk:

1. group statistics (:func:`~weightspace.nowcast.features.group_stats`) in two passes over chunks;
2. every chunk's features and encodings, summed into the neurons (incoming, outgoing, own slots);
   two per-parameter scalars (normalized value, slope) are kept for the message passing;
3. the message-passing layers on neurons only;
4. every chunk again: features, encodings and the readout, written into the output.

**Dense blocks.** A weight tensor whose entries are the edges of a full bipartite block between
two sets of neurons (``Linear``/``Conv`` weights, ``Conv1D``, embedding tables, fused projections:
entry ``(a, b, ...)`` connects neuron ``rows[a]`` and ``cols[b]``) is detected once per
architecture. Its aggregation is a sum over an axis, its messages are matrix products with the
weight-shaped channel matrices, and its readout adds two broadcast neuron contexts — no per-weight
index tensors at all. The remaining parameters (biases, normalization parameters, small or
irregular tensors) use gathers, scatters and one sparse product, with index tensors cached per
architecture (:class:`StreamIndex`). A dense block and the generic path give the same result up to
float rounding; ``block_min`` chooses which tensors count as blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .features import CHANNELS, finish_stats, group_stats, param_features
from .layout import NowcastLayout, context_rows, message_csr, slot_ends, sparse_csr

__all__ = ["StreamIndex", "DenseBlock", "predict_stream", "stream_index", "group_pieces", "detect_block", "CHUNK",
           "BLOCK_MIN"]

CHUNK = 1 << 18  # parameters per chunk
BLOCK_MIN = 1 << 12  # a weight tensor with at least this many entries may be a dense block


@dataclass(frozen=True, eq=False)
class DenseBlock:
    """A weight tensor at flat positions ``start .. start + d0·d1·T``, viewed ``[d0, d1, T]``, whose
    entry ``(a, b, t)`` is a parameter of the edge between neurons ``rows[a]`` and ``cols[b]``
    (``rows`` the destinations when ``dst_rows``, else the sources)."""

    start: int
    d0: int
    d1: int
    T: int
    rows: Tensor
    cols: Tensor
    dst_rows: bool
    kind: Tensor | int  # embedding row of every (a, b) (``[d0, d1]``), or the one row of all
    tensor: int | Tensor  # its normalization group, or the group of every column ``[d1]``

    @property
    def size(self) -> int:
        return self.d0 * self.d1 * self.T


@dataclass(frozen=True, eq=False)
class StreamIndex:
    """Per-architecture indices of the streamed path (built once, cached on the layout).

    ``inv_in``, ``inv_out``, ``inv_own [N]``: 1 / number of incoming weight entries, outgoing weight
    entries and own node parameters of every neuron; ``tensor_count [G]``: parameters per
    normalization group.
    ``rest [Pr]``: flat positions of the parameters outside dense blocks (``None``: all of them, in
    order); for those, ``kind`` (embedding row), ``agg_a``/``agg_b`` (aggregation rows: destination and
    ``N +`` source of a weight entry; ``2N +`` owner and the discarded row ``3N`` of a node
    parameter), ``ctx_a``/``ctx_b`` (readout context rows) and the CSR of their messages
    (unnormalized; ``mp_take`` picks a channel value from the ``[Pr, C]`` table).
    """

    num_nodes: int
    num_params: int
    node_type: Tensor
    node_act: Tensor
    inv_in: Tensor
    inv_out: Tensor
    inv_own: Tensor
    tensor_count: Tensor
    blocks: tuple
    rest: Tensor | None
    rest_size: int
    kind: Tensor
    agg_a: Tensor
    agg_b: Tensor
    ctx_a: Tensor
    ctx_b: Tensor
    mp_crow: Tensor
    mp_col: Tensor
    mp_take: Tensor

    @classmethod
    def build(cls, lay: NowcastLayout, block_min: int = BLOCK_MIN) -> StreamIndex:
        N, P = lay.num_nodes, lay.num_params
        tensor_count = torch.bincount(lay.slot_tensor.long(), minlength=lay.num_tensors).float()
        cnt_in = torch.zeros(N, dtype=torch.long)
        cnt_out = torch.zeros(N, dtype=torch.long)
        blocks, covered = [], []
        for o, shape, tid in group_pieces(lay):  # (shapes are empty for a hand-made layout: no blocks)
            n = math.prod(shape)
            b = detect_block(lay, o, shape, tid) if n >= block_min and len(shape) >= 2 else None
            if b is not None:
                blocks.append(b)
                covered.append((o, o + n))
                dst, src = (b.rows, b.cols) if b.dst_rows else (b.cols, b.rows)
                cnt_in.index_add_(0, dst, torch.full_like(dst, n // len(dst)))
                cnt_out.index_add_(0, src, torch.full_like(src, n // len(src)))
        if covered:
            keep = torch.ones(P, dtype=torch.bool)
            for a, b_ in covered:
                keep[a:b_] = False
            rest = keep.nonzero().squeeze(1)
        else:
            rest = None
        edge, owner, src, dst, kind = slot_ends(lay, rest)
        cnt_in += torch.bincount(dst[edge], minlength=N)
        cnt_out += torch.bincount(src[edge], minlength=N)
        cnt_own = torch.bincount(owner[~edge], minlength=N)
        agg_a = torch.where(edge, dst, 2 * N + owner)
        agg_b = torch.where(edge, N + src, torch.full_like(owner, 3 * N))
        ctx_a, ctx_b = context_rows(edge, owner, src, dst, N)
        _, crow, col, take = message_csr(src, dst, edge.nonzero().squeeze(1), N)  # unnormalized
        inv = lambda x: 1.0 / x.clamp_min(1).float()  # noqa: E731
        return cls(N, P, lay.node_type, lay.node_act, inv(cnt_in), inv(cnt_out), inv(cnt_own),
                   tensor_count.clamp_min(1), tuple(blocks), rest,
                   P if rest is None else int(rest.numel()), kind, agg_a, agg_b, ctx_a, ctx_b, crow, col, take)

    def to(self, device: torch.device) -> StreamIndex:
        if self.inv_in.device == torch.device(device):
            return self
        mv = lambda t: t.to(device) if isinstance(t, Tensor) else t  # noqa: E731
        blocks = tuple(DenseBlock(b.start, b.d0, b.d1, b.T, mv(b.rows), mv(b.cols), b.dst_rows, mv(b.kind), mv(b.tensor))
                       for b in self.blocks)
        kw = {k: mv(v) for k, v in self.__dict__.items() if k != "blocks"}
        return StreamIndex(**{**kw, "blocks": blocks})


def group_pieces(lay: NowcastLayout):
    """``(start, shape, group)`` of the pieces of parameter tensors that may be dense blocks: a tensor
    in one normalization group (``group`` an int); for a tensor split into groups along whole rows of
    its first dimension (the q/k/v blocks of ``nn.MultiheadAttention.in_proj_weight``), each row
    block; for one split along its second dimension (GPT-2's ``Conv1D`` ``c_attn``, ``[in, 3·out]``), the
    whole tensor with ``group`` the ``[d1]`` group of every column. Tensors split otherwise are not
    yielded (their parameters take the generic path)."""
    o = 0
    for shape in lay.shapes:
        n = math.prod(shape)
        if n == 0:
            continue
        g = lay.slot_tensor[o: o + n]
        if int(g[0]) == int(g[-1]) and bool((g == g[0]).all()):
            yield o, tuple(shape), int(g[0])
        else:
            row = n // int(shape[0])
            change = (g[1:] != g[:-1]).nonzero().squeeze(1) + 1
            cuts = [0, *change.tolist(), n]
            if all(c % row == 0 for c in cuts) and len(set(int(g[c]) for c in cuts[:-1])) == len(cuts) - 1:
                for a, b in zip(cuts[:-1], cuts[1:]):
                    yield o + a, ((b - a) // row, *shape[1:]), int(g[a])
            elif len(shape) >= 2:
                g3 = g.view(int(shape[0]), int(shape[1]), -1)
                col = g3[0, :, 0]
                if bool((g3 == col[None, :, None]).all()):
                    yield o, tuple(shape), col.long()
        o += n


def detect_block(lay: NowcastLayout, start: int, shape: tuple, tensor: int) -> DenseBlock | None:
    """A :class:`DenseBlock` if the tensor at ``start`` (of ``shape``) is a full bipartite block of edges."""
    n = math.prod(shape)
    d0, d1 = int(shape[0]), int(shape[1])
    T = n // (d0 * d1)
    sl = slice(start, start + n)
    if d0 == 0 or d1 == 0 or not bool(lay.slot_edge[sl].all()):
        return None
    own = lay.slot_owner[sl].view(d0, d1, T)
    if T > 1 and not bool((own == own[..., :1]).all()):
        return None
    e = own[..., 0].long()
    src, dst = lay.edge_index[0][e], lay.edge_index[1][e]
    if bool((dst == dst[:, :1]).all()) and bool((src == src[:1]).all()):
        dst_rows, rows, cols = True, dst[:, 0], src[0]
    elif bool((src == src[:, :1]).all()) and bool((dst == dst[:1]).all()):
        dst_rows, rows, cols = False, src[:, 0], dst[0]
    else:
        return None
    k = lay.edge_type[e].long()
    kind = int(k[0, 0]) if bool((k == k[0, 0]).all()) else k
    return DenseBlock(start, d0, d1, T, rows.long(), cols.long(), dst_rows, kind, tensor)


def stream_index(layout: NowcastLayout, device: torch.device, block_min: int = BLOCK_MIN) -> StreamIndex:
    """:class:`StreamIndex` of ``layout`` on ``device``, built on first use and cached on the layout."""
    key = ("stream", int(block_min), str(device))
    hit = layout.cache.get(key)
    if hit is None:
        cpu = layout.cache.get(("stream", int(block_min), "cpu"))
        if cpu is None:  # built on the CPU (its temporaries are parameter-sized), then moved
            with torch.inference_mode(False), torch.no_grad():
                cpu = layout.cache[("stream", int(block_min), "cpu")] = StreamIndex.build(
                    layout.to(torch.device("cpu")), block_min)
        hit = layout.cache[key] = cpu.to(device)
    return hit


# ----------------------------------------------------------------------------- chunks
class _Window:
    """The ``c`` snapshots: a ``[c, P]`` tensor (chunks are views of it) or any sequence of ``[P]``
    tensors (a ring buffer's rows, not copied; each chunk stacks its slices)."""

    def __init__(self, rows: Tensor | Sequence[Tensor], device: torch.device) -> None:
        self.base = rows if isinstance(rows, Tensor) else None
        self.rows, self.device = (None if self.base is not None else list(rows)), device

    def slice(self, a: int, b: int) -> Tensor:
        if self.base is not None:
            return self.base[:, a:b].to(self.device, torch.float32)[None]  # [1, c, K]
        return torch.stack([r[a:b].to(self.device, torch.float32) for r in self.rows])[None]

    def gather(self, idx: Tensor) -> Tensor:
        if self.base is not None:
            return self.base.index_select(1, idx.to(self.base.device)).to(self.device, torch.float32)[None]
        return torch.stack([r.index_select(0, idx.to(r.device)).to(self.device, torch.float32)
                            for r in self.rows])[None]


def _segments(index: StreamIndex, chunk: int):
    """``(what, a, b)`` chunks covering every parameter: ``("rest", i, j)`` rest positions ``i..j``,
    ``(block, a0, a1)`` rows ``a0..a1`` of a dense block."""
    for i in range(0, index.rest_size, chunk):
        yield "rest", i, min(i + chunk, index.rest_size)
    for blk in index.blocks:
        per = max(1, chunk // (blk.d1 * blk.T))
        for a0 in range(0, blk.d0, per):
            yield blk, a0, min(a0 + per, blk.d0)


def _take(index: StreamIndex, win: _Window, tid: Tensor, seg) -> tuple[Tensor, Tensor | int, slice | Tensor]:
    """Window ``[1, c, K]``, tensor ids ``[K]`` (one ``int`` in a block) and flat positions of one chunk."""
    what, a, b = seg
    if what == "rest":
        if index.rest is None:
            pos = slice(a, b)
            return win.slice(a, b), tid[pos], pos
        pos = index.rest[a:b]
        return win.gather(pos), tid.index_select(0, pos.to(tid.device)), pos
    step = what.d1 * what.T
    pos = slice(what.start + a * step, what.start + b * step)
    t = what.tensor
    if isinstance(t, Tensor):  # groups by column: the chunk's ids, [rows, d1, T] flattened
        t = t.to(tid.device)[None, :, None].expand(b - a, what.d1, what.T).reshape(-1)
    return win.slice(pos.start, pos.stop), t, pos


class _Chunks:
    """The chunks of one prediction, read from the window on every pass; when all the parameters fit
    in one chunk's budget, read once and kept with their features (a small model's jump then costs
    one pass of reads)."""

    def __init__(self, index: StreamIndex, win: _Window, tid: Tensor, chunk: int) -> None:
        self.index, self.win, self.tid, self.chunk = index, win, tid, chunk
        self.kept: list | None = None
        self.keep = index.num_params <= chunk

    def whole(self, num_tensors: int, features: bool) -> tuple:
        """A small model (all parameters in one chunk's budget): statistics and features of the whole
        window at once (a few dozen operations), every chunk then a view or gather of them."""
        w = self.win.slice(0, self.index.num_params)
        stats = group_stats(w, self.tid, num_tensors)
        f, s, line = param_features(w, self.tid, *stats, features)
        f, s, line = (None if f is None else f[0]), s[0], line[0]
        kept = []
        for seg in _segments(self.index, self.chunk):
            what, a, b = seg
            if what == "rest":
                pos = slice(a, b) if self.index.rest is None else self.index.rest[a:b]
            else:
                step = what.d1 * what.T
                pos = slice(what.start + a * step, what.start + b * step)
            kept.append([seg, None, None, pos, tuple(None if x is None else _pick(x, pos) for x in (f, s, line)), None])
        self.kept = kept
        return stats

    def __iter__(self):
        if self.kept is not None:
            yield from self.kept
            return
        kept = []
        for seg in _segments(self.index, self.chunk):
            item = [seg, *_take(self.index, self.win, self.tid, seg), None, None]  # seg, w, t, pos, features, z
            if self.keep:
                kept.append(item)
            yield item
        if self.keep:
            self.kept = kept

    @staticmethod
    def features(item: list, stats: tuple, features: bool) -> tuple:
        """:func:`~weightspace.nowcast.features.param_features` of one chunk (computed once per kept chunk)."""
        if item[4] is None or (features and item[4][0] is None):
            f, s, line = param_features(item[1], item[2], *stats, features)
            item[4] = (None if f is None else f[0], s[0], line[0])
        return item[4]


def _pick(x: Tensor, pos: slice | Tensor) -> Tensor:
    return x[pos] if isinstance(pos, slice) else x.index_select(0, pos)


def _add(acc: Tensor, t: Tensor | int, v: Tensor) -> None:
    if isinstance(t, int):
        acc[:, t] += v.sum()
    else:  # one window: a 1-D scatter (index_add_ along dim 1 takes a slow path on CPU)
        acc[0].index_add_(0, t, v[0])


def _stats(index: StreamIndex, chunks: _Chunks, G: int, dev: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`~weightspace.nowcast.features.group_stats` of the window, two passes over chunks."""
    cnt = index.tensor_count
    s_mean = torch.zeros(1, G, device=dev)
    for _, w, t, *_ in chunks:
        _add(s_mean, t, w.mean(1))
    mu = s_mean / cnt
    s_var, s_step = torch.zeros(1, G, device=dev), torch.zeros(1, G, device=dev)
    for _, w, t, *_ in chunks:
        mean_r = w.mean(1)
        var_r = (w - mean_r[:, None]).square_().mean(1)
        mu_p = mu[:, t: t + 1] if isinstance(t, int) else mu.index_select(1, t)
        _add(s_var, t, var_r + (mean_r - mu_p) ** 2)
        _add(s_step, t, (w[:, 1:] - w[:, :-1]).abs_().mean(1))
    return (mu, *finish_stats(s_var / cnt, s_step / cnt))


# ----------------------------------------------------------------------------- prediction
def predict_stream(model: nn.Module, layout: NowcastLayout, rows: Tensor | Sequence[Tensor],
                   horizon: int | None = None, chunk: int = CHUNK, block_min: int = BLOCK_MIN) -> Tensor:
    """Deltas ``[P]`` for ``horizon`` (or ``[H, P]`` for all) of one window of ``c`` snapshots ``rows``
    (``[c, P]``, or ``c`` tensors ``[P]``), as :meth:`Nowcaster.predict` computes them, in chunks of
    ``chunk`` parameters.

    Call under ``torch.inference_mode`` / ``no_grad`` with ``model`` in eval mode (as ``predict`` does).
    """
    dev = next(iter(model.parameters()), torch.empty(0, device=rows[0].device)).device
    index = stream_index(layout, dev, block_min)
    tid = layout.slot_tensor
    if tid.device != dev:  # only the tensor ids travel to the model's device
        tid = layout.cache.setdefault(("slot_tensor", str(dev)), tid.to(dev))
    chunks = _Chunks(index, _Window(rows, dev), tid, chunk)
    learned = model.learned
    if chunks.keep:
        stats = chunks.whole(layout.num_tensors, learned)
    else:
        stats = _stats(index, chunks, layout.num_tensors, dev)
    H = model.horizons
    hs = torch.arange(1, H + 1, dtype=torch.float32, device=dev) if horizon is None else None
    out = torch.empty((H, index.num_params) if horizon is None else (index.num_params,), device=dev)
    graph = _GraphState(model, index, dev) if model.kind == "graph" else None
    if graph is not None:
        for item in chunks:
            z = graph.absorb(item[0], item[3], chunks.features(item, stats, True)[0].t(), keep=chunks.keep)
            item[5] = z  # a kept chunk's encodings serve the readout too
        graph.propagate()
    last = model.head[-1] if learned else None
    for item in chunks:
        seg, pos = item[0], item[3]
        feats, s, line = chunks.features(item, stats, learned)
        if horizon is None:
            d = line[:, :1] + line[:, 1:] * hs  # [K, H]
        else:
            d = line[:, 0] + line[:, 1] * horizon
        if last is not None:
            if graph is not None:  # [De, K]
                y = graph.readout(seg, feats.t(), item[5])
                d = d + (torch.addmm(last.bias[:, None], last.weight, y).t() if horizon is None
                         else last.weight[horizon - 1] @ y + last.bias[horizon - 1])
            else:  # [K, D]
                y = model.encode(feats)
                for layer in list(model.head)[:-1]:
                    y = layer(y)
                d = d + (last(y) if horizon is None else y @ last.weight[horizon - 1] + last.bias[horizon - 1])
        if horizon is None:
            out[:, pos] = (d * s[:, None]).t()
        else:
            out[pos] = d * s
    return out


class _GraphState:
    """Neuron-level state of the graph nowcaster during one streamed prediction.

    Per-parameter tensors are feature-major (``[De, K]``: features ``[F, K]`` in, encodings
    ``[De, K]``), so every product has the chunk as its long axis and a block's sums run over
    contiguous rows.
    """

    def __init__(self, model: nn.Module, index: StreamIndex, dev: torch.device) -> None:
        self.m, self.ix, self.dev = model, index, dev
        N, De = index.num_nodes, model.config.param_hidden
        self.agg = torch.zeros(3 * N + 1, De, device=dev)
        self.val = torch.empty(index.num_params, device=dev)
        self.slope = torch.empty(index.num_params, device=dev)
        self.table = model.kind_emb.weight + model.encode.bias  # [rows, De]: embedding + encoder bias

    def _z(self, seg, ft: Tensor) -> Tensor:
        """Encodings ``[De, K]`` of a chunk's features ``ft [F, K]``."""
        what, a, b = seg
        z = self.m.encode.weight @ ft
        if what == "rest":
            return z.add_(self.table.index_select(0, self.ix.kind[a:b]).t())
        if isinstance(what.kind, int):
            return z.add_(self.table[what.kind][:, None])
        k = what.kind[a:b][..., None].expand(b - a, what.d1, what.T).reshape(-1)
        return z.add_(self.table.index_select(0, k).t())

    def absorb(self, seg, pos, ft: Tensor, keep: bool = False) -> Tensor | None:
        """Add one chunk's encodings to the neurons' sums; keep its channel values. Returns the
        encodings (before the activation) when ``keep``."""
        what, a, b = seg
        if isinstance(pos, slice):
            self.val[pos], self.slope[pos] = ft[0], ft[-1]
        else:
            self.val.index_copy_(0, pos, ft[0])
            self.slope.index_copy_(0, pos, ft[-1])
        z0 = self._z(seg, ft)
        kept = z0.clone() if keep else None
        z = nn.functional.silu(z0, inplace=True)
        N = self.ix.num_nodes
        if what == "rest":
            zt = z.t()
            self.agg.index_add_(0, self.ix.agg_a[a:b], zt).index_add_(0, self.ix.agg_b[a:b], zt)
            return kept
        z = z.view(-1, b - a, what.d1, what.T)
        row_sum, col_sum = z.sum((2, 3)).t(), z.sum((1, 3)).t()
        rows = what.rows[a:b]
        if what.dst_rows:  # rows are destinations (incoming sums), cols sources (outgoing sums)
            self.agg.index_add_(0, rows, row_sum).index_add_(0, N + what.cols, col_sum)
        else:
            self.agg.index_add_(0, N + rows, row_sum).index_add_(0, what.cols, col_sum)
        return kept

    def propagate(self) -> None:
        """Neuron states after the message-passing layers."""
        m, ix = self.m, self.ix
        N, De, C = ix.num_nodes, m.config.param_hidden, CHANNELS
        agg = self.agg[: 3 * N].view(3, N, De)
        agg = agg * torch.stack([ix.inv_in, ix.inv_out, ix.inv_own])[..., None]
        h = m.node_in(agg.transpose(0, 1).reshape(N, 3 * De))
        h = h + m.node_type_emb(ix.node_type) + m.act_emb(ix.node_act)
        S = None
        if len(m.convs) and ix.mp_col.numel():
            val = self.val if ix.rest is None else self.val.index_select(0, ix.rest)
            slope = self.slope if ix.rest is None else self.slope.index_select(0, ix.rest)
            chans = torch.stack([torch.ones_like(val), val, slope], dim=-1).reshape(-1)
            S = sparse_csr(ix.mp_crow, ix.mp_col, chans.index_select(0, ix.mp_take), (2 * N, 2 * C * N))
        def weight_shaped(v: Tensor, b: DenseBlock) -> Tensor:  # [d0, d1], kernel entries summed
            v = v[b.start: b.start + b.size]
            return v.view(b.d0, b.d1) if b.T == 1 else v.view(b.d0, b.d1, b.T).sum(-1)

        mats = [(weight_shaped(self.val, b), weight_shaped(self.slope, b)) for b in ix.blocks]
        for conv in m.convs:
            Dm = conv.msg_dim
            M = conv.msg(h).view(N, 2 * C, Dm)
            if S is not None:
                acc = S @ M.transpose(0, 1).reshape(-1, Dm)
                fwd, bwd = acc[:N].clone(), acc[N:].clone()
            else:
                fwd, bwd = h.new_zeros(N, Dm), h.new_zeros(N, Dm)
            for blk, (Vv, Vs) in zip(ix.blocks, mats):
                dst, src = (blk.rows, blk.cols) if blk.dst_rows else (blk.cols, blk.rows)
                Mf, Mb = M.index_select(0, src), M.index_select(0, dst)  # forward from sources, backward from dests
                T = float(blk.T)
                if blk.dst_rows:  # V is [dst, src]
                    f = Vv @ Mf[:, 1] + Vs @ Mf[:, 2] + T * Mf[:, 0].sum(0)
                    g = Vv.t() @ Mb[:, C + 1] + Vs.t() @ Mb[:, C + 2] + T * Mb[:, C].sum(0)
                else:  # V is [src, dst]
                    f = Vv.t() @ Mf[:, 1] + Vs.t() @ Mf[:, 2] + T * Mf[:, 0].sum(0)
                    g = Vv @ Mb[:, C + 1] + Vs @ Mb[:, C + 2] + T * Mb[:, C].sum(0)
                fwd.index_add_(0, dst, f)
                bwd.index_add_(0, src, g)
            h = conv.combine(h, fwd * ix.inv_in[:, None], bwd * ix.inv_out[:, None])
        R = m.ctx(h).view(N, 3, De).transpose(0, 1).reshape(3 * N, De)
        self.R = torch.cat([R, R.new_zeros(1, De)])

    def readout(self, seg, ft: Tensor, z: Tensor | None = None) -> Tensor:
        """Per-parameter states ``[De, K]`` of one chunk before the horizon head."""
        what, a, b = seg
        z = self._z(seg, ft) if z is None else z
        N, R = self.ix.num_nodes, self.R
        if what == "rest":
            y = z.add_(R.index_select(0, self.ix.ctx_a[a:b]).t()).add_(R.index_select(0, self.ix.ctx_b[a:b]).t())
        else:
            rows, cols = what.rows[a:b], what.cols
            r_rows = R.index_select(0, N + rows if what.dst_rows else rows)  # destination / source context
            r_cols = R.index_select(0, cols if what.dst_rows else N + cols)
            y = z.view(-1, b - a, what.d1, what.T)
            y = y.add_(r_rows.t()[:, :, None, None]).add_(r_cols.t()[:, None, :, None]).view(z.shape)
        y = nn.functional.silu(y, inplace=True)
        mid = self.m.mid
        return nn.functional.silu(torch.addmm(mid.bias[:, None], mid.weight, y), inplace=True)
