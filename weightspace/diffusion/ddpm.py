r"""A conditional DDPM over latent vectors, the generative half of weight diffusion.

Follows Ho et al. (NeurIPS 2020, "Denoising Diffusion Probabilistic Models"): a linear noise schedule
:math:`\beta_t` (p-diff's 1e-4 -> 2e-2 over 1000 steps by default), the forward process
:math:`z_t = \sqrt{\bar\alpha_t}\,z_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`, an :math:`\epsilon`-predicting
denoiser trained with the simple MSE objective, and ancestral sampling with
:math:`\sigma_t^2 = \tilde\beta_t` (the posterior variance). The denoiser sees an optional condition
vector (the architecture's descriptor and a target accuracy, G.pt-style; Peebles et al. 2022); the
condition is dropped with probability ``cond_drop`` in training, so sampling can use
classifier-free guidance (Ho & Salimans 2022) with ``guidance`` :math:`w`:
:math:`\hat\epsilon = (1 + w)\,\epsilon(z_t, c) - w\,\epsilon(z_t, \varnothing)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["NoiseSchedule", "LatentDenoiser", "LatentDDPM", "timestep_embedding", "fit_ddpm"]


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A linear :math:`\\beta` schedule and the quantities derived from it.

    Attributes:
        betas: ``[T]`` noise variances, increasing.
        alphas_cumprod: ``[T]`` :math:`\\bar\\alpha_t = \\prod_{s \\le t}(1-\\beta_s)`, decreasing in ``(0, 1)``.
    """

    betas: Tensor
    alphas_cumprod: Tensor

    @classmethod
    def linear(cls, steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> NoiseSchedule:
        """Raises:
            ValueError: ``steps < 1`` or betas outside ``(0, 1)`` or decreasing.
        """
        if steps < 1:
            raise ValueError(f"a noise schedule needs at least one step, got steps={steps}")
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
        return cls(betas=betas.float(), alphas_cumprod=torch.cumprod(1.0 - betas, 0).float())

    @property
    def steps(self) -> int:
        return int(self.betas.numel())

    def q_sample(self, z0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Noise ``z0 [B, D]`` to steps ``t [B]``."""
        ab = self.alphas_cumprod.to(z0.device)[t][:, None]
        return ab.sqrt() * z0 + (1.0 - ab).sqrt() * noise


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding ``[B, dim]`` of integer steps ``t [B]`` (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1))
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([args.sin(), args.cos()], dim=-1)
    return emb if dim % 2 == 0 else torch.cat([emb, emb.new_zeros(emb.shape[0], 1)], dim=-1)


class LatentDenoiser(nn.Module):
    r"""Residual MLP :math:`\epsilon_\theta(z_t, t, c)` on flat latents.

    Args:
        dim: latent width ``D``.
        cond_dim: width of the condition vector (0: unconditional).
        hidden: width of the residual blocks.
        blocks: number of residual blocks.

    Shapes:
        - input: ``z [B, D]``, ``t [B]`` (int), ``cond [B, C]`` or ``None``, ``keep [B]`` (1: use the
          condition, 0: the learned null condition)
        - output: ``[B, D]``
    """

    def __init__(self, dim: int, cond_dim: int = 0, hidden: int = 256, blocks: int = 3) -> None:
        super().__init__()
        self.dim, self.cond_dim, self.hidden = dim, cond_dim, hidden
        self.inp = nn.Linear(dim, hidden)
        self.t_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.c_mlp = nn.Sequential(nn.Linear(cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden)) if cond_dim else None
        self.null = nn.Parameter(torch.zeros(hidden))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden))
            for _ in range(blocks)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()
        nn.init.zeros_(self.null)
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, z: Tensor, t: Tensor, cond: Tensor | None = None, keep: Tensor | None = None) -> Tensor:
        h = self.inp(z) + self.t_mlp(timestep_embedding(t, self.hidden))
        if self.c_mlp is not None:
            c = self.c_mlp(cond) if cond is not None else self.null.expand(z.shape[0], -1)
            if keep is not None:
                c = torch.where(keep[:, None] > 0, c, self.null.expand_as(c))
            h = h + c
        for blk in self.blocks:
            h = h + blk(h)
        return self.out(h)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(dim={self.dim}, cond_dim={self.cond_dim}, hidden={self.hidden}, blocks={len(self.blocks)})"


class LatentDDPM(nn.Module):
    r"""DDPM on ``[B, D]`` latents with an optional condition (see the module docstring).

    Args:
        dim: latent width.
        cond_dim: condition width (0: unconditional).
        steps, beta_start, beta_end: the linear schedule.
        hidden, blocks: the denoiser.
        cond_drop: probability of dropping the condition in training (classifier-free guidance).

    Shapes:
        - :meth:`loss`: ``z0 [B, D]``, ``cond [B, C]`` -> scalar
        - :meth:`sample`: ``n``, ``cond [n, C]`` -> ``[n, D]``
    """

    def __init__(self, dim: int, cond_dim: int = 0, steps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 2e-2, hidden: int = 256, blocks: int = 3, cond_drop: float = 0.1) -> None:
        super().__init__()
        self.dim, self.cond_dim, self.cond_drop = dim, cond_dim, cond_drop
        self.schedule = NoiseSchedule.linear(steps, beta_start, beta_end)
        self.net = LatentDenoiser(dim, cond_dim, hidden, blocks)

    def loss(self, z0: Tensor, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """The simple :math:`\\epsilon`-prediction MSE at uniformly drawn steps."""
        B = z0.shape[0]
        t = torch.randint(0, self.schedule.steps, (B,), generator=generator).to(z0.device)
        noise = torch.randn(z0.shape, generator=generator).to(z0.device)
        keep = None
        if cond is not None:
            keep = (torch.rand(B, generator=generator) >= self.cond_drop).float().to(z0.device)
        pred = self.net(self.schedule.q_sample(z0, t, noise), t, cond, keep)
        return (pred - noise).pow(2).mean()

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None,
               guidance: float = 0.0) -> Tensor:
        """Ancestral sampling from pure noise; deterministic given ``generator``."""
        dev = next(self.parameters()).device
        sch = self.schedule
        betas, ab = sch.betas.to(dev), sch.alphas_cumprod.to(dev)
        z = torch.randn(n, self.dim, generator=generator).to(dev)
        ones = torch.ones(n, device=dev)
        for step in reversed(range(sch.steps)):
            t = torch.full((n,), step, dtype=torch.long, device=dev)
            eps = self.net(z, t, cond, ones if cond is not None else None)
            if cond is not None and guidance:
                eps = (1.0 + guidance) * eps - guidance * self.net(z, t, cond, torch.zeros_like(ones))
            a_t, ab_t = 1.0 - betas[step], ab[step]
            mean = (z - betas[step] / (1.0 - ab_t).sqrt() * eps) / a_t.sqrt()
            if step > 0:
                var = betas[step] * (1.0 - ab[step - 1]) / (1.0 - ab_t)
                z = mean + var.sqrt() * torch.randn(z.shape, generator=generator).to(dev)
            else:
                z = mean
        return z


def fit_ddpm(ddpm: LatentDDPM, z: Tensor, *, steps: int, lr: float, batch: int, generator: torch.Generator,
             cond: Callable[[Tensor], Tensor | None] | None = None, desc: str = "latent DDPM",
             progress: bool = False) -> LatentDDPM:
    """Train ``ddpm`` on latents ``z [M, d]``: AdamW with a cosine schedule, minibatches of ``batch``
    rows drawn with ``generator``; ``cond(idx)`` gives the rows' conditioning (``None``: none)."""
    from tqdm.auto import trange

    opt = torch.optim.AdamW(ddpm.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    bar = trange(steps, desc=desc, disable=not progress)
    for step in bar:
        idx = torch.randint(0, len(z), (min(batch, len(z)),), generator=generator)
        loss = ddpm.loss(z[idx], None if cond is None else cond(idx), generator)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 200 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return ddpm
