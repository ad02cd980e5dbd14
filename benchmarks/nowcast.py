"""Nowcasting benchmark: optimizer steps to a validation target, with and without jumps, on four held-out tasks.

Protocol (NiNo, Knyazev et al., ICLR 2025, at a CPU scale). For every task and seed, the optimizer
alone (Adam; AdamW with warm-up and cosine decay for the language model) and the optimizer plus a
nowcasting hook start from the same initialization and see the same batches in the same order;
the validation metric is measured every ``eval_every`` steps; the score is the first measured step
reaching the target (a run that never reaches it counts as the budget).

Target rule (written here before the rerun it applies to, the same for all four tasks): the *worst*
optimizer-alone seed's final value, final meaning the mean of its last 3 measurements (the lowest
final accuracy; for the language model the highest final validation loss). Every optimizer-alone
seed reaches it within its budget (one of its last 3 measurements is at least their mean), so the
optimizer's step counts are not capped at the budget. (Before this rule the target was the mean over
seeds of those final values, which the optimizer alone missed on some seeds: on ``lm_gpt`` AdamW
reached it in 2 of 5.)

Tasks, all held out from the meta-training of every learned nowcaster here:

* ``mnist1d_cnn``: 1-D CNN on MNIST-1D (unseen dataset, unseen 1-D convolutions).
* ``digits_mlp_wide``: MLP of width 128 on digits (meta-training sees widths of at most 48).
* ``digits_vit``: TinyViT on digits images (meta-training sees transformers only as 1-D TinyViTs on
  synthetic regression and as byte-level LMs).
* ``lm_gpt``: byte-level :class:`~weightspace.nowcast.lm.TinyGPT` (2 pre-norm blocks, width 64,
  4 heads, separate q/k/v projections, learned positions, untied head) trained next-byte on the
  ``METADATA`` text of the distributions a core install of weightspace brings
  (:func:`~weightspace.nowcast.lm.dependency_closure`, so installed extras do not change it) with AdamW (weight decay 0.1, 50 warm-up steps, cosine
  decay); target: the validation loss (nats per byte; perplexity ``exp``). Meta-training's LM runs
  are another family (:class:`~weightspace.nowcast.lm.MHALM`), another corpus (``.py`` sources)
  and other recipes (no weight decay of 0.1, no width 64 / 2-block pre-norm GPT).

Methods, every hook at the library's defaults (fixed before any run, no tuning on any task):
``period="auto"`` (jumps spaced so that they cost at most 10% of the steps they save, a jump counted
as saving ``JUMP_YIELD`` steps per step it goes ahead, measured on the validation suite), the horizon
decaying from the nowcaster's 32 snapshot spacings to 1 over ``total_steps``, attention's q/k/v held,
the spike guard on (losses reported every step, as a user's loop does), no jump while the learning
rate rises (``skip_warmup``, designed on the validation LM task of
``benchmarks/nowcast_lm_diagnose.py``, not on any task here). The do-no-harm backoff (``backoff``:
the horizon shrinks after jumps that did not pay) is off by default; ``--ablation`` adds
``nino_backoff`` (the shipped nowcaster with it on) and ``nino_prev`` (neither rule). ``nino_h8``
(a constant ``horizon=8``: the documented setting for language models, chosen on the validation
suite ``benchmarks/nowcast_validate.py`` before this benchmark ran it) always runs; ``nino_rec`` in
the goals is the documented recommendation: ``nino_h8`` on the language model, ``nino`` elsewhere.

* ``adam``: the optimizer alone (AdamW on ``lm_gpt``).
* ``linefit``: per-parameter least-squares line over the window (no parameters).
* ``mlp``: the per-parameter MLP nowcaster (WNN-like), meta-trained on the same data as ``nino_lm``.
* ``nino``: the shipped graph nowcaster (``Nowcaster.pretrained()``, meta-trained without LM runs).
* ``nino_h8``: the same with ``horizon=8``.
* ``nino_lm``: the graph nowcaster meta-trained with the LM runs, meta-training seed 0.
* ``nino_ens``: the ensemble rule, written here before any held-out run: the mean prediction of
  *all* ``K`` graph nowcasters meta-trained on the same data with seeds ``0..K-1`` (``--ensemble``
  lists them in that order); no member is selected or weighted by any result.

Hook overhead is reported as a share of the time saved, in wall time (the hook's measured seconds
before the target against the plain steps saved) and in CPU time (the hook's snapshot and jump
costs measured apart with the thread's CPU clock, times the jumps before the target).

    python benchmarks/nowcast.py                      # full run -> benchmarks/results/nowcast.{json,md,png}
    python benchmarks/nowcast.py --seeds 2 --quick    # smoke run (no files written unless --out)
    # one process per task on a shared machine, then one report:
    python benchmarks/nowcast.py --tasks lm_gpt --out runs/bench/lm_gpt   # (and so on per task)
    python benchmarks/nowcast.py --merge runs/bench/mnist1d_cnn.json,...  # -> benchmarks/results/nowcast.*
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_zoo.archs import MLP, SmallCNN, TinyViT  # noqa: E402
from model_zoo.data import load_dataset  # noqa: E402
from weightspace.nowcast import AUTO_BUDGET, JUMP_YIELD, NowcastEnsemble, Nowcaster  # noqa: E402
from weightspace.nowcast.lm import TinyGPT, dependency_closure, example_input, lm_batch, text_corpus  # noqa: E402

log = logging.getLogger("benchmarks.nowcast")


@dataclass(frozen=True)
class Task:
    name: str
    held_out: str
    make: object  # () -> nn.Module
    lr: float
    batch: int
    budget: int
    eval_every: int = 1
    dataset: str = ""
    flatten: bool = False
    loss: str = "ce"  # "ce": scored by validation accuracy; "lm": next-byte CE, scored by minus the validation loss
    optimizer: str = "adam"  # adam | adamw
    weight_decay: float = 0.0
    warmup: int = 0  # > 0: linear warm-up then cosine decay to 10% of lr
    seq: int = 0
    corpus: str = "docs"  # the LM's text: "docs" (package METADATA prose) or "code" (.py sources)


TASKS = {
    "mnist1d_cnn": Task("mnist1d_cnn", "unseen dataset (MNIST-1D) and unseen 1-D convolutions",
                        lambda: SmallCNN(channels=16, layers=3, kernel_size=5, dims=1), 1e-2, 32, 1500, 4,
                        "mnist1d"),
    "digits_mlp_wide": Task("digits_mlp_wide", "unseen width (128 vs at most 48)", lambda: MLP(width=128, depth=2),
                            1e-3, 32, 1000, 2, "digits", True),
    "digits_vit": Task("digits_vit", "unseen dataset for a transformer (meta-training sees transformers as 1-D "
                       "TinyViTs on synthetic regression and as MHA byte-level LMs)", lambda: TinyViT(), 3e-3, 32,
                       1500, 4, "digits"),
    "lm_gpt": Task("lm_gpt", "unseen LM family (pre-norm GPT, separate q/k/v, learned positions, untied head), "
                   "corpus (package METADATA prose) and recipe (AdamW wd 0.1, warm-up + cosine)",
                   lambda: TinyGPT(dim=64, heads=4, depth=2, seq=32), 3e-3, 16, 600, 10, loss="lm",
                   optimizer="adamw", weight_decay=0.1, warmup=50, seq=32),
}
LM_VAL_WINDOWS = 64  # fixed validation windows of the LM task (seed 0 of the validation split)


class LMData:
    """The LM task's corpus: training bytes and a fixed validation batch."""

    def __init__(self, seq: int, corpus: str = "docs") -> None:
        self.corpus = text_corpus(corpus, distributions=dependency_closure("weightspace"))
        self.x_val, self.y_val = lm_batch(self.corpus.val, LM_VAL_WINDOWS, seq, torch.Generator().manual_seed(0))


def load_data(task: Task):
    if task.loss == "lm":
        return LMData(task.seq, task.corpus)
    return load_dataset(task.dataset, flatten=task.flatten)


def run_one(task: Task, data, seed: int, nowcaster) -> dict:
    """Train one model for the task's budget; validation every ``eval_every`` steps (and the last).

    Between measurements the last value is carried, so a target is credited at the first measured
    step reaching it (a resolution of ``eval_every`` steps, the same for every method).
    """
    torch.manual_seed(seed)
    model = task.make()
    cls = torch.optim.AdamW if task.optimizer == "adamw" else torch.optim.Adam
    opt = cls(model.parameters(), lr=task.lr, weight_decay=task.weight_decay)
    sched = None
    if task.warmup:
        import math

        def factor(step: int) -> float:
            if step < task.warmup:
                return (step + 1) / task.warmup
            frac = (step - task.warmup) / max(1, task.budget - task.warmup)
            return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, frac)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    gen = torch.Generator().manual_seed(10_000 + seed)
    lm = task.loss == "lm"
    ex = example_input(task.seq) if lm else data.x_train[:2]
    handle = nowcaster.attach(model, opt, total_steps=task.budget, example_input=ex) if nowcaster is not None else None
    order = torch.empty(0, dtype=torch.long)
    acc, vloss, tloss = [], [], []
    train_s = train_cpu = 0.0
    for _ in range(task.budget):
        if lm:
            x, y = lm_batch(data.corpus.train, task.batch, task.seq, gen)
        else:
            if order.numel() < task.batch:
                order = torch.cat([order, torch.randperm(len(data.x_train), generator=gen)])
            idx, order = order[: task.batch], order[task.batch:]
            x, y = data.x_train[idx], data.y_train[idx]
        c0 = time.thread_time()  # CPU clock outside the wall-clock window (its system call may yield the CPU)
        t0 = time.perf_counter()
        model.train()
        out = model(x)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        if handle is not None:
            handle.report_loss(loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        train_s += time.perf_counter() - t0
        train_cpu += time.thread_time() - c0
        tloss.append(loss.item())
        if (len(tloss) % task.eval_every) and len(tloss) != task.budget:  # not measured: carry the last value
            acc.append(acc[-1] if acc else (float("-inf") if lm else 0.0))
            vloss.append(vloss[-1] if vloss else float("nan"))
            continue
        model.eval()
        with torch.no_grad():
            if lm:
                o = model(data.x_val)
                vloss.append(float(F.cross_entropy(o.reshape(-1, o.shape[-1]), data.y_val.reshape(-1))))
                acc.append(-vloss[-1])
            else:
                o = model(data.x_test)
                vloss.append(float(F.cross_entropy(o, data.y_test)))
                acc.append(float((o.argmax(-1) == data.y_test).float().mean()))
    res = {"acc": acc, "val_loss": vloss, "train_loss": tloss, "train_seconds": train_s, "train_cpu_seconds": train_cpu,
           "hook_seconds": handle.seconds if handle else 0.0, "jumps": handle.jumps if handle else 0,
           "undone": handle.undone if handle else 0, "skipped": handle.skipped if handle else 0,
           "jump_steps": [r["step"] for r in handle.history if r["applied"] and not r["undone"]] if handle else [],
           "jump_ahead": [r["steps_ahead"] for r in handle.history if r["applied"] and not r["undone"]] if handle else [],
           "skipped_warmup": handle.skipped_warmup if handle else 0,
           "not_paid": sum(1 for r in handle.history if r.get("paid") is False) if handle else 0,
           "judged": sum(1 for r in handle.history if r.get("paid") is not None) if handle else 0,
           "periods": sorted({r["period"] for r in handle.history}) if handle else []}
    if handle is not None:
        handle.remove()
    return res


def hook_cpu_ms(task: Task, data, nowcaster, repeats: int = 8) -> tuple[float, float]:
    """CPU time of the hook's work, measured apart from the training runs: ``(ms per snapshot, ms per jump)``.

    Timed with this thread's CPU clock on a model of the task after a few optimizer steps (the cost
    does not depend on the values); a fixed period of ``5 * context`` so that the window fills.
    """
    torch.manual_seed(0)
    model = task.make()
    opt = torch.optim.Adam(model.parameters(), lr=task.lr)
    ex = example_input(task.seq) if task.loss == "lm" else data.x_train[:2]
    h = nowcaster.attach(model, opt, period=5 * nowcaster.context, horizon=4, start=10**9, example_input=ex)
    for p in model.parameters():  # a few moves, so that the window is not constant
        p.grad = torch.randn_like(p)
    for _ in range(3):
        opt.step()
    snap, jump = [], []
    for _ in range(repeats):
        c0 = time.thread_time()
        for _ in range(h.context):
            h._snapshot()
        c1 = time.thread_time()
        h._jump()
        c2 = time.thread_time()
        snap.append((c1 - c0) / h.context)
        jump.append(c2 - c1)
    h.remove()
    return 1000 * statistics.median(snap), 1000 * statistics.median(jump)


def first_reach(acc: list[float], target: float) -> int | None:
    for i, a in enumerate(acc):
        if a >= target:
            return i + 1
    return None


class Attached:
    """A nowcaster attached with some hook options other than the defaults (``nino_h8``: ``horizon=8``;
    with ``--ablation``, ``nino_backoff``: ``backoff=True``; ``nino_prev``: ``skip_warmup=False``)."""

    def __init__(self, nowcaster, **options) -> None:
        self.nowcaster, self.options = nowcaster, options

    def __getattr__(self, name: str):
        return getattr(self.nowcaster, name)

    def attach(self, *args, **kwargs):
        return self.nowcaster.attach(*args, **{**kwargs, **self.options})


def load_methods(args) -> dict:
    methods: dict = {"adam": None, "linefit": Nowcaster(kind="linefit")}
    if args.mlp:
        methods["mlp"] = Nowcaster.load(args.mlp)
    methods["nino"] = Nowcaster.pretrained()
    methods["nino_h8"] = Attached(methods["nino"], horizon=8)
    if getattr(args, "ablation", False):
        methods["nino_backoff"] = Attached(methods["nino"], backoff=True)
        methods["nino_prev"] = Attached(methods["nino"], skip_warmup=False, backoff=False)
    members = [Nowcaster.load(p) for p in args.ensemble.split(",") if p]
    if members:
        methods["nino_lm"] = members[0]
        if len(members) > 1:
            methods["nino_ens"] = NowcastEnsemble(members)
    return methods


def summarize(task: Task, runs: dict, cpu_cost: dict, methods: dict, seeds: int) -> dict:
    target = min(statistics.mean(r["acc"][-3:]) for r in runs["adam"])  # the worst seed's final value
    tres = {"target_rule": f"the worst {task.optimizer} seed's final value", "held_out": task.held_out, "budget": task.budget, "lr": task.lr, "batch": task.batch,
            "optimizer": task.optimizer, "target": target, "metric": "val_loss" if task.loss == "lm" else "val_accuracy",
            "methods": {}}
    adam_steps = [first_reach(r["acc"], target) or task.budget for r in runs["adam"]]
    # one plain step time for the task (median over every run of every method, hook time removed), so that
    # wall-clock compares steps and hook overhead rather than the load of the shared CPU
    plain = statistics.median((r["train_seconds"] - r["hook_seconds"]) / task.budget for rs in runs.values() for r in rs)
    plain_cpu = statistics.median(r["train_cpu_seconds"] / task.budget for r in runs["adam"])
    tres["plain_step_ms"], tres["plain_step_cpu_ms"] = 1000 * plain, 1000 * plain_cpu
    for name, rs in runs.items():
        reached = [first_reach(r["acc"], target) for r in rs]
        steps = [x or task.budget for x in reached]
        # the hook's time before the target: the jumps made before it (plus the attach-time preparation)
        frac = [sum(1 for j in r["jump_steps"] if j <= st) / max(1, r["jumps"]) for st, r in zip(steps, rs)]
        overhead = [r["hook_seconds"] * f for f, r in zip(frac, rs)]
        saved = (statistics.mean(adam_steps) - statistics.mean(steps)) * plain
        # the steps the kept jumps went ahead before the target (what the hook's estimates assume they save)
        ahead = statistics.mean(sum(a for j, a in zip(r["jump_steps"], r.get("jump_ahead", [])) if j <= st)
                                for st, r in zip(steps, rs))
        snap_ms, jump_ms = cpu_cost.get(name, (0.0, 0.0))
        per_jump_cpu = (snap_ms * methods[name].context + jump_ms) / 1000 if name in cpu_cost else 0.0
        overhead_cpu = [sum(1 for j in r["jump_steps"] if j <= st) * per_jump_cpu for st, r in zip(steps, rs)]
        saved_cpu = (statistics.mean(adam_steps) - statistics.mean(steps)) * plain_cpu
        red = [100.0 * (1 - st / a) for st, a in zip(steps, adam_steps)]
        tres["methods"][name] = {
            "steps_mean": statistics.mean(steps), "steps_std": statistics.stdev(steps) if len(steps) > 1 else 0.0,
            "steps_per_seed": steps, "reached": sum(x is not None for x in reached),
            "reduction_pct": 100.0 * (1 - statistics.mean(steps) / statistics.mean(adam_steps)),
            "reduction_pct_per_seed_mean": statistics.mean(red),
            "reduction_pct_per_seed_std": statistics.stdev(red) if len(red) > 1 else 0.0,
            "final_metric": statistics.mean(r["acc"][-1] for r in rs),
            "jumps": statistics.mean(r["jumps"] for r in rs), "undone": sum(r["undone"] for r in rs),
            "skipped_jumps": sum(r["skipped"] for r in rs),
            "skipped_warmup": statistics.mean(r.get("skipped_warmup", 0) for r in rs),
            "not_paid": sum(r.get("not_paid", 0) for r in rs), "judged": sum(r.get("judged", 0) for r in rs),
            "periods": sorted({p for r in rs for p in r["periods"]}),
            "hook_ms_per_jump": 1000 * sum(r["hook_seconds"] for r in rs) / max(1, sum(r["jumps"] + r["undone"] for r in rs)),
            "hook_cpu_ms_per_jump": 1000 * per_jump_cpu, "hook_cpu_ms_snapshot_and_jump": [snap_ms, jump_ms],
            "hook_overhead_to_target_s": statistics.mean(overhead), "time_saved_s": saved,
            "overhead_over_saved": (statistics.mean(overhead) / saved) if saved > 0 else None,
            "overhead_over_saved_cpu": (statistics.mean(overhead_cpu) / saved_cpu) if saved_cpu > 0 else None,
            "seconds_to_target": statistics.mean(st * plain + o for st, o in zip(steps, overhead)),
            "steps_ahead_to_target": ahead,
            # steps saved per step jumped ahead: the realized share of the jumps' nominal saving
            "saved_per_step_ahead": (statistics.mean(adam_steps) - statistics.mean(steps)) / ahead if ahead > 0 else None,
        }
    return tres


def goals(results: dict) -> dict:
    """The issue's goals, each checked on the figures of this run (for the graph nowcasters)."""
    out = {}
    tasks = results["tasks"]
    rec = {tn: ("nino_h8" if t["metric"] == "val_loss" else "nino") for tn, t in tasks.items()}
    for name in ("nino", "nino_lm", "nino_ens", "nino_rec"):
        pick = rec if name == "nino_rec" else {tn: name for tn in tasks}  # method judged on each task
        if not all(pick[tn] in t["methods"] for tn, t in tasks.items()):
            continue  # (a method not run on every task is not judged)
        red = {tn: t["methods"][pick[tn]]["reduction_pct"] for tn, t in tasks.items()}
        base = {tn: max((t["methods"][b]["reduction_pct"] for b in ("linefit", "mlp") if b in t["methods"]),
                        default=float("-inf")) for tn, t in tasks.items()}
        ovh = {tn: t["methods"][pick[tn]]["overhead_over_saved"] for tn, t in tasks.items()}
        out[name] = {
            "median_reduction_ge_45": statistics.median(red.values()) >= 45,
            "every_task_ge_30": all(v >= 30 for v in red.values()),
            "lm_ge_30": red.get("lm_gpt", float("-inf")) >= 30,
            # not judged (None) unless both baselines ran on every task
            "ahead_of_baselines_every_task": (all(red[t] > base[t] for t in red) if all(
                b in t["methods"] for t in tasks.values() for b in ("linefit", "mlp")) else None),
            "overhead_le_10pct_every_task": all(v is not None and v <= 0.10 for v in ovh.values()),
            "median_reduction": statistics.median(red.values()), "reductions": red,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tasks", default="mnist1d_cnn,digits_mlp_wide,digits_vit,lm_gpt")
    ap.add_argument("--mlp", default=str(ROOT / "runs/nowcast/nowcaster_mlp"), help="per-parameter baseline ('' skips)")
    ap.add_argument("--ensemble", default=",".join(f"nowcaster_lm_s{k}" for k in range(3)),
                    help="graph nowcasters of meta-training seeds 0..K-1, in seed order (names or folders)")
    ap.add_argument("--methods", default=None, help="only these methods (comma-separated; adam is always run)")
    ap.add_argument("--ablation", action="store_true",
                    help="also run nino_backoff (the shipped nowcaster with backoff=True) and nino_prev (without the "
                         "warm-up rule)")
    ap.add_argument("--eval-every", type=int, default=None, help="validation every N steps (default: the task's)")
    ap.add_argument("--quick", action="store_true", help="budgets / 3")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="results prefix (default benchmarks/results/nowcast unless --quick)")
    ap.add_argument("--render", default=None, metavar="JSON", help="only rewrite the Markdown of a results JSON")
    ap.add_argument("--merge", default=None, metavar="JSON,JSON", help="merge per-task result files into one report")
    args = ap.parse_args()
    if args.render:
        path = Path(args.render)
        write_md(path.with_suffix(""), json.loads(path.read_text()))
        return
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge.split(",")]
        merged = merge(parts)
        write(Path(args.out or ROOT / "benchmarks/results/nowcast"), merged, merged["curves"])
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("weightspace.nowcast.hook").setLevel(logging.WARNING)  # the auto period's per-jump lines
    torch.set_num_threads(args.threads)
    t_start = time.time()
    load_start = list(os.getloadavg())
    methods = load_methods(args)
    if args.methods:
        keep = {"adam", *args.methods.split(",")}
        methods = {k: v for k, v in methods.items() if k in keep}
    results = {"tasks": {}, "seeds": args.seeds, "methods": list(methods),
               "hook": f"library defaults: period='auto' (AUTO_BUDGET {AUTO_BUDGET:.2f}, JUMP_YIELD {JUMP_YIELD:.2f}), horizon decay from 32 over total_steps, "
                       "hold=HOLD_DEFAULT, spike_guard=2.0 with losses reported, skip_warmup=True, backoff=False; "
                       "target: the worst optimizer-alone seed's final value"}
    curves = {}
    for tname in args.tasks.split(","):
        task = TASKS[tname]
        if args.quick:
            task = replace(task, budget=task.budget // 3, warmup=task.warmup // 3)
        if args.eval_every:
            task = replace(task, eval_every=args.eval_every)
        data = load_data(task)
        runs: dict[str, list[dict]] = {}
        for name, nc in methods.items():
            runs[name] = [run_one(task, data, s, nc) for s in range(args.seeds)]
            log.info("%s %s done (%.0f s so far; load %.1f)", tname, name, time.time() - t_start, os.getloadavg()[0])
        cpu_cost = {name: hook_cpu_ms(task, data, nc) for name, nc in methods.items() if nc is not None}
        tres = summarize(task, runs, cpu_cost, methods, args.seeds)
        tres["eval_every"] = task.eval_every
        if task.loss == "lm":
            tres["corpus"] = data.corpus.describe()
        results["tasks"][tname] = tres
        curves[tname] = {n: [sum(v) / len(v) for v in zip(*[r["val_loss"] for r in rs])] for n, rs in runs.items()}
        _print_task(tname, tres)
    results["goals"] = goals(results)
    results["machine"] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__, "threads": args.threads, "cores": os.cpu_count(),
                          "load_average_start": load_start, "load_average_end": list(os.getloadavg())}
    results["nowcasters"] = nowcaster_info(methods)
    results["seconds"] = round(time.time() - t_start, 1)
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["command"] = "python benchmarks/nowcast.py " + " ".join(sys.argv[1:])
    results["curves"] = curves
    out = args.out or (None if args.quick else str(ROOT / "benchmarks/results/nowcast"))
    if out:
        write(Path(out), results, curves)


def merge(parts: list[dict]) -> dict:
    """One report from per-task runs of the same methods and seeds (each run's own baselines kept)."""
    if len({p["seeds"] for p in parts}) != 1:
        raise ValueError("--merge: the parts ran different numbers of seeds; rerun them alike")
    out = {k: parts[0][k] for k in ("seeds", "hook")}
    out["methods"] = list(dict.fromkeys(m for p in parts for m in p["methods"]))
    out["nowcasters"] = {k: v for p in parts for k, v in p["nowcasters"].items()}
    out["tasks"], out["curves"] = {}, {}
    for p in parts:  # a task split over parts by --methods: each part ran the optimizer alone (deterministic)
        for k, v in p["tasks"].items():
            if k in out["tasks"]:
                a, b = out["tasks"][k]["methods"]["adam"], v["methods"]["adam"]
                if a["steps_per_seed"] != b["steps_per_seed"]:
                    raise ValueError(f"--merge: the parts of {k} disagree on the optimizer alone; rerun them")
                out["tasks"][k]["methods"].update({m: r for m, r in v["methods"].items() if m != "adam"})
                out["curves"][k].update(p["curves"][k])
            else:
                out["tasks"][k] = v
                out["curves"][k] = dict(p["curves"][k])
    out["goals"] = goals(out)
    out["parts"] = [{"command": p["command"], "date": p["date"], "seconds": p["seconds"], "machine": p["machine"]}
                    for p in parts]
    m = dict(parts[0]["machine"])
    m["load_average_start"] = max((p["machine"]["load_average_start"] for p in parts), key=lambda v: v[0])
    m["load_average_end"] = max((p["machine"]["load_average_end"] for p in parts), key=lambda v: v[0])
    out["machine"] = m
    out["seconds"] = max(p["seconds"] for p in parts)
    out["date"] = max(p["date"] for p in parts)
    out["command"] = "; ".join(p["command"] for p in parts) + " (separate runs of the same protocol and seeds), " \
        "merged by python benchmarks/nowcast.py --merge"
    return out


def nowcaster_info(methods: dict) -> dict:
    """What each learned method was meta-trained on (from its checkpoint's extras)."""
    out = {}
    for name, nc in methods.items():
        if nc is None or not nc.learned:
            continue
        members = list(nc.members) if isinstance(nc, NowcastEnsemble) else [nc]
        out[name] = [{"kind": m.kind, "command": m.info.get("command"), "trajectories": m.info.get("trajectories"),
                      "meta_steps": m.info.get("steps"), "seconds": m.info.get("seconds"),
                      "seed": (m.info.get("meta_train") or {}).get("seed"),
                      "val_loss": m.info.get("val/loss"), "val_linefit_loss": m.info.get("val/linefit_loss")}
                     for m in members]
    return out


def _print_task(tname: str, tres: dict) -> None:
    print(f"\n{tname}  (target {tres['target']:.4f}, budget {tres['budget']})")
    for n, m in tres["methods"].items():
        print(f"{n:<9} {m['steps_mean']:7.1f} ± {m['steps_std']:6.1f}  reached {m['reached']}  "
              f"{m['reduction_pct']:6.1f}%  jumps {m['jumps']:.1f}  overhead/saved {m['overhead_over_saved']}")


def write(prefix: Path, results: dict, curves: dict) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps(results, indent=1))
    write_md(prefix, results)
    plot(prefix, results, curves)


def write_md(prefix: Path, results: dict) -> None:
    mach = results["machine"]
    lines = ["# Nowcasting benchmark", "",
             f"Command: `{results['command']}` ({results['date']}); {results['seeds']} seeds; {mach['processor']}, "
             f"torch {mach['torch']}, {mach['threads']} torch thread(s), {mach['cores']} cores shared with other jobs "
             f"(highest load average {mach['load_average_start'][0]:.1f} at a start, {mach['load_average_end'][0]:.1f} at "
             f"an end), so wall-clock figures are noisy; {results['seconds']:.0f} s in all.", "",
             f"Hooks: {results['hook']}. Protocol and the ensemble rule: the docstring of `benchmarks/nowcast.py`.", ""]
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    num = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    for tname, t in results["tasks"].items():
        what = "validation loss (nats/byte)" if t["metric"] == "val_loss" else "validation accuracy"
        tgt = -t["target"] if t["metric"] == "val_loss" else t["target"]
        lines += [f"## {tname} — held out: {t['held_out']}", "",
                  f"Target {what} {tgt:.4f} ({t.get('target_rule', 'mean of ' + t['optimizer'] + chr(39) + 's final value')}), budget {t['budget']} steps, "
                  f"lr {t['lr']}, batch {t['batch']}, validation every {t.get('eval_every', TASKS[tname].eval_every if tname in TASKS else '?')} steps. Plain step {t['plain_step_ms']:.2f} ms wall, "
                  f"{t['plain_step_cpu_ms']:.2f} ms CPU (medians)."
                  + (f" Corpus: {t['corpus']}." if "corpus" in t else ""), "",
                  "| method | steps to target (mean ± std) | reached | fewer steps vs optimizer | per-seed mean ± std | "
                  "final | jumps (undone) | jumps that did not pay / judged | periods | hook ms / jump (wall / CPU) | "
                  "overhead / time saved (wall / CPU) | steps saved per step ahead |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for n, m in t["methods"].items():
            fin = -m["final_metric"] if t["metric"] == "val_loss" else m["final_metric"]
            per = ",".join(map(str, m["periods"][:4])) + ("…" if len(m["periods"]) > 4 else "")
            lines.append(f"| {n} | {m['steps_mean']:.1f} ± {m['steps_std']:.1f} | {m['reached']}/{results['seeds']} | "
                         f"{m['reduction_pct']:.1f}% | {m['reduction_pct_per_seed_mean']:.1f} ± "
                         f"{m['reduction_pct_per_seed_std']:.1f}% | {fin:.4f} | {m['jumps']:.1f} ({m['undone']}) | "
                         f"{m.get('not_paid', '–')} / {m.get('judged', '–')} | "
                         f"{per or '–'} | {m['hook_ms_per_jump']:.1f} / {m['hook_cpu_ms_per_jump']:.1f} | "
                         f"{pct(m['overhead_over_saved'])} / {pct(m['overhead_over_saved_cpu'])} | "
                         f"{num(m.get('saved_per_step_ahead'))} |")
        lines.append("")
    lines += ["## Goals (issue #27), checked on this run", ""]
    for n, g in results.get("goals", {}).items():
        mark = lambda b: "not checked (baselines not run)" if b is None else "met" if b else "not met"  # noqa: E731
        label = f"{n} (nino_h8 on the language model, nino elsewhere)" if n == "nino_rec" else n
        lines.append(f"- {label}: median reduction {g['median_reduction']:.1f}% (≥ 45%: {mark(g['median_reduction_ge_45'])}); "
                     f"every task ≥ 30%: {mark(g['every_task_ge_30'])}; LM ≥ 30%: {mark(g['lm_ge_30'])}; ahead of "
                     f"Linefit and the per-parameter MLP on every task: {mark(g['ahead_of_baselines_every_task'])}; "
                     f"overhead ≤ 10% of the time saved on every task: {mark(g['overhead_le_10pct_every_task'])}")
    lines += ["", "## Nowcasters", ""]
    for n, ms in results.get("nowcasters", {}).items():
        for i in ms:
            lines.append(f"- {n}: `{i['command']}` (seed {i['seed']}; {i['kind']}; {i['trajectories']} trajectories, "
                         f"{i['meta_steps']} meta-training steps, {i['seconds']} s; validation L1 "
                         f"{i['val_loss']:.3f} vs Linefit {i['val_linefit_loss']:.3f})")
    prefix.with_suffix(".md").write_text("\n".join(lines) + "\n")


def plot(prefix: Path, results: dict, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["tasks"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for j, tname in enumerate(names):
        ax = axes[0, j]
        for n, c in curves[tname].items():
            ax.plot(range(1, len(c) + 1), c, label=n, lw=1.1)
        t = results["tasks"][tname]
        if t["metric"] == "val_loss":
            ax.axhline(-t["target"], color="k", ls=":", lw=1)
        ax.set_title(tname)
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("validation loss (mean over seeds)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(prefix.with_suffix(".png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
