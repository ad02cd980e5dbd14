"""Learning curve of generalization prediction: test tau against the number of training runs.

    weightspace zoo mnist1d_cnn size=2000 out=ZOOS/mnist1d_cnn_2k zoo.data.num_samples=16000 zoo.data.test_fraction=0.5 threads=1
    python benchmarks/predict_scaling.py --zoo mnist1d_cnn_2k=ZOOS/mnist1d_cnn_2k --sizes 200,400,800 [--zoo NAME=DIR --sizes N,...] \
        [--seeds 3] [--methods gmn_stats_rank,statnn,statnn_gbm] [--cache runs/predict_cache] [--only-seed S ...] \
        [--out benchmarks/results]

Per seed the zoo gets the same run-level 80/10/10 split as ``benchmarks/predict.py``; a point of the
curve trains each method on the first ``n`` runs of the train split and reports on the whole test split
(selection on the whole validation split), so all points of a seed are scored on the same networks.
Trained methods (all but ``statnn_gbm``) get ``epochs x full / n`` epochs at size ``n``: every point
takes the same number of optimizer steps as the full train split, so the curve measures data, not
compute. The full train split is the last point; with ``--cache`` it is read from (or written to) the
same cache entries as ``benchmarks/predict.py`` (same zoo name, method, seed and settings).
Several ``--zoo`` give one table and one panel per zoo. ``--only-seed S`` (repeatable, with ``--cache``)
makes a worker that trains and caches only those seeds, so workers on separate cores share a long run;
a last run without it writes the results. Writes ``predict_scaling.json``, ``predict_scaling.md`` and
``predict_scaling.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

import model_zoo
from weightspace.predict import PredictConfig, label_noise_ceiling, load_zoo_graphs, run_predict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict import METHODS, add_only_seed, check_only_seed, mean_std, parse_zoo, test_correctness  # noqa: E402

log = logging.getLogger("benchmarks.predict_scaling")
KEYS = ("test/tau", "test/r2", "test/mae", "test_trained/tau", "train/time_s")


def subset(data, n: int):
    """``data`` with only the first ``n`` train runs (validation and test unchanged)."""
    return replace(data, graphs={**data.graphs, "train": data.graphs["train"][:n]},
                   hparams={**data.hparams, "train": data.hparams["train"][:n]})


def curve(zname: str, zpath: str, sizes_arg: str, args, methods: list[str], seeds) -> dict:
    """One zoo's learning curve: per method and size, the KEYS over ``seeds`` (cache-aware)."""
    zoo = model_zoo.load(zpath)
    correct = test_correctness(zoo)
    train_acc = zoo.final_metrics()["train_accuracy"]
    per: dict = {}
    refs: dict = {"ceiling": [], "train_acc_tau": []}
    cached: list[str] = []
    full = None
    for seed in seeds:
        data = load_zoo_graphs(zoo, "test_accuracy", (0.8, 0.1, 0.1), seed)
        full = len(data.graphs["train"])
        sizes = sorted({n for n in map(int, sizes_arg.split(",")) if 0 < n < full} | {full})
        test_runs = [int(g.run) for g in data.graphs["test"]]
        refs["ceiling"].append(label_noise_ceiling(correct[test_runs], seed=seed)["tau"])
        refs["train_acc_tau"].append(float(kendalltau(train_acc[test_runs], correct[test_runs].mean(1)).statistic))
        for n in sizes:
            for m in methods:
                spec = dict(METHODS[m])
                spec.setdefault("epochs", args.gmn_epochs)
                if n < full and spec["epochs"] > 0:
                    spec["epochs"] = int(round(spec["epochs"] * full / n))
                suffix = "" if n == full else f"_n{n}"
                path = Path(args.cache) / f"{zname}_{m}_{seed}{suffix}.json" if args.cache else None
                if path is not None and path.is_file():
                    met = json.loads(path.read_text())
                    cached.append(f"{m}/{seed}/{n}")
                else:
                    cfg = PredictConfig(seed=seed, split_seed=seed, progress=False, device="cpu", **spec)
                    pred, met = run_predict(None, cfg, data=subset(data, n))
                    met = {k: v for k, v in met.items() if k != "history"}
                    if path is not None:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        pred.save_pretrained(path.with_suffix(""))
                        path.write_text(json.dumps(met))
                log.info("%s %s n=%d seed %d: tau %.3f r2 %.3f", zname, m, n, seed, met["test/tau"], met["test/r2"])
                for k in KEYS:
                    per.setdefault(m, {}).setdefault(n, {}).setdefault(k, []).append(met.get(k, float("nan")))
    return {
        "zoo": {"name": zname, "path": zpath, "runs": len(zoo), "train_runs_full": full,
                "n_test_samples": int(correct.shape[1])},
        "curve": {m: {str(n): {k: mean_std(v) for k, v in d.items()} for n, d in sorted(per[m].items())}
                  for m in methods},
        "references": {k: mean_std(v) for k, v in refs.items()},
        "cached": cached,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", required=True, action="append", metavar="NAME=DIR", help="a zoo (repeatable)")
    ap.add_argument("--sizes", action="append", default=None,
                    help="train-run counts below the full train split (default 200,400,800); once for every zoo, "
                    "or once per --zoo in the same order")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", default="gmn_stats_rank,statnn,statnn_gbm")
    ap.add_argument("--gmn-epochs", type=int, default=15, help="epochs of the graph metanetworks on the full split")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=None, help="folder of per (zoo, method, seed, size) results to resume from")
    add_only_seed(ap)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    zoos = [parse_zoo(ap, z) for z in args.zoo]
    sizes = args.sizes or ["200,400,800"]
    if len(sizes) not in (1, len(zoos)):
        ap.error(f"give --sizes once, or once per --zoo ({len(zoos)}), not {len(sizes)} times")
    sizes = sizes * len(zoos) if len(sizes) == 1 else sizes
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {sorted(METHODS)}")
    check_only_seed(ap, args)
    torch.set_num_threads(args.threads)
    t_all = time.time()
    seeds = args.only_seed or range(args.seeds)
    per_zoo = {name: curve(name, path, sz, args, methods, seeds) for (name, path), sz in zip(zoos, sizes)}
    if args.only_seed:
        log.info("worker for seeds %s done; run without --only-seed to write the results", args.only_seed)
        return
    results = {
        "zoos": per_zoo,
        "config": {"seeds": args.seeds, "gmn_epochs": args.gmn_epochs, "threads": args.threads, "methods": methods,
                   "epochs_rule": "epochs x full / n at n train runs (equal optimizer steps at every point)"},
        "total_time_s": time.time() - t_all,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "note": "2 CPU cores shared with other jobs while measuring"},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predict_scaling.json").write_text(json.dumps(results, indent=1))
    write_markdown(results, out / "predict_scaling.md")
    plot(results, out / "predict_scaling.png")
    print((out / "predict_scaling.md").read_text())


def write_markdown(results: dict, path: Path) -> None:
    c = results["config"]
    lines = [f"# Generalization prediction: test τ against training runs (mean ± std over {c['seeds']} seeds)", "",
             f"Command: `{results['command']}`", "",
             f"Trained methods take {c['epochs_rule']}; every point of a zoo and seed is scored on the same test runs."]
    n_cached = 0
    for zname, zr in results["zoos"].items():
        z = zr["zoo"]
        sizes = sorted({int(n) for m in c["methods"] for n in zr["curve"][m]})
        lines += ["", f"## {zname}", "",
                  f"Zoo `{z['path']}`: {z['runs']} runs, the full train split holds {z['train_runs_full']} "
                  f"({z['n_test_samples']} test samples per network).", "",
                  "| method | " + " | ".join(f"n={n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
        for m in c["methods"]:
            cells = []
            for n in sizes:
                r = zr["curve"][m].get(str(n))
                cells.append(f"{r['test/tau']['mean']:.3f} ± {r['test/tau']['std']:.3f}" if r else "–")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        ref = zr["references"]
        lines += ["", f"References on the same test runs: label-noise ceiling τ {ref['ceiling']['mean']:.3f} ± "
                  f"{ref['ceiling']['std']:.3f}; the runs' own train accuracy as the prediction τ "
                  f"{ref['train_acc_tau']['mean']:.3f} ± {ref['train_acc_tau']['std']:.3f}.", "",
                  "R² (mean over seeds):", "", "| method | " + " | ".join(f"n={n}" for n in sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for m in c["methods"]:
            lines.append(f"| {m} | " + " | ".join(
                f"{zr['curve'][m][str(n)]['test/r2']['mean']:.3f}" if str(n) in zr["curve"][m] else "–"
                for n in sizes) + " |")
        n_cached += len(zr["cached"])
    lines += ["", f"{n_cached} zoo/method/seed/size results were read from `--cache` (earlier runs or workers "
              f"with the same settings); total {results['total_time_s']:.0f} s in this run. Machine: "
              f"{results['machine']['platform']} ({results['machine']['note']})."]
    path.write_text("\n".join(lines) + "\n")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zoos = results["zoos"]
    fig, axes = plt.subplots(1, len(zoos), figsize=(5.0 * len(zoos), 4.2), sharey=True, squeeze=False)
    for ax, (zname, zr) in zip(axes[0], zoos.items()):
        for m in results["config"]["methods"]:
            pts = sorted((int(n), r["test/tau"]) for n, r in zr["curve"][m].items())
            x = np.array([n for n, _ in pts])
            y = np.array([r["mean"] for _, r in pts])
            e = np.array([r["std"] for _, r in pts])
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=m)
        ref = zr["references"]
        ax.axhline(ref["ceiling"]["mean"], color="k", ls="--", lw=0.8, label="label-noise ceiling")
        ax.axhline(ref["train_acc_tau"]["mean"], color="gray", ls=":", lw=0.8,
                   label="train accuracy (not from weights)")
        sizes = sorted({int(n) for m in results["config"]["methods"] for n in zr["curve"][m]})
        ax.set(xscale="log", xlabel="training runs", title=f"{zname} ({zr['zoo']['runs']} runs)")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
    axes[0][0].set_ylabel("test Kendall τ")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
