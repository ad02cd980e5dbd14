"""Zoo generation throughput: the batched trainer vs one model at a time, on this machine.

For each built-in zoo (``digits_cnn`` and ``digits_mlp`` by default) this script

1. builds the whole zoo ``--repeats`` times from scratch with ``model_zoo.generate`` (batched trainer,
   storage included) and times each build (the dataset is loaded once before, so neither leg pays
   the one-time scikit-learn import);
2. trains a uniform random sample of ``--seq-models`` runs of the same zoo one by one with a plain
   PyTorch loop (``nn.Module`` + ``torch.optim``, same initialization, data order, dropout, L2 and
   checkpoint evaluations, no storage) and times each; the legs alternate (a build, a share of the
   one-by-one runs, the next build, ...) so that drifts of the machine's speed fall on both;
3. reports models/minute for both, the speed-up with its standard error, and the final test-accuracy
   distribution.

Writes ``benchmarks/results/zoo.json``, ``zoo.md`` and ``zoo.png``.

    python benchmarks/zoo.py                      # the figures in the README (quiet machine)
    python benchmarks/zoo.py --size 100 --seq-models 4 --repeats 1 --zoos digits_mlp   # a quick check
    python benchmarks/zoo.py --threads 1 --zoos digits_cnn:300 digits_mlp   # on a busy machine

``--threads 2 1`` measures both legs at each thread count: with 2 threads the batched trainer uses both
cores while a tiny model trained one by one barely can; with 1 thread the ratio is per core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import model_zoo
from model_zoo.generator import normalize_config, trainer_config
from model_zoo.trainer import _attach_dropout, _Dropout, _epoch_order, _subsets, init_state
from weightspace.cli.main import config_dir

RESULTS = Path(__file__).resolve().parent / "results"


def zoo_cfg(name: str, size: int) -> dict:
    from omegaconf import OmegaConf

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("zoo", overrides=[f"zoo={name}", f"size={size}"])
    z = OmegaConf.to_container(cfg.zoo, resolve=True)
    z["size"] = size
    return normalize_config(z)


def train_one_by_one(run: model_zoo.RunConfig, data: model_zoo.Dataset, tcfg: model_zoo.TrainerConfig) -> float:
    """Plain PyTorch training of one run (the usual way); returns its final test accuracy."""
    model = model_zoo.instantiate(run.arch)
    _attach_dropout(model)
    params, _ = init_state(model, [run])
    model.load_state_dict({k: v[0] for k, v in params.items()}, strict=False)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": run.l2}, {"params": rest, "weight_decay": 0.0}]
    opt = {"adam": lambda: torch.optim.Adam(groups, lr=run.lr, eps=tcfg.eps),
           "sgd": lambda: torch.optim.SGD(groups, lr=run.lr),
           "rmsprop": lambda: torch.optim.RMSprop(groups, lr=run.lr, alpha=tcfg.rmsprop_alpha, eps=tcfg.eps)}[run.optimizer]()
    subsets = _subsets([run], len(data.x_train))
    schedule = set(tcfg.schedule())
    rate = torch.tensor(run.dropout)

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            F.cross_entropy(model(data.x_train[torch.from_numpy(subsets[0])]), data.y_train[torch.from_numpy(subsets[0])])
            acc = float((model(data.x_test).argmax(-1) == data.y_test).float().mean())
        model.train()
        return acc

    acc = evaluate() if 0 in schedule else float("nan")
    model.train()
    for epoch in range(1, tcfg.epochs + 1):
        idx, w, steps = _epoch_order([run], subsets, epoch, run.batch_size)
        for s in range(int(steps[0])):
            sl = slice(s * run.batch_size, (s + 1) * run.batch_size)
            b = idx[0, sl][w[0, sl] > 0]
            _Dropout.rate = rate if run.dropout > 0 else None
            loss = F.cross_entropy(model(data.x_train[b]), data.y_train[b])
            _Dropout.rate = None
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch in schedule:
            acc = evaluate()
    return acc


def bench(name: str, size: int, seq_models: int, out_root: Path, repeats: int = 1) -> dict:
    cfg = zoo_cfg(name, size)
    out = out_root / name
    # Loaded (and its libraries imported) before either leg is timed; generate() loads it again.
    data = model_zoo.load_dataset(cfg["data"]["name"], **{k: v for k, v in cfg["data"].items() if k != "name"})
    tcfg = trainer_config(cfg)
    # A uniform random sample of the zoo's runs (fixed seed), timed one by one.
    all_runs = model_zoo.sample_runs(cfg["space"], cfg["arch"], size, cfg["seed"])
    pick = np.random.default_rng(0).choice(size, size=min(seq_models, size), replace=False)
    runs = [all_runs[i] for i in sorted(pick)]
    # The legs alternate (build, a share of the one-by-one runs, build, ...), so a drift of the
    # machine's speed over the run (tens of percent within minutes here) falls on both legs alike.
    walls, cpus, per_model, per_model_cpu, seq_acc = [], [], [], [], []
    for rep in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        t0, c0 = time.perf_counter(), time.process_time()
        zoo = model_zoo.generate(cfg, out, progress=True)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        for run in runs[rep::repeats]:
            torch.manual_seed(run.seed)
            t, c = time.perf_counter(), time.process_time()
            seq_acc.append(train_one_by_one(run, data, tcfg))
            per_model.append(time.perf_counter() - t)
            per_model_cpu.append(time.process_time() - c)
    t_batched, c_batched = float(np.mean(walls)), float(np.mean(cpus))
    acc = np.asarray(zoo.final_metrics()["test_accuracy"], dtype=float)
    loss = np.asarray(zoo.final_metrics()["test_loss"], dtype=float)
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    per_model, per_model_cpu = np.array(per_model), np.array(per_model_cpu)
    n = len(per_model)
    sem = float(per_model.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    # Speed-up = (estimated one-by-one time of the whole zoo) / (batched build time). Its uncertainty:
    # the standard error of the sampled mean time per model, and the spread of repeated builds.
    speedup = float(per_model.mean() * size / t_batched)
    rel = np.hypot(sem / per_model.mean(), (np.std(walls, ddof=1) / t_batched) if repeats > 1 else 0.0)
    chunks = json.loads((out / "zoo.json").read_text())["chunks"]
    return {
        "zoo": name,
        "size": size,
        "epochs": tcfg.epochs,
        "checkpoint_epochs": list(tcfg.schedule()),
        "arch": cfg["arch"],
        "groups_trained": len(chunks),
        "batched": {"seconds": t_batched, "seconds_per_build": walls, "cpu_seconds": c_batched,
                    "models_per_minute": 60.0 * size / t_batched, "storage_bytes": disk,
                    "note": "full builds incl. sampling, training, metrics at every checkpoint and storage"},
        "sequential": {"models_timed": n, "runs_timed": [int(r.index) for r in runs],
                       "seconds_per_model_mean": float(per_model.mean()), "seconds_per_model_sem": sem,
                       "seconds_per_model_std": float(per_model.std(ddof=1)) if n > 1 else 0.0,
                       "cpu_seconds_per_model_mean": float(per_model_cpu.mean()),
                       "models_per_minute": 60.0 / float(per_model.mean()),
                       "estimated_seconds_for_zoo": float(per_model.mean() * size),
                       "final_test_accuracy_of_timed_runs": seq_acc},
        "speedup": {"wall": speedup, "wall_se": float(speedup * rel),
                    "cpu": float(per_model_cpu.mean() * size / c_batched)},
        "final_test_accuracy": {"mean": float(np.nanmean(acc)), "std": float(np.nanstd(acc)),
                                "min": float(np.nanmin(acc)), "median": float(np.nanmedian(acc)),
                                "max": float(np.nanmax(acc)),
                                "share_at_most_chance_plus_0.02": float((acc <= 0.12).mean()),
                                "share_at_least_0.9": float((acc >= 0.9).mean()),
                                "share_at_least_0.95": float((acc >= 0.95).mean()),
                                "diverged_runs": int((~np.isfinite(loss)).sum())},
        "_acc": acc.tolist(),
    }


def write_outputs(results: list[dict], meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    first = [r for i, r in enumerate(results) if r["zoo"] not in {q["zoo"] for q in results[:i]}]  # a histogram per zoo
    fig, axes = plt.subplots(1, len(first) + 1, figsize=(4.2 * (len(first) + 1), 3.3))
    for ax, r in zip(axes, first):
        ax.hist(r["_acc"], bins=np.linspace(0, 1, 41), color="#3b6ea5")
        ax.set_title(f"{r['zoo']}: {r['size']} runs, {r['epochs']} epochs", fontsize=9)
        ax.set_xlabel("final test accuracy")
        ax.set_ylabel("runs")
    ax = axes[-1]
    names = [f"{r['zoo']}\n{r['threads']} thr." for r in results]
    x = np.arange(len(results))
    ax.bar(x - 0.2, [r["batched"]["models_per_minute"] for r in results], 0.4, label="batched")
    ax.bar(x + 0.2, [r["sequential"]["models_per_minute"] for r in results], 0.4, label="one by one")
    for i, r in enumerate(results):
        ax.annotate(f"{r['speedup']['wall']:.1f}x", (i, r["batched"]["models_per_minute"]), ha="center",
                    va="bottom", fontsize=8)
    ax.set_xticks(x, names, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("models / minute")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "zoo.png", dpi=120)
    plt.close(fig)

    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    (RESULTS / "zoo.json").write_text(json.dumps({"meta": meta, "results": clean}, indent=1) + "\n")
    lines = [
        "# Zoo generation benchmark",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; torch {meta['torch']}. {meta['note']}",
        "",
        "| zoo | threads | runs | epochs | batched build (s) | batched models/min | one by one (s/model, mean ± s.e.) | "
        "one-by-one models/min | speed-up (± s.e.) | speed-up by CPU time | final test acc mean ± std | median | max "
        "| ≤ chance+2% | ≥ 90% |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in clean:
        s, a, q, b = r["sequential"], r["final_test_accuracy"], r["speedup"], r["batched"]
        builds = " / ".join(f"{w:.1f}" for w in b["seconds_per_build"])
        lines.append(
            f"| {r['zoo']} | {r['threads']} | {r['size']} | {r['epochs']} | {builds} ({b['cpu_seconds']:.1f} CPU) | "
            f"{b['models_per_minute']:.0f} | {s['seconds_per_model_mean']:.3f} ± {s['seconds_per_model_sem']:.3f} "
            f"(n={s['models_timed']}) | {s['models_per_minute']:.0f} | {q['wall']:.1f} ± {q['wall_se']:.1f} | "
            f"{q['cpu']:.1f} | {a['mean']:.3f} ± {a['std']:.3f} | "
            f"{a['median']:.3f} | {a['max']:.3f} | {a['share_at_most_chance_plus_0.02']:.0%} | {a['share_at_least_0.9']:.0%} |")
    lines += ["", "Batched: full builds of the zoo (sampling, training, metrics at every checkpoint, safetensors "
              "storage), each from scratch; the table lists every build's time and uses their mean. One by one: a "
              "plain `torch.optim` loop per model (same init, data order, dropout, L2, checkpoint evaluations; no "
              "storage) over a uniform random sample of the zoo's runs, timed in shares after each build (the legs "
              "alternate, so a drift of the machine's speed falls on both). Speed-up = mean one-by-one time per model "
              "× runs ÷ batched build time; its standard error combines the sampling error of the mean time per "
              "model with the spread of the builds. Both legs of a row use the row's torch thread count. CPU time: the "
              "process's own core time (`time.process_time`); speed-up by CPU time = mean one-by-one CPU time "
              "per model × runs ÷ batched CPU time.", ""]
    (RESULTS / "zoo.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoos", nargs="+", default=["digits_cnn", "digits_mlp"],
                    help="zoo names, optionally NAME:SIZE to override --size for one zoo")
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--threads", type=int, nargs="+", default=[0],
                    help="torch thread counts, each measured in turn (0: torch's default)")
    ap.add_argument("--seq-models", type=int, default=40, help="runs timed one by one (a random sample)")
    ap.add_argument("--repeats", type=int, default=2, help="batched builds of each zoo (timing noise)")
    ap.add_argument("--out", default="/tmp/weightspace_bench_zoos")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    load0 = os.getloadavg()
    default_threads = torch.get_num_threads()
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        for z in args.zoos:
            name, _, size = z.partition(":")
            r = bench(name, int(size) if size else args.size, args.seq_models, Path(args.out), args.repeats)
            r["threads"] = torch.get_num_threads()
            results.append(r)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/zoo.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k not in ("out", "note") and v != ap.get_default(k)),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
        "torch": torch.__version__,
        "threads": sorted({r["threads"] for r in results}),
        "load_average_before": load0,
        "load_average_after": os.getloadavg(),
        "note": args.note or (f"Load average (1 min) {load0[0]:.1f} before the run and {os.getloadavg()[0]:.1f} after "
                              "(the latter includes the benchmark's own threads)."),
    }
    write_outputs(results, meta)


if __name__ == "__main__":
    main()
