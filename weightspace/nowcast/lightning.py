"""``NowcastCallback``: the nowcasting hook as a PyTorch Lightning callback (optional extra).

Needs ``lightning`` (or ``pytorch_lightning``); importing this module without either raises
``ImportError``. The callback attaches :class:`~weightspace.nowcast.hook.NowcastHook` to the
first optimizer when fitting starts and detaches it when fitting ends; the hook's state travels in
the optimizer's state dict, so Lightning checkpoints resume it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

try:
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - depends on the installed flavour
    from pytorch_lightning import Callback

from .model import Nowcaster

__all__ = ["NowcastCallback"]


class NowcastCallback(Callback):
    """Attach a nowcaster to the trainer's first optimizer for the duration of ``fit``.

    Args:
        nowcaster: the predictor (default: the shipped ``Nowcaster.from_pretrained("nowcaster")``).
        model: which module's parameters to convert and move: a callable ``LightningModule ->
            nn.Module`` (e.g. ``lambda m: m.net``); default the LightningModule itself.
        **hook_kwargs: arguments of :class:`~weightspace.nowcast.hook.NowcastHook`
            (``period``, ``context``, ``horizon``, ``total_steps``, ``optimizer_state``, ...).
    """

    def __init__(self, nowcaster: Nowcaster | None = None, model: Callable[[Any], nn.Module] | None = None,
                 **hook_kwargs: Any) -> None:
        super().__init__()
        self.nowcaster = nowcaster
        self.model_fn = model
        self.hook_kwargs = hook_kwargs
        self.handle = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        nc = self.nowcaster or Nowcaster.from_pretrained("nowcaster")
        module = self.model_fn(pl_module) if self.model_fn else pl_module
        kw = dict(self.hook_kwargs)
        if "total_steps" not in kw and getattr(trainer, "max_steps", -1) and trainer.max_steps > 0:
            kw["total_steps"] = int(trainer.max_steps)
        self.handle = nc.attach(module, trainer.optimizers[0], **kw)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.handle is not None:
            self.handle.remove()
