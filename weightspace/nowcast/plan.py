r"""A prepared jump: the one-window prediction of :class:`~weightspace.nowcast.Nowcaster` for one
small architecture, with everything except the window computed once.

A :class:`~weightspace.nowcast.hook.NowcastHook` predicts windows of the same architecture
with the same nowcaster again and again, and on a model of a few thousand parameters the prediction
is a few hundred small tensor operations whose fixed costs (dispatch, allocation, index building)
outweigh the arithmetic. :class:`JumpPlan` computes the same function as
:func:`~weightspace.nowcast.stream.predict_stream` (and the batched
:meth:`Nowcaster.forward <weightspace.nowcast.Nowcaster.forward>`) for one horizon, with:

* every index that depends only on the graph built once (normalization groups, the aggregation of
  parameter encodings into neurons as one sparse ``[3N, P]`` matrix with the averaging folded into
  its values, the message matrix of the weights outside dense blocks, the readout's context rows);
* what depends only on the nowcaster's weights gathered once and refreshed when a weight changes
  (the embedding row plus encoder bias of every kind of parameter, appended to the encoder's weight
  so that one-hot rows of the feature buffer add them in the encoder's product; the neurons' type,
  activation and input-layer bias ``[N, D]``);
* the features written into one preallocated buffer, feature-major, with the encoder's columns
  permuted to the buffer's row order so that statistics, features and encodings take no copies;
* group statistics as segment means when the groups are runs in flat order (as in every example
  architecture), else a product with a dense ``[P, G]`` matrix;
* the readout's three-term sum (a parameter's own encoding and its two neurons' contexts) as one
  sparse product over a table holding both;
* no parameter-sized tensor allocated per call but the result (fresh allocations of that size cost
  page faults at every call);
* Linefit in closed form: its prediction ``(mean - last) + slope·((c-1)/2 + h)`` does not depend on
  the step scale, which the general path divides by and multiplies back.

Results equal the streamed path's up to float rounding (``tests/nowcast/test_plan.py``).
Memory: about ``2·c + 2·De + 16`` floats per parameter besides the window (less than the streamed path
allocates per call), held while the hook lives, so a plan is made only for models of at most
:data:`PLAN_MAX` parameters; larger ones take the streamed path. Every buffer a call touches is
preallocated and reused (``docs/design-notes/nowcast.md`` has the reasons).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .features import CHANNELS, slope_weights
from .layout import NowcastLayout, context_rows, csr, slot_ends, sparse_csr
from .stream import BLOCK_MIN, detect_block, group_pieces

__all__ = ["JumpPlan", "PLAN_MAX"]

PLAN_MAX = 1 << 17  # parameters: larger models take the streamed path (bounded memory)
_DENSE_GROUPS = 1 << 21  # groups x parameters up to which group means are a product with a dense [P, G] matrix
_ONE_HOT_MAX = 16  # kinds of parameters up to which their embedding rows enter the encoder as one-hot features


class JumpPlan:
    """One architecture's prepared one-window, one-horizon prediction by ``nowcaster`` (see module docs).

    Args:
        nowcaster: the predictor (``graph``, ``mlp`` or ``linefit``); the plan reads its weights at
            every call and re-gathers what it derives from them when any of them changed.
        layout: the architecture (:meth:`NowcastLayout.from_spec`).
        context: snapshots per window (default: the nowcaster's; Linefit takes any ``c >= 2``).
        device: where to compute (default: the nowcaster's device).
        block_min: weight tensors with at least this many entries pass messages as dense blocks
            (:data:`~weightspace.nowcast.stream.BLOCK_MIN`).

    Shapes:
        ``plan(window, horizon)``: ``window [c, P]`` (or ``c`` tensors ``[P]``), oldest first ->
        deltas ``[P]`` (``theta(last + horizon spacings) - theta(last)``), on the window's device and
        in its dtype.
    """

    def __init__(self, nowcaster: nn.Module, layout: NowcastLayout, context: int | None = None,
                 device: torch.device | str | None = None, block_min: int = BLOCK_MIN) -> None:
        c = int(context or nowcaster.context)
        if nowcaster.learned and c != nowcaster.context:
            raise ValueError(f"this nowcaster reads {nowcaster.context} snapshots, got context={c}")
        if c < 2:
            raise ValueError(f"a window needs at least 2 snapshots, got {c}")
        self.nowcaster, self.layout, self.context = nowcaster, layout, c
        self.kind, self.horizons = nowcaster.kind, nowcaster.horizons
        self.device = torch.device(device) if device is not None else nowcaster.param_device(torch.device("cpu"))
        self.num_params = layout.num_params
        with torch.inference_mode(False), torch.no_grad():
            self._build(layout.to(torch.device("cpu")), block_min)
        self._weights_key: tuple | None = None

    # ------------------------------------------------------------------ structure (once)
    def _build(self, lay: NowcastLayout, block_min: int) -> None:
        P, N, G, c, dev = lay.num_params, lay.num_nodes, lay.num_tensors, self.context, self.device
        tid = lay.slot_tensor.long()
        self._win = torch.empty(c, P, device=dev)  # the window when it arrives as rows or on another device
        # least-squares slope over k = 0..c-1, from the differences (exact 0 for a parameter that did not move)
        self._dslope = slope_weights(c).to(dev)
        self._base = torch.empty(P, device=dev)
        self._line = torch.empty(P, device=dev)
        self._mean = torch.empty(P, device=dev)  # Linefit's mean over the window
        if self.kind == "linefit":
            return
        self.num_tensors = G
        self._tid = tid.to(dev, torch.int32 if P < 2**31 else torch.int64)
        counts = torch.bincount(tid, minlength=G)
        cnt = counts.clamp_min(1).float()
        self._lengths = self._gm = self._inv_cnt = None
        if bool((tid[1:] >= tid[:-1]).all()) and bool((counts > 0).all()):  # groups are runs in flat order
            self._lengths = [counts.expand(r, G).contiguous().to(dev) for r in (1, 2)]
        elif G * P <= _DENSE_GROUPS:  # group means as a product with a dense [P, G] matrix
            gm = torch.zeros(P, G)
            gm[torch.arange(P), tid] = 1.0 / cnt[tid]
            self._gm = gm.to(dev)
        else:
            self._inv_cnt = (1.0 / cnt).to(dev)
        self._tab = torch.empty(3, G, device=dev)  # per group: step scale, sigma, log(step / sigma)
        self._tabviews = tuple(self._tab)
        # the embedding row of every parameter enters the encoder as one-hot rows of the feature buffer when
        # the architecture has few kinds of parameters (else as a gathered [P, De] table)
        ends = slot_ends(lay) if self.kind == "graph" else None
        kind = ends[4] if ends is not None else None
        kinds = torch.unique(kind) if kind is not None else None
        self._kinds = kinds if kinds is not None and kinds.numel() <= _ONE_HOT_MAX else None
        K = 0 if self._kinds is None else self._kinds.numel()
        # feature buffer, flat so that the message values can also read a constant 1 at its end: rows
        # 0 s_p, 1 sigma_p, then the c+2 features [logscale, last, d_1..d_{c-1}, slope], the mean over the
        # window and the sum of absolute steps (the encoder gives them weight 0), K one-hot rows, 1.0
        self._rows = c + 6 + K
        self._flat = torch.zeros(self._rows * P + 1, device=dev)
        self._flat[-1] = 1.0
        self._buf = B = self._flat[:-1].view(self._rows, P)
        if K:
            B[c + 6:] = (kind[None] == self._kinds[:, None]).float().to(dev)
        # differences and mean of the window: one product [c+1, c] x [c, P]; its slope row stays 0 and is
        # filled from the differences, as param_features computes it (see slope_weights)
        lin = torch.zeros(c + 1, c)
        lin[torch.arange(c - 1), torch.arange(1, c)] = 1.0
        lin[torch.arange(c - 1), torch.arange(c - 1)] = -1.0
        lin[c] = 1.0 / c
        self._lin = lin.to(dev)
        # persistent views: s_p, sigma_p, [s_p; sigma_p; logscale_p], last, differences, slope, features,
        # the encoder's input [P, c+2+K]
        self._rowviews = (B[0], B[1], B[:3], B[3], B[4: c + 3], B[c + 3], B[2: c + 4], B[2:].t())
        self._linviews = (B[4: c + 5], B[4: c + 4], B[c + 4: c + 6], B[c + 4], B[c + 5])
        self._scratch = torch.empty(c, P, device=dev)
        self._window_views: tuple = (None,)
        self._v = torch.empty(1, P, device=dev)
        self._mu = torch.empty(P, device=dev)
        # the encoder's input columns in the buffer's row order (features are [last, d.., logscale, slope])
        self._perm = [c, 0, *range(1, c), c + 1]
        self._stat_cols = 2  # zero columns of the encoder for the mean and step-sum rows
        if self.kind == "mlp":
            width = max(mod.out_features for mod in self.nowcaster.modules() if isinstance(mod, nn.Linear))
            self._hidden = [torch.empty(P * width, device=dev) for _ in range(2)]
        if self.kind != "graph":
            return
        De = self.nowcaster.config.param_hidden
        self._N = N
        edge, owner, src, dst, kind = ends
        self._kind = kind
        p = torch.arange(P)
        ep, np_ = p[edge], p[~edge]
        # aggregation [3N, P], row 3n + (0 incoming, 1 outgoing, 2 own), values 1 / count of the row
        rows = torch.cat([3 * dst[edge], 3 * src[edge] + 1, 3 * owner[~edge] + 2])
        cols = torch.cat([ep, ep, np_])
        cnt = torch.bincount(rows, minlength=3 * N).clamp_min(1).float()
        order, crow, col = csr(rows, cols, 3 * N)
        self._agg = _csr32(crow, col, (1.0 / cnt)[rows[order]], (3 * N, P), dev)
        # readout table [P + 3N + 1, De]: encodings z, then the neuron contexts ctx(h) ([N, 3·De] rows:
        # source, destination, own context of neuron n at P + 3n + 0/1/2), then a zero row
        self._table = torch.zeros(P + 3 * N + 1, De, device=dev)
        a, b = context_rows(edge, owner, src, dst, N)  # rows of the [3N + 1, De] context table

        def remap(q: Tensor) -> Tensor:
            return torch.where(q == 3 * N, P + 3 * N, P + 3 * (q % N) + q // N)

        # the readout's sum z_p + R[a_p] + R[b_p] as a sparse [P, P + 3N + 1] matrix of ones (the zero row
        # left out), so that one product writes it into a preallocated buffer
        rows = torch.arange(P).repeat_interleave(3)
        cols = torch.stack([p, remap(a), remap(b)], 1).reshape(-1)
        keep = cols != P + 3 * N
        rows, cols = rows[keep], cols[keep]
        crow = torch.zeros(P + 1, dtype=torch.long)
        crow[1:] = torch.bincount(rows, minlength=P).cumsum(0)
        self._readout_sum = _csr32(crow, cols, torch.ones(len(cols)), (P, P + 3 * N + 1), dev)
        self._act = torch.empty(P, De, device=dev)
        self._aggregated = torch.empty(3 * N, De, device=dev)
        self._aggregated_nodes = self._aggregated.view(N, 3 * De)
        self._table_z, self._table_ctx = self._table[:P], self._table[P: P + 3 * N].view(N, 3 * De)
        # message passing: dense blocks (matrix products with the weight-shaped channel values) and
        # a sparse [2N, 2CN] matrix for the other weight entries: row 2n + direction, column
        # 2C·(other end) + direction·C + channel, value a channel (1, normalized value, slope) read
        # from the feature buffer into the matrix's own values at every call, unnormalized (the sums
        # are divided by the degrees after the blocks add theirs)
        found = (detect_block(lay, o, shape, tid) for o, shape, tid in group_pieces(lay)
                 if len(shape) >= 2 and math.prod(shape) >= block_min)  # as the streamed path finds them
        rest = edge.clone()
        blocks = []
        for blk in (b for b in found if b is not None):
            rest[blk.start: blk.start + blk.size] = False
            dst_n, src_n = (blk.rows, blk.cols) if blk.dst_rows else (blk.cols, blk.rows)
            # normalized values and slopes of its entries, viewed [d0, d1] ([d0, d1, T] for kernels)
            views = [self._buf[r, blk.start: blk.start + blk.size].view(blk.d0, blk.d1, -1) for r in (3, c + 3)]
            views = [v[..., 0] for v in views] if blk.T == 1 else views
            blocks.append((blk.T, _sel(dst_n, dev), _sel(src_n, dev), views, blk.dst_rows))
        self._blocks = blocks
        C = CHANNELS
        re = rest.nonzero().squeeze(1)
        self._mp = None
        if re.numel():
            s_, d_ = src[re], dst[re]
            val = [torch.full_like(re, self._rows * P), 3 * P + re, (c + 3) * P + re]  # 1, last, slope
            rows = torch.cat([r for _ in range(C) for r in (2 * d_, 2 * s_ + 1)])
            cols = torch.cat([x for ch in range(C) for x in (2 * C * s_ + ch, 2 * C * d_ + C + ch)])
            take = torch.cat([v for ch in range(C) for v in (val[ch], val[ch])])
            order, crow, col = csr(rows, cols, 2 * N)
            S = _csr32(crow, col, torch.zeros(len(order)), (2 * N, 2 * C * N), dev)
            self._mp = (S, take[order].to(dev))
        self._inv2 = torch.stack([1.0 / torch.bincount(dst[edge], minlength=N).clamp_min(1).float(),
                                  1.0 / torch.bincount(src[edge], minlength=N).clamp_min(1).float()], 1
                                 ).reshape(2 * N, 1).to(dev)
        self._node_type, self._node_act = lay.node_type.to(dev), lay.node_act.to(dev)

    # ------------------------------------------------------------------ weights (when they change)
    def _derived_from(self) -> tuple[Tensor, ...]:
        """The nowcaster's weights the plan gathers in advance (the others are read at every call)."""
        m = self.nowcaster
        if self.kind == "graph":
            return (m.encode.weight, m.encode.bias, m.kind_emb.weight, m.node_in.bias, m.node_type_emb.weight,
                    m.act_emb.weight)
        return (m.encode[0].weight,) if self.kind == "mlp" else ()

    def _refresh(self) -> None:
        key = tuple((t.data_ptr(), t._version) for t in self._derived_from())
        if key == self._weights_key:
            return
        m = self.nowcaster
        with torch.inference_mode(False), torch.no_grad():
            if self.kind == "graph":
                w = m.encode.weight
                table = m.kind_emb.weight + m.encode.bias  # [rows, De]
                if self._kinds is not None:
                    self._w_enc = self._encoder_input_weight(w, table[self._kinds.to(w.device)].t())
                else:
                    self._w_enc = self._encoder_input_weight(w)
                    self._tk = table.index_select(0, self._kind.to(table.device)).to(self.device)  # [P, De]
                self._w_enc_t = self._w_enc.t()
                self._hconst = (m.node_in.bias + m.node_type_emb(self._node_type.to(w.device))
                                + m.act_emb(self._node_act.to(w.device))).to(self.device)
            elif self.kind == "mlp":
                self._w_enc = self._encoder_input_weight(m.encode[0].weight)
        self._weights_key = key

    def _encoder_input_weight(self, w: Tensor, extra: Tensor | None = None) -> Tensor:
        """The encoder's weight ``[out, c+2]`` for the buffer's rows: features permuted, zeros for the two
        statistics rows, then ``extra`` (the embedding rows of the one-hot kinds)."""
        parts = [w[:, self._perm], w.new_zeros(w.shape[0], self._stat_cols)]
        return torch.cat(parts + ([extra] if extra is not None else []), 1).to(self.device)

    # ------------------------------------------------------------------ the jump
    def __call__(self, window: Tensor | Sequence[Tensor], horizon: int) -> Tensor:
        if not 1 <= horizon <= self.horizons:
            raise ValueError(f"horizon must lie in [1, {self.horizons}], got {horizon}")
        ref = window if isinstance(window, Tensor) else window[0]
        if isinstance(window, Tensor) and window.device == self.device and window.dtype == torch.float32:
            W = window
        elif isinstance(window, Tensor):
            W = self._win.copy_(window)
        else:
            W = torch.stack([r.to(self.device, torch.float32) for r in window], out=self._win)
        if tuple(W.shape) != (self.context, self.num_params):
            raise ValueError(f"window must be [{self.context}, {self.num_params}], got {tuple(W.shape)}")
        self._refresh()
        with torch.inference_mode():
            out = self._linefit(W, horizon) if self.kind == "linefit" else self._learned(W, horizon)
        return out.to(ref.device, ref.dtype)

    def _linefit(self, W: Tensor, k: int) -> Tensor:
        """``(mean - last) + slope·((c-1)/2 + k)``: the fitted line ``k`` spacings past the last snapshot."""
        c = self.context
        slope = torch.mv((W[1:] - W[:-1]).t(), self._dslope)
        return torch.mean(W, 0, out=self._mean).sub(W[-1]).add_(slope, alpha=(c - 1) / 2 + k)

    def _group_mean(self, x: Tensor) -> Tensor:
        """Means ``[r, G]`` over the parameters of every normalization group of ``x [r, P]``."""
        if self._lengths is not None:
            return torch.segment_reduce(x, "mean", lengths=self._lengths[x.shape[0] - 1], axis=1)
        if self._gm is not None:
            return torch.mm(x, self._gm)
        return torch.stack([x.new_zeros(self.num_tensors).index_add_(0, self._tid, r) for r in x]).mul_(self._inv_cnt)

    def _learned(self, W: Tensor, k: int) -> Tensor:
        feats, drift, line = self._features(W, k)
        m = self.nowcaster
        if self.kind == "mlp":
            h = self._mlp()
        else:
            h = self._readout(self._propagate(self._encode(feats)))
        head = m.head[-1]
        # the fitted line k spacings ahead plus the learned correction, in units of s_p, back in weight
        # units: (mean - last) + s_p·(slope·((c-1)/2 + k) + head_k(h))
        y = torch.addmv(line, h, head.weight[k - 1]).add_(head.bias[k - 1])
        return torch.addcmul(drift, y, self._rowviews[0])

    def _features(self, W: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(features [c+2, P], mean - last [P], slope·((c-1)/2 + k) [P])``: the features in the buffer's
        row order (as ``group_stats`` and ``param_features``: every group's mean and standard deviation
        of its values in the window and mean absolute step, then per parameter), the window's mean
        minus its last snapshot and the fitted line's rise to ``k`` spacings past the mean's position
        (unclamped slope, in units of the step scale)."""
        c = self.context
        s_p, sigma_p, scaled, last, diff, slope, feats, _ = self._rowviews
        lin_out, normed, x, mean_r, x_step = self._linviews
        t_step, t_sigma, t_log = self._tabviews
        Wv = self._window_views
        if Wv[0] is not W:  # views of the window, kept while the same tensor comes back (the ring buffer)
            Wv = self._window_views = (W, W[-1])
        w_last = Wv[1]
        scratch = self._scratch
        torch.mm(self._lin, W, out=lin_out)  # differences, (0: the slope, filled next), mean
        torch.mv(diff.t(), self._dslope, out=slope)  # the slope from the exact differences (slope_weights)
        torch.mean(torch.abs(diff, out=scratch[1:]), 0, out=x_step)
        g = self._group_mean(x)  # [2, G]: mu, mean absolute step
        mu_p = torch.index_select(g[0], 0, self._tid, out=self._mu)
        v = torch.mean(torch.sub(W, mu_p, out=scratch).square_(), 0, keepdim=True, out=self._v)
        sigma = torch.sqrt(self._group_mean(v)[0], out=t_sigma).add_(1e-12)
        step = torch.maximum(g[1], 1e-7 * sigma, out=t_step).add_(1e-20)
        torch.div(step, sigma, out=t_log).log_().clamp_(-20, 5)
        torch.index_select(self._tab, 1, self._tid, out=scaled)  # s_p, sigma_p, logscale_p
        torch.sub(w_last, mu_p, out=last).div_(sigma_p)
        normed.div_(s_p)  # differences and slope in units of the step scale
        line = torch.mul(slope, (c - 1) / 2 + k, out=self._line)
        return feats.clamp_(-50, 50), torch.sub(mean_r, w_last, out=self._base), line

    def _mlp(self) -> Tensor:
        """The per-parameter MLP's states ``[P, D]`` before its horizon head, from the feature buffer
        (Linear / SiLU layers, each written into one of two preallocated buffers)."""
        m = self.nowcaster
        h, n = self._rowviews[-1], 0  # the buffer rows from the features on, [P, c+4]
        for mod in (*m.encode, *list(m.head)[:-1]):
            if isinstance(mod, nn.Linear):
                w = self._w_enc if n == 0 else mod.weight
                buf = self._hidden[n % 2][: h.shape[0] * w.shape[0]].view(h.shape[0], w.shape[0])
                n += 1
                h = torch.addmm(mod.bias, h, w.t(), out=buf)
            else:
                h = mod(h) if not isinstance(mod, nn.SiLU) else F.silu(h, inplace=True)
        return h

    def _encode(self, feats: Tensor) -> Tensor:
        """Neuron states ``[N, D]`` before message passing; the encodings ``z [P, De]`` go to the table."""
        if self._kinds is not None:  # [features, one-hot kinds] x [encoder, embedding rows + encoder bias]
            z = torch.mm(self._rowviews[-1], self._w_enc_t, out=self._table_z)
        else:
            z = torch.addmm(self._tk, self._rowviews[-1], self._w_enc_t, out=self._table_z)
        act = torch._C._nn.silu(z, out=self._act)
        agg = self._aggregated  # means over incoming, outgoing, own: [3N, De], viewed [N, 3·De]
        torch.addmm(agg, self._agg, act, beta=0, out=agg)
        return torch.addmm(self._hconst, self._aggregated_nodes, self.nowcaster.node_in.weight.t())

    def _propagate(self, h: Tensor) -> Tensor:
        """The message-passing layers (:class:`~weightspace.nowcast.model.NodeLayer`) on ``h [N, D]``."""
        m, N, C = self.nowcaster, self._N, CHANNELS
        if not len(m.convs):
            return h
        S = None
        if self._mp is not None:
            S, take = self._mp
            torch.index_select(self._flat, 0, take, out=S.values())
        blocks = []  # (kernel entries, destinations, sources, normalized values, slopes [dst, src])
        for T, dst, src, views, dst_rows in self._blocks:
            vs = views if T == 1 else [v.sum(-1) for v in views]
            blocks.append((T, dst, src, *(vs if dst_rows else [v.t() for v in vs])))
        for conv in m.convs:
            Dm = conv.msg_dim
            M = F.linear(h, conv.msg.weight, conv.msg.bias)  # [N, 2C·Dm]
            acc = torch.mm(S, M.view(2 * C * N, Dm)) if S is not None else h.new_zeros(2 * N, Dm)
            acc3 = acc.view(N, 2, Dm)
            M3 = M.view(N, 2 * C, Dm)
            for T, dst, src, Vv, Vs in blocks:
                Mf, Mb = _rows(M3, src), _rows(M3, dst)  # forward reads sources, backward destinations
                f = torch.addmm(Mf[:, 0].sum(0).mul_(T), Vv, Mf[:, 1]).addmm_(Vs, Mf[:, 2])
                g = torch.addmm(Mb[:, C].sum(0).mul_(T), Vv.t(), Mb[:, C + 1]).addmm_(Vs.t(), Mb[:, C + 2])
                _add_rows(acc3[:, 0], dst, f)
                _add_rows(acc3[:, 1], src, g)
            acc.mul_(self._inv2)
            x = torch.cat([F.layer_norm(h, (h.shape[1],), conv.norm.weight, conv.norm.bias, conv.norm.eps),
                           acc.view(N, 2 * Dm)], 1)
            u = conv.update
            h = h + F.linear(F.silu(F.linear(x, u[0].weight, u[0].bias)), u[2].weight, u[2].bias)
        return h

    def _readout(self, h: Tensor) -> Tensor:
        """Per-parameter states ``[P, De]`` before the horizon head, from the neuron states ``h [N, D]``."""
        m = self.nowcaster
        torch.addmm(m.ctx.bias, h, m.ctx.weight.t(), out=self._table_ctx)
        # z + (source or own context) + (destination context or nothing)
        y = F.silu(torch.addmm(self._act, self._readout_sum, self._table, beta=0, out=self._act), inplace=True)
        y = torch.addmm(m.mid.bias, y, m.mid.weight.t(), out=self._table_z)  # (the encodings were read)
        return F.silu(y, inplace=True)


def _csr32(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int], dev: torch.device) -> Tensor:
    """A CSR matrix with 32-bit indices (the sparse product converts 64-bit ones at every call)."""
    small = max(size) < 2**31 and col.numel() < 2**31
    it = torch.int32 if small else torch.int64
    return sparse_csr(crow.to(dev, it), col.to(dev, it), values.to(dev), size)


def _sel(nodes: Tensor, dev: torch.device) -> slice | Tensor:
    """A run of consecutive neurons as a slice (a view, no gather), else their ids on ``dev``."""
    n = nodes.numel()
    if n and bool((nodes == torch.arange(int(nodes[0]), int(nodes[0]) + n)).all()):
        return slice(int(nodes[0]), int(nodes[0]) + n)
    return nodes.to(dev)


def _rows(x: Tensor, sel: slice | Tensor) -> Tensor:
    return x[sel] if isinstance(sel, slice) else x.index_select(0, sel)


def _add_rows(acc: Tensor, sel: slice | Tensor, v: Tensor) -> None:
    if isinstance(sel, slice):
        acc[sel] += v
    else:
        acc.index_add_(0, sel, v)
