r"""p-diff: latent diffusion over the flattened parameters of one fixed architecture (the baseline).

Reproduces Wang et al. 2024 ("Neural Network Diffusion", p-diff) at the scale of the zoo's networks:
every training network's parameters are flattened (the :class:`~weightspace.GraphSpec` order) and
standardized per tensor; a 1-D convolutional autoencoder compresses the vector, trained with noise
added to its input (:math:`\sigma_{in}` = 0.001) and to its latent (:math:`\sigma_{lat}` = 0.1), so
that decoding tolerates imprecise latents; a DDPM (:class:`~weightspace.diffusion.ddpm.LatentDDPM`,
linear :math:`\beta` 1e-4 -> 2e-2 over 1000 steps, :math:`\epsilon`-prediction) learns the latents;
sampling decodes fresh latents into parameters. Unlike p-diff's release, the autoencoder checkpoint
is selected on held-out *validation runs* (reconstruction error), never on test data.

``align=True`` first permutes every network's hidden units to a common reference
(:mod:`~weightspace.diffusion.align`), removing the permutation symmetry between independent runs
that flattened-parameter models otherwise face (an addition, not part of p-diff).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from weightspace.graph import GraphSpec
from weightspace.instantiate import instantiate
from weightspace.pretrained import CONFIG_NAME, CheckpointError, PretrainedMixin

from .data import ArchPopulation, EvalData, Population
from .ddpm import LatentDDPM, fit_ddpm

log = logging.getLogger(__name__)

__all__ = ["PDiffConfig", "ParamAutoencoder1d", "PDiff"]


@dataclass(frozen=True)
class PDiffConfig:
    """Hyperparameters of :class:`PDiff`: its constructor arguments, stored in ``config.json``.

    The defaults are the shipped recipe (``weightspace generate kind=pdiff``), sized for networks of a
    few thousand parameters. ``channels``/``latent_channels``: the autoencoder; ``input_noise`` /
    ``latent_noise``: p-diff's augmentation; ``ae_*``, ``batch_size``, ``eval_every``: its training and
    checkpoint selection on validation runs; ``ddpm_*``, ``timesteps``: the latent DDPM; ``align``:
    permute hidden units onto a common reference first.
    """

    channels: tuple[int, ...] = (16, 32, 64, 64)
    latent_channels: int = 4
    input_noise: float = 0.001
    latent_noise: float = 0.1
    ae_steps: int = 1500
    ae_lr: float = 1e-3
    batch_size: int = 32
    eval_every: int = 100
    ddpm_steps: int = 3000
    ddpm_lr: float = 1e-3
    ddpm_hidden: int = 512
    ddpm_blocks: int = 3
    timesteps: int = 1000
    align: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class ParamAutoencoder1d(nn.Module):
    r"""1-D convolutional autoencoder of flat parameter vectors (p-diff's design: strided convs with
    instance norm and leaky ReLU; the latent is a ``[latent_channels, L / 2^levels]`` map).

    Args:
        num_params: length ``P`` of the parameter vector (zero-padded to a multiple of ``2^levels``).
        channels: channels of the encoder levels (each halves the length).
        latent_channels: channels of the latent map.

    Shapes:
        - :meth:`encode`: ``[B, P]`` -> ``[B, latent_dim]``
        - :meth:`decode`: ``[B, latent_dim]`` -> ``[B, P]``
    """

    def __init__(self, num_params: int, channels: tuple[int, ...] = (16, 32, 64, 64), latent_channels: int = 4) -> None:
        super().__init__()
        self.num_params = num_params
        levels = len(channels)
        self.length = int(math.ceil(num_params / 2**levels) * 2**levels)
        self.latent_len = self.length // 2**levels
        self.latent_channels = latent_channels
        enc: list[nn.Module] = []
        prev = 1
        for c in channels:
            enc += [nn.Conv1d(prev, c, 5, stride=2, padding=2), nn.InstanceNorm1d(c), nn.LeakyReLU(0.2)]
            prev = c
        enc.append(nn.Conv1d(prev, latent_channels, 3, padding=1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv1d(latent_channels, prev, 3, padding=1), nn.LeakyReLU(0.2)]
        for c in reversed((1, *channels[:-1])):
            dec += [nn.ConvTranspose1d(prev, max(c, 8), 4, stride=2, padding=1), nn.InstanceNorm1d(max(c, 8)),
                    nn.LeakyReLU(0.2)]
            prev = max(c, 8)
        dec.append(nn.Conv1d(prev, 1, 3, padding=1))
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_dim(self) -> int:
        return self.latent_channels * self.latent_len

    def encode(self, flat: Tensor) -> Tensor:
        x = nn.functional.pad(flat, (0, self.length - self.num_params))[:, None]
        return self.encoder(x).flatten(1)

    def decode(self, z: Tensor) -> Tensor:
        x = self.decoder(z.view(z.shape[0], self.latent_channels, self.latent_len))
        return x[:, 0, : self.num_params]

    def forward(self, flat: Tensor) -> Tensor:
        return self.decode(self.encode(flat))


class PDiff(PretrainedMixin, nn.Module):
    """The fixed-architecture generator: per-tensor standardization, :class:`ParamAutoencoder1d`, latent DDPM.

    ``PDiff.fit(population, data, config, seed)`` trains it; :meth:`encode` / :meth:`decode` map
    networks (flat parameter vectors) to latents and back; :meth:`sample` generates new ones.

    A new instance holds only its hyperparameters; :meth:`bind` fixes the architecture and builds the
    autoencoder and the DDPM for its parameter count (:meth:`fit` and :meth:`from_pretrained` do).

    Args:
        config: a :class:`PDiffConfig`; or its fields as keyword arguments.

    Persistence: :meth:`save_pretrained` / :meth:`from_pretrained` (``config.json`` holds the
    :class:`PDiffConfig` and, as extras, the ``_target_`` architecture and :attr:`info`;
    ``model.safetensors`` the weights, the standardization and, with ``align=True``, the alignment
    reference and inputs).
    """

    config_class = PDiffConfig
    checkpoint_format = "weightspace.diffusion.pdiff"
    #: the name of this generator in :data:`weightspace.diffusion.GENERATORS`
    kind: ClassVar[str] = "pdiff"
    #: trains on one architecture only
    single_arch: ClassVar[bool] = True

    def __init__(self, config: PDiffConfig | None = None, **fields: Any) -> None:
        super().__init__()
        if config is not None and fields:
            raise TypeError("PDiff: pass a PDiffConfig or its fields, not both")
        self.config = config if config is not None else PDiffConfig(**fields)
        self.arch: dict | None = None
        self.spec: GraphSpec | None = None
        self.align_reference: list[Tensor] | None = None
        self._x_align: Tensor | None = None
        #: provenance and other JSON extras stored with the checkpoint
        self.info: dict[str, Any] = {}

    def _build(self, num_params: int) -> None:
        config = self.config
        self.ae = ParamAutoencoder1d(num_params, tuple(config.channels), config.latent_channels)
        self.ddpm = LatentDDPM(self.ae.latent_dim, 0, config.timesteps, hidden=config.ddpm_hidden,
                               blocks=config.ddpm_blocks)
        self.register_buffer("mean", torch.zeros(num_params))
        self.register_buffer("scale", torch.ones(num_params))
        self.register_buffer("z_mean", torch.zeros(()))
        self.register_buffer("z_std", torch.ones(()))

    def bind(self, arch: Mapping[str, Any], spec: GraphSpec | None = None) -> PDiff:
        """Fix the architecture (a ``_target_`` config; ``spec`` its :class:`~weightspace.GraphSpec`, traced
        if not given) and build the autoencoder and DDPM for its parameter count; returns ``self``.

        Raises:
            ValueError: already bound to a different parameter count.
        """
        self.arch = dict(arch)
        self.spec = spec if spec is not None else GraphSpec.from_module(instantiate(self.arch))
        P = self.spec.num_params
        if not hasattr(self, "ae"):
            self._build(P)
        elif self.ae.num_params != P:
            raise ValueError(f"the p-diff generator holds {self.ae.num_params} parameters per network; "
                             f"architecture {self.arch} has {P}")
        return self

    def trained_archs(self) -> list[dict]:
        """The architecture it generates (a one-element list)."""
        return [] if self.arch is None else [dict(self.arch)]

    def arch_spec(self, arch: Mapping[str, Any]) -> GraphSpec:
        """The :class:`~weightspace.GraphSpec` of its architecture."""
        if self.spec is None:
            raise RuntimeError("the p-diff generator has no architecture yet (fit() or from_pretrained() bind it)")
        return self.spec

    # ------------------------------------------------------------------ persistence hooks
    def pretrained_tensors(self) -> dict[str, Tensor]:
        tensors = dict(self.state_dict())
        if self.align_reference is not None:
            tensors.update({f"align_reference.{i}": r for i, r in enumerate(self.align_reference)})
        if self._x_align is not None and self.config.align:
            tensors["align_inputs"] = self._x_align
        return tensors

    def load_pretrained_tensors(self, tensors: dict[str, Tensor]) -> None:
        tensors = dict(tensors)
        refs = sorted((k for k in tensors if k.startswith("align_reference.")), key=lambda k: int(k.rsplit(".", 1)[1]))
        self.align_reference = [tensors.pop(k) for k in refs] or None
        self._x_align = tensors.pop("align_inputs", None)
        if "mean" not in tensors:
            raise KeyError("no 'mean' tensor (the per-parameter standardization)")
        if not hasattr(self, "ae"):
            self._build(int(tensors["mean"].shape[0]))
        self.load_state_dict(tensors)

    def pretrained_extras(self) -> dict[str, Any]:
        return {**self.info, "arch": self.arch}

    def set_pretrained_extras(self, extras: dict[str, Any]) -> None:
        extras = dict(extras)
        arch = extras.pop("arch", None)
        self.info = extras
        if not isinstance(arch, dict) or "_target_" not in arch:
            raise CheckpointError(f"{CONFIG_NAME}: the p-diff generator's extras name no '_target_' architecture "
                                  f"(got {arch!r})")
        try:
            self.bind(arch)
        except ValueError as e:
            raise CheckpointError(f"{CONFIG_NAME}: {e}") from None

    def normalize(self, flat: Tensor) -> Tensor:
        return (flat - self.mean) / self.scale

    def denormalize(self, v: Tensor) -> Tensor:
        return v * self.scale + self.mean

    @torch.no_grad()
    def encode(self, flat: Tensor) -> Tensor:
        """Networks ``[B, P]`` -> standardized latents ``[B, D]``."""
        if self.config.align and self.align_reference is not None:
            flat = self._align(flat)
        return (self.ae.encode(self.normalize(flat)) - self.z_mean) / self.z_std

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Standardized latents ``[B, D]`` -> networks ``[B, P]``."""
        return self.denormalize(self.ae.decode(z * self.z_std + self.z_mean))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(self.ddpm.sample(n, None, generator))

    def _align(self, flat: Tensor) -> Tensor:
        from .align import align_population

        model = instantiate(self.arch)
        return align_population(model, self.spec, flat, self._x_align, reference=self.align_reference)[0]

    @classmethod
    def fit_population(cls, pop: Population, config: PDiffConfig = PDiffConfig(), seed: int = 0,
                       progress: bool = True) -> PDiff:
        """:meth:`fit` on the population's only architecture (the :data:`~weightspace.diffusion.GENERATORS` entry)."""
        return cls.fit(pop.archs[0], pop.data, config, seed=seed, progress=progress)

    @classmethod
    def fit(cls, pop: ArchPopulation, data: EvalData, config: PDiffConfig = PDiffConfig(), seed: int = 0,
            progress: bool = True) -> PDiff:
        """Train on ``pop.flat["train"]``; select the autoencoder on ``pop.flat["val"]``."""
        from tqdm.auto import trange

        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        self = cls(config).bind(pop.config, pop.spec)
        train, val = pop.flat["train"], pop.flat["val"]
        self._x_align = data.x_train
        if config.align:
            from .align import align_population

            model = instantiate(pop.config)
            train, ref = align_population(model, pop.spec, train, data.x_train)
            self.align_reference = ref
            if len(val):
                val = align_population(model, pop.spec, val, data.x_train, reference=ref)[0]
        self.mean.copy_(train.mean(0))
        for o, shape in zip(pop.spec.offsets, pop.spec.shapes):
            n = math.prod(shape)
            self.scale[o : o + n] = (train[:, o : o + n] - self.mean[o : o + n]).pow(2).mean().sqrt().clamp_min(1e-8)
        xt = self.normalize(train)
        xv = self.normalize(val) if len(val) else xt[:8]
        opt = torch.optim.AdamW(self.ae.parameters(), lr=config.ae_lr, weight_decay=2e-6)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.ae_steps)
        best, best_state = float("inf"), None
        bar = trange(config.ae_steps, desc="p-diff autoencoder", disable=not progress)
        for step in bar:
            idx = torch.randint(0, len(xt), (min(config.batch_size, len(xt)),), generator=g)
            x = xt[idx]
            z = self.ae.encode(x + config.input_noise * torch.randn(x.shape, generator=g))
            z = z + config.latent_noise * torch.randn(z.shape, generator=g)
            loss = (self.ae.decode(z) - x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if (step + 1) % config.eval_every == 0 or step + 1 == config.ae_steps:
                with torch.no_grad():
                    v = float((self.ae(xv) - xv).pow(2).mean())
                bar.set_postfix(train=f"{loss.item():.4f}", val=f"{v:.4f}")
                if v < best:
                    best, best_state = v, copy.deepcopy(self.ae.state_dict())
        if best_state is not None:
            self.ae.load_state_dict(best_state)
        log.info("p-diff autoencoder: best val reconstruction MSE %.5f (standardized units)", best)
        with torch.no_grad():
            zt = self.ae.encode(xt)
        self.z_mean.copy_(zt.mean())
        self.z_std.copy_(zt.std().clamp_min(1e-6))
        zt = (zt - self.z_mean) / self.z_std
        fit_ddpm(self.ddpm, zt, steps=config.ddpm_steps, lr=config.ddpm_lr, batch=64, generator=g,
                 desc="p-diff latent DDPM", progress=progress)
        self.eval()
        return self

