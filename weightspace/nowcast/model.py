r"""The nowcaster: predicts where an optimizer's trajectory goes from a window of past snapshots.

Follows NiNo (Knyazev et al., "Accelerating Training with Neuron Interaction and Nowcasting
Networks", ICLR 2025, https://arxiv.org/abs/2409.04434): the last ``context`` snapshots of a
network's parameters become the features of its parameter graph (neurons are nodes, weights are
edges, :class:`~weightspace.GraphSpec`), a network predicts the change of every parameter for
``horizons`` future snapshot spacings at once, and training jumps there
(:mod:`weightspace.nowcast.hook`).

Features are normalized per group ``l`` (:mod:`weightspace.nowcast.features`; a group is a
parameter tensor, split by role where it packs several maps) and the prediction is undone after:

.. math::
    \hat\theta^{(c-1+h)}_p = \theta^{(c-1)}_p + s_l\,\hat\delta_{p,h}, \qquad
    \hat\delta_{p,h} = \underbrace{a_p + h\,\beta_p}_{\text{Linefit}} + \mathrm{head}_h(y_p)

where :math:`a_p + h\beta_p` is the least-squares line over the context extrapolated ``h`` spacings
(in units of :math:`s_l`) and :math:`y_p` a learned per-parameter state; the head's last layer
starts at zero, so an untrained nowcaster is Linefit.

Kinds (:data:`NOWCASTER_KINDS`) share this interface and the meta-training loop
(:mod:`weightspace.nowcast.train`), so baselines run in the same harness:

* ``"graph"`` — the nowcaster. Each parameter is encoded on its own (``param_hidden`` numbers, plus
  an embedding of its edge type or node column); every neuron averages the encodings of its
  incoming weights, outgoing weights and own node parameters; :class:`NodeLayer` message passing
  runs on neurons only, messages weighted by per-weight scalars (one sparse product per layer,
  index tensors cached per architecture by :meth:`NowcastLayout.graph_index`); each parameter's
  state reads its own encoding plus the states of its two neurons (its own neuron for a bias /
  norm parameter). Equivariant to hidden-neuron permutations; a jump costs ``O(param_hidden)`` per
  weight, where NiNo's per-edge states cost ``O(D^2)`` per weight and layer.
* ``"mlp"`` — a per-parameter MLP on the same features, no graph (WNN-like; Jang et al., ICML 2023).
* ``"linefit"`` — per-parameter linear extrapolation over the context, no parameters.

One window (a jump of the hook) is predicted in chunks of parameters with dense weight tensors as
matrix products (:mod:`weightspace.nowcast.stream`), so memory stays bounded on models with tens of
millions of parameters; on a small model the hook runs the same function prepared once per
architecture (:mod:`weightspace.nowcast.plan`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from weightspace.graph import GraphSpec
from weightspace.nn import MLP
from weightspace.pretrained import CheckpointError, PretrainedMixin
from weightspace.resolver import Registry

from .features import CHANNELS, NUM_FIXED_FEATURES, linefit_deltas, window_features
from .hook import NowcastHook
from .layout import VOCAB_ROWS, NowcastLayout, sparse_csr
from .plan import JumpPlan
from .stream import predict_stream

__all__ = [
    "Nowcaster",
    "NowcastConfig",
    "NodeLayer",
    "NowcasterKind",
    "NOWCASTER_KINDS",
    "KINDS",
    "LEGACY_FORMAT",
]

#: ``format`` of the ``<stem>.json`` + ``<stem>.safetensors`` pairs written before ``save_pretrained``
LEGACY_FORMAT = "weightspace.nowcaster/2"
_LEGACY_OLDER = ("weightspace.nowcaster/1",)  # per-parameter kinds of /1 load unchanged


@dataclass(frozen=True)
class NowcasterKind:
    """One kind of nowcaster: how it builds its layers and computes its per-parameter states.

    Attributes:
        build: ``build(nowcaster, config)`` adds the kind's submodules (``head`` ends in the
            ``Linear`` to the ``horizons`` outputs).
        states: ``states(nowcaster, layout, features [B, P, F]) -> [B, P, D]``, the input of the
            head's last layer; ``None`` for a kind without a learned correction (Linefit).
    """

    build: Callable[[nn.Module, Any], None]
    states: Callable[[nn.Module, NowcastLayout, Tensor], Tensor] | None = None

    @property
    def learned(self) -> bool:
        return self.states is not None


#: kinds of nowcaster by name (``NowcastConfig.kind``)
NOWCASTER_KINDS: Registry[NowcasterKind] = Registry("nowcaster kind")


@dataclass(frozen=True)
class NowcastConfig:
    """Architecture of a nowcaster (its defaults are those of the shipped checkpoint).

    Attributes:
        kind: ``"graph"`` (the nowcaster), ``"mlp"`` (per-parameter, no graph) or ``"linefit"``
            (:data:`NOWCASTER_KINDS`).
        context: snapshots in a window (``c``).
        horizons: predicts ``1..horizons`` snapshot spacings ahead at once (NiNo: 40).
        hidden: width of node states (graph kind) or of the per-parameter MLP (mlp kind).
        layers: message-passing layers (graph kind) or hidden layers (mlp kind).
        param_hidden: width of the graph kind's per-parameter encodings (its cost per parameter).

    Raises:
        ValueError: an unknown kind, ``context < 2`` or ``horizons < 1``.
    """

    kind: str = "graph"
    context: int = 5
    horizons: int = 32
    hidden: int = 32
    layers: int = 2
    param_hidden: int = 16

    def __post_init__(self) -> None:
        if self.kind not in NOWCASTER_KINDS:
            raise ValueError(f"unknown nowcaster kind {self.kind!r}; choose one of {NOWCASTER_KINDS.names()}")
        if self.context < 2:
            raise ValueError(f"context must be at least 2 snapshots, got {self.context}")
        if self.horizons < 1:
            raise ValueError(f"horizons must be at least 1, got {self.horizons}")


class NodeLayer(nn.Module):
    r"""One message-passing layer of the graph nowcaster, on neurons only (cheap per weight).

    .. math::
        m^{\rightarrow}_j = \operatorname{mean}_{i \to j} \sum_c v_c(w_{ij})\, U_c h_i, \qquad
        m^{\leftarrow}_i = \operatorname{mean}_{i \to j} \sum_c v_c(w_{ij})\, V_c h_j, \qquad
        h'_i = h_i + \mathrm{MLP}\big([\mathrm{LN}(h_i), m^{\rightarrow}_i, m^{\leftarrow}_i]\big)

    with per-weight scalars :math:`v = (1, \text{normalized value}, \text{slope})`, so the weights modulate
    the messages (as in NFN/DWS linear layers) and one sparse matrix product per layer costs
    ``C·D_m`` multiply-adds per weight. Equivariant to hidden-neuron permutations.

    Shapes: ``h [N, D]``, ``S`` sparse ``[2N, 2·C·N]`` (:class:`~weightspace.nowcast.layout.GraphIndex`) -> ``[N, D]``.
    """

    def __init__(self, hidden: int, msg: int, channels: int) -> None:
        super().__init__()
        self.msg_dim, self.channels = msg, channels
        self.msg = nn.Linear(hidden, 2 * channels * msg)
        self.norm = nn.LayerNorm(hidden)
        self.update = MLP([hidden + 2 * msg, 2 * hidden, hidden])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.msg.reset_parameters()
        self.norm.reset_parameters()
        for m in self.update:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        nn.init.zeros_(self.update[-1].weight)

    def forward(self, h: Tensor, S: Tensor) -> Tensor:
        N = h.shape[0]
        m = self.msg(h).view(N, 2 * self.channels, self.msg_dim).transpose(0, 1).reshape(-1, self.msg_dim)
        agg = S @ m  # [2N, Dm]
        return self.combine(h, agg[:N], agg[N:])

    def combine(self, h: Tensor, fwd: Tensor, bwd: Tensor) -> Tensor:
        """The update from the aggregated forward and backward messages ``[N, Dm]`` each."""
        return h + self.update(torch.cat([self.norm(h), fwd, bwd], dim=-1))


class Nowcaster(PretrainedMixin, nn.Module):
    r"""Predicts future parameters from a window of past snapshots (NiNo-style; see module docs).

    Build one with a :class:`NowcastConfig` (or keyword arguments), load the shipped checkpoint with
    ``Nowcaster.from_pretrained("nowcaster")`` or a saved one with ``from_pretrained(directory)``
    (:meth:`save_pretrained` writes it: ``config.json`` + ``model.safetensors``, :attr:`info` as
    extras); :meth:`attach` plugs it into a training loop (:class:`~weightspace.nowcast.hook.NowcastHook`).

    Args:
        config: the architecture; keyword arguments override its fields.

    Raises:
        ValueError: an invalid config (see :class:`NowcastConfig`).

    Shapes:
        - :meth:`predict`: ``window [c, P]`` or ``[B, c, P]`` -> deltas ``[H, P]`` / ``[B, H, P]``
          (``theta_future - theta_last`` for ``1..H`` snapshot spacings ahead).
        - :meth:`forward`: ``features [B, P, c+2]``, ``linefit [B, P, 2]`` -> scaled deltas ``[B, P, H]``.
    """

    config_class: ClassVar[type] = NowcastConfig
    checkpoint_format: ClassVar[str] = "weightspace.nowcaster"
    checkpoint_version: ClassVar[int] = 2  # the tensor layout of the former "weightspace.nowcaster/2" files

    def __init__(self, config: NowcastConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = config or NowcastConfig()
        if overrides:
            cfg = NowcastConfig(**{**asdict(cfg), **overrides})
        self.config = cfg
        self.info: dict[str, Any] = {}  # training provenance (saved as the checkpoint's extras)
        NOWCASTER_KINDS.resolve(cfg.kind).build(self, cfg)
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: NowcastConfig) -> Nowcaster:
        """A freshly initialized nowcaster of ``config``."""
        return cls(config)

    def reset_parameters(self) -> None:
        for m in self.modules():
            # (an MLP's layers are reset on their own, below it in this walk)
            if m is not self and not isinstance(m, MLP) and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        for name in ("head",):  # start as Linefit
            head = getattr(self, name, None)
            if head is not None:
                nn.init.zeros_(head[-1].weight)
                nn.init.zeros_(head[-1].bias)
        for name in ("kind_emb", "node_type_emb", "act_emb"):
            emb = getattr(self, name, None)
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.1)

    # ------------------------------------------------------------------ properties
    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def context(self) -> int:
        return self.config.context

    @property
    def horizons(self) -> int:
        return self.config.horizons

    @property
    def learned(self) -> bool:
        """Whether the kind adds a learned correction to Linefit (``False`` for ``"linefit"``)."""
        return NOWCASTER_KINDS.resolve(self.config.kind).learned

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        c = self.config
        return (f"{self.__class__.__name__}(kind={c.kind!r}, context={c.context}, horizons={c.horizons}, "
                f"hidden={c.hidden}, layers={c.layers}, params={n})")

    # ------------------------------------------------------------------ forward
    def forward(self, layout: NowcastLayout, features: Tensor, linefit: Tensor, horizon: int | None = None) -> Tensor:
        """Scaled deltas ``[B, P, H]`` (or ``[B, P]`` for one ``horizon`` in ``1..H``) for windows of ``B``
        copies of one architecture.

        ``layout`` describes one copy; the copies are processed as one block-diagonal graph.
        """
        H = self.config.horizons
        if horizon is None:
            base = linefit_deltas(linefit, H)
        else:
            if not 1 <= horizon <= H:
                raise ValueError(f"horizon must lie in [1, {H}], got {horizon}")
            base = linefit[..., 0] + linefit[..., 1] * horizon
        states = NOWCASTER_KINDS.resolve(self.config.kind).states
        if states is None:
            return base
        y = states(self, layout, features)
        last = self.head[-1]
        if horizon is None:
            return base + last(y)
        return base + (y @ last.weight[horizon - 1] + last.bias[horizon - 1])

    def predict(self, spec: GraphSpec | NowcastLayout | JumpPlan, window: Tensor | Sequence[Tensor],
                horizon: int | None = None) -> Tensor:
        """Deltas ``theta(last + h spacings) - theta(last)`` for ``h = 1..horizons`` (or only ``horizon``).

        Runs under ``torch.inference_mode`` in eval mode; the index tensors of ``spec`` are built on the
        first call and cached on its layout. One window (``[c, P]`` or a sequence of ``c`` rows) is
        predicted in chunks of parameters (:mod:`weightspace.nowcast.stream`: memory beyond the
        window and the output stays bounded on models with tens of millions of parameters); a batch
        ``[B, c, P]`` in one pass over all of them (:meth:`forward`).

        Args:
            spec: the architecture's :class:`~weightspace.GraphSpec` (or its layout), or a
                :class:`~weightspace.nowcast.plan.JumpPlan` of it: a window ``[c, P]`` (or ``c`` rows)
                and one ``horizon`` then take the plan's prepared path (the hook's jump), anything
                else the plan's layout.
            window: ``[c, P]`` or ``[B, c, P]`` flat snapshots (``spec.flatten``), oldest first,
                evenly spaced, or a sequence of ``c`` tensors ``[P]`` (e.g. a ring buffer's rows, read
                in place); ``c`` may differ from the training context (Linefit features adapt;
                learned kinds need ``c == context``).
            horizon: one horizon in ``1..horizons``; only its column is computed.

        Returns:
            ``[H, P]`` / ``[B, H, P]``, or ``[P]`` / ``[B, P]`` for one ``horizon``, in the window's dtype.
        """
        if not isinstance(spec, (NowcastLayout, GraphSpec)):  # a JumpPlan
            plan, spec = spec, spec.layout
            if (plan.nowcaster is self and horizon is not None
                    and (not isinstance(window, Tensor) or window.dim() == 2)):
                return plan(window, horizon)
        layout = spec if isinstance(spec, NowcastLayout) else NowcastLayout.from_spec(spec)
        rows = None if isinstance(window, Tensor) else list(window)
        if rows is not None:
            if not rows or any(r.dim() != 1 for r in rows):
                raise ValueError("a window given as a sequence holds c tensors of shape [P]")
            shape, ref = (len(rows), rows[0].shape[0]), rows[0]
        else:
            if window.dim() not in (2, 3):
                raise ValueError(f"window must be [c, P] or [B, c, P], got shape {tuple(window.shape)}")
            shape, ref = tuple(window.shape[-2:]), window
        if shape[-1] != layout.num_params or (rows is not None and any(r.shape[0] != shape[1] for r in rows)):
            raise ValueError(f"window has {shape[-1]} parameters, the architecture stores {layout.num_params}")
        if self.learned and shape[0] != self.context:
            raise ValueError(f"this nowcaster reads windows of {self.context} snapshots, got {shape[0]}")
        if shape[0] < 2:
            raise ValueError(f"a window needs at least 2 snapshots, got {shape[0]}")
        if horizon is not None and not 1 <= horizon <= self.horizons:
            raise ValueError(f"horizon must lie in [1, {self.horizons}], got {horizon}")
        dev = self.param_device(ref.device)
        was = self.training
        if was:  # (toggling walks every submodule: skipped when already in eval mode)
            self.eval()
        try:
            with torch.inference_mode():
                if rows is not None or window.dim() == 2:
                    out = predict_stream(self, layout, rows if rows is not None else window, horizon)
                else:
                    if layout.slot_tensor.device != dev:
                        layout = layout.cache.setdefault(("to", str(dev)), layout.to(dev))
                    wf = window.to(dev, torch.float32)
                    feats, s, line = window_features(wf, layout.slot_tensor, layout.num_tensors,
                                                     self.learned)
                    d = self(layout, feats, line, horizon)  # [B, P, H] or [B, P]
                    out = d * s if horizon is not None else (d * s[..., None]).transpose(1, 2)
        finally:
            if was:
                self.train()
        return out.to(ref.device, ref.dtype)

    def param_device(self, default: torch.device) -> torch.device:
        """The device of the nowcaster's parameters (``default`` for Linefit, which has none)."""
        for p in self.parameters():
            return p.device
        return default

    # ------------------------------------------------------------------ persistence
    # save_pretrained(dir) / from_pretrained(dir_or_name) come from PretrainedMixin; ``info`` is the extras.
    def save(self, path: str | os.PathLike, info: dict | None = None) -> Path:
        """Alias of :meth:`save_pretrained` (``info``, when given, replaces :attr:`info`). Returns the directory."""
        if info is not None:
            self.info = dict(info)
        return self.save_pretrained(path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Nowcaster:
        """Alias of :meth:`from_pretrained`; also reads the former ``<stem>.json`` + ``<stem>.safetensors``
        pair (``path`` the stem, or either file).

        Raises:
            CheckpointError: missing, corrupt or not a nowcaster (the message names the file).
        """
        p = Path(path)
        if p.is_dir() or p.name in ("config.json", "model.safetensors") or not p.suffix and not p.exists() \
                and not p.with_suffix(".json").exists():
            return cls.from_pretrained(p, map_location=map_location)
        return cls._load_legacy(p.with_suffix("") if p.suffix in (".safetensors", ".json") else p, map_location)

    @classmethod
    def _load_legacy(cls, base: Path, map_location: str | torch.device) -> Nowcaster:
        from safetensors.torch import load_file

        cfg_path = base.with_suffix(".json")
        if not cfg_path.is_file():
            raise CheckpointError(f"{cfg_path}: missing; no nowcaster config there")
        try:
            meta = json.loads(cfg_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if fmt != LEGACY_FORMAT and fmt not in _LEGACY_OLDER:
            raise CheckpointError(f"{cfg_path}: not a nowcaster checkpoint (format {fmt!r})")
        if fmt != LEGACY_FORMAT and meta["config"].get("kind") == "graph":
            raise CheckpointError(f"{cfg_path}: a graph nowcaster of the older format {fmt!r}; re-make it with "
                                  "`weightspace nowcast` (the graph architecture changed)")
        model = cls(NowcastConfig(**meta["config"]))
        w = base.with_suffix(".safetensors")
        if model.learned or w.exists():
            model.load_state_dict(load_file(str(w), device="cpu"))
        model.info = meta.get("info", {})
        return model.to(map_location).eval()

    @classmethod
    def pretrained(cls, name: str = "nowcaster") -> Nowcaster:
        """Alias of :meth:`from_pretrained` for a shipped checkpoint (made by ``weightspace nowcast``)."""
        return cls.from_pretrained(name)

    # ------------------------------------------------------------------ hook
    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer, **kwargs: Any) -> NowcastHook:
        """Accelerate ``model``'s training by ``optimizer`` with periodic jumps; see
        :class:`~weightspace.nowcast.hook.NowcastHook` for the arguments. Returns the handle."""
        return NowcastHook(self, model, optimizer, **kwargs)


def graph_states(nc: Nowcaster, layout: NowcastLayout, features: Tensor) -> Tensor:
    """Per-parameter states ``[B, P, De]`` before the horizon head of the graph kind
    (:class:`~weightspace.nowcast.layout.GraphIndex`)."""
    B, P, F = features.shape
    De = nc.config.param_hidden
    gi = layout.graph_index(B, features.device)
    N = gi.num_nodes
    x = features.reshape(B * P, F)
    z = torch.mm(x, nc.encode.weight.t()).add_((nc.kind_emb.weight + nc.encode.bias).index_select(0, gi.kind))
    agg = gi.agg @ nn.functional.silu(z)  # [3N, De]: mean over incoming, outgoing, own slots
    h = nc.node_in(agg.view(3, N, De).transpose(0, 1).reshape(N, 3 * De))
    h = h + nc.node_type_emb(gi.node_type) + nc.act_emb(gi.node_act)
    if len(nc.convs):
        chans = torch.stack([torch.ones_like(x[:, 0]), x[:, 0], x[:, -1]], dim=-1).reshape(-1)
        S = sparse_csr(gi.mp_crow, gi.mp_col, chans.index_select(0, gi.mp_take) * gi.mp_scale,
                           (2 * N, 2 * CHANNELS * N))
        for conv in nc.convs:
            h = conv(h, S)
    R = nc.ctx(h).view(N, 3, De).transpose(0, 1).reshape(3 * N, De)
    R = torch.cat([R, R.new_zeros(1, De)])
    y = R.index_select(0, gi.ctx_a).add_(R.index_select(0, gi.ctx_b)).add_(z)
    y = nn.functional.silu(y, inplace=True)
    y = nn.functional.silu(nc.mid(y), inplace=True)
    return y.view(B, P, De)


# ----------------------------------------------------------------------------- kinds
def _build_graph(nc: nn.Module, cfg: NowcastConfig) -> None:
    D, De, Dm = cfg.hidden, cfg.param_hidden, max(1, cfg.hidden // 2)
    nc.encode = nn.Linear(cfg.context - 1 + NUM_FIXED_FEATURES, De)
    nc.kind_emb = nn.Embedding(VOCAB_ROWS, De)
    nc.node_in = nn.Linear(3 * De, D)
    nc.node_type_emb = nn.Embedding(VOCAB_ROWS, D)
    nc.act_emb = nn.Embedding(VOCAB_ROWS, D)
    nc.convs = nn.ModuleList([NodeLayer(D, Dm, CHANNELS) for _ in range(cfg.layers)])
    nc.ctx = nn.Linear(D, 3 * De)
    nc.mid = nn.Linear(De, De)
    nc.head = nn.Sequential(nn.Linear(De, cfg.horizons))


def _build_mlp(nc: nn.Module, cfg: NowcastConfig) -> None:
    D = cfg.hidden
    nc.encode = MLP([cfg.context - 1 + NUM_FIXED_FEATURES] + [D] * (cfg.layers + 1))
    nc.head = MLP([D, D, cfg.horizons])


def mlp_states(nc: Nowcaster, layout: NowcastLayout, features: Tensor) -> Tensor:
    """Per-parameter states ``[B, P, D]`` of the mlp kind: the MLP on each parameter's features."""
    y = nc.encode(features)
    for layer in list(nc.head)[:-1]:  # (slicing an MLP would build a new MLP from the slice)
        y = layer(y)
    return y


NOWCASTER_KINDS.register("graph", NowcasterKind(_build_graph, graph_states))
NOWCASTER_KINDS.register("mlp", NowcasterKind(_build_mlp, mlp_states))
NOWCASTER_KINDS.register("linefit", NowcasterKind(lambda nc, cfg: None))
#: names of the registered kinds
KINDS = NOWCASTER_KINDS.names()
