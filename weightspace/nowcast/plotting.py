"""``plot``: what a nowcasting hook did, drawn on a matplotlib axes."""

from __future__ import annotations

from typing import Any

__all__ = ["plot"]


def plot(handle: Any, ax: Any = None) -> Any:
    """Draw a :class:`~weightspace.nowcast.hook.NowcastHook`'s run with a marker at every jump.

    With losses reported (:meth:`~weightspace.nowcast.hook.NowcastHook.report_loss`, or a callback)
    the curve is the training loss per optimizer step; otherwise it is, per jump, the L2 distance the
    optimizer moved the parameters over the window before it (``history[i]["window_norm"]``) and the
    size of the jump (``"delta_norm"``). Kept jumps are marked with triangles, jumps undone by the spike
    guard with red crosses, skipped (non-finite) ones with grey circles; the title is the hook's
    :meth:`~weightspace.nowcast.hook.NowcastHook.describe` line. Matplotlib is imported here, and
    without ``ax`` the figure is made without ``pyplot``, so it draws under any backend (Agg included).

    Args:
        handle: the hook (``nowcaster.attach(...)``'s return), or a callback holding one in ``.handle``.
        ax: a matplotlib ``Axes`` to draw on (default: a new figure's).

    Returns:
        The ``Axes`` drawn on (``ax.figure.savefig(path)`` writes it).

    Raises:
        TypeError: ``handle`` is neither a hook nor a callback holding one.
    """
    hook = getattr(handle, "handle", handle)
    if not hasattr(hook, "history") or not hasattr(hook, "summary"):
        raise TypeError(f"plot() takes a NowcastHook (what Nowcaster.attach returns) or a nowcast callback, "
                        f"got {type(handle).__name__}")
    if ax is None:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(7, 3.5)).add_subplot()
    losses = hook.losses
    history = hook.history
    if losses:
        steps, values = zip(*losses)
        ax.plot(steps, values, lw=1, color="C0", label="training loss")
        at = dict(losses)

        def y_of(rec: dict) -> float:
            return at.get(rec["step"], at.get(rec["step"] - 1, float("nan")))
        ax.set_ylabel("loss")
    else:
        moved = [(h["step"], h["window_norm"], h["delta_norm"]) for h in history if h.get("window_norm") is not None]
        if moved:
            s, w, d = zip(*moved)
            ax.plot(s, w, "-", lw=1, color="C0", label="optimizer's move over the window (L2)")
            ax.plot(s, d, "-", lw=1, color="C1", label="jump (L2)")
        size = {h["step"]: h.get("delta_norm") or 0.0 for h in history}

        def y_of(rec: dict) -> float:
            return size.get(rec["step"], 0.0)
        ax.set_ylabel("parameter change")
    groups = {
        "jump": ([h for h in history if h.get("applied") and not h.get("undone")], dict(marker="v", color="C2")),
        "undone jump": ([h for h in history if h.get("undone")], dict(marker="x", color="red")),
        "skipped jump": ([h for h in history if not h.get("applied")], dict(marker="o", color="grey")),
    }
    for label, (recs, style) in groups.items():
        if recs:
            ax.scatter([r["step"] for r in recs], [y_of(r) for r in recs], label=label, zorder=3, **style)
    ax.set_xlabel("optimizer step")
    ax.set_title(hook.describe(hook.summary()), fontsize=7)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return ax
