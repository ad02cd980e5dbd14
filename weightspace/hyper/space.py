r"""A DeepNets-like space of random architectures for 8x8 digits (2-D) and MNIST-1D (1-D).

GHN-2 (Knyazev et al., NeurIPS 2021) trains its hypernetwork on DeepNets-1M: random computational
graphs made of cells whose nodes are convolutions (1-7 px, dilated, separable), pooling and identity
operations, joined by residual sums and concatenations, with or without BatchNorm, plus a few
transformer-like networks; it tests on held-out graphs that are *wider*, *deeper*, *denser* or have
*no normalization*, and on real architectures. :class:`CellSpace` is that design at the scale of
the project's datasets; every sampled configuration is a JSON-able dict that :func:`build_arch`
turns into an ordinary ``nn.Module`` (:class:`CellNet`) the parameter-graph converter reads.

**Families** (``config["kind"]``):

* ``cnn``: a stem convolution, then cells. A cell has a node 0 (its input, adapted to the cell's
  channels and stride by a convolution when they change) and 1..``ops`` operation nodes; each
  operation reads one earlier node, or two merged by a residual *sum* or a channel
  *concatenation*; operations are ``conv`` (kernel 1/3/5/7, dilation 1/2), ``sep`` (depthwise
  kernel + pointwise 1x1), ``group`` (grouped 3x3, 2 or 4 groups), ``max``/``avg`` pooling (3,
  stride 1) and ``id``; every parametric op is conv -> norm -> activation. The cell output is the
  sum or the concatenation (then a 1x1 projection) of its leaf nodes, plus the cell input when
  ``skip``. Head: global average pooling or flattening, then a linear layer.
* ``vit``: patch embedding (a convolution with kernel = stride = patch; or, with ``embed="linear"``,
  the input cut into patches by a reshape and embedded by a ``Linear``, as in
  :class:`weightspace.archs.TinyViT`), an optional class token, a learned positional table,
  ``depth`` transformer encoder blocks (multi-head attention + MLP, pre- or post-norm LayerNorm),
  mean or class-token pooling, a linear head. The two embeddings compute the same family of
  functions but are different parameter graphs (a ``Linear`` embedding has one input node per
  position in a patch). :meth:`CellSpace.draw` and the benchmark splits use the convolution; a
  training pool adds ``Linear``-embedding twins of a share of its ViTs on request
  (:meth:`CellSpace.train_pool`, ``linear_embed``).
* ``mlp``: flatten, 1-6 hidden linear layers (each with the network's norm and activation), linear.

Normalization (``norm``): ``bn`` (BatchNorm), ``ln`` (LayerNorm over channels) or ``none``.

**Splits** (:data:`SPLITS`), seeded and disjoint by construction:

========== =============================================================================
split      what differs from the training distribution
========== =============================================================================
test       nothing: configurations of the in-distribution ranges never drawn in training
           (a stable hash reserves a tenth of the in-distribution space, :func:`is_held_out`)
wide       channels 48-96 (training 8-32), token width 48-64 (16-32), MLP width 128-256 (16-64)
deep       5-7 cells (1-3), 3-4 transformer blocks (1-2), 4-6 MLP layers (1-3)
dense      6-8 operations per cell, 80% of them reading two nodes (1-4, 40%)
no-norm    no normalization layer at all (training: BatchNorm or LayerNorm); CNN and MLP only
========== =============================================================================

Usage::

    space = CellSpace("digits")
    config = space.sample_train(np.random.default_rng(0))
    model = build_arch(config)                 # an nn.Module for [B, 1, 8, 8] inputs, 10 outputs
    held_out = space.split("wide", 50, seed=0)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["CellSpace", "CellNet", "build_arch", "SPLITS", "DATASETS", "config_key", "is_held_out",
           "in_distribution", "linear_embed_twin"]

#: Benchmark splits of :meth:`CellSpace.split` (``test`` is in-distribution).
SPLITS: tuple[str, ...] = ("test", "wide", "deep", "dense", "no-norm")

#: Input geometry of the datasets the space is made for: ``(dims, channels, size, classes)``.
DATASETS: dict[str, tuple[int, int, int, int]] = {"digits": (2, 1, 8, 10), "mnist1d": (1, 1, 40, 10)}

_ACTS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def config_key(config: dict) -> str:
    """Canonical JSON of a configuration (hash, cache and deduplication key)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def is_held_out(config: dict, fraction: float = 0.1) -> bool:
    """Whether ``config`` falls in the held-out share of the in-distribution space (a stable hash
    of its canonical JSON, independent of the order of sampling)."""
    h = int(hashlib.sha256(config_key(config).encode()).hexdigest()[:8], 16)
    return h % 1000 < int(round(fraction * 1000))


# ---------------------------------------------------------------------------------------- modules
class _Norm(nn.Module):
    """BatchNorm, LayerNorm over the channel axis (channels-last, as ConvNeXt) or nothing."""

    def __init__(self, kind: str, channels: int, dims: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "bn":
            self.norm = (nn.BatchNorm1d if dims <= 1 else nn.BatchNorm2d)(channels)
        elif kind == "ln":
            self.norm = nn.LayerNorm(channels)
        elif kind == "none":
            self.norm = nn.Identity()
        else:
            raise ValueError(f"norm must be 'bn', 'ln' or 'none', got {kind!r}")
        self.channels_last = kind == "ln" and dims > 0

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            return self.norm(x.transpose(1, -1)).transpose(1, -1)
        return self.norm(x)


def _conv(dims: int, cin: int, cout: int, k: int, stride: int = 1, dil: int = 1, groups: int = 1) -> nn.Module:
    cls = nn.Conv1d if dims == 1 else nn.Conv2d
    return cls(cin, cout, k, stride=stride, padding=dil * (k - 1) // 2, dilation=dil, groups=groups)


class _ConvUnit(nn.Module):
    """conv -> norm -> activation."""

    def __init__(self, dims: int, cin: int, cout: int, k: int, norm: str, act: str, stride: int = 1,
                 dil: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = _conv(dims, cin, cout, k, stride, dil, groups)
        self.norm = _Norm(norm, cout, dims)
        self.act = _ACTS[act]()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class _Op(nn.Module):
    """One operation node of a cell (see the module docs)."""

    def __init__(self, spec: dict, dims: int, cin: int, cout: int, norm: str, act: str) -> None:
        super().__init__()
        op, k, dil = spec["op"], int(spec.get("k", 3)), int(spec.get("dil", 1))
        self.op = op
        if op == "conv":
            self.body = _ConvUnit(dims, cin, cout, k, norm, act, dil=dil)
        elif op == "sep":
            self.body = nn.Sequential(_conv(dims, cin, cin, k, dil=dil, groups=cin),
                                      _ConvUnit(dims, cin, cout, 1, norm, act))
        elif op == "group":
            self.body = _ConvUnit(dims, cin, cout, 3, norm, act, groups=int(spec["groups"]))
        elif op in ("max", "avg", "id"):
            if cin != cout:
                raise ValueError(f"operation {op!r} cannot change channels ({cin} -> {cout})")
            pool = {1: (nn.MaxPool1d, nn.AvgPool1d), 2: (nn.MaxPool2d, nn.AvgPool2d)}[dims]
            self.body = (nn.Identity() if op == "id" else
                         (pool[0] if op == "max" else pool[1])(3, stride=1, padding=1))
        else:
            raise ValueError(f"unknown cell operation {op!r}")

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class _Cell(nn.Module):
    def __init__(self, spec: dict, dims: int, cin: int, norm: str, act: str) -> None:
        super().__init__()
        C, stride = int(spec["channels"]), int(spec.get("stride", 1))
        self.adapt = (_ConvUnit(dims, cin, C, 3 if stride > 1 else 1, norm, act, stride=stride)
                      if (cin != C or stride > 1) else nn.Identity())
        self.ins: list[list[int]] = []
        self.merges: list[str] = []
        ops = []
        for o in spec["ops"]:
            ins, merge = [int(i) for i in o["in"]], o.get("merge", "sum")
            width = C * len(ins) if (merge == "concat" and len(ins) > 1) else C
            ops.append(_Op(o, dims, width, C, norm, act))
            self.ins.append(ins)
            self.merges.append(merge)
        self.ops = nn.ModuleList(ops)
        used = {i for ins in self.ins for i in ins}
        self.leaves = [j + 1 for j in range(len(ops)) if j + 1 not in used] or [len(ops)]
        self.out = spec.get("out", "sum")
        self.proj = (_ConvUnit(dims, C * len(self.leaves), C, 1, norm, act)
                     if self.out == "concat" and len(self.leaves) > 1 else None)
        self.skip = bool(spec.get("skip", False))

    def forward(self, x: Tensor) -> Tensor:
        nodes = [self.adapt(x)]
        for op, ins, merge in zip(self.ops, self.ins, self.merges):
            if len(ins) == 1:
                h = nodes[ins[0]]
            elif merge == "concat":
                h = torch.cat([nodes[i] for i in ins], dim=1)
            else:
                h = nodes[ins[0]] + nodes[ins[1]]
            nodes.append(op(h))
        leaves = [nodes[i] for i in self.leaves]
        if self.proj is not None:
            out = self.proj(torch.cat(leaves, dim=1))
        else:
            out = leaves[0]
            for t in leaves[1:]:
                out = out + t
        return out + nodes[0] if self.skip else out


class CellNet(nn.Module):
    """A network of :class:`CellSpace` (see the module docs for the families and options).

    Args:
        kind: ``cnn``, ``vit`` or ``mlp``.
        dims / in_channels / size / num_classes: input geometry ``[B, C, size]`` (1-D) or
            ``[B, C, size, size]`` (2-D) and outputs.
        norm: ``bn``, ``ln`` or ``none``; act: ``relu``, ``gelu``, ``silu`` or ``tanh``.
        stem / cells / head: ``cnn`` options; dim / heads / depth / mlp_ratio / patch / cls /
            norm_first / pool / embed: ``vit`` options (``embed``: ``"conv"``, a strided convolution,
            or ``"linear"``, a reshape into patches then a ``Linear``); widths: ``mlp`` hidden widths.

    Shapes:
        input ``[B, C, L]`` or ``[B, C, H, W]`` -> output ``[B, num_classes]``.
    """

    def __init__(self, kind: str, dims: int = 2, in_channels: int = 1, size: int = 8, num_classes: int = 10,
                 norm: str = "bn", act: str = "relu", stem: dict | None = None, cells: list | None = None,
                 head: str = "pool", dim: int = 16, heads: int = 2, depth: int = 1, mlp_ratio: int = 2,
                 patch: int = 2, cls: bool = False, norm_first: bool = True, pool: str = "mean",
                 embed: str = "conv", widths: list | None = None) -> None:
        super().__init__()
        self.kind, self.dims, self.head_kind = kind, dims, head
        if kind == "cnn":
            stem = stem or {"k": 3, "channels": 8, "stride": 1}
            self.stem = _ConvUnit(dims, in_channels, int(stem["channels"]), int(stem["k"]), norm, act,
                                  stride=int(stem.get("stride", 1)))
            c, s = int(stem["channels"]), -(-size // int(stem.get("stride", 1)))
            blocks = []
            for cell in cells or []:
                blocks.append(_Cell(cell, dims, c, norm, act))
                c, s = int(cell["channels"]), -(-s // int(cell.get("stride", 1)))
            self.cells = nn.Sequential(*blocks)
            feat = c * (s**dims if head == "flatten" else 1)
            self.head = nn.Linear(feat, num_classes)
        elif kind == "vit":
            if size % patch:
                raise ValueError(f"size {size} is not a multiple of patch {patch}")
            if embed not in ("conv", "linear"):
                raise ValueError(f"embed must be 'conv' or 'linear', got {embed!r}")
            tokens = (size // patch) ** dims
            self.cls, self.embed, self.patch_size, self.in_channels = cls, embed, patch, in_channels
            if embed == "conv":
                self.patch = _conv(dims, in_channels, dim, patch, stride=patch)
                self.patch.padding = (0,) * dims
            else:
                self.patch = nn.Linear(in_channels * patch**dims, dim)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls else None
            self.pos = nn.Parameter(torch.zeros(1, tokens + int(cls), dim))
            self.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(dim, heads, dim * mlp_ratio, dropout=0.0, activation=act,
                                           batch_first=True, norm_first=norm_first)
                for _ in range(depth))
            self.norm = nn.LayerNorm(dim) if norm_first else nn.Identity()
            self.pool = pool
            self.head = nn.Linear(dim, num_classes)
        elif kind == "mlp":
            layers: list[nn.Module] = [nn.Flatten()]
            prev = in_channels * size**dims
            for w in widths or [32]:
                layers += [nn.Linear(prev, int(w)), _Norm(norm, int(w), 0), _ACTS[act]()]
                prev = int(w)
            self.body = nn.Sequential(*layers)
            self.head = nn.Linear(prev, num_classes)
        else:
            raise ValueError(f"kind must be 'cnn', 'vit' or 'mlp', got {kind!r}")

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "cnn":
            h = self.cells(self.stem(x))
            h = h.flatten(1) if self.head_kind == "flatten" else h.mean(dim=tuple(range(2, 2 + self.dims)))
            return self.head(h)
        if self.kind == "vit":
            h = self.patch(x).flatten(2).transpose(1, 2) if self.embed == "conv" else self.patch(self._patches(x))
            if self.cls_token is not None:
                h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1)
            h = h + self.pos
            for blk in self.blocks:
                h = blk(h)
            h = self.norm(h)
            return self.head(h[:, 0] if (self.pool == "cls" and self.cls_token is not None) else h.mean(dim=1))
        return self.head(self.body(x))

    def _patches(self, x: Tensor) -> Tensor:
        """``[B, C, L]`` / ``[B, C, H, W]`` -> ``[B, tokens, C * patch**dims]`` (non-overlapping patches)."""
        p, c, b = self.patch_size, self.in_channels, x.shape[0]
        if self.dims == 1:
            n = x.shape[-1] // p
            return x.reshape(b, c, n, p).permute(0, 2, 1, 3).reshape(b, n, c * p)
        n = x.shape[-1] // p
        return x.reshape(b, c, n, p, n, p).permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, c * p * p)


def build_arch(config: dict) -> CellNet:
    """The ``nn.Module`` of a :class:`CellSpace` configuration (keys ``_``-prefixed are ignored)."""
    return CellNet(**{k: v for k, v in config.items() if not k.startswith("_")})


# ---------------------------------------------------------------------------------------- sampler
@dataclass(frozen=True)
class _Ranges:
    cells: tuple[int, ...] = (1, 2, 3)
    ops: tuple[int, ...] = (1, 2, 3, 4)
    two_inputs: float = 0.4
    channels: tuple[int, ...] = (8, 12, 16, 24, 32)
    vit_dim: tuple[int, ...] = (16, 24, 32)
    vit_depth: tuple[int, ...] = (1, 2)
    mlp_depth: tuple[int, ...] = (1, 2, 3)
    mlp_width: tuple[int, ...] = (16, 24, 32, 48, 64)
    norms: tuple[str, ...] = ("bn", "ln")
    kinds: tuple[tuple[str, float], ...] = (("cnn", 0.6), ("vit", 0.2), ("mlp", 0.2))


_IN_DIST = _Ranges()
_SPLIT_RANGES = {
    "wide": _Ranges(channels=(48, 64, 96), vit_dim=(48, 64), mlp_width=(128, 192, 256)),
    "deep": _Ranges(cells=(5, 6, 7), vit_depth=(3, 4), mlp_depth=(4, 5, 6)),
    "dense": _Ranges(ops=(6, 7, 8), two_inputs=0.8, kinds=(("cnn", 1.0),)),
    "no-norm": _Ranges(norms=("none",), kinds=(("cnn", 0.75), ("mlp", 0.25))),
}


def linear_embed_twin(config: dict) -> dict | None:
    """The ``Linear``-patch-embedding twin of a ViT configuration, or None.

    None for other families, for configurations that already embed with a ``Linear``, and for
    post-norm ViTs without a class token: that combination with a ``Linear`` embedding is the graph of
    :class:`weightspace.archs.TinyViT` (post-norm, mean-pooled), which ``benchmarks/hyper.py`` holds
    out as real-library architectures, so a training pool never contains it.
    """
    if config.get("kind") != "vit" or config.get("embed", "conv") != "conv":
        return None
    if not config["norm_first"] and not config["cls"]:
        return None
    return {**config, "embed": "linear"}


def _share(config: dict, salt: str) -> float:
    """A stable pseudo-random number in [0, 1) of a configuration (independent of any RNG stream)."""
    return int(hashlib.sha256((salt + config_key(config)).encode()).hexdigest()[:8], 16) / 16**8


def in_distribution(config: dict) -> bool:
    """Whether ``config`` lies inside the training ranges (held-out share included)."""
    r, kind = _IN_DIST, config["kind"]
    if kind == "vit":
        return config["dim"] in r.vit_dim and config["depth"] in r.vit_depth
    if config.get("norm") not in r.norms:
        return False
    if kind == "mlp":
        return len(config["widths"]) in r.mlp_depth and all(w in r.mlp_width for w in config["widths"])
    cells = config["cells"]
    return (len(cells) in r.cells and config["stem"]["channels"] in r.channels
            and all(c["channels"] in r.channels and len(c["ops"]) in r.ops for c in cells))


class CellSpace:
    """Sampler of :class:`CellNet` configurations for one dataset (see the module docs).

    Args:
        data: ``"digits"`` (``[B, 1, 8, 8]``) or ``"mnist1d"`` (``[B, 1, 40]``), 10 classes.
        held_out: share of the in-distribution space reserved for the ``test`` split.
    """

    def __init__(self, data: str = "digits", held_out: float = 0.1) -> None:
        if data not in DATASETS:
            raise ValueError(f"unknown dataset {data!r}; the space is defined for {sorted(DATASETS)}")
        self.data, self.held_out = data, held_out
        self.dims, self.in_channels, self.size, self.num_classes = DATASETS[data]

    def __repr__(self) -> str:
        return f"CellSpace({self.data!r}, held_out={self.held_out})"

    # ------------------------------------------------------------------ draws
    def _base(self, kind: str, norm: str, act: str) -> dict:
        return {"kind": kind, "dims": self.dims, "in_channels": self.in_channels, "size": self.size,
                "num_classes": self.num_classes, "norm": norm, "act": act}

    def _op(self, rng: np.random.Generator, C: int, n_prev: int, r: _Ranges) -> dict:
        ks = (1, 3, 5, 7) if self.dims == 1 else (1, 3, 5, 7)
        two = n_prev > 1 and rng.random() < r.two_inputs
        ins = sorted(int(i) for i in rng.choice(n_prev, size=2, replace=False)) if two else [int(rng.integers(n_prev))]
        merge = str(rng.choice(["sum", "concat"])) if two else "sum"
        if merge == "concat":
            ops = ["conv", "sep", "group"]
        else:
            ops = ["conv", "conv", "sep", "group", "max", "avg", "id"]
        op = str(rng.choice(ops))
        spec: dict = {"op": op, "in": ins, "merge": merge}
        if op in ("conv", "sep"):
            spec["k"] = int(rng.choice(ks))
            spec["dil"] = int(rng.choice([1, 2])) if spec["k"] > 1 else 1
        if op == "group":
            spec["groups"] = int(rng.choice([g for g in (2, 4) if C % g == 0]))
        return spec

    def _cnn(self, rng: np.random.Generator, r: _Ranges, norm: str, act: str) -> dict:
        downs = 2 if self.dims == 2 else 3  # 8 -> 4 -> 2; 40 -> 20 -> 10 -> 5
        stem_stride = int(rng.choice([1, 2])) if rng.random() < 0.25 else 1
        downs -= stem_stride - 1
        stem = {"k": int(rng.choice([3, 5, 7])), "channels": int(rng.choice(r.channels)), "stride": stem_stride}
        cells = []
        for _ in range(int(rng.choice(r.cells))):
            stride = 2 if (downs > 0 and rng.random() < 0.35) else 1
            downs -= stride - 1
            C = int(rng.choice(r.channels))
            ops = [self._op(rng, C, j + 1, r) for j in range(int(rng.choice(r.ops)))]
            cells.append({"channels": C, "stride": stride, "ops": ops, "out": str(rng.choice(["sum", "concat"])),
                          "skip": bool(rng.random() < 0.5)})
        head = "flatten" if rng.random() < 0.3 else "pool"
        return {**self._base("cnn", norm, act), "stem": stem, "cells": cells, "head": head}

    def _vit(self, rng: np.random.Generator, r: _Ranges, act: str) -> dict:
        patches = (2, 4) if self.dims == 2 else (4, 5, 8)
        dim = int(rng.choice(r.vit_dim))
        heads = int(rng.choice([h for h in (1, 2, 4) if dim % h == 0]))
        cls = bool(rng.random() < 0.5)
        return {**self._base("vit", "ln", "gelu" if act not in ("relu", "gelu") else act),
                "dim": dim, "heads": heads, "depth": int(rng.choice(r.vit_depth)),
                "mlp_ratio": int(rng.choice([1, 2])), "patch": int(rng.choice(patches)), "cls": cls,
                "norm_first": bool(rng.random() < 0.7), "pool": "cls" if (cls and rng.random() < 0.5) else "mean"}

    def _mlp(self, rng: np.random.Generator, r: _Ranges, norm: str, act: str) -> dict:
        widths = [int(rng.choice(r.mlp_width)) for _ in range(int(rng.choice(r.mlp_depth)))]
        return {**self._base("mlp", norm, act), "widths": widths}

    def _draw(self, rng: np.random.Generator, r: _Ranges) -> dict:
        names, probs = zip(*r.kinds)
        kind = str(rng.choice(names, p=np.asarray(probs) / sum(probs)))
        norm, act = str(rng.choice(r.norms)), str(rng.choice(list(_ACTS)))
        if kind == "cnn":
            return self._cnn(rng, r, norm, act)
        if kind == "vit":
            return self._vit(rng, r, act)
        return self._mlp(rng, r, norm, act)

    def draw(self, rng: np.random.Generator) -> dict:
        """One in-distribution configuration (held-out ones included)."""
        return self._draw(rng, _IN_DIST)

    def sample_train(self, rng: np.random.Generator) -> dict:
        """One configuration of the training share (rejection of the held-out tenth)."""
        while True:
            c = self.draw(rng)
            if not is_held_out(c, self.held_out):
                return c

    def train_pool(self, n: int, seed: int = 0, linear_embed: float = 0.0) -> list[dict]:
        """``n`` distinct training configurations (the fixed pool a training run cycles through).

        Args:
            n: distinct configurations drawn from the training share.
            seed: seed of the draws.
            linear_embed: share of the pool's ViTs that also enter the pool as their
                ``Linear``-patch-embedding twin (:func:`linear_embed_twin`), appended after the ``n``
                draws. Which ViTs is decided by a stable hash of each configuration, so the ``n``
                draws and their order are the same for every value.
        """
        if not 0.0 <= linear_embed <= 1.0:
            raise ValueError(f"linear_embed is a share in [0, 1], got {linear_embed}")
        rng = np.random.default_rng([seed, 1000])
        out: dict[str, dict] = {}
        for _ in range(100 * n):
            c = self.sample_train(rng)
            out.setdefault(config_key(c), c)
            if len(out) == n:
                pool = list(out.values())
                twins = [linear_embed_twin(c) for c in pool if _share(c, "embed:") < linear_embed]
                return pool + [t for t in twins if t is not None]
        raise ValueError(f"the training space of {self!r} has fewer than {n} distinct configurations")

    def split(self, name: str, n: int, seed: int = 0) -> list[dict]:
        """``n`` distinct configurations of a benchmark split (see the module docs).

        Raises:
            ValueError: unknown split, or fewer than ``n`` distinct configurations.
        """
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
        rng = np.random.default_rng([seed, SPLITS.index(name)])
        out: dict[str, dict] = {}
        for _ in range(200 * n):
            if name == "test":
                c = self.draw(rng)
                if not is_held_out(c, self.held_out):
                    continue
            else:
                c = self._draw(rng, _SPLIT_RANGES[name])
                if in_distribution(c):
                    continue
            out.setdefault(config_key(c), c)
            if len(out) == n:
                return list(out.values())
        raise ValueError(f"split {name!r} of {self!r} has fewer than {n} distinct configurations")
