"""Compressed storage of a parameter graph's ``edge_index`` as affine segments.

A network's edges come in a few shapes, each enumerated in order by the converter: the complete
bipartite block of a dense layer (``out x in`` edges, output-major, in the weight's memory order),
the diagonal of a depthwise convolution, an identity or residual connection, the groups of a grouped
convolution. Every one of them is an *affine segment*: edges ``e0 + r*C + c`` (``r < R``,
``c < C``) with

.. math::

    \\mathrm{src} = s_0 + r\\,s_r + c\\,s_c, \\qquad \\mathrm{dst} = d_0 + r\\,d_r + c\\,d_c .

A segment costs one table row (nine ``int64``) however many edges it holds, against eight bytes per
edge for an ``int32`` ``[2, E]`` ``edge_index``. Whatever does not form segments of at least
:data:`MIN_SEGMENT_EDGES` edges is stored explicitly.

Layout (``S`` table rows, ``X`` explicit edges):

- ``edge_segments`` ``[S, 9]`` int64, columns :data:`SEGMENT_COLUMNS` ``(kind, R, C, s0, sr, sc,
  d0, dr, dc)``. The rows cover the edges in order (row ``k`` starts at edge ``sum_{j<k} R_j C_j``).
  ``kind`` 0 is an affine segment; ``kind`` 1 means "the next ``R * C`` edges of ``edge_rest``"
  (``C = 1``; its other columns are unused).
- ``edge_rest`` ``[2, X]`` int32: the explicit edges, in edge order.

Batching (``torch_geometric``'s collation) concatenates both; a graph's node offset is added to the
``s0`` and ``d0`` columns of its rows (:data:`SEGMENT_NODE_COLUMNS`) and to ``edge_rest``, which
leaves a segment affine: the batch's table decodes to the batch's ``edge_index``.

**The encoder** (:func:`compress_edges`, vectorized, ``O(E)``) works in two passes of the same greedy
rule, "extend the current run while the step stays the same":

1. *rows*: maximal runs of edges whose consecutive ``(src, dst)`` steps are equal (a row of a dense
   block: step ``(1, 0)``; a diagonal: ``(1, 1)``);
2. *segments*: maximal runs of rows of equal length and column step whose starts advance by a
   constant step ``(s_r, d_r)``.

The greedy partition of a sequence of steps into runs is computed without a Python loop: group the
steps into maximal runs of equal steps; a run of two or more steps always starts a new group (the
previous group ends on its first edge at the latest), and within a stretch of single-step runs the
groups alternate, so parity from the last long run decides which of them starts a group.

**The decoder** (:func:`expand_edges`) writes each large segment with one broadcast add into the
``int32`` output and the small ones together with a few vectorized ops.
:func:`edge_index_of` caches the decoded ``edge_index`` per segment table (a weak, identity-keyed
cache outside the graph's stored fields), so every graph of one architecture, and its
:class:`~weightspace.graph.GraphSpec`, share one decoded tensor, and layers that read
``graph.edge_index`` each forward decode it once.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

__all__ = [
    "SEGMENT_COLUMNS",
    "SEGMENT_NODE_COLUMNS",
    "MIN_SEGMENT_EDGES",
    "DECODE_LOOP_EDGES",
    "DECODE_CHUNK_EDGES",
    "ENCODE_CHUNK_EDGES",
    "compress_edges",
    "compress_edge_lists",
    "expand_edges",
    "edge_index_of",
    "concat_segments",
    "segment_edges",
]

#: Columns of ``edge_segments``.
SEGMENT_COLUMNS = ("kind", "R", "C", "s0", "sr", "sc", "d0", "dr", "dc")
#: Columns a graph's node offset is added to when graphs are batched.
SEGMENT_NODE_COLUMNS = (3, 6)
#: Segments with fewer edges are stored explicitly (a table row costs as much as nine int32 edges).
MIN_SEGMENT_EDGES = 9
AFFINE, EXPLICIT = 0, 1
#: Segments at least this large are decoded one by one (a broadcast add each) ...
DECODE_LOOP_EDGES = 1 << 16
#: ... the smaller ones together, this many edges at a time.
DECODE_CHUNK_EDGES = 1 << 18
#: The general encoder works on chunks of this many edges (bounded memory).
ENCODE_CHUNK_EDGES = 1 << 22

_DECODED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _greedy_groups(same: Tensor, valid: Tensor, M: int) -> tuple[Tensor, Tensor]:
    """Partition items ``0..M-1`` into the groups of the greedy rule "extend the group while the step
    between consecutive items stays the same".

    Args:
        same: ``[M - 2]`` bool, step ``i`` equals step ``i + 1`` (both valid).
        valid: ``[M - 1]`` bool, step ``i`` (between items ``i`` and ``i + 1``) may join them.
        M: number of items.
    Returns:
        ``(first, last)``: ``[G]`` int64 first and last item of each group, in order.
    """
    dev = valid.device
    if M <= 1:
        z = torch.zeros(M, dtype=torch.long, device=dev)
        return z, z.clone()
    change = torch.ones(M - 1, dtype=torch.bool, device=dev)
    change[1:] = ~same
    a = change.nonzero().squeeze(1)  # first step of each run of equal steps
    K = int(a.numel())
    L = torch.diff(a, append=a.new_tensor([M - 1]))  # steps in the run
    brk = ~valid[a]  # a step that may not join its items (a run of one)
    idx = torch.arange(K, device=dev)
    start = torch.ones(K, dtype=torch.bool, device=dev)  # a fresh group must begin at the run's first item
    start[1:] = brk[:-1]
    anchor = (start | (L >= 2)) & ~brk
    last_anchor = torch.cummax(torch.where(anchor, idx, torch.full_like(idx, -1)), 0).values
    visited = ~brk & (anchor | ((idx - last_anchor) % 2 == 0))
    prev = torch.zeros(K, dtype=torch.bool, device=dev)
    prev[1:] = visited[:-1]
    firsts = [a[visited] + prev[visited].long()]
    lasts = [a[visited] + L[visited]]
    lone = a[brk & ~prev]  # the item before a break that no group reached
    firsts.append(lone)
    lasts.append(lone)
    if not bool(visited[-1]):
        end = a.new_tensor([M - 1])
        firsts.append(end)
        lasts.append(end)
    first, last = torch.cat(firsts), torch.cat(lasts)
    order = torch.argsort(first)
    first, last = first[order], last[order]
    if int((last - first + 1).sum()) != M or (first.numel() > 1 and not bool((first[1:] == last[:-1] + 1).all())):
        raise RuntimeError("internal error in weightspace.graph.edge_codec: the greedy groups do not cover "
                           "the items exactly once; please report it with the edge list")
    return first, last


def _single_segment(src: Tensor, dst: Tensor) -> Tensor | None:
    """The one affine segment ``[1, 9]`` that ``(src, dst)`` forms, or None (a dense layer's block:
    a check in a few passes, before the general encoder)."""
    n = int(src.numel())
    if n < 2:
        return None
    sc, dc = int(src[1] - src[0]), int(dst[1] - dst[0])
    C, lo, width = n, 1, 4096
    while lo < n:  # find the first change of step, scanning a growing prefix
        hi = min(n, lo + width)
        ch = ((src[lo:hi] - src[lo - 1 : hi - 1]) != sc) | ((dst[lo:hi] - dst[lo - 1 : hi - 1]) != dc)
        k = ch.nonzero()
        if k.numel():
            C = lo + int(k[0])
            break
        lo, width = hi, width * 4
    R = n // C
    if R * C != n:
        return None
    s0, d0 = int(src[0]), int(dst[0])
    sr, dr = (int(src[C]) - s0, int(dst[C]) - d0) if R > 1 else (0, 0)
    if C == 1:
        sc = dc = 0
    dev = src.device
    ar, ac = torch.arange(R, device=dev), torch.arange(C, device=dev)
    for t, b0, br, bc in ((src, s0, sr, sc), (dst, d0, dr, dc)):
        rows, cols = b0 + br * ar, bc * ac
        lo_v, hi_v = int(rows.min()) + int(cols.min()), int(rows.max()) + int(cols.max())
        if lo_v < 0 or hi_v >= 2**31:  # ids must be valid int32 node ids
            return None
        expect = rows.to(torch.int32)[:, None] + cols.to(torch.int32)[None, :]
        flat = t.reshape(-1)
        if not torch.equal(expect.view(-1) if flat.dtype == torch.int32 else expect.view(-1).to(flat.dtype), flat):
            return None
    return torch.tensor([[AFFINE, R, C, s0, sr, sc, d0, dr, dc]], dtype=torch.long, device=dev)


def compress_edges(edge_index: Tensor) -> tuple[Tensor, Tensor]:
    """``edge_index [2, E]`` -> ``(edge_segments [S, 9] int64, edge_rest [2, X] int32)`` (module docs).

    Exact for any edge list: :func:`expand_edges` gives back ``edge_index`` (as int32). An edge list
    that is one affine segment (a dense layer's block) is recognized in a few passes; otherwise the
    greedy two-pass encoder runs on chunks of :data:`ENCODE_CHUNK_EDGES` edges (segments that cross a
    chunk boundary are split there).
    """
    ei = edge_index.reshape(2, -1)
    return compress_edge_lists(ei[0], ei[1])


def compress_edge_lists(src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`compress_edges` of the edges ``src[e] -> dst[e]`` (two ``[E]`` tensors)."""
    E = int(src.numel())
    one = _single_segment(src, dst) if E >= MIN_SEGMENT_EDGES else None
    if one is not None:
        return one, torch.zeros(2, 0, dtype=torch.int32, device=src.device)
    if E and (min(int(src.min()), int(dst.min())) < 0 or max(int(src.max()), int(dst.max())) >= 2**31):
        raise ValueError("edge_index holds node ids outside [0, 2**31): weightspace.graph.edge_codec stores "
                         "them as int32")
    ei = torch.stack([src.reshape(-1), dst.reshape(-1)]).to(torch.int32)
    if E <= ENCODE_CHUNK_EDGES:
        return _compress(ei)
    return concat_segments([_compress(ei[:, a : a + ENCODE_CHUNK_EDGES]) for a in range(0, E, ENCODE_CHUNK_EDGES)])


def _compress(ei: Tensor) -> tuple[Tensor, Tensor]:
    """The greedy two-pass encoder on an int32 ``[2, E]`` edge list."""
    dev = ei.device
    E = int(ei.shape[1])
    src, dst = ei[0], ei[1]
    # pass 1: rows (runs of edges with one (src, dst) step); int32 steps cannot overflow (ids < 2**31)
    ds, dd = src[1:] - src[:-1], dst[1:] - dst[:-1]
    same = (ds[1:] == ds[:-1]) & (dd[1:] == dd[:-1])
    f, last = _greedy_groups(same, torch.ones(max(E - 1, 0), dtype=torch.bool, device=dev), E)
    del same
    C = last - f + 1
    s, d = src[f].long(), dst[f].long()
    long_row = C > 1
    at = f.clamp(max=max(E - 2, 0))
    sc = torch.where(long_row, ds[at].long(), 0) if E > 1 else torch.zeros_like(f)
    dc = torch.where(long_row, dd[at].long(), 0) if E > 1 else torch.zeros_like(f)
    del ds, dd
    # pass 2: segments (runs of rows of one shape whose starts advance by one step)
    M = int(C.numel())
    rs_s, rs_d = s.diff(), d.diff()
    valid = (C[1:] == C[:-1]) & (sc[1:] == sc[:-1]) & (dc[1:] == dc[:-1])
    same = (rs_s[1:] == rs_s[:-1]) & (rs_d[1:] == rs_d[:-1]) & valid[1:] & valid[:-1]
    rf, rl = _greedy_groups(same, valid, M)
    R = rl - rf + 1
    multi = R > 1
    at = rf.clamp(max=max(M - 2, 0))
    sr = torch.where(multi, rs_s[at], 0) if M > 1 else torch.zeros_like(rf)
    dr = torch.where(multi, rs_d[at], 0) if M > 1 else torch.zeros_like(rf)
    Cs = C[rf]
    table = torch.stack([torch.zeros_like(R), R, Cs, s[rf], sr, sc[rf], d[rf], dr, dc[rf]], 1)
    # small segments -> explicit edges, consecutive ones merged into one row
    n = R * Cs
    small = n < MIN_SEGMENT_EDGES
    if not bool(small.any()):
        return table.contiguous(), torch.zeros(2, 0, dtype=torch.int32, device=dev)
    rest = ei[:, torch.repeat_interleave(small, n)]
    table[small] = 0
    table[small, 0] = EXPLICIT
    table[small, 1] = n[small]
    table[small, 2] = 1
    return concat_segments([(table, rest)])


def segment_edges(segments: Tensor) -> int:
    """Number of edges a segment table describes."""
    seg = segments.reshape(-1, len(SEGMENT_COLUMNS))
    return int((seg[:, 1] * seg[:, 2]).sum())


def expand_edges(segments: Tensor, rest: Tensor) -> Tensor:
    """``(edge_segments, edge_rest)`` -> ``edge_index [2, E]`` int32 (a new tensor, on the table's
    device). Inverse of :func:`compress_edges`."""
    seg = segments.reshape(-1, len(SEGMENT_COLUMNS))
    dev = seg.device
    R, C = seg[:, 1], seg[:, 2]
    n = R * C
    E = int(n.sum())
    out = torch.empty(2, E, dtype=torch.int32, device=dev)
    if not E:
        return out
    e0 = torch.cumsum(n, 0) - n
    kind = seg[:, 0]
    bad = (kind != AFFINE) & (kind != EXPLICIT)
    if bool(bad.any()) or bool((n < 0).any()):
        raise ValueError("edge_segments holds a row of unknown kind or a negative size: it was not made by "
                         "weightspace.graph.edge_codec.compress_edges (assign an edge_index instead)")
    expl = kind == EXPLICIT
    if bool(expl.any()):
        n_x = n[expl]
        X = int(n_x.sum())
        if X != int(rest.shape[-1]):
            raise ValueError(f"edge_segments refers to {X} explicit edges, edge_rest holds {int(rest.shape[-1])}: "
                             "the two fields do not belong together")
        p0 = torch.cumsum(n_x, 0) - n_x
        pos = torch.repeat_interleave(e0[expl] - p0, n_x) + torch.arange(X, device=dev)
        out[:, pos] = rest.to(device=dev, dtype=torch.int32)
    elif int(rest.shape[-1]):
        raise ValueError(f"edge_rest holds {int(rest.shape[-1])} edges that edge_segments does not refer to")
    aff = ~expl
    big = (aff & (n >= DECODE_LOOP_EDGES)).nonzero().squeeze(1).tolist()
    rows = seg.tolist() if big else None
    e0_l = e0.tolist() if big else None
    for k in big:
        _, r_, c_, s0, sr, sc, d0, dr, dc = rows[k]
        a = e0_l[k]
        ar, ac = torch.arange(r_, device=dev), torch.arange(c_, device=dev)
        for row, b0, br, bc in ((0, s0, sr, sc), (1, d0, dr, dc)):
            torch.add((b0 + br * ar).to(torch.int32)[:, None], (bc * ac).to(torch.int32)[None, :],
                      out=out[row, a : a + r_ * c_].view(r_, c_))
    small = (aff & (n < DECODE_LOOP_EDGES) & (n > 0)).nonzero().squeeze(1)
    if small.numel():
        cum = torch.cumsum(n[small], 0)
        lo = 0
        while lo < small.numel():  # chunks of about DECODE_CHUNK_EDGES edges
            base = int(cum[lo - 1]) if lo else 0
            hi = max(int(torch.searchsorted(cum, base + DECODE_CHUNK_EDGES, right=True)), lo + 1)
            ks = small[lo:hi]
            nk = n[ks]
            tot = int(nk.sum())
            sid = torch.repeat_interleave(torch.arange(ks.numel(), device=dev), nk)
            local = torch.arange(tot, device=dev) - torch.repeat_interleave(torch.cumsum(nk, 0) - nk, nk)
            sk = seg[ks]
            Ck = sk[:, 2][sid]
            r = torch.div(local, Ck, rounding_mode="floor")
            c = local - r * Ck
            pos = local + e0[ks][sid]
            for row, cols in ((0, (3, 4, 5)), (1, (6, 7, 8))):
                v = sk[:, cols[0]][sid] + r * sk[:, cols[1]][sid] + c * sk[:, cols[2]][sid]
                out[row, pos] = v.to(torch.int32)
            lo = hi
    return out


def _version(t: Tensor) -> int | None:
    """``t``'s in-place version counter (None for an inference tensor, which has none)."""
    try:
        return t._version
    except RuntimeError:
        return None


def edge_index_of(segments: Tensor, rest: Tensor) -> Tensor:
    """:func:`expand_edges`, cached per ``segments`` tensor (weakly, by identity; refreshed when either
    tensor is replaced or modified in place, or the cached result was modified). The result is a
    normal tensor even when it is first requested under ``torch.inference_mode``."""
    hit = _DECODED.get(segments)
    if hit is not None:
        rest_ref, v_seg, v_rest, out, v_out = hit
        if rest_ref is rest and v_seg == _version(segments) and v_rest == _version(rest) and v_out == out._version:
            return out
    with torch.inference_mode(False):
        out = expand_edges(segments, rest)
    _DECODED[segments] = (rest, _version(segments), _version(rest), out, out._version)
    return out


def concat_segments(parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Concatenate the compressed forms of consecutive edge lists (no node offsets added), merging
    adjacent explicit rows."""
    tables = [t for t, _ in parts if t.numel()]
    rests = [r for _, r in parts if r.numel()]
    dev = parts[0][0].device if parts else torch.device("cpu")
    if not tables:
        return (torch.zeros(0, len(SEGMENT_COLUMNS), dtype=torch.long, device=dev),
                torch.zeros(2, 0, dtype=torch.int32, device=dev))
    table = torch.cat(tables)
    rest = torch.cat(rests, 1).to(torch.int32) if rests else torch.zeros(2, 0, dtype=torch.int32, device=dev)
    expl = table[:, 0] == EXPLICIT
    if int(expl.sum()) > 1:
        grp = torch.cumsum(torch.cat([expl.new_ones(1), expl[1:] != expl[:-1]]), 0) - 1
        first = torch.ones_like(expl)
        first[1:] = grp[1:] != grp[:-1]
        n = table[:, 1] * table[:, 2]
        n_grp = torch.zeros(int(grp[-1]) + 1, dtype=torch.long, device=dev).index_add_(0, grp, n)
        keep = ~expl | first
        table, grp, expl = table[keep], grp[keep], expl[keep]
        table[expl, 1] = n_grp[grp[expl]]
    return table.contiguous(), rest.contiguous()
