"""``NowcastTrainerCallback``: the nowcasting hook in a Hugging Face ``transformers.Trainer`` (extra ``hf``).

Needs ``transformers``; importing this module without it raises ``ImportError``. When training
begins the callback attaches :class:`~weightspace.nowcast.hook.NowcastHook` to the trainer's
optimizer (the torch optimizer inside Accelerate's wrapper), with ``total_steps`` from the trainer's
``state.max_steps``; a forward hook on the model reports every training loss (``outputs.loss`` of a
forward pass in training mode with gradients on) to the hook, for the spike guard and
:func:`~weightspace.nowcast.plotting.plot`; when training ends the hook is detached and its
:meth:`~weightspace.nowcast.hook.NowcastHook.summary` logged at INFO. The hook's state travels in
the optimizer's state dict, so ``resume_from_checkpoint`` resumes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from .hook import total_steps_from_scheduler
from .model import Nowcaster

__all__ = ["NowcastTrainerCallback"]


class NowcastTrainerCallback(TrainerCallback):
    """Attach a nowcaster to a ``transformers.Trainer``'s optimizer for the duration of ``train``.

    Args:
        nowcaster: the predictor (default: the shipped ``Nowcaster.from_pretrained("nowcaster")``).
        model: which module's parameters to convert and move: a callable ``model -> nn.Module``;
            default the trainer's model.
        example_input: a batch of inputs for :meth:`~weightspace.GraphSpec.from_module`
            (``torch.export`` traces Hugging Face models); default the model's ``dummy_inputs["input_ids"]``
            where it has them, else none (``torch.fx`` traces the module).
        **hook_kwargs: arguments of :class:`~weightspace.nowcast.hook.NowcastHook`
            (``period``, ``horizon``, ``total_steps``, ``spike_guard``, ...). Without ``total_steps``
            the trainer's ``state.max_steps`` is used (or, when that is unknown, what the LR scheduler
            plans: :func:`~weightspace.nowcast.hook.total_steps_from_scheduler`).

    Attributes:
        handle: the :class:`~weightspace.nowcast.hook.NowcastHook` of the latest ``train`` (``None`` before).
        summary: its :meth:`~weightspace.nowcast.hook.NowcastHook.summary` when training ended.

    Raises:
        UnsupportedModuleError: (when training begins) the module cannot be converted; the error names the
            layer, or asks for ``example_input`` where only ``torch.export`` can trace it.
    """

    def __init__(self, nowcaster: Nowcaster | None = None, model: Callable[[Any], nn.Module] | None = None,
                 example_input: Any = None, **hook_kwargs: Any) -> None:
        self.nowcaster = nowcaster
        self.model_fn = model
        self.example_input = example_input
        self.hook_kwargs = hook_kwargs
        self.handle = None
        self.summary: dict[str, Any] | None = None
        self._forward_hook = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                       optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any) -> None:
        nc = self.nowcaster or Nowcaster.from_pretrained("nowcaster")
        module = self.model_fn(model) if self.model_fn else model
        inner = getattr(optimizer, "optimizer", None)  # accelerate's AcceleratedOptimizer wraps the torch one
        opt = inner if isinstance(inner, torch.optim.Optimizer) else optimizer
        example = self.example_input
        dummy = getattr(module, "dummy_inputs", None)
        if example is None and isinstance(dummy, dict) and "input_ids" in dummy:
            example = dummy["input_ids"]
        if isinstance(example, torch.Tensor):
            example = example.to(next(module.parameters()).device)
        kw = dict(self.hook_kwargs)
        if kw.get("total_steps") is None:
            max_steps = int(getattr(state, "max_steps", 0) or 0)
            kw["total_steps"] = max_steps if max_steps > 0 else total_steps_from_scheduler(lr_scheduler)
        self.handle = nc.attach(module, opt, example_input=example, **kw)
        self._forward_hook = model.register_forward_hook(self._report)

    def _report(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if not (module.training and torch.is_grad_enabled()) or self.handle is None:
            return
        loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor) and self.handle.attached:
            self.handle.report_loss(loss)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._forward_hook is not None:
            self._forward_hook.remove()
            self._forward_hook = None
        if self.handle is not None and self.handle.attached:
            self.summary = self.handle.close()
