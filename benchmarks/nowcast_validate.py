"""Validation suite of the nowcasting hook's defaults: the tasks its options are chosen on, never the held-out ones.

``benchmarks/nowcast.py`` scores the hook on four held-out tasks; a default chosen by looking at
them would be selected on test data. The hook's options are chosen here instead, on four tasks of
the meta-training families and recipes (none of them is a held-out task of ``nowcast.py``):

* ``digits_mlp``: MLP of width 32 on digits (the meta-training family ``digits_mlp``; new seeds).
* ``mnist1d_mlp``: MLP of width 64 on MNIST-1D (a dataset meta-training never sees; ``nowcast.py``
  uses MNIST-1D only with a 1-D CNN).
* ``digits_cnn``: 2-D SmallCNN on digits (the meta-training family ``digits_cnn``; new seeds).
* ``lm_mhalm``: :class:`~weightspace.nowcast.lm.MHALM` (the meta-training LM family: post-norm
  ``nn.MultiheadAttention`` blocks, sinusoidal positions, tied head), width 64, 4 heads, 2 blocks, on
  the ``code`` corpus of the core install's distributions, with the held-out LM's recipe (AdamW lr
  3e-3, weight decay 0.1, 50 warm-up steps, cosine decay to 10%, 600 steps, batch 16): the task of
  ``benchmarks/nowcast_lm_diagnose.py``.

Protocol: ``nowcast.py``'s (same training loop, batches and initialization per seed, the worst
optimizer-alone seed's final value as the target, steps to the first measured step reaching it).

Variants (hook options; the library's defaults otherwise):

* ``default``: the library's defaults.
* ``h8`` / ``h16``: a constant horizon of 8 / 16 snapshot spacings.
* ``hmax8`` / ``hmax16``: NiNo's decay (:func:`~weightspace.nowcast.hook.horizon_schedule`) from 8 / 16
  instead of the nowcaster's 32.
* ``h4`` / ``h6`` / ``h12``: constant horizons around the language-model setting ``horizon=8`` (run on
  the validation LM only, to see how sensitive that setting is).

Decision rule, written before the first run of this suite: a variant replaces the default when its
median reduction over the four tasks is higher than the default's and it is no more than 5 points
behind the default on any task; among several, the highest median wins.

The hook's :data:`~weightspace.nowcast.hook.JUMP_YIELD` (the steps a kept jump saves per step it goes
ahead, as ``period="auto"`` and ``summary()`` count them) is measured here, written before its first
measurement: with ``jump_yield=1``, per task the optimizer's mean steps to the target minus the
hook's, over the mean steps the kept jumps went ahead before the target (``saved_per_step_ahead``),
with the recommended settings (the defaults on the three classifiers, ``horizon=8`` on the LM);
``JUMP_YIELD`` is the median over the four tasks, rounded down to a multiple of 0.05. It is a
measurement of the hook, not a setting chosen for its reductions: it is kept whatever the reductions
at it are, and the suite is rerun at it to report the cost share the hook then achieves.

    python benchmarks/nowcast_validate.py --seeds 3    # -> benchmarks/results/nowcast_validate.{json,md}
    python benchmarks/nowcast_validate.py --seeds 5 --variants default,h8 --jump-yield 1.0 --out benchmarks/results/nowcast_validate_yield1
    python benchmarks/nowcast_validate.py --seeds 5 --variants default,h8 --out benchmarks/results/nowcast_validate_yield
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nowcast as B  # noqa: E402

from model_zoo.archs import MLP, SmallCNN  # noqa: E402
from weightspace.nowcast import Nowcaster  # noqa: E402
from weightspace.nowcast.hook import JUMP_YIELD, horizon_schedule  # noqa: E402
from weightspace.nowcast.lm import MHALM  # noqa: E402

log = logging.getLogger("benchmarks.nowcast_validate")

TASKS = {
    "digits_mlp": B.Task("digits_mlp", "validation: meta-training family", lambda: MLP(width=32, depth=2), 1e-3, 32,
                         1000, 2, "digits", True),
    "mnist1d_mlp": B.Task("mnist1d_mlp", "validation: dataset unseen in meta-training",
                          lambda: MLP(in_features=40, width=64, depth=2), 3e-3, 32, 1500, 4, "mnist1d", True),
    "digits_cnn": B.Task("digits_cnn", "validation: meta-training family", lambda: SmallCNN(channels=16, layers=3),
                         3e-3, 32, 1000, 4, "digits"),
    "lm_mhalm": B.Task("lm_mhalm", "validation: meta-training LM family and corpus, held-out recipe",
                       lambda: MHALM(dim=64, heads=4, depth=2, seq=32, mlp_ratio=4), 3e-3, 16, 600, 10, loss="lm",
                       optimizer="adamw", weight_decay=0.1, warmup=50, seq=32, corpus="code"),
}

VARIANTS: dict[str, dict] = {
    "default": {},
    "h8": {"horizon": 8},
    "h16": {"horizon": 16},
    "hmax8": {"horizon_max": 8},
    "hmax16": {"horizon_max": 16},
    "h4": {"horizon": 4},
    "h6": {"horizon": 6},
    "h12": {"horizon": 12},
}


class Variant(B.Attached):
    """A nowcaster attached with some hook options (``horizon_max``: NiNo's decay from it)."""

    def attach(self, *args, **kwargs):
        opts = dict(self.options)
        if "horizon_max" in opts:
            opts["horizon"] = horizon_schedule(opts.pop("horizon_max"), total_steps=kwargs.get("total_steps"))
        return self.nowcaster.attach(*args, **{**kwargs, **opts})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--nowcaster", default="nowcaster", help="name or folder")
    ap.add_argument("--jump-yield", type=float, default=None,
                    help="attach every variant with this jump_yield (default: the library's JUMP_YIELD)")
    ap.add_argument("--out", default=str(B.ROOT / "benchmarks/results/nowcast_validate"))
    ap.add_argument("--render", default=None, metavar="JSON", help="only rewrite the Markdown of a results JSON")
    args = ap.parse_args()
    if args.render:
        path = Path(args.render)
        print(write_md(path.with_suffix(""), json.loads(path.read_text())))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("weightspace.nowcast.hook").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    nc = Nowcaster.load(args.nowcaster) if os.path.isdir(args.nowcaster) else Nowcaster.pretrained(args.nowcaster)
    extra = {} if args.jump_yield is None else {"jump_yield": args.jump_yield}
    methods = {"adam": None, **{v: Variant(nc, **VARIANTS[v], **extra) for v in args.variants.split(",")}}
    t0, load0 = time.time(), os.getloadavg()[0]
    results: dict = {"tasks": {}, "seeds": args.seeds, "variants": {v: VARIANTS[v] for v in args.variants.split(",")},
                     "nowcaster": args.nowcaster,
                     "jump_yield": JUMP_YIELD if args.jump_yield is None else args.jump_yield}
    for tname in args.tasks.split(","):
        task = TASKS[tname]
        data = B.load_data(task)
        runs = {}
        for name, m in methods.items():
            runs[name] = [B.run_one(task, data, s, m) for s in range(args.seeds)]
            log.info("%s %s: steps %s (%.0f s; load %.1f)", tname, name,
                     [B.first_reach(r["acc"], min(statistics.mean(q["acc"][-3:]) for q in runs["adam"]))
                      for r in runs[name]], time.time() - t0, os.getloadavg()[0])
        results["tasks"][tname] = B.summarize(task, runs, {}, methods, args.seeds)
    red = {v: {t: r["methods"][v]["reduction_pct"] for t, r in results["tasks"].items()} for v in methods if v != "adam"}
    results["median_reduction"] = {v: statistics.median(x.values()) for v, x in red.items()}
    results.update(command="python benchmarks/nowcast_validate.py " + " ".join(sys.argv[1:]),
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), seconds=round(time.time() - t0),
                   load_average=[load0, os.getloadavg()[0]], torch=torch.__version__)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(write_md(out, results))


def measured_yield(results: dict) -> float | None:
    """``JUMP_YIELD``'s rule (module docs): the median over the tasks of the steps saved per step ahead,
    ``h8`` on the language model and ``default`` elsewhere; ``None`` when a task lacks it."""
    per = []
    for task in results["tasks"].values():
        variant = "h8" if task["metric"] == "val_loss" else "default"
        value = task["methods"].get(variant, {}).get("saved_per_step_ahead")
        if value is None:
            return None
        per.append(value)
    return statistics.median(per) if per else None


def write_md(out: Path, results: dict) -> str:
    """Write ``out.md`` from a results dict; returns the text."""
    tasks, seeds = results["tasks"], results["seeds"]
    variants = [v for v in results["variants"]]
    load0, load1 = results["load_average"]
    yield_note = f"`jump_yield` {results['jump_yield']:.2f}; " if "jump_yield" in results else ""
    lines = ["# Nowcasting hook: validation suite", "",
             f"Command: `{results['command']}` ({results['date']}); {seeds} seeds; nowcaster `{results['nowcaster']}`; "
             f"{yield_note}1 torch thread, load average {load0:.1f} at the start, {load1:.1f} at the end; "
             f"{results['seconds']} s. Tasks, variants and the decision rule: the docstring of "
             "`benchmarks/nowcast_validate.py`. Fewer steps than the optimizer alone to the worst optimizer-alone "
             "seed's final value (reached of seeds):", "", *([results["note"], ""] if "note" in results else []),
             "| variant | " + " | ".join(tasks) + " | median |",
             "|---|" + "---|" * (len(tasks) + 1)]
    for v in variants:
        cells = [f"{tasks[t]['methods'][v]['reduction_pct']:.1f}% ({tasks[t]['methods'][v]['reached']}/{seeds})"
                 for t in tasks]
        lines.append(f"| `{v}` {VARIANTS[v] or ''} | " + " | ".join(cells) + f" | {results['median_reduction'][v]:.1f}% |")
    lines += ["", "Final metric (validation accuracy; minus the validation loss for the LM):", "",
              "| variant | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for v in ["adam", *variants]:
        lines.append(f"| `{v}` | " + " | ".join(f"{tasks[t]['methods'][v]['final_metric']:.4f}" for t in tasks) + " |")
    if all("saved_per_step_ahead" in tasks[t]["methods"][v] for t in tasks for v in variants):
        lines += ["", "The hook's cost as a share of the time it saved, wall clock (before the target), and the steps "
                  "saved per step the kept jumps went ahead before the target (`saved_per_step_ahead`; the hook "
                  "counts `jump_yield` of them):", "",
                  "| variant | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]

        def cell(m: dict) -> str:
            share, per = m["overhead_over_saved"], m["saved_per_step_ahead"]
            return (f"{100 * share:.0f}%" if share is not None else "n/a (nothing saved)") + " / " + (
                f"{per:.2f}" if per is not None else "n/a")

        for v in variants:
            lines.append(f"| `{v}` | " + " | ".join(cell(tasks[t]["methods"][v]) for t in tasks) + " |")
        y = measured_yield(results)
        if y is not None:
            lines += ["", f"Steps saved per step ahead by `JUMP_YIELD`'s rule (median over the tasks; `h8` on the "
                      f"language model, `default` elsewhere): {y:.3f}."]
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    return text

if __name__ == "__main__":
    main()
