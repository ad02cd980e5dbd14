"""``NowcastCallback``: the nowcasting hook as a PyTorch Lightning callback (optional extra).

Needs ``lightning`` (or ``pytorch_lightning``); importing this module without either raises
``ImportError``. The callback attaches :class:`~weightspace.nowcast.hook.NowcastHook` to the
first optimizer when fitting starts, reports every training loss to it (before the backward pass,
for the spike guard and :func:`~weightspace.nowcast.plot.plot`) and detaches it when fitting ends,
logging :meth:`~weightspace.nowcast.hook.NowcastHook.summary` at INFO; the hook's state travels in
the optimizer's state dict, so Lightning checkpoints resume it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

try:
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - depends on the installed flavour
    from pytorch_lightning import Callback

from .hook import total_steps_from_scheduler
from .model import Nowcaster

__all__ = ["NowcastCallback", "trainer_total_steps"]


def trainer_total_steps(trainer: Any) -> int | None:
    """The optimizer steps a Lightning ``trainer`` plans: ``estimated_stepping_batches`` when finite,
    else what its first step-interval LR scheduler plans (:func:`total_steps_from_scheduler`), else
    ``None``."""
    try:
        est = trainer.estimated_stepping_batches
    except Exception:  # noqa: BLE001 - Lightning raises several kinds when it cannot estimate
        est = None
    if isinstance(est, (int, float)) and math.isfinite(est) and est > 0:
        return int(est)
    for cfg in getattr(trainer, "lr_scheduler_configs", None) or []:
        if getattr(cfg, "interval", "epoch") == "step":
            found = total_steps_from_scheduler(cfg.scheduler)
            if found:
                return found
    return None


class NowcastCallback(Callback):
    """Attach a nowcaster to the trainer's first optimizer for the duration of ``fit``.

    Args:
        nowcaster: the predictor (default: the shipped ``Nowcaster.from_pretrained("nowcaster")``).
        model: which module's parameters to convert and move: a callable ``LightningModule ->
            nn.Module`` (e.g. ``lambda m: m.net``); default the LightningModule itself.
        **hook_kwargs: arguments of :class:`~weightspace.nowcast.hook.NowcastHook`
            (``period``, ``context``, ``horizon``, ``total_steps``, ``spike_guard``, ...). Without
            ``total_steps`` the trainer's planned steps are used (:func:`trainer_total_steps`).

    Attributes:
        handle: the :class:`~weightspace.nowcast.hook.NowcastHook` of the latest fit (``None`` before).
        summary: its :meth:`~weightspace.nowcast.hook.NowcastHook.summary` at the end of the fit.
    """

    def __init__(self, nowcaster: Nowcaster | None = None, model: Callable[[Any], nn.Module] | None = None,
                 **hook_kwargs: Any) -> None:
        super().__init__()
        self.nowcaster = nowcaster
        self.model_fn = model
        self.hook_kwargs = hook_kwargs
        self.handle = None
        self.summary: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        nc = self.nowcaster or Nowcaster.from_pretrained("nowcaster")
        module = self.model_fn(pl_module) if self.model_fn else pl_module
        kw = dict(self.hook_kwargs)
        if kw.get("total_steps") is None:
            kw["total_steps"] = trainer_total_steps(trainer)
        self.handle = nc.attach(module, trainer.optimizers[0], **kw)

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        if self.handle is not None and self.handle.attached:
            self.handle.report_loss(loss)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.handle is not None and self.handle.attached:
            self.summary = self.handle.close()
