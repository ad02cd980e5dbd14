"""``NowcastHook``: periodic nowcasting jumps inside an ordinary PyTorch training loop.

The hook hangs on ``optimizer.register_step_post_hook``; the loop stays ``loss.backward();
optimizer.step()``. Every ``period // context`` optimizer steps it keeps a flat copy of the model's
parameters; every ``period`` steps, once it holds ``context`` copies, it asks the nowcaster for the
parameters ``k`` copy-spacings ahead and writes them into the model (NiNo, Knyazev et al., ICLR 2025).

* Counting is per optimizer step, so gradient accumulation (fewer ``step`` calls), AMP (a
  ``GradScaler`` that skips a step skips the hook too) and LR schedulers work unchanged.
* Only tensors the optimizer updates are moved, read again at every jump: parameters in one of its
  param groups (groups added with ``add_param_group`` after attaching included) that require grad.
  Buffers (BatchNorm statistics), frozen parameters (``requires_grad_(False)``, before or after
  attaching) and parameters outside every param group stay bit-identical. A param group added after
  attaching that holds tensors outside the converted model draws a ``UserWarning`` naming it.
* A jump adds the predicted float32 delta to each parameter in the parameter's own dtype, so float64
  (and bfloat16, float16) parameters keep their dtype and precision.
* The hook's own state (step counter, the snapshots in flight, jump history) rides inside
  ``optimizer.state_dict()`` under the key ``"nowcast"`` (at the top level and, the same object, in its
  ``"state"``) and is restored by ``optimizer.load_state_dict()``, whether the hook is attached before
  the load or after it (the load leaves it in ``optimizer.state["nowcast"]``, which attaching takes);
  :meth:`NowcastHook.state_dict` gives it alone.
* Optimizer state after a jump: ``"keep"`` (default, as NiNo: Adam's moments and step counts carry
  on; the loss may spike for a few steps) or ``"reset"`` (the moved parameters' optimizer state is
  dropped, so e.g. Adam restarts its moments and bias correction).
* A jump that would produce NaN/inf is skipped with a ``RuntimeWarning`` and never applied.
* ``period="auto"`` (default): the hook times its own work per window against plain optimizer steps
  and picks, after every jump, the smallest period whose jumps cost at most ``auto_budget`` (10%) of
  the time they save (:class:`AutoPeriod`); a fixed ``period`` is never changed. A jump ``n`` steps
  ahead is counted as saving ``jump_yield * n`` steps (:data:`JUMP_YIELD`, measured on the validation
  suite): a prediction is not the trajectory, so a jump saves fewer steps than it goes ahead.
* Spike guard: with losses reported (:meth:`NowcastHook.report_loss`; the trainer callbacks report
  them), a jump whose next loss exceeds ``spike_guard`` times the loss before it is undone.
* Warm-up: no jump while the learning rate rises (``skip_warmup``): a window whose learning rate
  grew extrapolates an acceleration the schedule is about to stop.
* Do no harm (``backoff=True``, off by default): with losses reported, each jump is judged once the steps up to the next
  jump have run: it paid when the mean loss after it is below what the loss trend before it promised
  without a jump (:func:`jump_paid`). A jump that did not pay halves the hook's reach (the horizon is
  multiplied by it; with ``period="auto"`` a shorter horizon also means a longer period, since each
  jump then saves fewer steps); a jump that paid restores a quarter of it, up to 1. With
  ``period="auto"``, a jump at the shortest horizon that still did not pay doubles the spacing of the
  snapshots (the period), and one that paid halves that factor again.
* :meth:`NowcastHook.summary` says what the hook did; :meth:`NowcastHook.remove` (alias ``close``,
  ``detach``) logs it at INFO; :func:`~weightspace.nowcast.plotting.plot` draws it.
* ``hold``: roles of the parameter graph whose parameters the jumps leave to the optimizer. By
  default the query, key and value projections of attention (weights and biases; :data:`HOLD_DEFAULT`;
  a measured choice, ``docs/design-notes/nowcast.md``). ``hold=()`` jumps every parameter, as NiNo does.

Cost: everything that does not change between jumps is built once (the :class:`GraphSpec`, the
nowcaster's index tensors, the split of the flat vector into the model's tensors); the snapshots
live in one preallocated ``[context, P]`` ring buffer, each written by one ``torch._foreach_copy_``
into views of the row shaped like the model's tensors; a jump is one call of the nowcaster under
``torch.inference_mode`` for the one horizon it needs, and one ``torch._foreach_add_`` adds the
result. Re-reading what moves costs, when nothing changed, one ``requires_grad`` read per parameter
tensor in the optimizer and an identity check of the param groups' ``params`` lists; the write-back's
views and mask are rebuilt only when that changed. On a model of up to :data:`~weightspace.nowcast.plan.PLAN_MAX` parameters, with
the nowcaster on the CPU, the call runs a :class:`~weightspace.nowcast.plan.JumpPlan` made at
attach time (indices, buffers and what it derives from the nowcaster's weights prepared once; the
same predictions up to float rounding); a larger model's prediction streams over chunks of parameters
(:mod:`~weightspace.nowcast.stream`), so a jump on a model with tens of millions of
parameters needs little memory beyond the ring buffer.
"""

from __future__ import annotations

import logging
import math
import operator
import statistics
import time
import warnings
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from weightspace.graph import GraphSpec
from weightspace.graph.vocab import EdgeType, NodeType

from .layout import NowcastLayout
from .plan import PLAN_MAX, JumpPlan

log = logging.getLogger(__name__)

__all__ = ["NowcastHook", "AutoPeriod", "horizon_schedule", "held_mask", "total_steps_from_scheduler",
           "OPTIMIZER_STATE_CHOICES", "HOLD_DEFAULT", "AUTO_BUDGET", "JUMP_YIELD", "SPIKE_GUARD_DEFAULT", "jump_paid",
           "BACKOFF_WINDOW", "BACKOFF_FACTOR", "BACKOFF_RECOVER"]

OPTIMIZER_STATE_CHOICES = ("keep", "reset")
STATE_KEY = "nowcast"
#: roles whose parameters jumps leave to the optimizer by default: attention's query, key and value maps
#: (edge types ``ATTN_Q/K/V`` and the node types of their units: biases; ``ROTARY_Q/K`` units too)
HOLD_DEFAULT = ("attn_q", "attn_k", "attn_v", "rotary_q", "rotary_k")
_REQUIRES_GRAD = operator.attrgetter("requires_grad")
#: ``period="auto"``: the largest share of the time the jumps save that they may cost
AUTO_BUDGET = 0.10
#: optimizer steps a kept jump saves per step it goes ahead, as the auto period and :meth:`NowcastHook.summary`
#: count them: the median over the tasks of ``benchmarks/nowcast_validate.py`` (never the held-out ones)
#: of (the optimizer's steps to the target - the hook's) / (the steps the kept jumps went ahead before it)
JUMP_YIELD = 0.20
#: ``period="auto"``: the period before the first jump was timed (rounded up to a multiple of context)
AUTO_START_PERIOD = 20
#: ``period="auto"``: the longest period chosen (rounded down to a multiple of context)
AUTO_MAX_PERIOD = 1000
#: a jump is undone when the next loss exceeds this factor times the loss before it
SPIKE_GUARD_DEFAULT = 2.0
#: per-step losses before a jump whose largest is the spike guard's reference
_LOSS_BEFORE = 4
#: ``backoff``: the most steps after (and twice that before) a jump whose losses judge it
BACKOFF_WINDOW = 50
#: ``backoff``: the reach after a jump that did not pay is multiplied by this; after one that paid, by
#: :data:`BACKOFF_RECOVER` (capped at 1)
BACKOFF_FACTOR = 0.5
BACKOFF_RECOVER = 1.25


def held_mask(layout: NowcastLayout, hold: Sequence[str]) -> Tensor | None:
    """``[P]`` bool, the parameters of ``layout`` with a role in ``hold`` (``None`` when none are).

    A role is the name of an :class:`~weightspace.graph.vocab.EdgeType` (held: the weight entries of
    edges of that type) or of a :class:`~weightspace.graph.vocab.NodeType` (held: the node parameters
    — bias, normalization — of neurons of that type), case-insensitive.
    """
    edge_roles, node_roles = set(), set()
    for name in hold:
        key = str(name).upper()
        found = False
        if key in EdgeType.__members__:
            edge_roles.add(int(EdgeType[key]))
            found = True
        if key in NodeType.__members__:
            node_roles.add(int(NodeType[key]))
            found = True
        if not found:
            raise ValueError(f"unknown role {name!r} in hold; roles are edge or node types: "
                             f"{sorted(n.lower() for n in {*EdgeType.__members__, *NodeType.__members__})}")
    if not edge_roles and not node_roles:
        return None
    edge, owner = layout.slot_edge, layout.slot_owner.long()
    held = torch.zeros(layout.num_params, dtype=torch.bool)
    if edge_roles and layout.num_edges:
        e = edge.nonzero().squeeze(1)
        et = layout.edge_type.long()[owner[e]]
        held[e] = torch.isin(et, torch.tensor(sorted(edge_roles)))
    if node_roles:
        n = (~edge).nonzero().squeeze(1)
        held[n] = torch.isin(layout.node_type.long()[owner[n]], torch.tensor(sorted(node_roles)))
    return held if bool(held.any()) else None


def horizon_schedule(k_max: int, k_min: int = 1, total_steps: int | None = None, power: float = 2.0
                     ) -> Callable[[int], int]:
    """NiNo's jump-size schedule: ``k`` decays from ``k_max`` to ``k_min`` as ``(1 - step/total)^power``.

    Without ``total_steps`` the schedule is constant ``k_max``.
    """
    if k_max < 1 or k_min < 1:
        raise ValueError(f"horizons must be at least 1, got k_max={k_max}, k_min={k_min}")

    def k(step: int) -> int:
        if not total_steps:
            return k_max
        frac = min(max(step / total_steps, 0.0), 1.0)
        return int(round(k_min + (k_max - k_min) * (1.0 - frac) ** power))

    return k


def jump_paid(before: Sequence[float], after: Sequence[float], trend: float = 0.5) -> bool | None:
    r"""Whether a jump paid, judged from per-step training losses (``backoff`` of :class:`NowcastHook`).

    With ``n = len(after)`` losses on and after the jumped weights and the ``2n`` losses before the jump
    (the last ``2n`` of ``before``, oldest first; its halves have means :math:`\bar b_0, \bar b_1`),
    plain training was on course for a mean loss of
    :math:`\min(\bar b_1, \bar b_1 - \tau(\bar b_0 - \bar b_1))` over the next ``n`` steps, with
    ``tau = trend``: the latest level, less (where the loss was falling) a share of the last drop, since
    a loss curve decelerates (``trend=1`` is the linear trend, which a decelerating curve does not
    reach; ``0`` the level alone). The jump paid when the mean of ``after`` is below it. ``None`` (no verdict) with
    fewer than 2 losses after the jump, fewer than ``2n`` before it, or a non-finite mean before it; a
    non-finite mean after it did not pay.
    """
    n = len(after)
    if n < 2 or len(before) < 2 * n:
        return None
    before = list(before)[-2 * n:]
    b0, b1 = sum(before[:n]) / n, sum(before[n:]) / n
    if not (math.isfinite(b0) and math.isfinite(b1)):
        return None
    a = sum(after) / n
    if not math.isfinite(a):
        return False
    return a < min(b1, b1 - trend * (b0 - b1))


def total_steps_from_scheduler(scheduler: Any) -> int | None:
    """The number of optimizer steps an LR scheduler plans for, where its type says so, else ``None``.

    Read from ``OneCycleLR.total_steps``, ``CosineAnnealingLR.T_max``, ``PolynomialLR.total_iters`` and
    ``LinearLR.total_iters`` (a scheduler stepped once per optimizer step; one stepped per epoch counts
    epochs and must not be passed here).
    """
    for attr in ("total_steps", "T_max", "total_iters"):
        value = getattr(scheduler, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _checked_yield(value: float) -> float:
    """``jump_yield`` as a float; raises ``ValueError`` outside ``(0, 1]``."""
    if not 0 < value <= 1:
        raise ValueError(f"jump_yield is the steps a jump saves per step it goes ahead, in (0, 1], got {value}")
    return float(value)


class AutoPeriod:
    """The period that keeps the jumps' cost within a share of the time they save (``period="auto"``).

    A window of ``context`` snapshots spaced ``s`` optimizer steps apart ends in a jump ``k`` spacings
    ahead, which saves about ``y * k * s`` plain steps (``y``: ``jump_yield``). With ``C`` the hook's wall time per window (its
    snapshots, the jump, the spike guard's bookkeeping) and ``t`` the wall time of a plain step (between
    two optimizer steps, the hook's own time excluded), the jumps cost the share ``C / (y k s t)`` of what
    they save; :meth:`stride` is the smallest ``s`` (within ``[1, max_stride]``) for which that share is
    at most ``budget``. ``C`` and ``t`` are medians of the latest windows and steps, so an evaluation or
    a checkpoint between two steps does not move them.

    Args:
        context: snapshots per window (the period is ``context * stride``).
        budget: the largest share of the saved time the jumps may cost (default :data:`AUTO_BUDGET`).
        max_stride: the longest spacing considered (default: a period of at most :data:`AUTO_MAX_PERIOD`).
        start_stride: the spacing before anything was measured (default: a period of about
            :data:`AUTO_START_PERIOD` steps).
        jump_yield: steps saved per step a jump goes ahead (default :data:`JUMP_YIELD`).

    Raises:
        ValueError: ``budget`` or ``jump_yield`` not in ``(0, 1]``.
    """

    def __init__(self, context: int, budget: float = 0.10, max_stride: int | None = None,
                 start_stride: int | None = None, jump_yield: float | None = None) -> None:
        if not 0 < budget <= 1:
            raise ValueError(f"the auto period's budget is a share of the saved time in (0, 1], got {budget}")
        self.context, self.budget = int(context), float(budget)
        self.jump_yield = _checked_yield(JUMP_YIELD if jump_yield is None else jump_yield)
        self.max_stride = int(max_stride or max(1, AUTO_MAX_PERIOD // self.context))
        self.current = int(start_stride or max(1, math.ceil(AUTO_START_PERIOD / self.context)))
        self.current = min(self.current, self.max_stride)
        self.steps: deque[float] = deque(maxlen=256)  # seconds of the latest plain steps
        self.windows: deque[float] = deque(maxlen=8)  # hook seconds of the latest windows

    def add_step(self, seconds: float) -> None:
        """Record the wall time of one plain optimizer step (the hook's time excluded)."""
        self.steps.append(float(seconds))

    def add_window(self, seconds: float) -> None:
        """Record the hook's wall time over one window that ended in a jump."""
        self.windows.append(float(seconds))

    @property
    def step_seconds(self) -> float | None:
        """Median wall time of the latest plain steps (``None`` before two steps were timed)."""
        return statistics.median(self.steps) if len(self.steps) >= 2 else None

    @property
    def window_seconds(self) -> float | None:
        """Median hook time of the latest windows (``None`` before the first jump)."""
        return statistics.median(self.windows) if self.windows else None

    def share(self, stride: int, horizon: int) -> float | None:
        """The jumps' cost as a share of the time they save at this spacing and horizon (``None``
        until both times were measured)."""
        c, t = self.window_seconds, self.step_seconds
        if c is None or t is None:
            return None
        return c / (self.jump_yield * horizon * stride * t) if t > 0 else math.inf

    def stride(self, horizon: int) -> int:
        """The smallest spacing whose cost share is at most ``budget`` at horizon ``horizon``, within
        ``[1, max_stride]``; the current spacing while nothing was measured. Sets :attr:`current`."""
        c, t = self.window_seconds, self.step_seconds
        if c is None or t is None:
            return self.current
        need = math.ceil(c / (self.budget * self.jump_yield * max(1, horizon) * t)) if t > 0 else self.max_stride
        self.current = min(max(1, need), self.max_stride)
        return self.current

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current, "steps": list(self.steps), "windows": list(self.windows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = min(int(state["current"]), self.max_stride)
        self.steps.clear()
        self.steps.extend(float(x) for x in state.get("steps", []))
        self.windows.clear()
        self.windows.extend(float(x) for x in state.get("windows", []))


class NowcastHook:
    """Handle of a nowcaster attached to a model and its optimizer (see module docs).

    Made by :meth:`weightspace.nowcast.Nowcaster.attach`.

    Args:
        nowcaster: the predictor (any kind: ``graph``, ``mlp``, ``linefit``).
        model: the network being trained; converted once with :class:`~weightspace.GraphSpec`
            (raises :class:`~weightspace.UnsupportedModuleError` naming the layer it cannot represent).
        optimizer: any ``torch.optim.Optimizer`` over (some of) ``model``'s parameters.
        period: optimizer steps between jumps, a multiple of ``context`` (snapshots are
            ``period // context`` steps apart); or ``"auto"`` (default): chosen after every jump so
            that the jumps cost at most ``auto_budget`` of the time they save (:class:`AutoPeriod`;
            it starts at about :data:`AUTO_START_PERIOD` steps and stays within ``[context,``
            :data:`AUTO_MAX_PERIOD` ``]``); each change is logged at INFO.
        context: snapshots per prediction (default: the nowcaster's).
        horizon: how far to jump, in snapshot spacings (``1..nowcaster.horizons``): an int, a
            callable ``step -> k``, or ``None`` for NiNo's decay from ``nowcaster.horizons`` to 1
            over ``total_steps`` (constant ``nowcaster.horizons`` without ``total_steps``). On the
            validation suite (``benchmarks/nowcast_validate.py``) the vision tasks save the most steps
            with that decay from 32 and the validation language model with a constant ``horizon=8``,
            which is the recommendation for language models (``docs/design-notes/nowcast.md``).
        total_steps: the planned number of optimizer steps (for the horizon schedule); no jumps
            happen after it. Without it (and without ``horizon``) the horizon stays at its maximum,
            which attaching says in a ``UserWarning``; the Lightning and Hugging Face callbacks take
            it from the trainer.
        optimizer_state: ``"keep"`` or ``"reset"`` (see module docs).
        hold: roles (edge or node type names, :func:`held_mask`) whose parameters jumps leave to the
            optimizer; default :data:`HOLD_DEFAULT` (attention's query, key and value maps; see module
            docs); ``()`` jumps every parameter.
        start: no jump before this optimizer step.
        example_input: passed to :meth:`GraphSpec.from_module` for models only ``torch.export``
            can trace.
        spike_guard: undo a jump whose next loss exceeds ``spike_guard`` times the loss before it
            (the largest of the last 4 per-step losses reported before the jump, so that one noisy
            batch does not undo a good jump); ``None`` switches it off. It
            needs the loss: :meth:`report_loss` in a plain loop (the callbacks report it); while no
            loss is reported it does nothing. Undoing writes back the pre-jump weights kept in the
            ring buffer's newest snapshot, so it costs no memory for float32, bfloat16 and float16
            parameters and one copy of the moved float64 parameters, taken at each guarded jump;
            the optimizer step taken on the jumped weights is discarded with the jump (under
            ``optimizer_state="reset"`` the dropped optimizer state is put back; under ``"keep"``
            the moments keep that step's gradient).
        auto_budget: with ``period="auto"``, the largest share of the time the jumps save that they
            may cost (default :data:`AUTO_BUDGET`).
        jump_yield: the steps a kept jump saves per step it goes ahead, in ``(0, 1]``, as the auto
            period and :meth:`summary` count them (default :data:`JUMP_YIELD`).
        skip_warmup: make no jump while the learning rate rises: a due jump is skipped when the
            largest learning rate of the optimizer's param groups is above its value at the window's
            oldest snapshot (a linear warm-up). Default ``True``.
        backoff: judge each jump by the losses after it (:func:`jump_paid`; needs
            :meth:`report_loss`) and scale the horizon by a reach in ``(0, 1]`` that halves after a
            jump that did not pay and grows by a quarter after one that paid: the schedule's horizon
            ``k`` becomes ``max(1, round(k * reach))``; with ``period="auto"``, a jump that did not pay
            at the smallest reach (``1 / nowcaster.horizons``) also doubles the period (:attr:`stretch`),
            one that paid halves that factor. Default ``False`` (the schedule's horizon): on the
            validation language model the warm-up rule alone removes the harm jumps did, and on
            vision tasks the backoff judged most jumps as not paying and gave up most of the
            savings (the ablation in ``docs/design-notes/nowcast.md``); turn it on for training
            runs where jumps keep raising the loss.

    Attributes:
        history: one dict per jump: ``step``, ``period`` (in force), ``horizon`` (snapshot spacings),
            ``steps_ahead`` (``horizon * period // context``), ``seconds`` (the jump),
            ``window_seconds`` (the hook over the window), ``applied`` (false: non-finite, skipped),
            ``undone`` (by the spike guard), ``delta_norm`` (L2 norm of the applied change),
            ``window_norm`` (L2 norm of the optimizer's move over the window), ``loss_before`` /
            ``loss_after`` (what the guard compared; ``None`` without reported losses), ``reach``
            (the backoff's horizon factor at the jump), ``stretch`` (its factor on the auto period's
            spacing), ``paid`` (:func:`jump_paid`'s verdict, set
            when the steps up to the next jump have run; ``None`` without one).
        skipped_warmup: due jumps skipped while the learning rate rose.
        reach: the backoff's current horizon factor; stretch: its factor on the auto period's spacing.
        jumps, undone, skipped, step, seconds: counters (kept jumps, undone, non-finite, optimizer steps,
            wall time inside the hook); :meth:`summary` gathers them.

    Raises:
        ValueError: a bad argument (period, context, horizon, optimizer_state, hold, spike_guard,
            auto_budget, jump_yield), an optimizer that
            updates none of ``model``'s parameters, or saved hook state in ``optimizer.state`` (from
            ``optimizer.load_state_dict`` before attaching) of another period, context or architecture.
        UnsupportedModuleError: ``model`` holds a layer the graph cannot represent.
    """

    def __init__(self, nowcaster: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                 period: int | str = "auto", context: int | None = None,
                 horizon: int | Callable[[int], int] | None = None, total_steps: int | None = None,
                 optimizer_state: str = "keep", start: int = 0, example_input: Any = None,
                 hold: Sequence[str] = HOLD_DEFAULT, spike_guard: float | None = SPIKE_GUARD_DEFAULT,
                 auto_budget: float = AUTO_BUDGET, skip_warmup: bool = True, backoff: bool = False,
                 jump_yield: float = JUMP_YIELD) -> None:
        context = int(context or nowcaster.context)
        if nowcaster.learned and context != nowcaster.context:
            raise ValueError(f"this nowcaster reads {nowcaster.context} snapshots, got context={context}")
        if context < 2:
            raise ValueError(f"context must be at least 2, got {context}")
        self.jump_yield = _checked_yield(jump_yield)
        auto = None
        if isinstance(period, str):
            if period != "auto":
                raise ValueError(f"period must be a positive multiple of context ({context}) or 'auto', "
                                 f"got {period!r}")
            auto = AutoPeriod(context, auto_budget, jump_yield=jump_yield)  # raises on a bad budget
            period = context * auto.current
        elif period < context or period % context:
            raise ValueError(f"period ({period}) must be a positive multiple of context ({context})")
        if spike_guard is not None and not spike_guard > 1:
            raise ValueError(f"spike_guard is the factor by which the loss may rise after a jump, above 1 "
                             f"(or None to switch the guard off), got {spike_guard}")
        if optimizer_state not in OPTIMIZER_STATE_CHOICES:
            raise ValueError(f"optimizer_state must be one of {OPTIMIZER_STATE_CHOICES}, got {optimizer_state!r}")
        if isinstance(horizon, int) and not 1 <= horizon <= nowcaster.horizons:
            raise ValueError(f"horizon must lie in [1, {nowcaster.horizons}], got {horizon}")
        self.spec = GraphSpec.from_module(model, example_input)  # raises UnsupportedModuleError
        self.layout = NowcastLayout.from_spec(self.spec)
        self.nowcaster, self.model, self.optimizer = nowcaster, model, optimizer
        self.period, self.context, self.stride = int(period), context, int(period) // context
        self.auto = auto  # AutoPeriod with period="auto", else None
        self.spike_guard = spike_guard
        self.skip_warmup, self.backoff = bool(skip_warmup), bool(backoff)
        self.reach = 1.0  # the backoff's horizon factor
        self.stretch = 1  # the backoff's factor on the auto period's spacing
        self.skipped_warmup = 0
        self._trend: deque[tuple[int, Any]] = deque(maxlen=3 * BACKOFF_WINDOW + 2)  # (step, loss) for the backoff
        self._judged_at: int | None = None  # the step of the latest applied jump still to be judged
        self.total_steps, self.optimizer_state, self.start = total_steps, optimizer_state, int(start)
        if callable(horizon):
            self._horizon = horizon
        elif horizon is None:
            self._horizon = horizon_schedule(nowcaster.horizons, 1, total_steps)
        else:
            self._horizon = horizon_schedule(int(horizon))
        tensors = model.state_dict(keep_vars=True)
        self._tensors = [tensors[n] for n in self.spec.names]
        self._model_ids = {id(t) for t in self._tensors}
        self._read_groups()
        moved = self._moved_now()
        if not any(moved):
            raise ValueError("the optimizer updates none of the model's parameters")
        self._sizes = [math.prod(s) for s in self.spec.shapes]
        device = self._tensors[0].device
        self.hold = tuple(hold)
        held = held_mask(self.layout, self.hold)
        self.held = int(held.sum()) if held is not None else 0  # parameters left to the optimizer
        self._held = held.to(device) if held is not None else None
        self.step = 0
        self.jumps = 0
        self.skipped = 0
        self.seconds = 0.0  # wall-clock time spent inside the hook (preparing the jump, snapshots, predictions, writes)
        self.history: list[dict[str, Any]] = []
        self.undone = 0
        self._anchor = 0  # the step the current window counts from (moves at each jump with period="auto")
        self._t_end: float | None = None  # when the hook last returned (plain step times are measured from it)
        self._step_times: deque[float] = deque(maxlen=256)
        self._window_seconds = 0.0  # hook time since the last jump
        self._loss_at, self._loss_sum, self._loss_n = -1, None, 0  # losses reported at the current step
        self._recent: deque[tuple[int, Any]] = deque(maxlen=_LOSS_BEFORE)  # (step, mean loss) before now
        self._loss_steps, self._loss_values = array("q"), array("d")
        self._loss_tensors: list[tuple[int, Tensor]] = []  # not yet read back (read in batches: no sync per step)
        self._pending: dict[str, Any] | None = None  # the latest jump, while the spike guard waits for its loss
        self._summary_logged = False
        self._buf = torch.empty(context, self.spec.num_params, dtype=torch.float32, device=device)
        self._snap_lr = [0.0] * context  # the largest learning rate of the param groups at each snapshot
        self._count = 0  # snapshots in the buffer since the last jump (the newest at (count-1) % context)
        # views of every buffer row (and of the jump's target vector) shaped like the model's tensors, so a
        # snapshot and a write-back are one torch._foreach_copy_ each, with no per-tensor Python work
        self._row_views = [self._views(self._buf[r], range(len(self._tensors))) for r in range(context)]
        self._new = torch.empty(self.spec.num_params, dtype=torch.float32, device=device)
        self._set_moved(moved)
        self._same_device = all(t.device == device for t in self._tensors)
        saved = optimizer.state.get(STATE_KEY)  # left there by an optimizer.load_state_dict before attach
        if saved is not None:
            self._restore(saved)  # raises before any hook is registered
            del optimizer.state[STATE_KEY]
        # a small model's jump is prepared once (indices, buffers, gathered nowcaster weights; its time
        # counts as the hook's); a larger one is streamed in chunks (bounded memory)
        t0 = time.perf_counter()
        self._plan = self._make_plan()
        self.seconds += time.perf_counter() - t0
        self._handles = [
            optimizer.register_step_post_hook(self._on_step),
            optimizer.register_state_dict_post_hook(self._sd_post),
            optimizer.register_load_state_dict_pre_hook(self._load_pre),
        ]
        if horizon is None and not total_steps:
            msg = (f"no total_steps given: the jump horizon stays at its maximum ({nowcaster.horizons} snapshot "
                   f"spacings) for the whole run; pass total_steps=<planned optimizer steps> to attach() so "
                   f"that it decays as in NiNo, or horizon=<k> to fix it")
            warnings.warn(msg, UserWarning, stacklevel=3)
            log.warning(msg)

    # ------------------------------------------------------------------ hook
    @property
    def window(self) -> Tensor:
        """The snapshots held for the next jump, oldest first: ``[n, P]`` (``n <= context``), a copy."""
        n = min(self._count, self.context)
        order = [(self._count - n + i) % self.context for i in range(n)]
        return self._buf[order].clone()

    def _make_plan(self) -> JumpPlan | None:
        """A :class:`JumpPlan` for a model of at most ``PLAN_MAX`` parameters and a nowcaster on the CPU
        (where it was measured and tested), else ``None`` (the streamed path)."""
        dev = self.nowcaster.param_device(self._buf.device)
        if self.spec.num_params > PLAN_MAX or dev.type != "cpu":
            return None
        make = getattr(self.nowcaster, "make_plan", None)  # an ensemble prepares one plan per member
        if make is not None:
            return make(self.layout, self.context, dev)
        return JumpPlan(self.nowcaster, self.layout, self.context, dev)

    def _views(self, flat: Tensor, which) -> list[Tensor]:
        offsets = [0]
        for n in self._sizes:
            offsets.append(offsets[-1] + n)
        return [flat[offsets[i]: offsets[i + 1]].view(self._tensors[i].shape) for i in which]

    def _read_groups(self) -> None:
        """Note the optimizer's param groups (their ``params`` lists and lengths) and the model's
        parameters among them (candidates to move, whichever of them require grad at a jump)."""
        groups = self.optimizer.param_groups
        self._group_sig = [(g["params"], len(g["params"])) for g in groups]
        in_opt = {id(p) for g in groups for p in g["params"]}
        self._cand_idx = [i for i, t in enumerate(self._tensors) if isinstance(t, nn.Parameter) and id(t) in in_opt]
        self._cand = [self._tensors[i] for i in self._cand_idx]

    def _groups_changed(self) -> bool:
        groups, sig = self.optimizer.param_groups, self._group_sig
        return len(groups) != len(sig) or any(g["params"] is not ps or len(ps) != n
                                              for g, (ps, n) in zip(groups, sig))

    def _moved_now(self) -> list[bool]:
        """Per model tensor: whether the optimizer updates it now (a parameter in one of its param groups
        that requires grad)."""
        moved = [False] * len(self._tensors)
        for i, rg in zip(self._cand_idx, map(_REQUIRES_GRAD, self._cand)):
            moved[i] = rg
        return moved

    def _set_moved(self, moved: list[bool]) -> None:
        """Point the jump's write-back at the tensors of ``moved`` (their entries outside ``hold``)."""
        self._moved = moved
        self._flags = [moved[i] for i in self._cand_idx]
        self._moved_idx = [i for i, m in enumerate(moved) if m]
        self._moved_tensors = [self._tensors[i] for i in self._moved_idx]
        self._params = self._moved_tensors
        self._new_views = self._views(self._new, self._moved_idx)
        mask = None
        if not all(moved):
            mask = torch.cat([torch.full((n,), m) for n, m in zip(self._sizes, moved)]).to(self._new.device)
        if self._held is not None:
            mask = ~self._held if mask is None else mask & ~self._held
        self._mask = mask  # None: every entry moves

    def _check_moved(self) -> None:
        """Re-read which tensors the optimizer updates (parameters frozen or unfrozen, param groups added
        or removed since the last jump) and warn once about a new param group holding parameters that
        are not the model's (the jumps cannot move them)."""
        if self._groups_changed():  # groups are told apart by their params lists (load_state_dict keeps them)
            seen = [ps for ps, _ in self._group_sig]
            for i, g in enumerate(self.optimizer.param_groups):
                if any(g["params"] is ps for ps in seen):
                    continue
                foreign = sum(id(p) not in self._model_ids for p in g["params"])
                if foreign:
                    msg = (f"param group {i} of the optimizer, added after the nowcaster was attached, holds "
                           f"{foreign} parameter tensor(s) not in the model the hook converted; the jumps leave "
                           f"them to the optimizer (attach the nowcaster to a module that contains them to "
                           f"jump them too)")
                    warnings.warn(msg, UserWarning, stacklevel=4)
                    log.warning(msg)
            self._read_groups()
            self._set_moved(self._moved_now())
        elif list(map(_REQUIRES_GRAD, self._cand)) != self._flags:  # the common case: one read per candidate
            self._set_moved(self._moved_now())

    def _lr(self) -> float:
        return max((float(g.get("lr", 0.0)) for g in self.optimizer.param_groups), default=0.0)

    def _lr_rising(self) -> bool:
        """Whether the learning rate rose over the window (it is above its value at the oldest snapshot)."""
        oldest = self._snap_lr[self._count % self.context]
        return self._lr() > oldest * (1 + 1e-6)

    @torch.no_grad()
    def _snapshot(self) -> None:
        r = self._count % self.context
        self._snap_lr[r] = self._lr()
        if self._same_device:
            torch._foreach_copy_(self._row_views[r], self._tensors)  # casts to float32
        else:
            for v, t in zip(self._row_views[r], self._tensors):
                v.copy_(t)
        self._count += 1

    def _clock(self) -> float:
        return time.perf_counter()  # no CPU-time clock here: its system call invites preemption into the timing

    def _on_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        t0 = self._clock()
        if self._t_end is not None:  # a plain step: from the hook's last return to this call
            self._step_times.append(t0 - self._t_end)
            if self.auto is not None:
                self.auto.add_step(t0 - self._t_end)
        if self._loss_n:
            self._close_loss()
        if self._pending is not None:
            self._judge()
        self.step += 1
        rel = self.step - self._anchor
        if rel % self.stride == 0:
            self._snapshot()
        due = (rel % self.period == 0 and self.step >= self.start
               and (self.total_steps is None or self.step < self.total_steps))
        jumped = due and self._count >= self.context
        if self._judged_at is not None and (jumped or self.step - self._judged_at >= BACKOFF_WINDOW):
            self._judge_trend()
        if jumped and self.skip_warmup and self._lr_rising():
            jumped = False
            self.skipped_warmup += 1
            log.debug("nowcast jump at step %d skipped: the learning rate rises (warm-up)", self.step)
            if self.auto is not None:  # the next window counts from here, as after a jump
                self._anchor = self.step
                self._count = 0
        if jumped:
            self._jump()
        t1 = self._clock()
        self.seconds += t1 - t0
        self._window_seconds += t1 - t0
        if jumped:
            self._window_done()
        self._t_end = t1

    def _window_done(self) -> None:
        """After a jump: time the window; with ``period="auto"`` choose the next period and count the next
        window from this step."""
        if self.history:
            self.history[-1]["window_seconds"] = self._window_seconds
        if self.auto is not None:
            if self.history and self.history[-1]["applied"]:
                self.auto.add_window(self._window_seconds)
            self._anchor = self.step
            k = self._k(self.step + self.period)
            stride = min(self.auto.stride(k) * self.stretch, self.auto.max_stride)
            if stride != self.stride:
                share = self.auto.share(stride, k)
                log.info("nowcast: period %d -> %d optimizer steps at step %d (a window of jumps costs %.2f ms, "
                         "a plain step %.2f ms, horizon %d: the jumps cost %.1f%% of the %d steps they save; "
                         "budget %.0f%%)", self.period, stride * self.context, self.step,
                         1e3 * self.auto.window_seconds, 1e3 * self.auto.step_seconds, k,
                         100 * share, round(self.jump_yield * k * stride), 100 * self.auto.budget)
                self.stride, self.period = stride, stride * self.context
        self._window_seconds = 0.0

    # ------------------------------------------------------------------ loss and the spike guard
    def report_loss(self, loss: Tensor | float) -> None:
        """Tell the hook the training loss of a batch computed with the model's current weights.

        Call it between the forward pass and ``optimizer.step()`` (several calls before one step, e.g.
        under gradient accumulation, are averaged; a tensor of per-sample losses counts as its mean). It feeds the spike guard and :meth:`plot`'s loss
        curve; a tensor is read back in batches, so reporting does not synchronize a GPU at every step.
        The Lightning and Hugging Face callbacks call it for you.
        """
        value = loss.detach().float().mean() if isinstance(loss, Tensor) else torch.tensor(float(loss))
        if self._loss_n and self._loss_at != self.step:
            self._close_loss()
        self._loss_sum = value if not self._loss_n else self._loss_sum + value
        self._loss_at = self.step
        self._loss_n += 1

    def _close_loss(self) -> None:
        """The mean loss reported at one step is complete: keep it."""
        mean = self._loss_sum / self._loss_n
        self._recent.append((self._loss_at, mean))
        if self.backoff:
            self._trend.append((self._loss_at, mean))
        self._loss_tensors.append((self._loss_at, mean))
        if len(self._loss_tensors) >= 256:
            self._read_losses()
        self._loss_sum, self._loss_n = None, 0

    def _read_losses(self) -> None:
        if self._loss_tensors:
            values = torch.stack([v.to(self._loss_tensors[0][1].device) for _, v in self._loss_tensors]).cpu().tolist()
            self._loss_steps.extend(s for s, _ in self._loss_tensors)
            self._loss_values.extend(values)
            self._loss_tensors = []

    @property
    def losses(self) -> list[tuple[int, float]]:
        """``(step, loss)`` of every step with a reported loss: the mean loss reported while the hook had
        counted ``step`` optimizer steps (computed with the weights after step ``step``)."""
        if self._loss_n:
            self._close_loss()
        self._read_losses()
        return list(zip(self._loss_steps, self._loss_values))

    def _guard_ready(self) -> bool:
        """Whether the spike guard watches this jump: on, with a loss reported just before it."""
        return self.spike_guard is not None and bool(self._recent) and self._recent[-1][0] >= self.step - 1

    def _judge(self) -> None:
        """The step after a guarded jump: undo it when its loss rose beyond the guard's factor."""
        pending, self._pending = self._pending, None
        rec = pending["rec"]
        after = [v for s, v in self._recent if s == rec["step"]]
        if not after:  # no loss reported on the jumped weights: the guard cannot judge this jump
            return
        before, after = float(pending["before"]), float(after[-1])
        rec["loss_before"], rec["loss_after"] = before, after
        if not math.isfinite(before) or (math.isfinite(after) and not after > self.spike_guard * before):
            return  # a non-finite loss after the jump is a spike; a non-finite one before it leaves nothing to judge
        with torch.no_grad():
            row, tensors = pending["row"], pending["tensors"]
            for i, t in zip(pending["idx"], tensors):
                src = pending["exact"].get(i)
                t.copy_(src if src is not None else self._row_views[row][i])
            for p, st in pending["states"].items():
                self.optimizer.state[p] = st
        rec["undone"] = True
        self.jumps -= 1
        self.undone += 1
        msg = (f"nowcast jump at step {rec['step']} undone: the loss rose from {before:.4g} to {after:.4g}, above "
               f"spike_guard={self.spike_guard} times the loss before it; the weights are back where the "
               f"optimizer left them at step {rec['step']}")
        log.warning(msg)

    def _judge_trend(self) -> None:
        """The steps after the latest applied jump have run (the next one is due): judge it with
        :func:`jump_paid` and move :attr:`reach`."""
        at, self._judged_at = self._judged_at, None
        rec = next((h for h in reversed(self.history) if h["step"] == at), None)
        if rec is None or rec.get("undone"):
            return
        n = min(self.step - at, BACKOFF_WINDOW)
        pts = [(s, v) for s, v in self._trend if at - 2 * n <= s < at + n]
        if not pts:
            return
        values = torch.stack([v.to(pts[0][1].device) for _, v in pts]).cpu().tolist()  # one read per jump
        before = [v for (s, _), v in zip(pts, values) if s < at]
        after = [v for (s, _), v in zip(pts, values) if s >= at]
        paid = jump_paid(before, after) if len(after) == n else None
        rec["paid"] = paid
        if paid is None:
            return
        old = self.reach
        floor = 1.0 / max(1, self.nowcaster.horizons)
        if self.auto is not None:  # at the shortest horizon, jumps that still do not pay come further apart
            if not paid and old <= floor:
                self.stretch = min(2 * self.stretch, self.auto.max_stride)
            elif paid:
                self.stretch = max(1, self.stretch // 2)
        self.reach = min(1.0, self.reach * BACKOFF_RECOVER) if paid else max(floor, self.reach * BACKOFF_FACTOR)
        if self.reach != old:
            log.debug("nowcast: the jump at step %d %s; reach %.3g -> %.3g", at,
                      "paid" if paid else "did not pay", old, self.reach)

    def _k(self, step: int) -> int:
        """The horizon of a jump at ``step``: the schedule's, times the backoff's reach."""
        k = max(1, min(int(self._horizon(step)), self.nowcaster.horizons))
        return max(1, int(round(k * self.reach))) if self.backoff else k

    @torch.no_grad()
    def _jump(self) -> None:
        k = self._k(self.step)
        t0 = time.perf_counter()
        c = self.context
        pos = self._count % c  # the oldest snapshot; the buffer is full
        # oldest first, read in place (with period = context x stride the buffer is in order at a jump)
        window = self._buf if pos == 0 else [self._buf[(pos + i) % c] for i in range(c)]
        plan = self._plan
        if plan is not None and plan.device != self.nowcaster.param_device(plan.device):  # the nowcaster moved
            plan = self._plan = self._make_plan()
        self._check_moved()
        rec = {"step": self.step, "period": self.period, "horizon": k, "steps_ahead": k * self.stride,
               "seconds": 0.0, "applied": False, "undone": False, "delta_norm": None, "window_norm": None,
               "loss_before": None, "loss_after": None, "reach": self.reach, "stretch": self.stretch, "paid": None}
        if not self._moved_tensors:  # every parameter frozen or out of the optimizer: nothing to predict
            log.debug("nowcast jump at step %d: the optimizer updates none of the model's parameters", self.step)
            self.history.append(rec)
            self._count = 0
            return
        delta = self.nowcaster.predict(plan if plan is not None else self.layout, window, horizon=k)  # [P]
        if self._mask is None:
            new = self._new.copy_(delta)
        else:  # held / frozen parameters stay: one fused pass, no parameter-sized temporary
            new = torch.mul(delta, self._mask, out=self._new)
        if not bool(torch.isfinite(new).all()):
            self.skipped += 1
            msg = f"nowcast jump at step {self.step} would produce non-finite weights; skipped"
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            log.warning(msg)
        else:
            newest = (self._count - 1) % c
            rec["delta_norm"] = float(new.norm())
            rec["window_norm"] = float(torch.dist(self._buf[newest], self._buf[pos]))
            guarded = self._guard_ready()
            if guarded:  # the newest snapshot is the pre-jump weights; float64 ones are kept exactly
                exact = {i: self._tensors[i].detach().clone() for i in self._moved_idx
                         if self._tensors[i].dtype == torch.float64}
                before = torch.stack([v for s, v in self._recent if s < self.step]).max()
                self._pending = {"rec": rec, "row": newest, "idx": list(self._moved_idx),
                                 "tensors": list(self._moved_tensors), "exact": exact, "before": before,
                                 "states": {}}
            # the float32 delta added in each tensor's own dtype (a float64 parameter keeps its precision;
            # the last snapshot is the tensor itself, rounded to float32)
            if self._same_device:
                torch._foreach_add_(self._moved_tensors, self._new_views)
            else:
                for t, d in zip(self._moved_tensors, self._new_views):
                    t.add_(d.to(t.device))
            if self.optimizer_state == "reset":
                for p in self._params:
                    st = self.optimizer.state.pop(p, None)
                    if guarded and st is not None:
                        self._pending["states"][p] = st
            self.jumps += 1
            rec["applied"] = True
            if self.backoff:
                self._judged_at = self.step
            log.debug("nowcast jump at step %d: %d steps ahead (|delta| %.3g, optimizer's move over the window "
                      "%.3g)", self.step, k * self.stride, rec["delta_norm"], rec["window_norm"])
        rec["seconds"] = time.perf_counter() - t0
        self.history.append(rec)
        self._count = 0

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The hook's state: counters, history, the snapshots of the current window and, with
        ``period="auto"``, the timings and the period chosen."""
        window = self.window.cpu()
        state = {"step": self.step, "jumps": self.jumps, "skipped": self.skipped, "window": window.clone(),
                 "history": [dict(h) for h in self.history], "period": self.period, "context": self.context,
                 "undone": self.undone, "anchor": self._anchor, "reach": self.reach, "stretch": self.stretch,
                 "window_lr": [self._snap_lr[(self._count - window.shape[0] + i) % self.context]
                               for i in range(window.shape[0])],
                 "skipped_warmup": self.skipped_warmup}
        if self.auto is not None:
            state["period"] = "auto"
            state["auto"] = self.auto.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the same period, context and architecture)."""
        mine = "auto" if self.auto is not None else self.period
        theirs = state["period"] if state["period"] == "auto" else int(state["period"])
        if theirs != mine or int(state["context"]) != self.context:
            raise ValueError(f"saved hook state has period={state['period']}, context={state['context']}; "
                             f"this hook has period={mine!r}, context={self.context}")
        w = state["window"]
        if w.numel() and w.shape[-1] != self.spec.num_params:
            raise ValueError(f"saved window holds {w.shape[-1]} parameters, the model stores {self.spec.num_params}")
        self.step, self.jumps, self.skipped = int(state["step"]), int(state["jumps"]), int(state["skipped"])
        self.history = [dict(h) for h in state.get("history", [])]
        self.undone, self._anchor = int(state.get("undone", 0)), int(state.get("anchor", 0))
        self.reach, self.skipped_warmup = float(state.get("reach", 1.0)), int(state.get("skipped_warmup", 0))
        self.stretch = int(state.get("stretch", 1))
        self._judged_at = None
        if self.auto is not None and "auto" in state:
            self.auto.load_state_dict(state["auto"])
            self.stride = self.auto.current
            self.period = self.stride * self.context
        self._pending = None
        w = w[-self.context:] if w.numel() else w
        self._buf[: w.shape[0]] = w.to(self._buf.device, torch.float32) if w.numel() else self._buf[:0]
        self._count = int(w.shape[0]) if w.numel() else 0
        lrs = list(state.get("window_lr", []))[-self._count:] if self._count else []
        if len(lrs) != self._count:  # saved before the learning rates were kept: taken as constant
            lrs = [self._lr()] * self._count
        self._snap_lr = [float(x) for x in lrs] + [0.0] * (self.context - self._count)

    def _restore(self, saved: dict[str, Any]) -> None:
        """:meth:`load_state_dict` of the state that ``optimizer.load_state_dict`` left in the optimizer's
        state before this hook was attached.

        Raises:
            ValueError: the saved state belongs to another period, context or architecture.
        """
        try:
            self.load_state_dict(saved)
        except ValueError as err:
            raise ValueError(f"{err}; the optimizer holds this saved hook state since optimizer.load_state_dict: "
                             f"attach with the saved period and context, or drop the state first with "
                             f"optimizer.state.pop({STATE_KEY!r})") from None

    def _sd_post(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        state = self.state_dict()
        state_dict[STATE_KEY] = state
        # the same dict once more among the optimizer's per-parameter state, whose keys that name no
        # parameter optimizer.load_state_dict keeps in optimizer.state: a hook attached after the load
        # finds it there (stored once: pickling and deepcopy keep one copy of an object referenced twice)
        state_dict["state"][STATE_KEY] = state
        return state_dict

    def _load_pre(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        saved = state_dict.pop(STATE_KEY, None)  # state_dict is the loader's shallow copy
        inner = state_dict.get("state")
        if isinstance(inner, dict) and STATE_KEY in inner:  # not left in optimizer.state: this hook takes it
            inner = dict(inner)
            nested = inner.pop(STATE_KEY)
            state_dict["state"] = inner
            saved = nested if saved is None else saved
        if saved is not None:
            self.load_state_dict(saved)
        return state_dict

    # ------------------------------------------------------------------ lifecycle
    def remove(self) -> dict[str, Any]:
        """Detach from the optimizer (no more snapshots or jumps; state-dict hooks removed) and log
        :meth:`summary` at INFO (once). Returns the summary."""
        if self._loss_n:
            self._close_loss()
        if self._pending is not None:  # a loss reported on the jumped weights before detaching still counts
            self._judge()
        for h in self._handles:
            h.remove()
        self._handles = []
        self._count = 0
        self._plan = None  # its buffers are freed; a removed hook makes no more jumps
        summary = self.summary()
        if not self._summary_logged:
            self._summary_logged = True
            log.info("nowcast: %s", self.describe(summary))
        return summary

    close = remove
    detach = remove

    def summary(self) -> dict[str, Any]:
        """What the hook did, as a dict.

        Keys: ``steps`` (optimizer steps seen), ``jumps`` (applied and kept), ``undone`` (by the spike
        guard), ``skipped`` (non-finite), ``steps_ahead`` (the kept jumps' sum of ``steps_ahead``),
        ``seconds`` (wall time inside the hook), ``step_seconds`` (median plain step, ``None`` before
        two steps), ``steps_saved`` (estimate: ``jump_yield * steps_ahead`` less the hook's time in
        plain steps and one discarded step per undone jump; ``None`` without a step time),
        ``cost_share`` (hook time over the time of ``jump_yield * steps_ahead`` steps), ``period`` (the one in force), ``auto`` (whether the
        period is chosen automatically), ``skipped_warmup`` (due jumps skipped while the learning rate
        rose), ``reach`` (the backoff's horizon factor now), ``not_paid`` (judged jumps that did not
        pay, :func:`jump_paid`).
        """
        kept = [h for h in self.history if h.get("applied") and not h.get("undone")]
        ahead = int(sum(h["steps_ahead"] for h in kept))
        t = statistics.median(self._step_times) if len(self._step_times) >= 2 else None
        saved = self.jump_yield * ahead - self.seconds / t - self.undone if t else None
        share = self.seconds / (self.jump_yield * ahead * t) if t and ahead else None
        return {"steps": self.step, "jumps": self.jumps, "undone": self.undone, "skipped": self.skipped,
                "steps_ahead": ahead, "seconds": self.seconds, "step_seconds": t, "steps_saved": saved,
                "cost_share": share, "period": self.period, "auto": self.auto is not None,
                "skipped_warmup": self.skipped_warmup, "reach": self.reach,
                "not_paid": sum(1 for h in self.history if h.get("paid") is False)}

    @staticmethod
    def describe(summary: dict[str, Any]) -> str:
        """One line of :meth:`summary` for a log."""
        text = (f"{summary['jumps']} jumps ({summary['undone']} undone, {summary['skipped']} skipped) in "
                f"{summary['steps']} optimizer steps, {summary['steps_ahead']} steps ahead, "
                f"{summary['seconds']:.3g} s in the hook")
        if summary["steps_saved"] is not None:
            text += (f", about {summary['steps_saved']:.0f} steps saved net of the hook's time "
                     f"(cost {100 * (summary['cost_share'] or 0):.1f}% of the time the jumps save)")
        return text + f"; period {summary['period']}{' (auto)' if summary['auto'] else ''}"

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def __repr__(self) -> str:
        period = f"auto:{self.period}" if self.auto is not None else self.period
        return (f"{self.__class__.__name__}(kind={self.nowcaster.kind!r}, period={period!r}, "
                f"context={self.context}, step={self.step}, jumps={self.jumps}, skipped={self.skipped}, "
                f"optimizer_state={self.optimizer_state!r}, hold={self.hold!r}, held={self.held})")
