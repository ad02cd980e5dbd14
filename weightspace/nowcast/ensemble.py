r"""An ensemble of nowcasters: one jump, the members' predictions averaged.

Nowcasters meta-trained from different seeds on the same data disagree most where each one
extrapolates badly, so their mean is a lower-variance predictor (a bagging argument; NiNo trains one
model, the ensemble is this library's addition). For ``K`` members with predictions
:math:`\hat\delta^{(k)}` of the change of every parameter,

.. math::
    \hat\delta = \frac{1}{K} \sum_{k=1}^{K} \hat\delta^{(k)},

and since every learned member is Linefit plus a learned correction, the mean is Linefit plus the
mean correction. A jump costs ``K`` member predictions (the snapshots are taken once); with the
hook's default ``period="auto"`` the hook times that cost and spaces its jumps accordingly
(:class:`~weightspace.nowcast.hook.AutoPeriod`).

The ensemble has the nowcaster's interface (``context``, ``horizons``, ``learned``, ``predict``,
``attach``), so :class:`~weightspace.nowcast.hook.NowcastHook` and the trainer callbacks take it
unchanged. Members are saved and loaded one by one
(:meth:`~weightspace.nowcast.Nowcaster.from_pretrained`); :meth:`NowcastEnsemble.from_pretrained`
takes their names or folders.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from weightspace.graph import GraphSpec

from .hook import NowcastHook
from .layout import NowcastLayout
from .model import Nowcaster
from .plan import JumpPlan

__all__ = ["NowcastEnsemble", "EnsemblePlan"]


class EnsemblePlan:
    """The members' prepared jumps (:class:`~weightspace.nowcast.plan.JumpPlan`) of one architecture."""

    def __init__(self, ensemble: NowcastEnsemble, layout: NowcastLayout, context: int, device: torch.device) -> None:
        self.nowcaster, self.layout, self.device = ensemble, layout, device
        self.plans = [JumpPlan(m, layout, context, device) for m in ensemble.members]


class NowcastEnsemble(nn.Module):
    """``K`` nowcasters whose predictions are averaged (see module docs).

    Args:
        members: nowcasters of one ``context`` and one ``horizons`` (any kinds).

    Raises:
        ValueError: no members, or members that read different contexts or predict different horizons.
    """

    def __init__(self, members: Sequence[Nowcaster]) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("NowcastEnsemble needs at least one member nowcaster")
        ctx = {m.context for m in members}
        hor = {m.horizons for m in members}
        if len(ctx) > 1 or len(hor) > 1:
            raise ValueError(f"NowcastEnsemble members must share context and horizons; got contexts {sorted(ctx)} "
                             f"and horizons {sorted(hor)} (meta-train them with the same model.context / "
                             f"model.horizons)")
        self.members = nn.ModuleList(members)
        self.info = {"members": [getattr(m, "info", {}) for m in members]}

    @property
    def kind(self) -> str:
        return "ensemble"

    @property
    def context(self) -> int:
        return self.members[0].context

    @property
    def horizons(self) -> int:
        return self.members[0].horizons

    @property
    def learned(self) -> bool:
        return any(m.learned for m in self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"NowcastEnsemble({len(self)} x {self.members[0]!r})"

    def param_device(self, default: torch.device) -> torch.device:
        """The device of the first member's parameters (``default`` for Linefit members)."""
        return self.members[0].param_device(default)

    def make_plan(self, layout: NowcastLayout, context: int, device: torch.device) -> EnsemblePlan:
        """The members' prepared jumps for one architecture (what the hook builds at attach time)."""
        return EnsemblePlan(self, layout, context, device)

    def predict(self, spec: GraphSpec | NowcastLayout | EnsemblePlan, window: Tensor | Sequence[Tensor],
                horizon: int | None = None) -> Tensor:
        """The mean of the members' :meth:`Nowcaster.predict` (same arguments, shapes and return)."""
        if isinstance(spec, EnsemblePlan):
            targets: list[Any] = spec.plans
        else:
            targets = [spec] * len(self.members)
        rows = window if isinstance(window, Tensor) else list(window)
        with torch.inference_mode():
            out = None
            for m, t in zip(self.members, targets):
                d = m.predict(t, rows, horizon)
                out = d.clone() if out is None else out.add_(d)
            return out.div_(len(self.members))

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer, **kwargs: Any) -> NowcastHook:
        """As :meth:`Nowcaster.attach`: jumps by the ensemble's mean prediction. Returns the handle."""
        return NowcastHook(self, model, optimizer, **kwargs)

    @classmethod
    def from_pretrained(cls, sources: Sequence[str | os.PathLike], map_location: str | torch.device = "cpu"
                        ) -> NowcastEnsemble:
        """Members from shipped names or ``save_pretrained`` folders (:meth:`Nowcaster.from_pretrained`)."""
        return cls([Nowcaster.from_pretrained(s, map_location=map_location) for s in sources])
