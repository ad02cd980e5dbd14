"""Generalization prediction benchmark: graph metanetwork and probing vs StatNN (MLP and boosting) vs
hyperparameters only, on a homogeneous and a heterogeneous digits zoo built by ``model_zoo``.

    weightspace zoo digits_cnn size=1000 zoo.trainer.epochs=6 out=ZOOS/digits_cnn
    python benchmarks/predict.py --make-hetero-zoo ZOOS/digits_hetero --hetero-size 1000   # HETERO_ZOO below
    weightspace zoo mnist1d_cnn size=1000 out=ZOOS/mnist1d_cnn zoo.data.num_samples=16000 zoo.data.test_fraction=0.5
    python benchmarks/predict.py --cnn-zoo ZOOS/digits_cnn --hetero-zoo ZOOS/digits_hetero \
        [--zoo mnist1d_cnn=ZOOS/mnist1d_cnn] [--seeds 3] [--gmn-epochs 15] [--threads 1] [--out benchmarks/results]

``--cache DIR`` keeps each zoo/method/seed result so that an interrupted or extended run resumes; with
it, ``--only-seed S`` (repeatable) makes a worker that trains and caches only those seeds and writes no
results, so workers on separate cores share a long run; a last run without it writes the results.

Each seed draws its own run-level 80/10/10 split and initialization; the test split is reported
(selection on validation tau). Writes ``predict.json``, ``predict.md`` and ``predict.png`` (predicted
vs true test accuracy for seed 0, and a PCA of the metanetwork's embeddings of the heterogeneous zoo).
Every number is measured in this run.

Two references per zoo and seed, on the same test runs: the *label-noise ceiling*
(:func:`~weightspace.predict.label_noise_ceiling`: the tau a perfect predictor reaches against
accuracies measured on the zoo's finite test set, by bootstrapping the test samples; digits has 359) and
the tau of the runs' final *train* accuracy, a strong signal that is not read from the weights.
The MNIST-1D zoo above is generated with 8,000 test sequences, so its targets are far less noisy.

The heterogeneous zoo is ``configs/zoo/digits_hetero.yaml``'s six architectures (SmallCNN of
2-4 layers, 8-32 channels, 3x3/5x5 kernels, and a SmallResNet) with Adam and ReLU fixed: the
shipped config also varies optimizer and activation, which splits 200 runs into 53 training groups
that the batched trainer cannot share (measured here: about 90 minutes on the shared 2-core
machine, against a few minutes for 6 groups).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

import model_zoo
from weightspace.predict import (
    PredictConfig,
    label_noise_ceiling,
    load_predictor,
    load_zoo_graphs,
    run_predict,
)

log = logging.getLogger("benchmarks.predict")

_PROBE = dict(num_probes=256, hidden=(256, 256))
METHODS = {
    "gmn": dict(metanet="gmn", model=dict(hidden=32, num_layers=3, embed_dim=64, layer_bins=4), lr=2e-3,
                batch_size=16),
    "gmn_stats": dict(metanet="gmn", model=dict(hidden=32, num_layers=3, embed_dim=64, layer_bins=4, stats=True),
                      lr=2e-3, batch_size=16),
    "gmn_stats_rank": dict(metanet="gmn", model=dict(hidden=32, num_layers=3, embed_dim=64, layer_bins=4, stats=True),
                           lr=2e-3, batch_size=16, rank_weight=1.0),
    "probe": dict(metanet="probe", model=dict(_PROBE, stats=False), lr=1e-3, batch_size=32, rank_weight=0.5),
    "probe_stats": dict(metanet="probe", model=dict(_PROBE, stats=True), lr=1e-3, batch_size=32, rank_weight=0.5),
    "statnn": dict(metanet="statnn", model=dict(hidden=(1000, 1000), dropout=0.1), epochs=60, lr=1e-3),
    "statnn_gbm": dict(metanet="statnn_gbm", model={}, epochs=0),
    "hparams": dict(metanet="hparams", model=dict(hidden=(256, 256), dropout=0.1), epochs=60, lr=1e-3),
}
_HETERO_ARCHS = [
    {"_target_": "model_zoo.archs.SmallCNN", "channels": 8, "layers": 2, "kernel_size": 3, "strides": 2},
    {"_target_": "model_zoo.archs.SmallCNN", "channels": 16, "layers": 3, "kernel_size": 3, "strides": 2},
    {"_target_": "model_zoo.archs.SmallCNN", "channels": 32, "layers": 3, "kernel_size": 3, "strides": 2},
    {"_target_": "model_zoo.archs.SmallCNN", "channels": 16, "layers": 4, "kernel_size": 3, "strides": 2},
    {"_target_": "model_zoo.archs.SmallCNN", "channels": 16, "layers": 2, "kernel_size": 5, "strides": 2},
    {"_target_": "model_zoo.archs.SmallResNet", "width": 8, "blocks": [1, 1]},
]
HETERO_ZOO = {
    "name": "digits_hetero_adam", "size": 200, "seed": 0, "chunk_size": 250,
    "data": {"name": "digits", "test_fraction": 0.2, "seed": 0, "flatten": False},
    "arch": {"_target_": "model_zoo.archs.SmallCNN", "in_channels": 1, "num_classes": 10, "channels": 16,
             "layers": 3, "kernel_size": 3, "strides": 2, "activation": "relu", "dims": 2},
    "space": {"lr": {"log_uniform": [5e-4, 5e-2]}, "optimizer": "adam", "l2": {"log_uniform": [1e-8, 1e-2]},
              "dropout": {"uniform": [0.0, 0.5]}, "init_std": {"log_uniform": [1e-3, 0.5]},
              "train_fraction": {"uniform": [0.1, 1.0]}, "batch_size": 32, "arch": {"choice": _HETERO_ARCHS}},
    "trainer": {"epochs": 6},
}
KEYS = ("test/tau", "test/r2", "test/mae", "test_trained/tau", "test_trained/r2", "train/time_s",
        "train/graphs_per_s", "test/graphs_per_s_inference")


def wait_for_zoo(path: str, timeout: float = 1800) -> model_zoo.Zoo:
    t0 = time.time()
    while True:
        try:
            return model_zoo.load(path)
        except (model_zoo.ZooFormatError, FileNotFoundError) as e:
            if time.time() - t0 > timeout:
                raise
            log.info("waiting for %s (%s)", path, e)
            time.sleep(20)


def test_correctness(zoo: model_zoo.Zoo) -> np.ndarray:
    """``[runs, test samples]``: whether each run's final network classifies each test sample correctly
    (the zoo's embedded dataset, rebuilt exactly); checked against the stored test accuracies."""
    ds = zoo.dataset()
    if list(zoo.final_metrics()["run"]) != list(range(len(zoo))):
        raise RuntimeError(f"{zoo.path}: runs are not numbered 0..{len(zoo) - 1}")
    rows = []
    with torch.no_grad():
        for i in range(len(zoo)):
            rows.append((zoo.build_model(i)(ds.x_test).argmax(1) == ds.y_test).numpy())
    correct = np.stack(rows)
    stored = np.asarray(zoo.final_metrics()["test_accuracy"], dtype=np.float64)
    ok = np.isfinite(stored)
    # the zoo evaluated its networks batched; a single network's logits differ by float rounding,
    # which can flip the argmax of a sample whose two largest logits (nearly) tie
    diff = np.abs(correct.mean(1)[ok] - stored[ok]) * correct.shape[1]  # in samples
    if diff.max(initial=0.0) > 2.5:
        worst = int(np.flatnonzero(ok)[diff.argmax()])
        raise RuntimeError(f"{zoo.path}: re-evaluated test accuracies differ from the stored ones (run {worst}: "
                           f"{diff.max():.1f} of {correct.shape[1]} test samples)")
    if (diff > 0.5).any():
        log.info("%s: %d runs' re-evaluated accuracies differ from the stored ones by 1-2 test samples "
                 "(near-tied logits under float rounding)", zoo.path, int((diff > 0.5).sum()))
    return correct


def mean_std(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(np.nanmean(a)), "std": float(np.nanstd(a)), "values": [float(v) for v in a]}


def parse_zoo(ap: argparse.ArgumentParser, item: str) -> tuple[str, str]:
    """``NAME=DIR`` of a ``--zoo`` argument."""
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
        ap.error(f"--zoo takes NAME=DIR, got {item!r}")
    return name, path


def add_only_seed(ap: argparse.ArgumentParser) -> None:
    """The ``--only-seed`` worker option (checked by :func:`check_only_seed`)."""
    ap.add_argument("--only-seed", type=int, action="append", default=None, metavar="S",
                    help="worker mode (repeatable): train and cache only these seeds, write no results; run "
                    "several workers side by side, then once without it to write the results from the cache")


def check_only_seed(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.only_seed and not args.cache:
        ap.error("--only-seed fills the cache: give --cache")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cnn-zoo")
    ap.add_argument("--hetero-zoo")
    ap.add_argument("--zoo", action="append", default=[], metavar="NAME=DIR", help="another zoo (repeatable)")
    ap.add_argument("--make-hetero-zoo", metavar="DIR", help="generate HETERO_ZOO into DIR and exit")
    ap.add_argument("--hetero-size", type=int, default=HETERO_ZOO["size"], help="runs of the generated hetero zoo")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--gmn-epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--cache", default=None, help="folder keeping each (zoo, method, seed) result so that an "
                    "interrupted run resumes; every number still comes from a run of this script")
    add_only_seed(ap)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    check_only_seed(ap, args)
    if args.make_hetero_zoo:
        model_zoo.generate({**HETERO_ZOO, "size": args.hetero_size}, args.make_hetero_zoo, progress=True)
        return
    zoos = [(n, p) for n, p in (("digits_cnn", args.cnn_zoo), ("digits_hetero", args.hetero_zoo)) if p]
    zoos += [parse_zoo(ap, item) for item in args.zoo]
    if not zoos:
        ap.error("give at least one zoo (--cnn-zoo, --hetero-zoo or --zoo NAME=DIR)")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",")
    results: dict = {"zoos": {}, "config": {"seeds": args.seeds, "gmn_epochs": args.gmn_epochs,
                                             "threads": args.threads, "methods": {m: {k: (list(v) if isinstance(v, tuple) else v)
                                                                                      for k, v in METHODS[m].items()} for m in methods}},
                     "machine": {"platform": platform.platform(), "processor": platform.processor(),
                                 "torch": torch.__version__, "cuda": torch.cuda.is_available(),
                                 "note": "2 CPU cores shared with other jobs while measuring"},
                     "cached": []}
    scatter: dict = {}
    embed = None
    t_all = time.time()
    for zname, zpath in zoos:
        zoo = wait_for_zoo(zpath)
        correct = test_correctness(zoo)
        train_acc = zoo.final_metrics()["train_accuracy"]
        refs: dict = {"ceiling": [], "ceiling_std": [], "train_acc_tau": []}
        acc = zoo.final_metrics()["test_accuracy"]
        zres: dict = {"path": str(zpath), "runs": len(zoo), "archs": len(zoo.info["archs"]),
                      "final_test_accuracy_mean": float(np.nanmean(acc)), "methods": {}}
        per: dict = {m: {k: [] for k in KEYS} for m in methods}
        for seed in (args.only_seed or range(args.seeds)):
            data = load_zoo_graphs(zoo, "test_accuracy", (0.8, 0.1, 0.1), seed)
            zres["split_sizes"] = {k: len(v) for k, v in data.graphs.items()}
            test_runs = [int(g.run) for g in data.graphs["test"]]
            ceil = label_noise_ceiling(correct[test_runs], seed=seed)
            refs["ceiling"].append(ceil["tau"])
            refs["ceiling_std"].append(ceil["tau_std"])
            refs["train_acc_tau"].append(float(kendalltau(train_acc[test_runs], correct[test_runs].mean(1)).statistic))
            zres["n_test_samples"] = ceil["n_eval"]
            for m in methods:
                spec = dict(METHODS[m])
                spec.setdefault("epochs", args.gmn_epochs)
                cfg = PredictConfig(seed=seed, split_seed=seed, progress=False, device="cpu", **spec)
                cached = Path(args.cache) / f"{zname}_{m}_{seed}.json" if args.cache else None
                t0 = time.time()
                saved = cached.with_suffix("") if cached is not None else None  # the trained predictor
                if cached is not None and cached.is_file():
                    met = json.loads(cached.read_text())
                    pred = load_predictor(saved) if saved.is_dir() else None
                    results["cached"].append(f"{zname}/{m}/{seed}")
                else:
                    pred, met = run_predict(None, cfg, data=data)
                    if cached is not None:
                        cached.parent.mkdir(parents=True, exist_ok=True)
                        pred.save_pretrained(saved)
                        cached.write_text(json.dumps({k: v for k, v in met.items() if k != "history"}))
                log.info("%s %s seed %d: tau %.3f r2 %.3f (%.0f s)", zname, m, seed, met["test/tau"], met["test/r2"],
                         time.time() - t0)
                for k in KEYS:
                    per[m][k].append(met.get(k, float("nan")))
                if seed == 0:
                    scatter[(zname, m)] = (met["test/y_true"], met["test/y_pred"])
                    # the first graph metanetwork trained in this run (cached ones are not reloaded)
                    if zname == "digits_hetero" and m.startswith("gmn") and pred is not None and embed is None:
                        graphs = [g for s in ("train", "val", "test") for g in data.graphs[s]]
                        z = pred.encode(graphs).double()
                        z = z - z.mean(0)
                        v = torch.linalg.svd(z, full_matrices=False)[2]
                        embed = ((z @ v[:2].T).numpy(), np.array([float(g.y[0]) for g in graphs]), m)
        zres["methods"] = {m: {k: mean_std(v) for k, v in per[m].items()} for m in methods}
        zres["references"] = {k: mean_std(v) for k, v in refs.items()}
        log.info("%s: label-noise ceiling tau %.3f, train-accuracy tau %.3f", zname,
                 zres["references"]["ceiling"]["mean"], zres["references"]["train_acc_tau"]["mean"])
        results["zoos"][zname] = zres
    if args.only_seed:
        log.info("worker for seeds %s done: the cache holds their results; run without --only-seed to write them",
                 args.only_seed)
        return
    results["total_time_s"] = time.time() - t_all
    results["command"] = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (out / "predict.json").write_text(json.dumps(results, indent=1))
    write_markdown(results, out / "predict.md", methods)
    plot(scatter, embed, out / "predict.png", methods)
    print((out / "predict.md").read_text())


def write_markdown(results: dict, path: Path, methods: list[str]) -> None:
    c = results["config"]
    lines = [f"# Generalization prediction (test split, mean ± std over {c['seeds']} seeds)", "",
             f"Command: `{results.get('command', '')}`", "",
             "| zoo | method | τ | R² | MAE | τ (trained runs) | train s | train graphs/s |",
             "|---|---|---|---|---|---|---|---|"]
    for zname, z in results["zoos"].items():
        for m in methods:
            r = z["methods"][m]
            f = lambda k, d=3, r=r: f"{r[k]['mean']:.{d}f} ± {r[k]['std']:.{d}f}"  # noqa: E731
            lines.append(f"| {zname} | {m} | {f('test/tau')} | {f('test/r2')} | {f('test/mae')} | "
                         f"{f('test_trained/tau')} | {r['train/time_s']['mean']:.1f} | "
                         f"{r['train/graphs_per_s']['mean']:.1f} |")
    if results.get("cached"):
        cached = set(results["cached"])
        trained = [f"{z}/{m}/{s}" for z in results["zoos"] for s in range(c["seeds"]) for m in methods
                   if f"{z}/{m}/{s}" not in cached]
        lines += ["", f"Provenance: {len(trained)} of {len(trained) + len(cached)} zoo/method/seed results were trained "
                  f"in this run ({', '.join(trained) or 'none'}); the others were read from `--cache`, where earlier "
                  f"runs of this script with the same settings kept them (their train times are those runs')."]
    lines += ["", "References on the same test runs: the label-noise ceiling is the τ a perfect predictor reaches "
              "against accuracies measured on the zoo's finite test set (bootstrap over test samples); train "
              "accuracy is the runs' own final train accuracy used as the prediction (not read from weights).", "",
              "| zoo | test samples | label-noise ceiling τ | train-accuracy τ | best method | its τ | share of ceiling |",
              "|---|---|---|---|---|---|---|"]
    for zname, z in results["zoos"].items():
        ref = z["references"]
        best = max(methods, key=lambda m: z["methods"][m]["test/tau"]["mean"])
        bt, ct = z["methods"][best]["test/tau"]["mean"], ref["ceiling"]["mean"]
        lines.append(f"| {zname} | {z['n_test_samples']} | {ct:.3f} ± {ref['ceiling']['std']:.3f} | "
                     f"{ref['train_acc_tau']['mean']:.3f} ± {ref['train_acc_tau']['std']:.3f} | {best} | {bt:.3f} | "
                     f"{bt / ct:.0%} |")
    lines += ["", "Zoos: " + "; ".join(f"{k}: {z['runs']} runs, {z['archs']} architectures, split {z['split_sizes']}, "
                                       f"mean final test accuracy {z['final_test_accuracy_mean']:.3f}"
                                       for k, z in results["zoos"].items()),
              f"GMN epochs {c['gmn_epochs']}, torch threads {c['threads']}; total {results['total_time_s']:.0f} s. "
              f"Machine: {results['machine']['platform']} ({results['machine']['note']})."]
    path.write_text("\n".join(lines) + "\n")


#: methods drawn in the scatter panels, top layer first (one per family, so the points stay readable);
#: every method when none of these ran
SCATTER_METHODS = ("probe", "gmn_stats_rank", "statnn", "hparams")


def plot(scatter: dict, embed, path: Path, methods: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zones = list(dict.fromkeys(z for z, _ in scatter))
    cols = min(3, len(zones) + 1)
    rows = -(-(len(zones) + 1) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4.7 * cols, 4.3 * rows), squeeze=False)
    for ax in grid.flat[len(zones) + 1:]:
        ax.axis("off")
    axes = list(grid.flat)[: len(zones) + 1]
    drawn = [m for m in SCATTER_METHODS[::-1] if m in methods] or methods
    for ax, z in zip(axes[:-1], zones):
        for m in drawn:
            if (z, m) in scatter:
                yt, yp = scatter[(z, m)]
                ax.scatter(yt, yp, s=14, alpha=0.75, label=m)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(title=f"{z} (test, seed 0)", xlabel="true test accuracy", ylabel="predicted")
        ax.legend(fontsize=8)
    if embed is not None:
        sc = axes[-1].scatter(embed[0][:, 0], embed[0][:, 1], c=embed[1], s=12, cmap="viridis")
        fig.colorbar(sc, ax=axes[-1], label="test accuracy")
        axes[-1].set(title=f"{embed[2]} embeddings, digits_hetero (PCA)", xlabel="PC1", ylabel="PC2")
    else:
        axes[-1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
