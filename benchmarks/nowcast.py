"""Nowcasting benchmark: optimizer steps to a target validation accuracy, with and without jumps.

Protocol (NiNo, Knyazev et al., ICLR 2025, at a CPU scale): for every held-out task and seed, Adam
alone and Adam + a nowcasting hook (``linefit``, the per-parameter ``mlp`` nowcaster without the
graph, the graph nowcaster ``nino``) start from the same initialization and see the same batches
in the same order; validation accuracy is measured after every optimizer step; the target is the
mean over seeds of Adam's accuracy at the end of its budget; the metric is the first step reaching
it. Budgets of 1,000-1,500 steps (NiNo's protocol uses long budgets and far jumps, so that a jump's
cost is small beside the steps it saves). Hook hyperparameters (period, largest horizon) are chosen per
method on an in-distribution task of the meta-training family, by the time to target with the hook's
cost included (see :func:`tune`), never on the held-out tasks; what the hook holds back from its
jumps (``hold``: nothing, or attention's query/key/value maps) is chosen per method on an
in-distribution transformer task (see :func:`choose_hold`).

    python benchmarks/nowcast.py                      # full run -> benchmarks/results/nowcast.{json,md,png}
    python benchmarks/nowcast.py --seeds 3 --quick    # smoke run (no files written unless --out)
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
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_zoo.archs import MLP, SmallCNN, TinyViT  # noqa: E402
from model_zoo.data import load_dataset  # noqa: E402
from weightspace.nowcast import HOLD_DEFAULT, Nowcaster  # noqa: E402

log = logging.getLogger("benchmarks.nowcast")


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str
    flatten: bool
    make: object  # () -> nn.Module
    lr: float
    batch: int
    budget: int
    held_out: str
    eval_every: int = 1
    loss: str = "ce"  # "ce": classification, scored by validation accuracy; "mse": regression, scored by
    #                   minus the validation loss (so that for both a run reaches the target from below)
    data_kw: tuple = ()  # extra arguments of load_dataset


TASKS = {
    "mnist1d_cnn": Task("mnist1d_cnn", "mnist1d", False, lambda: SmallCNN(channels=16, layers=3, kernel_size=5, dims=1),
                        1e-2, 32, 1500, "unseen dataset (MNIST-1D) and unseen 1-D convolutions", eval_every=4),
    "digits_mlp_wide": Task("digits_mlp_wide", "digits", True, lambda: MLP(width=128, depth=2), 1e-3, 32, 1000,
                            "unseen width (128 vs at most 48)", eval_every=2),
    "digits_vit": Task("digits_vit", "digits", False, lambda: TinyViT(), 3e-3, 32, 1500,
                       "unseen dataset for a transformer (meta-training sees transformers only as 1-D TinyViTs "
                       "regressing synthetic data)", eval_every=4),
    # in-distribution task of the meta-training family, used only to choose hook hyperparameters
    "digits_mlp_tune": Task("digits_mlp_tune", "digits", True, lambda: MLP(width=32, depth=2), 3e-3, 32, 900,
                            "none (meta-training family; tuning only)", eval_every=2),
    # in-distribution transformer task (the meta-training zoo synthetic_vit_long's architecture and data
    # generator, a teacher of another seed), used only to choose what the hook holds (``hold``)
    "synthetic_vit_tune": Task("synthetic_vit_tune", "synthetic", False,
                               lambda: TinyViT(in_channels=1, num_classes=4, image_size=16, patch=2, dim=16, heads=2,
                                               depth=1, mlp_ratio=2, dims=1),
                               3e-3, 32, 1500, "none (meta-training family; tuning only)", eval_every=4, loss="mse",
                               data_kw=(("num_samples", 1024), ("in_features", 16), ("out_features", 4),
                                        ("hidden", 32), ("generator_seed", 6))),
}
# ``hold`` options compared on synthetic_vit_tune: jump every parameter (NiNo), or leave attention's
# query/key/value maps to the optimizer (the hook's default)
HOLDS = {"none": (), "attn_qkv": HOLD_DEFAULT}

# hook hyperparameters tried on the tuning task: period (optimizer steps between jumps; the 5 snapshots
# are period / 5 steps apart) and the largest horizon k_max (snapshot spacings; decays to 1 over the budget)
PERIODS = (10, 20, 50, 100)
K_MAX = (4, 8, 16, 32)  # those above a nowcaster's horizons are skipped
# ``nino_lean``: the graph nowcaster at the fastest setting whose hook time before the target stays within
# this share of the time it saves on the tuning task (the overhead goal, imposed while tuning)
LEAN_SHARE = 0.10


def run_one(task: Task, data, seed: int, nowcaster: Nowcaster | None, hook_kw: dict) -> dict:
    """Train one model for the task's budget; validation after every ``eval_every`` steps (and the last).

    Between measurements the last value is carried, so a target is credited at the first measured
    step reaching it (a resolution of ``eval_every`` steps, the same for every method).
    """
    torch.manual_seed(seed)
    model = task.make()
    opt = torch.optim.Adam(model.parameters(), lr=task.lr)
    xtr, ytr, xte, yte = data.x_train, data.y_train, data.x_test, data.y_test
    lossf = F.mse_loss if task.loss == "mse" else F.cross_entropy
    handle = None
    if nowcaster is not None:
        handle = nowcaster.attach(model, opt, total_steps=task.budget, example_input=xtr[:2], **hook_kw)
    gen = torch.Generator().manual_seed(10_000 + seed)
    order = torch.empty(0, dtype=torch.long)
    acc, vloss, tloss = [], [], []
    train_s = train_cpu = 0.0
    for _ in range(task.budget):
        if order.numel() < task.batch:
            order = torch.cat([order, torch.randperm(len(xtr), generator=gen)])
        idx, order = order[: task.batch], order[task.batch:]
        c0 = time.thread_time()  # CPU clock outside the wall-clock window (its system call may yield the CPU)
        t0 = time.perf_counter()
        model.train()
        loss = lossf(model(xtr[idx]), ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        train_s += time.perf_counter() - t0
        train_cpu += time.thread_time() - c0
        tloss.append(loss.item())
        if (len(tloss) % task.eval_every) and len(tloss) != task.budget:  # not measured: carry the last value
            acc.append(acc[-1] if acc else (float("-inf") if task.loss == "mse" else 0.0))
            vloss.append(vloss[-1] if vloss else float("nan"))
            continue
        model.eval()
        with torch.no_grad():
            out = model(xte)
            vloss.append(float(lossf(out, yte)))
            acc.append(-vloss[-1] if task.loss == "mse" else float((out.argmax(-1) == yte).float().mean()))
    res = {"acc": acc, "val_loss": vloss, "train_loss": tloss, "train_seconds": train_s, "train_cpu_seconds": train_cpu,
           "hook_seconds": handle.seconds if handle else 0.0, "jumps": handle.jumps if handle else 0,
           "skipped": handle.skipped if handle else 0}
    if handle is not None:
        handle.remove()
    return res


def hook_cpu_ms(task: Task, data, nowcaster: Nowcaster, hook_kw: dict, repeats: int = 12) -> tuple[float, float]:
    """CPU time of the hook's work, measured apart from the training runs: ``(ms per snapshot, ms per jump)``.

    The hook takes ``context`` snapshots per jump; both are timed with this thread's CPU clock on a model of
    the task after a few Adam steps (the cost does not depend on the values).
    """
    torch.manual_seed(0)
    model = task.make()
    opt = torch.optim.Adam(model.parameters(), lr=task.lr)
    kw = {k: v for k, v in hook_kw.items() if k != "horizon"}
    h = nowcaster.attach(model, opt, horizon=4, start=10**9, example_input=data.x_train[:2], **kw)
    x, y = data.x_train[: task.batch], data.y_train[: task.batch]
    lossf = F.mse_loss if task.loss == "mse" else F.cross_entropy
    for _ in range(h.period):
        loss = lossf(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
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


def load_methods(args) -> dict[str, Nowcaster | None]:
    methods: dict[str, Nowcaster | None] = {"adam": None, "linefit": Nowcaster(kind="linefit")}
    mlp_path = Path(args.mlp)
    if (mlp_path / "config.json").exists() or mlp_path.with_suffix(".json").exists():  # or the former file pair
        methods["mlp"] = Nowcaster.load(mlp_path)
    else:
        log.warning("no per-parameter baseline at %s (make it with: weightspace nowcast model.kind=mlp "
                    "out=%s); skipped", mlp_path, mlp_path)
    methods["nino"] = Nowcaster.load(args.nowcaster) if args.nowcaster else Nowcaster.pretrained()
    return methods


def tune(args, methods) -> dict[str, dict]:
    """Choose (period, largest horizon) per method on the in-distribution tuning task.

    The criterion is the time to target in units of a plain optimizer step, the hook's cost included:
    ``steps + (hook seconds before the target) / (seconds of a plain step)``, each run measured against
    its own plain steps (so the machine's load cancels out), averaged over the tuning seeds.
    """
    task = TASKS["digits_mlp_tune"]
    data = _data(task)
    seeds = list(range(100, 100 + args.tune_seeds))
    adam = [run_one(task, data, s, None, {}) for s in seeds]
    target = statistics.mean(statistics.mean(r["acc"][-3:]) for r in adam)
    best = {"adam": {"tune_steps": statistics.mean(first_reach(r["acc"], target) or task.budget for r in adam),
                     "tune_target": target}}
    for name, nc in methods.items():
        if nc is None:
            continue
        scores, steps_of = {}, {}
        for period in PERIODS:
            for k in K_MAX:
                if k > nc.horizons:
                    continue
                kw = {"period": period, "horizon": None if k == nc.horizons else _decay(k, task.budget)}
                runs = [run_one(task, data, s, nc, kw) for s in seeds]
                steps = [first_reach(r["acc"], target) or task.budget for r in runs]
                cost = [st + (r["hook_seconds"] * st / task.budget)
                        / max(1e-9, (r["train_seconds"] - r["hook_seconds"]) / task.budget)
                        for st, r in zip(steps, runs)]
                scores[(period, k)] = statistics.mean(cost)
                steps_of[(period, k)] = statistics.mean(steps)
        (period, k), sc = min(scores.items(), key=lambda kv: kv[1])
        best[name] = {"period": period, "k_max": k, "tune_steps": steps_of[(period, k)], "tune_cost": sc,
                      "tune_table": {f"period={p},k_max={kk}": {"steps": steps_of[(p, kk)], "cost": v}
                                     for (p, kk), v in scores.items()}}
        log.info("tuned %s: period %d, k_max %d (%.1f steps, %.1f step-equivalents with the hook, to %.3f)",
                 name, period, k, steps_of[(period, k)], sc, target)
        if name == "nino":  # a second operating point: the overhead goal as a constraint
            adam_steps = best["adam"]["tune_steps"]
            share = {key: (scores[key] - steps_of[key]) / (adam_steps - steps_of[key])
                     for key in scores if steps_of[key] < adam_steps}
            ok = [key for key, v in share.items() if v <= LEAN_SHARE]
            key = (min(ok, key=lambda kk: scores[kk]) if ok else min(share, key=share.get)) if share else (period, k)
            best["nino_lean"] = {"period": key[0], "k_max": key[1], "tune_steps": steps_of[key],
                                 "tune_cost": scores[key], "tune_overhead_share": share.get(key),
                                 "constraint_met": bool(ok)}
            log.info("tuned nino_lean: period %d, k_max %d (%.1f steps, overhead %.1f%% of the time saved)",
                     key[0], key[1], steps_of[key], 100 * (share.get(key) or float("nan")))
    return best


def choose_hold(args, methods, best: dict) -> dict:
    """Choose ``hold`` (:data:`HOLDS`) per learned method on the in-distribution transformer task.

    Each method runs at its tuned period and largest horizon, with each option; the option with fewer
    steps to the target (Adam's end-of-budget validation loss there) is kept (the hook's cost is the
    same for both). ``nino_lean`` takes ``nino``'s choice.
    """
    task = TASKS["synthetic_vit_tune"]
    data = _data(task)
    seeds = list(range(100, 100 + args.tune_seeds))
    adam = [run_one(task, data, s, None, {}) for s in seeds]
    target = statistics.mean(statistics.mean(r["acc"][-3:]) for r in adam)
    table = {"adam": statistics.mean(first_reach(r["acc"], target) or task.budget for r in adam)}
    for name, nc in methods.items():
        if nc is None or name not in best:
            continue
        h = best[name]
        steps = {}
        for opt, hold in HOLDS.items():
            kw = {"period": h["period"], "horizon": None if h["k_max"] == nc.horizons else _decay(h["k_max"], task.budget),
                  "hold": hold}
            runs = [run_one(task, data, s, nc, kw) for s in seeds]
            steps[opt] = statistics.mean(first_reach(r["acc"], target) or task.budget for r in runs)
        pick = min(steps, key=steps.get)
        h["hold"], h["hold_steps"] = pick, steps
        table[name] = steps
        log.info("hold for %s: %s (%s; Adam %.1f)", name, pick, steps, table["adam"])
    if "nino_lean" in best and "nino" in best:
        best["nino_lean"]["hold"] = best["nino"]["hold"]
    return {"task": task.name, "budget": task.budget, "seeds": args.tune_seeds, "target_val_loss": -target,
            "steps": table}


def _data(task: Task):
    return load_dataset(task.dataset, flatten=task.flatten, **dict(task.data_kw))


def _decay(k_max: int, total: int):
    from weightspace.nowcast import horizon_schedule

    return horizon_schedule(k_max, 1, total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--tasks", default="mnist1d_cnn,digits_mlp_wide,digits_vit")
    ap.add_argument("--nowcaster", default=None, help="path of the graph nowcaster (default: the shipped one)")
    ap.add_argument("--mlp", default=str(ROOT / "runs/nowcast/nowcaster_mlp"))
    ap.add_argument("--tune-seeds", type=int, default=5)
    ap.add_argument("--no-tune", action="store_true", help="period 20, k_max = nowcaster horizons for all")
    ap.add_argument("--quick", action="store_true", help="budgets / 3")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="results prefix (default benchmarks/results/nowcast unless --quick)")
    ap.add_argument("--render", default=None, metavar="JSON", help="only rewrite the Markdown table of a results JSON")
    args = ap.parse_args()
    if args.render:
        path = Path(args.render)
        write_md(path.with_suffix(""), json.loads(path.read_text()))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    t_start = time.time()
    load_start = list(os.getloadavg())
    methods = load_methods(args)
    if args.no_tune:
        hp = {n: {"period": 20, "k_max": nc.horizons, "hold": "attn_qkv"} for n, nc in methods.items()
              if nc is not None}
        hold_tuning = None
    else:
        hp = tune(args, methods)
        hold_tuning = choose_hold(args, methods, hp)
    hp = {k: v for k, v in hp.items() if "period" in v} | {"tuning_adam": hp.get("adam", {})}
    if "nino_lean" in hp:
        methods["nino_lean"] = methods["nino"]
    results = {"tasks": {}, "hook": hp, "seeds": args.seeds,
               "tuning": {"task": "digits_mlp_tune", "budget": TASKS["digits_mlp_tune"].budget, "periods": list(PERIODS),
                          "k_max": list(K_MAX), "seeds": args.tune_seeds},
               "hold_tuning": hold_tuning}
    curves = {}
    for tname in args.tasks.split(","):
        task = TASKS[tname]
        if args.quick:
            task = Task(**{**task.__dict__, "budget": task.budget // 3})
        data = _data(task)
        runs: dict[str, list[dict]] = {}
        kws: dict[str, dict] = {}
        for name, nc in methods.items():
            kw = {}
            if nc is not None:
                h = hp[name]
                kw = {"period": h["period"], "horizon": None if h["k_max"] == nc.horizons else _decay(h["k_max"], task.budget),
                      "hold": HOLDS[h.get("hold", "attn_qkv")]}
            kws[name] = kw
            runs[name] = []
            for s in range(args.seeds):
                runs[name].append(run_one(task, data, s, nc, kw))
            log.info("%s %s done", tname, name)
        # the target: Adam's end-of-budget accuracy (mean over seeds of the last 3 measurements)
        target = statistics.mean(statistics.mean(r["acc"][-3:]) for r in runs["adam"])
        tres = {"held_out": task.held_out, "budget": task.budget, "lr": task.lr, "batch": task.batch,
                "target_accuracy": target, "methods": {}}
        adam_steps = [first_reach(r["acc"], target) or task.budget for r in runs["adam"]]
        # one plain step time for the task (median over every run of every method, hook time removed), so
        # that wall-clock compares steps and hook overhead rather than the load of the shared CPU
        plain = statistics.median((r["train_seconds"] - r["hook_seconds"]) / task.budget
                                  for rs in runs.values() for r in rs)
        tres["plain_step_ms"] = 1000 * plain
        # the same in CPU time of the training thread (Adam alone), insensitive to the other processes on a
        # shared machine; the hook's CPU cost is measured apart (hook_cpu_ms)
        plain_cpu = statistics.median(r["train_cpu_seconds"] / task.budget for r in runs["adam"])
        tres["plain_step_cpu_ms"] = 1000 * plain_cpu
        cpu_cost = {name: hook_cpu_ms(task, data, nc, kws[name]) for name, nc in methods.items() if nc is not None}
        for name, rs in runs.items():
            reached = [first_reach(r["acc"], target) for r in rs]
            steps = [x or task.budget for x in reached]
            # the hook's time spent before the target (its cost is spread evenly over the run's jumps)
            overhead = [r["hook_seconds"] * st / task.budget for st, r in zip(steps, rs)]
            saved = (statistics.mean(adam_steps) - statistics.mean(steps)) * plain
            snap_ms, jump_ms = cpu_cost.get(name, (0.0, 0.0))
            per_jump_cpu = (snap_ms * methods[name].context + jump_ms) / 1000 if name in cpu_cost else 0.0
            overhead_cpu = [r["jumps"] * per_jump_cpu * st / task.budget for st, r in zip(steps, rs)]
            saved_cpu = (statistics.mean(adam_steps) - statistics.mean(steps)) * plain_cpu
            tres["methods"][name] = {
                "steps_mean": statistics.mean(steps),
                "steps_median": statistics.median(steps),
                "steps_per_seed": steps,
                "reached": sum(x is not None for x in reached),
                "reduction_pct": 100.0 * (1 - statistics.mean(steps) / statistics.mean(adam_steps)),
                "speedup": statistics.mean(adam_steps) / statistics.mean(steps),
                "final_accuracy": statistics.mean(r["acc"][-1] for r in rs),
                "best_accuracy": statistics.mean(max(r["acc"]) for r in rs),
                "jumps": statistics.mean(r["jumps"] for r in rs),
                "skipped_jumps": sum(r["skipped"] for r in rs),
                "seconds_to_target": statistics.mean(st * plain + o for st, o in zip(steps, overhead)),
                "measured_step_ms": 1000 * sum(r["train_seconds"] - r["hook_seconds"] for r in rs)
                / (task.budget * len(rs)),
                "hook_ms_per_jump": 1000 * sum(r["hook_seconds"] for r in rs) / max(1, sum(r["jumps"] for r in rs)),
                "hook_seconds_per_run": statistics.mean(r["hook_seconds"] for r in rs),
                "hook_overhead_to_target_s": statistics.mean(overhead),
                "time_saved_s": saved,
                "overhead_over_saved": (statistics.mean(overhead) / saved) if saved > 0 else None,
                "hook_cpu_ms_per_jump": 1000 * per_jump_cpu,
                "hook_cpu_ms_snapshot_and_jump": [snap_ms, jump_ms],
                "overhead_over_saved_cpu": (statistics.mean(overhead_cpu) / saved_cpu) if saved_cpu > 0 else None,
                "steps_std": statistics.stdev(steps) if len(steps) > 1 else 0.0,
            }
        results["tasks"][tname] = tres
        curves[tname] = {n: [sum(v) / len(v) for v in zip(*[r["val_loss"] for r in rs])] for n, rs in runs.items()}
        curves[tname + "/acc"] = {n: [sum(v) / len(v) for v in zip(*[r["acc"] for r in rs])] for n, rs in runs.items()}
        _print_task(tname, tres)
    results["machine"] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__, "threads": args.threads,
                          "note": "CPU shared with other jobs during the run; wall-clock figures are noisy",
                          "load_average_start": load_start, "load_average_end": list(os.getloadavg())}
    results["nowcasters"] = nowcaster_info(methods)
    results["seconds"] = round(time.time() - t_start, 1)
    results["command"] = "python benchmarks/nowcast.py " + " ".join(sys.argv[1:])
    out = args.out or (None if args.quick else str(ROOT / "benchmarks/results/nowcast"))
    if out:
        write(Path(out), results, curves)


def nowcaster_info(methods: dict) -> dict:
    """What each learned method was meta-trained on (from its checkpoint's JSON)."""
    out = {}
    for name, nc in methods.items():
        info = getattr(nc, "info", None) or {}
        if nc is None or nc.kind == "linefit" or name == "nino_lean":
            continue
        out[name] = {"kind": nc.kind, "horizons": nc.horizons, "command": info.get("command"),
                     "trajectories": info.get("trajectories"), "meta_steps": info.get("steps"),
                     "val_loss": info.get("val/loss"), "val_linefit_loss": info.get("val/linefit_loss")}
    return out


def _print_task(tname: str, tres: dict) -> None:
    print(f"\n{tname}  (target {tres['target_accuracy']:.3f}, budget {tres['budget']})")
    print(f"{'method':<8} {'steps':>7} {'reached':>8} {'reduction':>10} {'speedup':>8} {'final acc':>10} {'s->target':>10}")
    for n, m in tres["methods"].items():
        print(f"{n:<8} {m['steps_mean']:7.1f} {m['reached']:>8} {m['reduction_pct']:9.1f}% {m['speedup']:8.2f} "
              f"{m['final_accuracy']:10.3f} {m['seconds_to_target']:10.2f}")


def write(prefix: Path, results: dict, curves: dict) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps(results, indent=1))
    write_md(prefix, results)
    plot(prefix, results, curves)


def write_md(prefix: Path, results: dict) -> None:
    lines = ["# Nowcasting benchmark", "", f"Command: `{results['command']}`; {results['seeds']} seeds; "
             f"{results['machine']['processor']}, torch {results['machine']['torch']}, "
             f"{results['machine']['threads']} thread(s); {results['machine']['note']} (load average "
             f"{results['machine'].get('load_average_start', [float('nan')])[0]:.1f} at the start, "
             f"{results['machine'].get('load_average_end', [float('nan')])[0]:.1f} at the end, on "
             f"{os.cpu_count()} cores); {results['seconds']:.0f} s in all.", ""]
    for tname, t in results["tasks"].items():
        lines += [f"## {tname} — held out: {t['held_out']}", "",
                  f"Target validation accuracy {t['target_accuracy']:.3f} (mean of Adam's final accuracy), "
                  f"budget {t['budget']} steps, Adam lr {t['lr']}, batch {t['batch']}.", "",
                  f"Plain optimizer step {t['plain_step_ms']:.2f} ms wall-clock, "
                  f"{t.get('plain_step_cpu_ms', float('nan')):.2f} ms CPU time (medians over all runs).", "",
                  "| method | steps to target (mean ± std) | median | reached | reduction vs Adam | speedup | final acc | "
                  "s to target | hook ms / jump (wall / CPU) | hook overhead / time saved (wall / CPU) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        pct = lambda v: "–" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        for n, m in t["methods"].items():
            lines.append(f"| {n} | {m['steps_mean']:.1f} ± {m.get('steps_std', 0.0):.1f} | {m['steps_median']:.0f} | "
                         f"{m['reached']}/{results['seeds']} | {m['reduction_pct']:.1f}% | {m['speedup']:.2f}× | "
                         f"{m['final_accuracy']:.3f} | {m['seconds_to_target']:.2f} | "
                         f"{m['hook_ms_per_jump']:.1f} / {m.get('hook_cpu_ms_per_jump', float('nan')):.1f} | "
                         f"{pct(m['overhead_over_saved'])} / {pct(m.get('overhead_over_saved_cpu'))} |")
        lines.append("")
    tg = results.get("tuning")
    grid = (f" {tg['task']}, budget {tg['budget']} steps, {tg['seeds']} seeds; grid: periods "
            f"{', '.join(map(str, tg['periods']))} × largest horizons {', '.join(map(str, tg['k_max']))}; "
            "criterion: time to target with the hook's cost, in plain steps") if tg else ""
    lines += [f"Hook hyperparameters (chosen on the in-distribution tuning task{grid}; horizons decay to 1 "
              "snapshot spacing over the budget, NiNo's schedule):", ""]
    for n, h in results["hook"].items():
        if "period" in h:
            lines.append(f"- {n}: period {h['period']}, largest horizon {h['k_max']} snapshot spacings "
                         + (f"(tuning task: {h['tune_steps']:.1f} steps to target" if 'tune_steps' in h else "")
                         + (f", {h['tune_cost']:.1f} with the hook's time in plain steps)" if 'tune_cost' in h
                            else (")" if 'tune_steps' in h else ""))
                         + (f"; hold: {h['hold']}" if 'hold' in h else ""))
    if "nino_lean" in results["hook"]:
        lean = results["hook"]["nino_lean"]
        lines.append(f"- nino_lean is the same graph nowcaster at the fastest setting whose hook time before the "
                     f"target stays within {100 * LEAN_SHARE:.0f}% of the time it saves on the tuning task "
                     + ("(met there: " if lean.get("constraint_met") else "(no setting met it; the lowest share: ")
                     + f"{100 * (lean.get('tune_overhead_share') or float('nan')):.1f}%)")
    for n, i in results.get("nowcasters", {}).items():
        lines.append(f"- {n}: `{i['command']}` ({i['kind']}, {i['horizons']} horizons; {i['trajectories']} "
                     f"trajectories, {i['meta_steps']} meta-training steps; validation L1 {i['val_loss']:.3f} vs "
                     f"Linefit {i['val_linefit_loss']:.3f})")
    if results["hook"].get("tuning_adam"):
        lines.append(f"- Adam alone on the tuning task: {results['hook']['tuning_adam']['tune_steps']:.1f} steps")
    ht = results.get("hold_tuning")
    if ht:
        opts = " / ".join(HOLDS)
        lines += ["", f"What the hook holds (``hold``; none: every parameter jumps, NiNo; attn_qkv: attention's "
                  f"query/key/value maps stay with the optimizer), chosen per method on the in-distribution "
                  f"transformer task {ht['task']} (1-D TinyViT regressing a synthetic teacher of a seed unseen in "
                  f"meta-training; budget {ht['budget']}, {ht['seeds']} seeds, target validation MSE "
                  f"{ht['target_val_loss']:.4f}; Adam {ht['steps']['adam']:.1f} steps), steps to target {opts}:", ""]
        for n, st in ht["steps"].items():
            if n != "adam":
                lines.append(f"- {n}: " + " / ".join(f"{st[o]:.1f}" for o in HOLDS))
    prefix.with_suffix(".md").write_text("\n".join(lines) + "\n")


def plot(prefix: Path, results: dict, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["tasks"])
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 6.4), squeeze=False)
    for j, tname in enumerate(names):
        for n, c in curves[tname].items():
            axes[0, j].plot(range(1, len(c) + 1), c, label=n, lw=1.2)
        for n, c in curves[tname + "/acc"].items():
            axes[1, j].plot(range(1, len(c) + 1), c, label=n, lw=1.2)
        axes[1, j].axhline(results["tasks"][tname]["target_accuracy"], color="k", ls=":", lw=1)
        axes[0, j].set_title(tname)
        axes[0, j].set_yscale("log")
        axes[0, j].set_ylabel("val/loss (mean over seeds)")
        axes[1, j].set_ylabel("val/accuracy")
        axes[1, j].set_xlabel("optimizer step")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(prefix.with_suffix(".png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
