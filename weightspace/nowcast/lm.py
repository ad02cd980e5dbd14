r"""Byte-level language modelling for nowcasting: offline text corpora, two small causal LM families,
and dense training trajectories for meta-training.

Nothing is downloaded. The text comes from the installed Python distributions
(:func:`importlib.metadata.distributions`), read in a deterministic order (distributions sorted by
normalized name, files by path), so the same environment always gives the same bytes; the corpus
records the SHA-256 of what it read. Which distributions are installed changes the text; pass
``distributions=dependency_closure("weightspace")`` (the packages any install of the core library
brings, without the project's own files) to fix the set across environments with different extras.

* ``corpus="docs"``: the ``METADATA`` file of every distribution (package descriptions: English
  prose, Markdown and reStructuredText). The held-out language-model task of the benchmark.
* ``corpus="code"``: the ``.py`` source files the distributions install. Meta-training trajectories.

Two model families (both convert to a :class:`~weightspace.GraphSpec`):

* :class:`TinyGPT` (held out from meta-training): pre-norm blocks with separate query/key/value
  projections and :func:`torch.nn.functional.scaled_dot_product_attention` (causal), learned
  positions, an untied output head. The byte-level GPT of NiNo's language tasks at a CPU scale.
* :class:`MHALM` (meta-training): post-norm blocks built on :class:`torch.nn.MultiheadAttention`
  (one fused input projection) with a causal mask, fixed sinusoidal positions, the output head tied
  to the byte embedding.

Both are trained next-token (cross-entropy over the 256 byte values,
:math:`\mathcal{L} = -\frac{1}{BT}\sum_{b,t}\log p_\theta(x_{b,t+1}\mid x_{b,\le t})`) on random
windows of ``seq`` bytes; :func:`lm_trajectories` records a snapshot of the parameters every
``every`` optimizer steps (:class:`~weightspace.nowcast.data.Trajectory`), under recipes sampled from
varied optimizers (Adam, AdamW, SGD with momentum) and learning-rate schedules (constant, cosine,
linear warm-up then cosine).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .data import Trajectory

log = logging.getLogger(__name__)

__all__ = ["TextCorpus", "text_corpus", "TinyGPT", "MHALM", "LMRecipe", "lm_batch", "lm_loss",
           "train_lm", "lm_trajectories", "example_input", "sample_recipes", "CORPORA", "VOCAB", "LMRunsConfig",
           "dependency_closure"]

VOCAB = 256  # bytes
CORPORA = ("docs", "code")


@dataclass(frozen=True, eq=False)
class TextCorpus:
    """Bytes of an offline corpus split into ``train`` / ``val`` (uint8 tensors), with provenance."""

    name: str
    train: Tensor
    val: Tensor
    files: int
    sha256: str

    def describe(self) -> dict:
        return {"corpus": self.name, "files": self.files, "train_bytes": int(self.train.numel()),
                "val_bytes": int(self.val.numel()), "sha256": self.sha256}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed() -> dict:
    """Installed distributions by normalized name (the first one found wins, as for imports)."""
    dists = {}
    for d in md.distributions():
        try:
            key = _norm(d.metadata["Name"] or "")
        except Exception:  # a broken metadata file: skipped
            continue
        if key and key not in dists:
            dists[key] = d
    return dists


def dependency_closure(root: str = "weightspace", include_root: bool = False) -> tuple[str, ...]:
    """Normalized names of the installed distributions that ``root`` requires, transitively.

    Only unconditional requirements are followed (no extras; environment markers are evaluated for
    this interpreter), so every environment where ``root``'s core install works has the same set,
    whatever extras it added. Requirements that are not installed are skipped.

    Args:
        root: the distribution to start from (``"weightspace"``).
        include_root: keep ``root`` itself (its ``METADATA`` is its README, which changes with it).

    Raises:
        ValueError: ``root`` is not installed.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    dists = _installed()
    start = _norm(root)
    if start not in dists:
        raise ValueError(f"dependency_closure: distribution {root!r} is not installed")
    seen: set[str] = set()
    stack = [start]
    while stack:
        key = stack.pop()
        if key in seen or key not in dists:
            continue
        seen.add(key)
        for line in dists[key].requires or []:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            stack.append(_norm(req.name))
    if not include_root:
        seen.discard(start)
    return tuple(sorted(seen))


def text_corpus(name: str = "docs", max_bytes: int = 1 << 20, val_fraction: float = 0.1,
                max_file_bytes: int = 64 << 10, distributions=None) -> TextCorpus:
    """A byte corpus from the installed distributions (see module docs), at most ``max_bytes`` long.

    Files are taken in a fixed order (distributions by normalized name, then paths) and each is cut at
    ``max_file_bytes`` so that no single file dominates; the last ``val_fraction`` of the bytes is the
    validation split (text the model never trains on).

    Args:
        name: ``"docs"`` (``METADATA`` files) or ``"code"`` (installed ``.py`` files).
        max_bytes: total bytes kept.
        val_fraction: share of the bytes held out for validation.
        max_file_bytes: bytes kept per file.
        distributions: names of the distributions to read (for example
            :func:`dependency_closure`); ``None`` reads every installed one.

    Raises:
        ValueError: an unknown corpus name, a named distribution that is not installed, or fewer
            than 10 kB of text found (the installed distributions ship too little; install more
            packages or pick the other corpus).
    """
    if name not in CORPORA:
        raise ValueError(f"text_corpus: unknown corpus {name!r}; choose one of {CORPORA}")
    dists = _installed()
    if distributions is not None:
        wanted = {_norm(n) for n in distributions}
        missing = sorted(wanted - dists.keys())
        if missing:
            raise ValueError(f"text_corpus({name!r}): distributions {missing} are not installed; "
                             f"install them or leave them out of `distributions`")
        dists = {k: v for k, v in dists.items() if k in wanted}
    chunks: list[bytes] = []
    total, files = 0, 0
    for key in sorted(dists):
        d = dists[key]
        if name == "docs":
            paths = [Path(str(d.locate_file(""))) / p for p in (d.files or []) if p.name == "METADATA"]
        else:
            paths = sorted((Path(str(d.locate_file(p))) for p in (d.files or []) if p.suffix == ".py"), key=str)
        for path in paths:
            try:
                data = path.read_bytes()[:max_file_bytes]
            except OSError:
                continue
            if not data:
                continue
            chunks.append(data + b"\n")
            total += len(data) + 1
            files += 1
            if total >= max_bytes:
                break
        if total >= max_bytes:
            break
    blob = b"".join(chunks)[:max_bytes]
    if len(blob) < 10_000:
        raise ValueError(f"text_corpus({name!r}): only {len(blob)} bytes of text in the installed distributions; "
                         f"choose the other corpus ({[c for c in CORPORA if c != name]}) or install more packages")
    t = torch.frombuffer(bytearray(blob), dtype=torch.uint8).clone()
    n_val = max(1, int(len(t) * val_fraction))
    return TextCorpus(name, t[:-n_val], t[-n_val:], files, hashlib.sha256(blob).hexdigest())


class _Block(nn.Module):
    """Pre-norm block: separate q/k/v projections, causal softmax attention, a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_ratio * dim), nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        h = self.ln1(x)
        q, k, v = (m(h).reshape(B, T, self.heads, D // self.heads).transpose(1, 2) for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, D))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyGPT(nn.Module):
    """Byte-level GPT: learned positions, pre-norm blocks with separate q/k/v, untied head.

    Args:
        dim: model width; heads: attention heads; depth: blocks; seq: context length (positions);
        mlp_ratio: MLP width / ``dim``.

    Shapes: ``x [B, seq]`` (bytes) -> logits ``[B, seq, 256]``.
    """

    def __init__(self, dim: int = 64, heads: int = 4, depth: int = 2, seq: int = 64, mlp_ratio: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"TinyGPT: dim ({dim}) must be a multiple of heads ({heads})")
        self.tok = nn.Embedding(VOCAB, dim)
        self.pos = nn.Embedding(seq, dim)
        self.blocks = nn.Sequential(*[_Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB)
        self.register_buffer("positions", torch.arange(seq), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.tok(x) + self.pos(self.positions)
        return self.head(self.ln(self.blocks(h)))


def _sinusoid(seq: int, dim: int) -> Tensor:
    pos = torch.arange(seq, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10_000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    out = torch.zeros(seq, dim)
    out[:, 0::2], out[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return out


class _MHABlock(nn.Module):
    """Post-norm block on :class:`torch.nn.MultiheadAttention` (fused in-projection), causal mask."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, seq: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_ratio * dim), nn.Linear(mlp_ratio * dim, dim)
        self.register_buffer("mask", torch.triu(torch.full((seq, seq), float("-inf")), 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        a, _ = self.attn(x, x, x, attn_mask=self.mask, need_weights=False)
        x = self.ln1(x + a)
        return self.ln2(x + self.fc2(F.relu(self.fc1(x))))


class MHALM(nn.Module):
    """Byte-level causal LM of the meta-training family: fixed sinusoidal positions, post-norm
    :class:`torch.nn.MultiheadAttention` blocks, the output head tied to the byte embedding.

    Shapes: ``x [B, seq]`` (bytes) -> logits ``[B, seq, 256]``.
    """

    def __init__(self, dim: int = 32, heads: int = 2, depth: int = 1, seq: int = 32, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, dim)
        self.register_buffer("pe", _sinusoid(seq, dim), persistent=False)
        self.blocks = nn.Sequential(*[_MHABlock(dim, heads, mlp_ratio, seq) for _ in range(depth)])

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(self.tok(x) + self.pe)
        return F.linear(h, self.tok.weight)


def example_input(seq: int) -> Tensor:
    """An input of the right shape for :meth:`GraphSpec.from_module` / ``attach(example_input=...)``: ``[1, seq]``."""
    return torch.zeros(1, seq, dtype=torch.long)


def lm_batch(data: Tensor, batch: int, seq: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``batch`` random windows of ``seq + 1`` bytes: ``(inputs [B, seq], next bytes [B, seq])`` (int64)."""
    starts = torch.randint(0, data.numel() - seq - 1, (batch,), generator=gen)
    idx = starts[:, None] + torch.arange(seq + 1)
    w = data[idx].long()
    return w[:, :-1], w[:, 1:]


def lm_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Next-byte cross-entropy (nats per byte). Shapes: ``x, y [B, T]`` -> scalar."""
    return F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))


@dataclass(frozen=True)
class LMRunsConfig:
    """The byte-level LM runs that meta-training adds to the zoo trajectories (:func:`lm_trajectories`;
    the ``lm`` node of ``weightspace nowcast``, schema ``schema/nowcast_lm``).

    Attributes:
        runs: training runs (0: none); steps: optimizer steps per run; every: steps between snapshots;
        corpus: ``"code"`` or ``"docs"`` (:func:`text_corpus`); max_bytes: corpus size; seed: recipes
        and first run seed.
    """

    runs: int = 16
    steps: int = 1200
    every: int = 4
    corpus: str = "code"
    max_bytes: int = 1 << 20
    seed: int = 0


@dataclass(frozen=True)
class LMRecipe:
    """One training run: model family and size, optimizer, schedule (see :func:`train_lm`)."""

    family: str = "mha"  # "mha" (MHALM) | "gpt" (TinyGPT)
    dim: int = 32
    heads: int = 2
    depth: int = 1
    seq: int = 32
    batch: int = 16
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 3e-3
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | warmup_cosine
    warmup: int = 0
    steps: int = 1200

    def make(self) -> nn.Module:
        if self.family == "gpt":
            return TinyGPT(self.dim, self.heads, self.depth, self.seq)
        if self.family == "mha":
            return MHALM(self.dim, self.heads, self.depth, self.seq)
        raise ValueError(f"LMRecipe.family must be 'gpt' or 'mha', got {self.family!r}")

    def optimizer_for(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        raise ValueError(f"LMRecipe.optimizer must be adam, adamw or sgd, got {self.optimizer!r}")

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at optimizer step ``step`` (0-based)."""
        if self.schedule == "constant":
            return 1.0
        if step < self.warmup:
            return (step + 1) / self.warmup
        frac = (step - self.warmup) / max(1, self.steps - self.warmup)
        if self.schedule in ("cosine", "warmup_cosine"):
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        raise ValueError(f"LMRecipe.schedule must be constant, cosine or warmup_cosine, got {self.schedule!r}")


def train_lm(recipe: LMRecipe, corpus: TextCorpus, seed: int, every: int = 0) -> tuple[nn.Module, Tensor | None]:
    """Train ``recipe`` on ``corpus.train`` from seed ``seed``; with ``every > 0`` also return the
    snapshots ``[T, P]`` (float32, :meth:`GraphSpec.flatten` order) taken every ``every`` steps."""
    from weightspace.graph import GraphSpec

    torch.manual_seed(seed)
    model = recipe.make()
    spec = GraphSpec.from_module(model, example_input(recipe.seq)) if every else None
    opt = recipe.optimizer_for(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, recipe.lr_factor)
    gen = torch.Generator().manual_seed(1_000 + seed)
    snaps = []
    for step in range(recipe.steps):
        if every and step % every == 0:
            snaps.append(spec.flatten(model.state_dict(), allow_nonfinite=True).detach().float().clone())
        x, y = lm_batch(corpus.train, recipe.batch, recipe.seq, gen)
        loss = lm_loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    if every:
        snaps.append(spec.flatten(model.state_dict(), allow_nonfinite=True).detach().float().clone())
    return model, (torch.stack(snaps) if every else None)


def sample_recipes(n: int, seed: int = 0, steps: int = 1200) -> list[LMRecipe]:
    """``n`` meta-training recipes of the :class:`MHALM` family: width 16-48, 1-2 blocks, 1-4 heads,
    Adam / AdamW / SGD-momentum, constant / cosine / warm-up-cosine schedules, log-uniform learning rates."""
    g = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    out = []
    for _ in range(n):
        opt = pick(("adam", "adam", "adamw", "sgd"))
        lo, hi = (3e-2, 3e-1) if opt == "sgd" else (1e-3, 1e-2)
        lr = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * float(torch.rand((), generator=g)))
        dim = pick((16, 32, 48))
        sched = pick(("constant", "cosine", "warmup_cosine"))
        out.append(LMRecipe("mha", dim, pick((1, 2, 4)) if dim != 48 else pick((2, 4)), pick((1, 2)), 32, 16, opt, lr,
                            0.01 if opt == "adamw" else 0.0, sched, 50 if sched == "warmup_cosine" else 0, steps))
    return out


def lm_trajectories(work_dir: str | os.PathLike, runs: int = 12, steps: int = 1200, every: int = 4,
                    corpus: str = "code", max_bytes: int = 1 << 20, seed: int = 0,
                    progress: bool = True) -> list[Trajectory]:
    """Dense trajectories of ``runs`` byte-level :class:`MHALM` runs on ``corpus`` (meta-training data).

    Recipes come from :func:`sample_recipes`; run ``i`` uses seed ``seed + i``. Each run's snapshots are
    cached in ``<work_dir>/lm_<i>.safetensors`` (with its recipe and the corpus hash), so a rerun reads
    them back instead of training again; a cache of another recipe or corpus is retrained.

    Returns:
        One :class:`~weightspace.nowcast.data.Trajectory` per run (snapshots ``every`` steps apart).
    """
    import json

    from safetensors.torch import load_file, save_file

    from weightspace.graph import GraphSpec

    if runs <= 0:
        return []
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    text = text_corpus(corpus, max_bytes)
    out = []
    for i, rec in enumerate(tqdm(sample_recipes(runs, seed, steps), disable=not progress, desc="lm runs")):
        meta = {"recipe": json.dumps(rec.__dict__, sort_keys=True), "corpus": text.sha256, "seed": str(seed + i),
                "every": str(every)}
        path = work / f"lm_{i}.safetensors"
        flat = None
        if path.is_file():
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                if f.metadata() == meta:
                    flat = load_file(str(path))["flat"]
        if flat is None:
            _, flat = train_lm(rec, text, seed + i, every)
            save_file({"flat": flat.contiguous()}, str(path), metadata=meta)
        good = torch.isfinite(flat).all(-1)
        if not bool(good.all()):  # cut a run that diverged at its first non-finite snapshot
            flat = flat[: int((~good).nonzero()[0])]
        if flat.shape[0] >= 3:
            out.append(Trajectory(GraphSpec.from_module(rec.make(), example_input(rec.seq)), flat, every,
                                  f"lm_{corpus}/{i}"))
    log.info("%d byte-level LM trajectories on the %r corpus (%s)", len(out), corpus, text.describe())
    return out
