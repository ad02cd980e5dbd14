"""Benchmark of the graph hypernetwork on held-out architectures (digits test split).

For every split of :mod:`weightspace.hyper.family` (``unseen`` in-distribution, ``wide``,
``deep``, ``activation``) and ``--per-split`` architectures never drawn in training:

* zero-shot test accuracy of the predicted weights, of PyTorch's default random init, and of the
  same architecture trained by Adam with the zoo's batched trainer (``model_zoo.train_group``,
  ``--epochs`` epochs, lr 1e-3, batch 64, N(0, 0.1²) init), and the ratio predicted / trained;
* for ``--finetune`` architectures per split: Adam steps (lr 1e-3, batch 64, test accuracy checked
  every 5 steps) to reach ``--target`` test accuracy from the predicted weights and from random init.

Writes ``benchmarks/results/hyper.json``, ``hyper.md`` and ``hyper.png``; prints the table.

    python benchmarks/hyper.py --per-split 50 --finetune 10
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from model_zoo import RunConfig, TrainerConfig, instantiate, load_dataset, train_group  # noqa: E402
from weightspace.hyper import SPLITS, ArchSpace, accuracy, load_hypernetwork, steps_to_target  # noqa: E402

log = logging.getLogger("benchmarks.hyper")


def adam_trained_accuracy(config: dict, data, epochs: int, seed: int) -> float:
    run = RunConfig(index=0, seed=seed, lr=1e-3, optimizer="adam", l2=0.0, dropout=0.0, init_std=0.1,
                    train_fraction=1.0, batch_size=64, arch=config)
    res = train_group([run], data, TrainerConfig(epochs=epochs, checkpoints=(epochs,)))
    return float(res[0].metrics[-1]["test_accuracy"])


def censored(rows: list[dict], key: str, max_steps: int) -> list[float]:
    """Steps to target per architecture; runs that never reach it count as ``max_steps``."""
    return [float(r[key]) if r[key] is not None else float(max_steps) for r in rows]


def family(c: dict) -> str:
    return "MLP" if c["_target_"].endswith("MLP") else "CNN"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="hypernetwork checkpoint directory or shipped name (default: the shipped one)")
    ap.add_argument("--per-split", type=int, default=50)
    ap.add_argument("--finetune", type=int, default=10, help="architectures per split for fine-tuning")
    ap.add_argument("--epochs", type=int, default=20, help="epochs of the Adam-trained reference")
    ap.add_argument("--target", type=float, default=0.8, help="fine-tuning target test accuracy")
    ap.add_argument("--max-steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite hyper.md/png from an existing hyper.json in --out (no measurement)")
    args = ap.parse_args()
    if args.render_only:
        render(Path(args.out), args)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    data = load_dataset("digits", seed=args.seed)
    hyper = load_hypernetwork(args.checkpoint)
    space = ArchSpace.from_dict(hyper.meta["space"]) if "space" in hyper.meta else ArchSpace()
    xtr, ytr, xte, yte = data.x_train, data.y_train, data.x_test, data.y_test

    results: dict[str, dict] = {}
    for split in SPLITS:
        configs = space.split(split, args.per_split, seed=args.seed)
        rows = []
        for i, c in enumerate(tqdm(configs, desc=split, disable=args.no_progress)):
            torch.manual_seed(args.seed * 100_003 + i)
            rand_acc = accuracy(instantiate(c), xte, yte)
            pred_acc = accuracy(hyper(instantiate(c), seed=args.seed), xte, yte)
            trained = adam_trained_accuracy(c, data, args.epochs, args.seed + i)
            row = {"config": c, "family": family(c), "predicted": pred_acc, "random": rand_acc, "trained": trained}
            if i < args.finetune:
                torch.manual_seed(args.seed * 100_003 + i)
                kw = dict(max_steps=args.max_steps, seed=args.seed + i)
                row["steps_predicted"] = steps_to_target(hyper(instantiate(c), seed=args.seed), xtr, ytr, xte, yte,
                                                         args.target, **kw)
                torch.manual_seed(args.seed * 100_003 + i)
                row["steps_random"] = steps_to_target(instantiate(c), xtr, ytr, xte, yte, args.target, **kw)
            rows.append(row)
        pred = np.array([r["predicted"] for r in rows])
        rand = np.array([r["random"] for r in rows])
        trn = np.array([r["trained"] for r in rows])
        ft = [r for r in rows if "steps_predicted" in r]

        sp, sr = (censored(ft, k, args.max_steps) for k in ("steps_predicted", "steps_random"))
        results[split] = {
            "architectures": len(rows),
            "mlp": sum(r["family"] == "MLP" for r in rows),
            "cnn": sum(r["family"] == "CNN" for r in rows),
            "zero_shot/predicted": float(pred.mean()), "zero_shot/predicted_std": float(pred.std()),
            "zero_shot/random_init": float(rand.mean()),
            "trained/adam": float(trn.mean()),
            "ratio/predicted_to_trained": float(pred.mean() / trn.mean()),
            "ratio/mean_per_architecture": float(np.mean(pred / np.maximum(trn, 1e-6))),
            "finetune/architectures": len(ft),
            "finetune/median_steps_predicted": float(np.median(sp)) if ft else None,
            "finetune/median_steps_random": float(np.median(sr)) if ft else None,
            "finetune/mean_steps_predicted": float(np.mean(sp)) if ft else None,
            "finetune/mean_steps_random": float(np.mean(sr)) if ft else None,
            "finetune/reached_predicted": sum(r["steps_predicted"] is not None for r in ft),
            "finetune/reached_random": sum(r["steps_random"] is not None for r in ft),
            "per_architecture": rows,
        }
        log.info("%s: predicted %.3f random %.3f trained %.3f ratio %.3f", split, pred.mean(), rand.mean(),
                 trn.mean(), pred.mean() / trn.mean())

    wall = time.perf_counter() - t_start
    meta = {
        "command": "python benchmarks/hyper.py " + " ".join(sys.argv[1:]),
        "checkpoint": args.checkpoint or "shipped (weightspace/checkpoints/hypernet)",
        "checkpoint_meta": {k: v for k, v in getattr(hyper, "meta", {}).items() if k != "space"},
        "dataset": f"sklearn digits, model_zoo.load_dataset('digits', seed={args.seed}): 1438 train / 359 test",
        "finetune_target": args.target, "finetune_max_steps": args.max_steps, "trained_epochs": args.epochs,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (load average "
                   f"{os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}, {args.threads} thread(s), CPU only",
        "wall_seconds": round(wall, 1),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hyper.json").write_text(json.dumps({"meta": meta, "splits": results}, indent=1) + "\n")
    print(render(out, args))


def render(out: Path, args) -> str:
    """Write ``hyper.md`` and ``hyper.png`` from ``hyper.json``; return the Markdown tables."""
    d = json.loads((out / "hyper.json").read_text())
    meta, results = d["meta"], d["splits"]
    args.target = meta["finetune_target"]
    table = markdown(results, args) + "\n\nBy family (zero-shot predicted / Adam-trained, ratio):\n\n" + by_family(results)
    (out / "hyper.md").write_text(
        "# Hypernetwork: predicted weights for held-out architectures (digits)\n\n"
        f"Command: `{meta['command']}`; {meta['machine']}; {meta['wall_seconds']} s; {meta['date']}.\n\n"
        + table + "\n")
    plot(results, out / "hyper.png")
    return table


def by_family(results: dict) -> str:
    lines = ["| split | MLP | CNN |", "|---|---|---|"]
    for s, r in results.items():
        cells = []
        for f in ("MLP", "CNN"):
            rows = [x for x in r["per_architecture"] if x["family"] == f]
            p, t = np.mean([x["predicted"] for x in rows]), np.mean([x["trained"] for x in rows])
            cells.append(f"{p:.3f} / {t:.3f} ({p / t:.2f}, n={len(rows)})")
        lines.append(f"| {s} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def markdown(results: dict, args) -> str:
    head = ("| split | archs (MLP/CNN) | predicted (zero-shot) | random init | Adam-trained | ratio | "
            f"steps to {args.target:.0%}: predicted / random (median, n) |")
    lines = [head, "|" + "---|" * 7]
    for s, r in results.items():
        ft = (f"{r['finetune/median_steps_predicted']:.0f} / {r['finetune/median_steps_random']:.0f} "
              f"({r['finetune/architectures']}; reached {r['finetune/reached_predicted']} / "
              f"{r['finetune/reached_random']})" if r["finetune/architectures"] else "-")
        lines.append(f"| {s} | {r['architectures']} ({r['mlp']}/{r['cnn']}) | {r['zero_shot/predicted']:.3f} | "
                     f"{r['zero_shot/random_init']:.3f} | {r['trained/adam']:.3f} | "
                     f"{r['ratio/predicted_to_trained']:.2f} | {ft} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    splits = list(results)
    x = np.arange(len(splits))
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for k, (key, label) in enumerate([("zero_shot/random_init", "random init"),
                                      ("zero_shot/predicted", "predicted (zero-shot)"),
                                      ("trained/adam", "Adam-trained")]):
        ax.bar(x + (k - 1) * 0.27, [results[s][key] for s in splits], 0.27, label=label)
    ax.set_xticks(x, splits)
    ax.set_ylabel("digits test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
