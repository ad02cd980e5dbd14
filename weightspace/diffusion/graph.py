r"""Architecture-aware latent weight diffusion on parameter graphs.

A network is encoded into a latent vector by a graph metanetwork (or by running it on learned probe
inputs), a graph decoder writes weights for any architecture of the family from a latent, and a DDPM
learns the latents, conditioned on the architecture and (optionally) on a target accuracy, as G.pt
(Peebles et al. 2022) conditions on a target loss.

* **Encoder** (``encoder``): by default (``"graph"``) a :class:`~weightspace.nn.GraphMetaNet` over the
  network's :class:`~weightspace.ParameterGraph`; its graph embedding is invariant to hidden-neuron
  permutations, so the latent describes the *function class* of a network, not the arbitrary order of
  its units. ``"probe"`` (:class:`_ProbeEncoder`) *runs* the network on ``probes`` learned inputs
  (initialized from training inputs) and an MLP encodes its log-probabilities there, as probing
  metanetworks read a network (ProbeGen; :class:`~weightspace.nn.ProbeNet`): it reads the function
  only (exactly invariant), and sees the differences between networks' predictions that the
  reconstruction loss below asks the decoder to reproduce. The latent is perturbed with Gaussian
  noise in training (:math:`\sigma` = ``latent_noise``, p-diff's augmentation).
* **Decoder**: a graph hypernetwork (:class:`~weightspace.hyper.GraphHyperNetwork`, per-edge and
  per-neuron heads decoded exactly through :meth:`GraphSpec.decode`) whose neuron embeddings receive a
  learned map of the latent (an MLP of width ``latent_map_hidden``; 0: linear). By default it starts from
  the shipped hypernetwork checkpoint (trained on the digits training split, no zoo weights), so an
  untrained decoder already writes working networks for unseen MLP/CNN architectures, and the
  autoencoder learns to steer it.
* **Reconstruction loss in function space**: a permutation-invariant latent cannot tell the decoder
  in which order a network's units were; so instead of a weight-space error the autoencoder minimizes
  the KL divergence from the encoded network's predictive distribution to the decoded network's on
  training inputs, softened by a temperature (2 by default; Hinton et al.'s distillation, which
  brings out where good networks differ), plus a little cross-entropy with the labels. A decoded network reproduces the
  function of its source up to a neuron permutation of the decoder's choosing.
* **Contrastive term** (``contrast_weight``; :func:`_contrastive`): the KL alone lets a decoder that
  under-uses the latent write one typical, good function for every source (a small KL, since good
  networks are alike), and DDPM samples then collapse onto it. An InfoNCE loss over each batch (van den
  Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding") asks every
  reconstruction to be closer, in the same KL, to its own source than to the batch's other sources.
* **Latent DDPM** (:class:`~weightspace.diffusion.ddpm.LatentDDPM`) on the standardized latents of
  the training networks, conditioned on ``[architecture descriptor, target accuracy, accuracy given]``;
  the accuracy label is each training net's accuracy on the validation inputs and is dropped in 20% of
  training steps, so sampling works with or without a target.
* **Latent temperature** (``sample_scale``; :meth:`GraphLatentDiffusion.calibrate_scale`): DDPM samples
  are multiplied by a scale before decoding. The decoder pulls its outputs toward one typical, accurate
  function, so samples decoded as drawn are less diverse than the runs and can lie closer to the training
  set than independently trained runs do; by default the scale is chosen on the validation split: the
  largest candidate reached, step by step, while the decoded samples' mean validation accuracy stays at
  least the training runs' mean (or, with ``novelty_target``, the one whose samples are that likely to
  be farther from the training runs than validation runs are).

The architecture descriptor (:func:`arch_descriptor`) is read from the graph: the number of hidden
layers and the log-width of each (up to :data:`MAX_LAYERS`), so unseen widths and depths have a
descriptor and can be sampled.

Why the defaults are what they are (graph encoder rather than probe, the contrastive term, the
temperature rule, the standardization of latents) is recorded with its evidence in
``docs/design-notes/diffusion.md``.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from weightspace.graph import GraphSpec
from weightspace.graph.vocab import NodeType
from weightspace.hyper import GraphHyperNetwork
from weightspace.instantiate import instantiate
from weightspace.nn import GraphMetaNet
from weightspace.pretrained import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, PretrainedMixin

from .data import (
    ArchPopulation,
    EvalData,
    Population,
    UnknownArchitectureError,
    arch_key,
    batched_logits,
    predictions,
)
from .ddpm import LatentDDPM, fit_ddpm

log = logging.getLogger(__name__)

__all__ = ["GraphDiffusionConfig", "GraphLatentDiffusion", "arch_descriptor", "pick_scale", "MAX_LAYERS", "ARCH_DIM"]

#: Hidden layers the architecture descriptor describes individually (deeper ones only count).
MAX_LAYERS = 4
#: Width of :func:`arch_descriptor`.
ARCH_DIM = MAX_LAYERS + 2
_EPS = 1e-5


def arch_descriptor(spec: GraphSpec) -> Tensor:
    """``[ARCH_DIM]``: ``[hidden layers / 4, log2(width_l) / 6 for l < MAX_LAYERS (0: absent), log2(total hidden) / 8]``."""
    hidden = spec.node_type == NodeType.HIDDEN
    layers = spec.node_layer[hidden]
    uniq = torch.unique(layers)
    widths = [int((layers == u).sum()) for u in uniq.tolist()]
    d = torch.zeros(ARCH_DIM)
    d[0] = len(widths) / 4.0
    for i, w in enumerate(widths[:MAX_LAYERS]):
        d[1 + i] = math.log2(w) / 6.0
    d[-1] = math.log2(max(sum(widths), 1)) / 8.0
    return d


@dataclass(frozen=True)
class GraphDiffusionConfig:
    """Hyperparameters of :class:`GraphLatentDiffusion`: its constructor arguments, stored in ``config.json``.

    The defaults are the shipped recipe (``weightspace generate``); each field is described beside it.
    """

    latent_dim: int = 16
    encoder: str = "graph"              # "graph": a GraphMetaNet reads the weights; "probe": the network is run on
    #                                     learned inputs and its predictions are encoded (:class:`_ProbeEncoder`)
    probes: int = 128                   # encoder="probe": learned inputs, initialized from training inputs
    probe_hidden: int = 256             # encoder="probe": width of the MLP over the predictions
    enc_hidden: int = 32                # encoder="graph": GraphMetaNet width
    enc_layers: int = 2                 # encoder="graph": GraphMetaNet layers
    decoder_init: str = "hypernet"      # "hypernet": the shipped checkpoint; "scratch": a fresh GraphHyperNetwork
    dec_hidden: int = 48                # only for decoder_init="scratch"
    dec_layers: int = 2
    latent_noise: float = 0.1
    latent_map_hidden: int = 0          # the latent -> per-unit offsets map: 0: linear; > 0: an MLP of this width
    ae_steps: int = 600                 # autoencoder steps (too few leave a decoder that ignores the latent)
    ae_lr: float = 1e-3
    batch_size: int = 8
    inputs_per_step: int = 256
    ce_weight: float = 0.1
    temperature: float = 2.0
    contrast_weight: float = 0.1        # InfoNCE: a reconstruction is closer to its own source than to the batch's others
    contrast_tau: float = 0.1           # its temperature, relative to the batch's mean source-to-source KL
    eval_every: int = 100
    ddpm_steps: int = 3000
    ddpm_lr: float = 1e-3
    ddpm_hidden: int = 256
    ddpm_blocks: int = 3
    timesteps: int = 1000
    acc_drop: float = 0.2
    sample_scale: float = 0.0           # latent temperature: DDPM samples are scaled by it; 0: calibrated (below)
    scale_grid: tuple[float, ...] = (1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0)  # the calibration's candidates
    novelty_target: float | None = None  # None: the largest scale that keeps the accuracy; else aim at this
    #                                      farther-than-validation-runs probability (see pick_scale)
    calibration_samples: int = 100      # DDPM samples (over all architectures) the calibration decodes

    def to_dict(self) -> dict:
        return asdict(self)


def pick_scale(rows: list[dict], min_accuracy: float, novelty_target: float | None = None) -> dict:
    """The latent-temperature rule of :meth:`GraphLatentDiffusion.calibrate_scale` on its table.

    ``rows`` hold ``scale``, ``val_accuracy`` and ``farther_probability``. The candidates are the scales
    reached in increasing order while ``val_accuracy >= min_accuracy`` (just the smallest scale if it
    already falls short). Returned is the largest candidate (``novelty_target=None``, the default), or
    the candidate whose ``farther_probability`` is nearest ``novelty_target``, the smaller scale on a tie.

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("pick_scale: no candidate scales")
    ordered = sorted(rows, key=lambda r: r["scale"])
    allowed = [ordered[0]]
    for r in ordered[1:]:
        if r["val_accuracy"] < min_accuracy or allowed[-1]["val_accuracy"] < min_accuracy:
            break
        allowed.append(r)
    if novelty_target is None:
        return allowed[-1]
    return min(allowed, key=lambda r: (abs(r["farther_probability"] - novelty_target), r["scale"]))


def _shipped_hypernetwork() -> nn.Module:
    """The shipped hypernetwork checkpoint (``GraphHyperNetwork.from_pretrained("hypernet")``), in training mode.

    On the ``meta`` device (the shape check of :meth:`~weightspace.pretrained.PretrainedMixin.from_pretrained`)
    only its architecture is built: no weights are read.
    """
    if torch.empty(()).is_meta:
        _, config, _ = GraphHyperNetwork.read_pretrained_config("hypernet")
        return GraphHyperNetwork.from_config(config)
    return GraphHyperNetwork.from_pretrained("hypernet").train()


class _LatentNeuronEncoder(nn.Module):
    """Wraps the decoder's neuron encoder: adds a latent-dependent vector to every neuron's embedding.

    A vector shared by all neurons would be removed by the decoder's centring and per-neuron
    standardization, so the latent is mapped to one offset per hidden-unit code (``codes`` of them,
    unit ``k`` of a layer takes offset ``k mod codes``) plus one shared offset: the latent says how
    each unit of the decoded network differs from the others.
    """

    def __init__(self, base: nn.Module, latent_dim: int, hidden: int, codes: int, map_hidden: int = 0) -> None:
        super().__init__()
        self.base, self.hidden, self.codes = base, hidden, codes
        self.shared = nn.Sequential(nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        if map_hidden > 0:  # a nonlinear map: the units' offsets need not lie in a latent_dim-dimensional subspace
            self.per_unit = nn.Sequential(nn.Linear(latent_dim, map_hidden), nn.SiLU(), nn.Linear(map_hidden, codes * hidden))
            last, fan_in = self.per_unit[-1], map_hidden
        else:
            last, fan_in = nn.Linear(latent_dim, codes * hidden), latent_dim
            self.per_unit = last
        nn.init.normal_(self.shared[-1].weight, std=0.3 / math.sqrt(hidden))
        nn.init.zeros_(self.shared[-1].bias)
        nn.init.normal_(last.weight, std=0.5 / math.sqrt(fan_in))
        nn.init.zeros_(last.bias)
        self.offsets: Tensor | None = None

    def node_offsets(self, z: Tensor, rank: Tensor) -> Tensor:
        """``[B * N, hidden]`` offsets for latents ``z [B, D]`` on a graph whose hidden-unit ranks are ``rank [N]``."""
        B, N = z.shape[0], rank.numel()
        table = self.per_unit(z).view(B, self.codes, self.hidden)
        unit = table[:, rank.clamp_min(0) % self.codes] * (rank >= 0)[None, :, None].to(z.dtype)
        return (unit + self.shared(z)[:, None]).reshape(B * N, self.hidden)

    def forward(self, x: Tensor, node_type: Tensor, node_act: Tensor, node_layer: Tensor, node_pos: Tensor) -> Tensor:
        h = self.base(x, node_type, node_act, node_layer, node_pos)
        if self.offsets is not None:
            h = h + self.offsets
        return h


class _ProbeEncoder(nn.Module):
    """Encodes a network by what it computes: its log-probabilities on ``probes`` learned inputs
    (initialized from training inputs), through an MLP, to a latent. It reads the function only, so it
    is exactly invariant to hidden-neuron permutations, and it sees the differences in the predictions
    that the function-space reconstruction loss asks the decoder to reproduce."""

    def __init__(self, probes: Tensor, num_classes: int, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.probes = nn.Parameter(probes.detach().clone().float())
        self.mlp = nn.Sequential(nn.Linear(probes.shape[0] * num_classes, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, latent_dim))

    def forward(self, model: nn.Module, spec: GraphSpec, flat: Tensor) -> Tensor:
        logp = batched_logits(model, spec, flat, self.probes).log_softmax(-1)
        return self.mlp(logp.flatten(1).nan_to_num(0.0, 0.0, 0.0))


def _contrastive(t: Tensor, s: Tensor, idx: Tensor, tau: float) -> Tensor:
    r"""InfoNCE over a batch in function space: reconstruction ``i`` must be closer to its own source than
    to the batch's other sources.

    :math:`D_{ij} = \mathrm{KL}(p_{t_j} \Vert p_{s_i})` (mean over inputs) between source ``j`` and
    reconstruction ``i``; logits :math:`-D_{ij} / (\tau \bar d)`, with :math:`\bar d` the batch's mean
    KL between distinct sources (detached), so ``tau`` is free of the zoo's scale of differences.
    A decoder that ignores the latent writes one function for every source and scores chance here,
    although it can score a small reconstruction KL when the sources are alike.

    Args:
        t, s: ``[B, n, C]`` log-probabilities of the sources and their reconstructions.
        idx: ``[B]`` run indices (a run drawn twice is no negative of itself).
    """
    pt = t.exp()
    d = (pt[None] * (t[None] - s[:, None])).sum(-1).mean(-1)  # [i (recon), j (source)]
    same = idx[:, None] == idx[None, :]
    with torch.no_grad():
        dt = (pt[None] * (t[None] - t[:, None])).sum(-1).mean(-1)
        scale = dt[~same].mean() if (~same).any() else dt.new_ones(())
    logits = (-d / (tau * scale.clamp_min(1e-8))).masked_fill(same & ~torch.eye(len(idx), dtype=torch.bool), float("-inf"))
    return nn.functional.cross_entropy(logits, torch.arange(len(idx)))


class GraphLatentDiffusion(PretrainedMixin, nn.Module):
    """Graph autoencoder + conditional latent DDPM (see the module docstring).

    ``GraphLatentDiffusion.fit(population, config, seed)`` trains it; :meth:`encode` /
    :meth:`decode` map networks to latents and back for any supported architecture;
    :meth:`sample` generates new networks for an architecture config, optionally at a target accuracy.

    Args:
        config: a :class:`GraphDiffusionConfig`; or its fields as keyword arguments.

    Persistence: :meth:`save_pretrained` / :meth:`from_pretrained`. ``config.json`` holds the
    :class:`GraphDiffusionConfig` and, as extras, the training architectures, the validation history,
    the latent-temperature calibration and :attr:`info`; ``model.safetensors`` the encoder, decoder and
    DDPM weights, the latent standardization (pooled and per architecture) and the latent temperature.
    """

    config_class = GraphDiffusionConfig
    checkpoint_format = "weightspace.diffusion.graph"
    #: the name of this generator in :data:`weightspace.diffusion.GENERATORS`
    kind: ClassVar[str] = "graph"
    #: trains on several architectures at once
    single_arch: ClassVar[bool] = False

    def __init__(self, config: GraphDiffusionConfig | None = None, **fields: Any) -> None:
        super().__init__()
        if config is not None and fields:
            raise TypeError("GraphLatentDiffusion: pass a GraphDiffusionConfig or its fields, not both")
        config = config if config is not None else GraphDiffusionConfig(**fields)
        self.config = config
        #: provenance and other JSON extras stored with the checkpoint
        self.info: dict[str, Any] = {}
        if config.encoder == "graph":
            self.encoder: nn.Module | None = GraphMetaNet(hidden=config.enc_hidden, num_layers=config.enc_layers, out=1,
                                                          embed_dim=config.latent_dim, kernel_grid=(3, 3))
        elif config.encoder == "probe":
            self.encoder = None  # built by :meth:`fit` from the training inputs (:meth:`build_probe_encoder`)
        else:
            raise ValueError(f"encoder must be 'graph' or 'probe', got {config.encoder!r}")
        # every latent dimension is standardized over the networks of one architecture, so the differences
        # between networks, not a shared offset, carry the latent's scale: with the statistics of the batch
        # (one architecture's networks) in training, and deterministically, with statistics fitted on
        # each architecture's training runs (:meth:`fit_latent_stats`), in eval mode.
        self.latent_stats: dict[str, tuple[Tensor, Tensor]] = {}
        self.register_buffer("lat_mean", torch.zeros(config.latent_dim))  # pooled: architectures without stats
        self.register_buffer("lat_std", torch.ones(config.latent_dim))
        if config.decoder_init == "hypernet":
            dec = _shipped_hypernetwork()
        elif config.decoder_init == "scratch":
            dec = GraphHyperNetwork(hidden=config.dec_hidden, layers=config.dec_layers)
        else:
            raise ValueError(f"decoder_init must be 'hypernet' or 'scratch', got {config.decoder_init!r}")
        dec.node_enc = _LatentNeuronEncoder(dec.node_enc, config.latent_dim, dec.hidden, dec.num_codes,
                                            config.latent_map_hidden)
        self.decoder = dec
        self.ddpm = LatentDDPM(config.latent_dim, ARCH_DIM + 2, config.timesteps, hidden=config.ddpm_hidden,
                               blocks=config.ddpm_blocks)
        self.register_buffer("z_mean", torch.zeros(config.latent_dim))
        self.register_buffer("z_std", torch.ones(config.latent_dim))
        self.register_buffer("acc_mean", torch.zeros(()))
        self.register_buffer("acc_std", torch.ones(()))
        self.register_buffer("scale", torch.ones(()))  # the latent temperature :meth:`sample` applies
        self.archs: dict[str, dict] = {}
        #: ``(autoencoder step, validation KL)`` of every evaluation in :meth:`fit` (the lowest is kept)
        self.val_history: list[tuple[int, float]] = []
        #: one row per candidate latent temperature of :meth:`calibrate_scale` (validation figures; ``kept``)
        self.calibration: list[dict] = []
        self._targets: dict[str, object] = {}
        self._models: dict[str, nn.Module] = {}

    # ------------------------------------------------------------------ persistence hooks
    def pretrained_tensors(self) -> dict[str, Tensor]:
        tensors = dict(self.state_dict())
        for i, (mean, std) in enumerate(self.latent_stats.values()):
            tensors[f"latent_stats.{i}.mean"], tensors[f"latent_stats.{i}.std"] = mean, std
        return tensors

    def load_pretrained_tensors(self, tensors: dict[str, Tensor]) -> None:
        tensors = dict(tensors)
        stats = {k: tensors.pop(k) for k in [k for k in tensors if k.startswith("latent_stats.")]}
        n = len(stats) // 2
        self._loaded_stats = [(stats[f"latent_stats.{i}.mean"], stats[f"latent_stats.{i}.std"]) for i in range(n)]
        if self.encoder is None:  # the probe encoder: its shape is read from the stored probes
            if "encoder.probes" not in tensors or "encoder.mlp.0.weight" not in tensors:
                raise KeyError("encoder='probe' but no 'encoder.probes' / 'encoder.mlp.0.weight' tensors")
            probes = tensors["encoder.probes"]
            classes = int(tensors["encoder.mlp.0.weight"].shape[1]) // int(probes.shape[0])
            self.encoder = _ProbeEncoder(probes, classes, self.config.latent_dim, self.config.probe_hidden)
        self.load_state_dict(tensors)

    def pretrained_extras(self) -> dict[str, Any]:
        return {**self.info, "archs": list(self.archs.values()),
                "latent_stats_archs": [self.archs[k] for k in self.latent_stats],
                "val_history": [list(r) for r in self.val_history], "calibration": list(self.calibration)}

    def set_pretrained_extras(self, extras: dict[str, Any]) -> None:
        extras = dict(extras)
        archs = extras.pop("archs", [])
        stats_archs = extras.pop("latent_stats_archs", [])
        self.val_history = [tuple(r) for r in extras.pop("val_history", [])]
        self.calibration = list(extras.pop("calibration", []))
        self.info = extras
        self.archs = {arch_key(a): dict(a) for a in archs}
        loaded = getattr(self, "_loaded_stats", [])
        if len(loaded) != len(stats_archs):
            raise CheckpointError(f"{CONFIG_NAME}: {len(stats_archs)} architectures with latent statistics, but "
                                  f"{WEIGHTS_NAME} holds {len(loaded)}")
        self.latent_stats = {arch_key(a): st for a, st in zip(stats_archs, loaded)}
        self._loaded_stats = []

    def trained_archs(self) -> list[dict]:
        """The architectures it was trained on (``_target_`` configs)."""
        return [dict(a) for a in self.archs.values()]

    def arch_spec(self, arch: dict):
        """The :class:`~weightspace.GraphSpec` of an architecture config (cached)."""
        return self.target(arch).spec

    # ------------------------------------------------------------------ pieces
    def _model(self, arch: dict) -> nn.Module:
        """A module of the architecture (its own weights are never read: :func:`batched_logits`), cached."""
        k = arch_key(arch)
        if k not in self._models:
            self._models[k] = instantiate(dict(arch)).eval()
        return self._models[k]

    def target(self, arch: dict):
        """The decoder's :class:`~weightspace.hyper.HyperTarget` of an architecture config (cached)."""
        k = arch_key(arch)
        if k not in self._targets:
            self._targets[k] = self.decoder.target(instantiate(dict(arch)))
        return self._targets[k]

    def build_probe_encoder(self, x_train: Tensor, num_classes: int, generator: torch.Generator | None = None) -> None:
        """``encoder="probe"``: the encoder's learned inputs start as ``config.probes`` training inputs."""
        idx = torch.randperm(len(x_train), generator=generator)[: self.config.probes]
        self.encoder = _ProbeEncoder(x_train[idx], num_classes, self.config.latent_dim, self.config.probe_hidden)

    def _raw(self, arch: dict, flat: Tensor) -> Tensor:
        """Encoder embeddings ``[B, latent_dim]`` of networks ``flat [B, P]``, before standardization."""
        from torch_geometric.data import Batch

        if self.encoder is None:
            raise RuntimeError("the probe encoder is built by fit() (or build_probe_encoder) from training inputs")
        spec = self.target(arch).spec
        if isinstance(self.encoder, _ProbeEncoder):
            return self.encoder(self._model(arch), spec, flat)
        graphs = [spec.to_graph(f.detach().contiguous(), allow_nonfinite=True) for f in flat]
        return self.encoder.encode(Batch.from_data_list(graphs))

    def _standardize(self, arch: dict, e: Tensor) -> Tensor:
        """Batch statistics in training mode (batches of two or more networks), else the fitted ones."""
        if self.training and e.shape[0] > 1:
            return (e - e.mean(0)) / (e.var(0, unbiased=False) + _EPS).sqrt()
        mean, std = self.latent_stats.get(arch_key(arch), (self.lat_mean, self.lat_std))
        return (e - mean) / std

    def _embed(self, arch: dict, flat: Tensor) -> Tensor:
        return self._standardize(arch, self._raw(arch, flat))

    @torch.no_grad()
    def fit_latent_stats(self, archs: list[ArchPopulation]) -> None:
        """Per-architecture mean and std of the encoder's embeddings of the training runs (the eval-mode
        standardization); the pooled buffers (mean over architectures) serve architectures without runs."""
        was = self.training
        self.eval()
        stats = {}
        for a in archs:
            if not len(a.runs["train"]):
                continue
            e = torch.cat([self._raw(a.config, a.flat["train"][i : i + 64]) for i in range(0, len(a.runs["train"]), 64)])
            stats[arch_key(a.config)] = (e.mean(0), (e.var(0, unbiased=False) + _EPS).sqrt())
        self.train(was)
        if stats:
            self.latent_stats = stats
            self.lat_mean.copy_(torch.stack([m for m, _ in stats.values()]).mean(0))
            self.lat_std.copy_(torch.stack([s for _, s in stats.values()]).mean(0))

    def _decode(self, arch: dict, z: Tensor) -> Tensor:
        t = self.target(arch)
        enc = self.decoder.node_enc
        enc.offsets = enc.node_offsets(z, t.node_rank)
        try:
            inits = [torch.zeros(t.num_edges, self.decoder.grid ** 2)] * z.shape[0]
            flats = self.decoder.predict([t] * z.shape[0], inits)
        finally:
            enc.offsets = None
        return torch.stack(flats)

    def cond(self, arch: dict, n: int, accuracy: float | Tensor | None) -> Tensor:
        """Condition rows ``[n, ARCH_DIM + 2]`` for an architecture and a target accuracy (None: none)."""
        d = arch_descriptor(self.target(arch).spec).expand(n, -1)
        if accuracy is None:
            a, flag = torch.zeros(n, 1), torch.zeros(n, 1)
        else:
            acc = torch.as_tensor(accuracy, dtype=torch.float32).reshape(-1, 1).expand(n, 1)
            a, flag = (acc - self.acc_mean) / self.acc_std, torch.ones(n, 1)
        return torch.cat([d, a, flag], 1)

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def encode(self, arch: dict, flat: Tensor) -> Tensor:
        """Networks ``flat [B, P]`` of architecture ``arch`` -> standardized latents ``[B, latent_dim]``."""
        self.target(arch)
        return (self._embed(arch, flat) - self.z_mean) / self.z_std

    @torch.no_grad()
    def decode(self, arch: dict, z: Tensor) -> Tensor:
        """Standardized latents ``[B, latent_dim]`` -> networks ``[B, P]`` of architecture ``arch``."""
        return self._decode(arch, z * self.z_std + self.z_mean)

    @torch.no_grad()
    def sample(self, arch: dict, n: int, generator: torch.Generator | None = None,
               accuracy: float | None = None, guidance: float = 0.0) -> Tensor:
        """``n`` new networks ``[n, P]`` of ``arch`` (a ``_target_`` config), optionally prompted with a
        target accuracy (on the validation inputs' scale)."""
        z = self.ddpm.sample(n, self.cond(arch, n, accuracy), generator, guidance) * self.scale
        out = []
        for i in range(0, n, 32):
            out.append(self.decode(arch, z[i : i + 32]))
        return torch.cat(out)

    def check_arch(self, arch: dict) -> None:
        """Raises :class:`UnknownArchitectureError` / ``UnsupportedModuleError`` for architectures it cannot fill."""
        try:
            instantiate(dict(arch))
        except Exception as e:  # noqa: BLE001 - reported with the culprit
            raise UnknownArchitectureError(f"cannot build architecture {dict(arch)}: {e}") from e
        self.target(arch)

    # ------------------------------------------------------------------ training
    @classmethod
    def fit_population(cls, pop: Population, config: GraphDiffusionConfig = GraphDiffusionConfig(), seed: int = 0,
                       progress: bool = True) -> GraphLatentDiffusion:
        """:meth:`fit` (the :data:`~weightspace.diffusion.GENERATORS` entry)."""
        return cls.fit(pop, config, seed=seed, progress=progress)

    @classmethod
    def fit(cls, pop: Population, config: GraphDiffusionConfig = GraphDiffusionConfig(), seed: int = 0,
            progress: bool = True) -> GraphLatentDiffusion:
        """Train the autoencoder on the training runs of every architecture of ``pop`` (selected on the
        validation runs), then the latent DDPM."""
        from tqdm.auto import trange

        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        self = cls(config)
        data: EvalData = pop.data
        archs = [a for a in pop.archs if len(a.runs["train"])]
        teach: dict[int, Tensor] = {}
        for k, a in enumerate(archs):
            self.archs[arch_key(a.config)] = dict(a.config)
            self.target(a.config)
            with torch.no_grad():
                teach[k] = batched_logits(a.build().eval(), a.spec, a.flat["train"], data.x_train)
        sizes = torch.tensor([len(a.runs["train"]) for a in archs], dtype=torch.float)
        if self.encoder is None:
            self.build_probe_encoder(data.x_train, int(teach[0].shape[-1]), g)
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        opt = torch.optim.AdamW(params, lr=config.ae_lr, weight_decay=1e-5)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.ae_steps)
        best, best_state = float("inf"), None
        bar = trange(config.ae_steps, desc="graph autoencoder", disable=not progress)
        for step in bar:
            self.train()
            k = int(torch.multinomial(sizes, 1, generator=g))
            a = archs[k]
            idx = torch.randint(0, len(a.runs["train"]), (min(config.batch_size, len(a.runs["train"])),), generator=g)
            xi = torch.randint(0, len(data.x_train), (config.inputs_per_step,), generator=g)
            z = self._embed(a.config, a.flat["train"][idx])
            z = z + config.latent_noise * torch.randn(z.shape, generator=g)
            flat = self._decode(a.config, z)
            logits = batched_logits(a.build(), a.spec, flat, data.x_train[xi])
            logp = logits.log_softmax(-1)
            T = config.temperature
            t = (teach[k][idx][:, xi] / T).log_softmax(-1)
            s = (logits / T).log_softmax(-1)
            kl = (t.exp() * (t - s)).sum(-1).mean() * T * T
            ce = -logp.gather(-1, data.y_train[xi][None, :, None].expand(len(idx), -1, 1)).mean()
            loss = kl + config.ce_weight * ce + 1e-3 * z.pow(2).mean()
            if config.contrast_weight > 0 and len(idx) > 1:
                loss = loss + config.contrast_weight * _contrastive(t, s, idx, config.contrast_tau)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            if (step + 1) % config.eval_every == 0 or step + 1 == config.ae_steps:
                self.fit_latent_stats(archs)
                v = self._val_kl(archs, data)
                bar.set_postfix(kl=f"{kl.item():.3f}", val_kl=f"{v:.3f}")
                log.info("graph autoencoder step %d: train/kl %.4f val/kl %.4f", step + 1, kl.item(), v)
                self.val_history.append((step + 1, v))
                if v < best:
                    best = v
                    best_state = copy.deepcopy(({k2: v2 for k2, v2 in self.state_dict().items()
                                                 if k2.startswith(("encoder.", "decoder.", "lat_"))},
                                                self.latent_stats))
        if best_state is not None:
            self.load_state_dict(best_state[0], strict=False)
            self.latent_stats = best_state[1]
        else:
            self.fit_latent_stats(archs)
        self.eval()
        # latent DDPM on the training latents
        zs, conds_d, accs = [], [], []
        with torch.no_grad():
            for a in archs:
                for i in range(0, len(a.runs["train"]), 64):
                    zs.append(self._embed(a.config, a.flat["train"][i : i + 64]))
                n = len(a.runs["train"])
                conds_d.append(arch_descriptor(a.spec).expand(n, -1))
                accs.append(a.val_accuracy["train"])
        z = torch.cat(zs)
        self.z_mean.copy_(z.mean(0))
        self.z_std.copy_(z.std(0).clamp_min(1e-4))
        z = (z - self.z_mean) / self.z_std
        acc = torch.cat(accs)
        self.acc_mean.copy_(acc.mean())
        self.acc_std.copy_(acc.std().clamp_min(1e-3))
        desc = torch.cat(conds_d)
        acc_n = ((acc - self.acc_mean) / self.acc_std)[:, None]
        def cond(idx: Tensor) -> Tensor:  # the accuracy prompt is dropped at rate acc_drop (guidance)
            flag = (torch.rand(len(idx), 1, generator=g) >= config.acc_drop).float()
            return torch.cat([desc[idx], acc_n[idx] * flag, flag], 1)

        fit_ddpm(self.ddpm, z, steps=config.ddpm_steps, lr=config.ddpm_lr, batch=128, generator=g, cond=cond,
                 desc="latent DDPM", progress=progress)
        self.eval()
        if config.sample_scale > 0:
            self.scale.fill_(config.sample_scale)
        else:
            self.calibrate_scale(archs, data, g)
        return self

    @torch.no_grad()
    def calibrate_scale(self, archs: list[ArchPopulation], data: EvalData, generator: torch.Generator) -> float:
        """Choose the latent temperature on the validation split; sets and returns :attr:`scale`.

        The decoder pulls its outputs toward one typical, accurate function (its reconstructions' mistakes
        crowd onto the same hard inputs), so DDPM samples decoded as drawn are less diverse than the runs
        and about as far from the training set as held-out runs, sometimes closer. Scaling the latents
        moves decoded functions away from the typical one: farther from the training runs and more diverse,
        at some cost in accuracy. For the scales of ``config.scale_grid``, in increasing order, the same DDPM
        samples ``s * z`` are decoded and scored on the validation inputs: their mean accuracy, the probability
        that a decoded sample is farther (nearest-training TV) from the training runs than a held-out
        validation run is (:func:`~weightspace.diffusion.metrics.farther_probability`; 0.5 = as far)
        and their pairwise IoU, all recorded in :attr:`calibration`. The candidates are the scales reached,
        in increasing order, while the mean accuracy stays at least the training runs' mean (the accuracy
        goal; the first scale if it already falls short); kept is the largest of them, or with
        ``config.novelty_target`` set the one whose farther probability is nearest it (:func:`pick_scale`).
        Neither test inputs nor test runs are read. Architectures without validation runs do not vote; with
        none at all the scale stays 1.
        """
        from .metrics import farther_probability, nearest_training, pairwise_iou

        cfg = self.config
        voters = [a for a in archs if len(a.runs["val"]) and len(a.runs["train"])]
        self.calibration = []
        if not voters:
            self.scale.fill_(1.0)
            return 1.0
        per_arch = max(8, math.ceil(cfg.calibration_samples / len(voters)))
        x, y = data.x_val, data.y_val
        rows = {s: {"scale": s, "val_accuracy": 0.0, "farther_probability": 0.0, "pairwise_iou": 0.0} for s in cfg.scale_grid}
        ref_acc, weight = 0.0, 0
        for a in voters:
            model = a.build().eval()
            _, p_train = predictions(model, a.spec, a.flat["train"], x)
            _, p_val = predictions(model, a.spec, a.flat["val"], x)
            ref_tv = nearest_training(p_val, p_train, y)["nearest_tv"]
            w = len(a.runs["val"])
            ref_acc += float(a.val_accuracy["train"].mean()) * w
            weight += w
            z = self.ddpm.sample(per_arch, self.cond(a.config, per_arch, None), generator)
            for s, row in rows.items():
                flat = torch.cat([self.decode(a.config, z[i : i + 32] * s) for i in range(0, per_arch, 32)])
                labels, prob = predictions(model, a.spec, flat, x)  # one forward for accuracy and novelty
                tv = nearest_training(prob, p_train, y)["nearest_tv"]
                acc = torch.where(torch.isfinite(flat).all(-1), (labels == y[None]).float().mean(-1), 0.0)
                row["val_accuracy"] += float(acc.mean()) * w  # as diffusion_data.accuracy: non-finite nets score 0
                row["farther_probability"] += farther_probability(tv, ref_tv) * w
                row["pairwise_iou"] += pairwise_iou(prob, y) * w
        for row in rows.values():
            for k in ("val_accuracy", "farther_probability", "pairwise_iou"):
                row[k] /= weight
        ref_acc /= weight
        best = pick_scale(list(rows.values()), ref_acc, cfg.novelty_target)
        for r in rows.values():
            r["training_val_accuracy"] = ref_acc
            r["kept"] = r is best
        self.calibration = list(rows.values())
        self.scale.fill_(best["scale"])
        log.info("latent temperature %.2f (validation: accuracy %.4f vs training runs %.4f, farther-than-validation-runs "
                 "probability %.3f, pairwise IoU %.3f)", best["scale"], best["val_accuracy"], ref_acc,
                 best["farther_probability"], best["pairwise_iou"])
        return best["scale"]

    @torch.no_grad()
    def _val_kl(self, archs: list[ArchPopulation], data: EvalData) -> float:
        """Mean KL from validation runs to their reconstructions on the validation inputs."""
        self.eval()
        tot, n = 0.0, 0
        for a in archs:
            if not len(a.runs["val"]):
                continue
            model = a.build().eval()
            t = batched_logits(model, a.spec, a.flat["val"], data.x_val).log_softmax(-1)
            flat = self._decode(a.config, self._embed(a.config, a.flat["val"]))
            logp = batched_logits(model, a.spec, flat, data.x_val).log_softmax(-1)
            tot += float((t.exp() * (t - logp)).sum(-1).mean()) * len(a.runs["val"])
            n += len(a.runs["val"])
        return tot / max(n, 1)
