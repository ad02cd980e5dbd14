"""Weight generation benchmark: accuracy and novelty of generated networks vs trained ones and baselines.

For every seed (the run split, initializations and draws all follow it):

1. the homogeneous zoo's final checkpoints are split train/val/test *by run*;
2. generators are trained on the training runs (selection on validation runs / validation inputs):
   p-diff (flattened parameters), p-diff on neuron-aligned parameters, and the architecture-aware
   graph latent diffusion (unprompted, and prompted with a high target accuracy, G.pt-style; its latent
   temperature is calibrated on the validation inputs and validation runs, the table at the end);
3. baselines, each a family with one knob (Zeng et al. 2025): training nets + Gaussian noise
   (sigma x tensor RMS), averages of k aligned training nets, a per-coordinate Gaussian fit to the
   aligned training nets (std x shrink);
4. every set of N networks is scored on the test half of the dataset's test split (never read by
   training or selection): accuracy, and novelty = distance of each net's predictive distribution to
   the nearest training net's (mean total variation; plus max IoU of wrong predictions). The held-out
   test runs, trained independently, are the reference for "new".

Optionally (``--mixed-zoo``) the graph generator is trained on a zoo of mixed widths/depths and asked
for architectures it never saw.

    python benchmarks/generate.py --zoo zoos/digits_mlp_good --mixed-zoo zoos/digits_mlp_mixed --seeds 3 --n 100

writes ``benchmarks/results/generate.json``, ``generate.md`` and ``generate.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from weightspace.diffusion import WeightDiffusion, evaluate_flat
from weightspace.diffusion.align import align_population
from weightspace.diffusion.baselines import averages, gaussian_fit, noisy_copies
from weightspace.diffusion.data import accuracy
from weightspace.instantiate import instantiate

log = logging.getLogger("benchmarks.generate")
RESULTS = Path(__file__).parent / "results"

NOISE = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]
AVERAGE_K = [2, 3, 5, 10]
SHRINK = [0.1, 0.25, 0.5, 0.75, 1.0]
UNSEEN = [
    {"depth": 2, "width": 24}, {"depth": 2, "width": 64}, {"depth": 1, "width": 64}, {"depth": 4, "width": 32},
]


#: the graph generator with the probing encoder and a nonlinear latent map (a row of the benchmark)
PROBE_ENCODER = {"encoder": "probe", "latent_map_hidden": 256}


def budgets(quick: bool) -> dict:
    if quick:
        return {"pdiff": {"ae_steps": 40, "ddpm_steps": 40, "eval_every": 20, "timesteps": 100},
                "graph": {"ae_steps": 10, "ddpm_steps": 40, "eval_every": 5, "timesteps": 100},
                "graph_mixed": {"ae_steps": 6, "ddpm_steps": 40, "eval_every": 3, "timesteps": 100},
                "graph_probe": {"ae_steps": 10, "ddpm_steps": 40, "eval_every": 5, "timesteps": 100, **PROBE_ENCODER}}
    # sized for a 2-core CPU shared with other jobs. The graph autoencoder needs its 600 steps: at 100
    # steps its decoder still ignores the latent and every sample is the same function (pairwise IoU of
    # reconstructions 1.000; see the README's diffusion section)
    return {"pdiff": {"channels": [16, 32, 64, 64], "ae_steps": 300, "ddpm_steps": 800, "eval_every": 50},
            "graph": {"ae_steps": 600, "ddpm_steps": 800, "eval_every": 100, "batch_size": 6,
                      "inputs_per_step": 192, "contrast_weight": 0.1},
            "graph_mixed": {"ae_steps": 600, "ddpm_steps": 800, "eval_every": 100, "batch_size": 6,
                            "inputs_per_step": 192, "contrast_weight": 0.1},
            "graph_probe": {"ae_steps": 600, "ddpm_steps": 800, "eval_every": 100, "batch_size": 6,
                            "inputs_per_step": 192, "contrast_weight": 0.1, **PROBE_ENCODER}}


def _strip(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "values"}


def run_seed(args, seed: int, bud: dict) -> dict:
    torch.manual_seed(seed)
    out: dict = {"seed": seed, "sets": {}, "knobs": {}, "fit_s": {}, "sample_nets_per_s": {}, "encode_decode": {}}
    flats: dict[str, torch.Tensor] = {}
    gens = {}
    specs = [("p-diff", "pdiff", {**bud["pdiff"], "align": False}),
             ("p-diff + alignment", "pdiff", {**bud["pdiff"], "align": True}),
             ("graph latent diffusion", "graph", bud["graph"]),
             ("graph latent diffusion, probe encoder", "graph", bud["graph_probe"])]
    for name, kind, cfg in specs:
        t0 = time.perf_counter()
        gen = WeightDiffusion.fit(args.zoo, kind, seed=seed, config=cfg, progress=args.progress)
        out["fit_s"][name] = time.perf_counter() - t0
        gens[name] = gen
        t0 = time.perf_counter()
        flats[name] = gen.sample_flat(args.n, seed=seed)
        out["sample_nets_per_s"][name] = args.n / (time.perf_counter() - t0)
        out["encode_decode"][name] = gen.encode_decode_loss()
        log.info("seed %d %s: fit %.0f s, %.1f nets/s, round trip %s", seed, name, out["fit_s"][name],
                 out["sample_nets_per_s"][name], out["encode_decode"][name])
    graph = gens["graph latent diffusion"]
    out["graph_val_kl"] = graph.model.val_history  # [(autoencoder step, validation KL)]; the lowest is kept
    out["graph_calibration"] = graph.model.calibration  # latent temperature candidates (validation split only)
    pop, data = graph.population.archs[0], graph.population.data
    target = float(np.quantile(pop.val_accuracy["train"].numpy(), 0.9))
    t0 = time.perf_counter()
    flats["graph latent diffusion, prompted"] = graph.sample_flat(args.n, seed=seed, accuracy=target)
    out["sample_nets_per_s"]["graph latent diffusion, prompted"] = args.n / (time.perf_counter() - t0)
    out["prompt_val_accuracy"] = target
    # baselines (aligned on training inputs; never on test)
    model = pop.build()
    aligned, _ = align_population(model, pop.spec, pop.flat["train"], data.x_train)
    g = torch.Generator().manual_seed(10 + seed)
    for s in NOISE:
        flats[f"noise sigma={s}"] = noisy_copies(pop.spec, pop.flat["train"], args.n, s, g)
    for k in AVERAGE_K:
        flats[f"average k={k}"] = averages(aligned, args.n, k, g)
    for s in SHRINK:
        flats[f"gaussian shrink={s}"] = gaussian_fit(aligned, args.n, s, g)
    out["knobs"] = {"noise": [f"noise sigma={s}" for s in NOISE], "average": [f"average k={k}" for k in AVERAGE_K],
                    "gaussian": [f"gaussian shrink={s}" for s in SHRINK]}
    ev = evaluate_flat(pop, data, flats)
    out["values"] = {k: v["values"] for k, v in ev.items()}
    out["sets"] = {k: _strip(v) for k, v in ev.items()}
    out["splits"] = {k: len(v) for k, v in pop.runs.items()}
    # goals, per generator
    train_acc = out["sets"]["training"]["test_accuracy"]["mean"]
    out["goals"] = {}
    for name in [n for n, _, _ in specs] + ["graph latent diffusion, prompted"]:
        gset = out["sets"][name]
        acc_g, tv_g = gset["test_accuracy"]["mean"], gset["nearest_tv"]["mean"]
        dominated = {}
        matched = {}
        for fam, names in out["knobs"].items():
            pts = [(out["sets"][n]["test_accuracy"]["mean"], out["sets"][n]["nearest_tv"]["mean"], n) for n in names]
            dominated[fam] = [n for a, t, n in pts if a >= acc_g and t >= tv_g]
            a, t, n = min(pts, key=lambda p: abs(p[0] - acc_g))
            matched[fam] = {"set": n, "test_accuracy": a, "nearest_tv": t}
        out["goals"][name] = {
            "accuracy_ge_training": acc_g >= train_acc,
            "novelty_not_closer_than_heldout": gset["notcloser_p"] >= 0.05,
            "beats_every_baseline": not any(dominated.values()),
            "dominated_by": dominated, "matched_baseline": matched,
        }
    if args.mixed_zoo:
        out["unseen"] = run_unseen(args, seed, bud)
    return out


def run_unseen(args, seed: int, bud: dict) -> dict:
    """Graph generator on the mixed zoo: seen architectures (with references) and unseen ones."""
    gen = WeightDiffusion.fit(args.mixed_zoo, "graph", seed=seed, config=bud["graph_mixed"], progress=args.progress)
    data = gen.population.data
    rows = []
    n = max(10, args.n // 5)
    for a in gen.population.archs:
        flat = gen.sample_flat(n, a.config, seed=seed)
        ev = evaluate_flat(a, data, {"generated": flat})
        rows.append({"arch": a.config, "seen": True, "generated": ev["generated"]["test_accuracy"]["mean"],
                     "training": ev["training"]["test_accuracy"]["mean"],
                     "generated_nearest_tv": ev["generated"]["nearest_tv"]["mean"],
                     "heldout_nearest_tv": ev["heldout"]["nearest_tv"]["mean"] if "heldout" in ev else None})
    base = dict(gen.population.archs[0].config)
    for u in UNSEEN:
        arch = {**base, **u}
        flat = gen.sample_flat(n, arch, seed=seed)
        acc = accuracy(instantiate(arch), gen.spec(arch), flat, data.x_test, data.y_test).numpy()
        rows.append({"arch": arch, "seen": False, "generated": float(acc.mean()), "training": None,
                     "generated_nearest_tv": None, "heldout_nearest_tv": None})
    return {"rows": rows, "n_per_arch": n, "graph_val_kl": gen.model.val_history,
            "graph_calibration": gen.model.calibration}


def aggregate(per_seed: list[dict]) -> dict:
    names = list(per_seed[0]["sets"])
    agg = {}
    for name in names:
        entry = {}
        for metric in ("test_accuracy", "nearest_tv", "max_iou"):
            if metric not in per_seed[0]["sets"][name]:
                continue
            for stat in ("best", "mean", "median"):
                vals = [s["sets"][name][metric][stat] for s in per_seed]
                entry[f"{metric}.{stat}"] = [float(np.mean(vals)), float(np.std(vals))]
        vals = [s["sets"][name]["pairwise_iou"] for s in per_seed]
        entry["pairwise_iou"] = [float(np.mean(vals)), float(np.std(vals))]
        if "notcloser_p" in per_seed[0]["sets"][name]:
            entry["notcloser_p"] = [float(s["sets"][name]["notcloser_p"]) for s in per_seed]
        agg[name] = entry
    from scipy.stats import mannwhitneyu

    goals = {}
    for name in per_seed[0]["goals"]:
        goals[name] = {k: [bool(s["goals"][name][k]) for s in per_seed]
                       for k in ("accuracy_ge_training", "novelty_not_closer_than_heldout", "beats_every_baseline")}
        # two-sided: is the nearest-training distance distinguishable from that of held-out runs at all?
        goals[name]["indistinguishable_p"] = [
            float(mannwhitneyu(s["values"][name]["nearest_tv"], s["values"]["heldout"]["nearest_tv"],
                               alternative="two-sided").pvalue) for s in per_seed]
        goals[name]["as_diverse_as_training"] = [
            bool(s["sets"][name]["pairwise_iou"] <= s["sets"]["training"]["pairwise_iou"]) for s in per_seed]
    thr = {}
    for name in per_seed[0]["sample_nets_per_s"]:
        v = [s["sample_nets_per_s"][name] for s in per_seed]
        thr[name] = [float(np.mean(v)), float(np.std(v))]
    rt = {}
    for name in per_seed[0]["encode_decode"]:
        b = [s["encode_decode"][name]["test_accuracy_before"] for s in per_seed]
        a = [s["encode_decode"][name]["test_accuracy_after"] for s in per_seed]
        rt[name] = {"before": [float(np.mean(b)), float(np.std(b))], "after": [float(np.mean(a)), float(np.std(a))]}
    fit = {name: [float(np.mean([s["fit_s"][name] for s in per_seed])), float(np.std([s["fit_s"][name] for s in per_seed]))]
           for name in per_seed[0]["fit_s"]}
    return {"sets": agg, "goals": goals, "sample_nets_per_s": thr, "encode_decode": rt, "fit_s": fit}


def pm(v, digits=3) -> str:
    return f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"


def render(result: dict) -> str:
    agg = result["aggregate"]
    seeds = len(result["per_seed"])
    lines = ["# Weight generation benchmark", "",
             f"`{result['command']}`", "",
             f"Machine: {result['machine']}. Zoo `{result['zoo']}` (final checkpoints of independent runs; "
             f"split by run, per seed: {result['per_seed'][0]['splits']}). N = {result['n']} networks per set, "
             f"{seeds} seeds (mean ± std over seeds). Accuracy and novelty on the test half of the zoo's test split "
             "(never read in training or selection; the other half holds the validation inputs).", "",
             f"Generator budgets (overrides of the library defaults): `{json.dumps(result['budgets'])}`.", "",
             "Novelty: `nearest TV` = mean total-variation distance between a net's predicted class distribution "
             "and that of its nearest training net (higher = more novel); `max IoU` = max IoU of wrong-prediction "
             "sets with any training net (lower = more novel); `pairwise IoU` = mean IoU within the set "
             "(lower = more diverse). `not-closer p` = one-sided Mann-Whitney p-value of 'closer to the training "
             "set than the held-out runs' per seed.", "",
             "| set | accuracy best | accuracy mean | accuracy median | nearest TV mean | max IoU mean | pairwise IoU | not-closer p |",
             "|---|---|---|---|---|---|---|---|"]
    main = ["training", "heldout", "p-diff", "p-diff + alignment", "graph latent diffusion",
            "graph latent diffusion, prompted", "graph latent diffusion, probe encoder"]
    main = [n for n in main if n in agg["sets"]]  # results files written before a row existed lack it
    others = [n for n in agg["sets"] if n not in main]
    for name in main + others:
        e = agg["sets"][name]
        tv = pm(e["nearest_tv.mean"]) if "nearest_tv.mean" in e else "—"
        iou = pm(e["max_iou.mean"]) if "max_iou.mean" in e else "—"
        p = ", ".join(f"{x:.2f}" for x in e["notcloser_p"]) if "notcloser_p" in e else "—"
        label = {"training": "training runs", "heldout": "held-out runs (trained independently)"}.get(name, name)
        lines.append(f"| {label} | {pm(e['test_accuracy.best'])} | {pm(e['test_accuracy.mean'])} | "
                     f"{pm(e['test_accuracy.median'])} | {tv} | {iou} | {pm(e['pairwise_iou'])} | {p} |")
    lines += ["", "## Goals (per seed)", "",
              "| generator | mean accuracy ≥ training mean | novelty not closer than held-out (p ≥ 0.05) | "
              "nearest TV indistinguishable from held-out (two-sided p per seed) | within-set diversity ≥ training "
              "(pairwise IoU ≤) | not dominated by any baseline point (accuracy and novelty) |",
              "|---|---|---|---|---|---|"]
    for name, g in agg["goals"].items():
        fmt = lambda v: f"{sum(v)}/{len(v)}"  # noqa: E731
        ps = ", ".join(f"{p:.1g}" for p in g["indistinguishable_p"])
        lines.append(f"| {name} | {fmt(g['accuracy_ge_training'])} | {fmt(g['novelty_not_closer_than_heldout'])} | "
                     f"{ps} | {fmt(g['as_diverse_as_training'])} | {fmt(g['beats_every_baseline'])} |")
    lines += ["", "Baselines at matched accuracy (seed 0; the knob value whose mean accuracy is closest):", ""]
    s0 = result["per_seed"][0]
    lines += ["| generator | noise | average | gaussian |", "|---|---|---|---|"]
    for name, g in s0["goals"].items():
        cells = [f"{m['set']}: acc {m['test_accuracy']:.3f}, TV {m['nearest_tv']:.3f}" for m in g["matched_baseline"].values()]
        lines.append(f"| {name} (acc {s0['sets'][name]['test_accuracy']['mean']:.3f}, TV "
                     f"{s0['sets'][name]['nearest_tv']['mean']:.3f}) | " + " | ".join(cells) + " |")
    lines += ["", "## Encode → decode round trip (validation runs, test accuracy)", "",
              "| generator | before | after |", "|---|---|---|"]
    for name, r in agg["encode_decode"].items():
        lines.append(f"| {name} | {pm(r['before'])} | {pm(r['after'])} |")
    lines += ["", "## Cost", "", "| generator | training (s) | sampling (networks/s) |", "|---|---|---|"]
    for name, t in agg["sample_nets_per_s"].items():
        fit = agg["fit_s"].get(name, agg["fit_s"].get("graph latent diffusion"))
        lines.append(f"| {name} | {fit[0]:.0f} ± {fit[1]:.0f} | {t[0]:.1f} ± {t[1]:.1f} |")
    if "unseen" in s0:
        lines += ["", f"## Architecture-aware generation on seen and unseen architectures (`{result['mixed_zoo']}`)", "",
                  "Graph latent diffusion trained on the mixed zoo; mean test accuracy of generated nets "
                  f"({s0['unseen']['n_per_arch']} per architecture), mean ± std over seeds.", "",
                  "| architecture | in training | generated | training runs | generated nearest TV | held-out nearest TV |",
                  "|---|---|---|---|---|---|"]
        def cell(i: int, k: str) -> str:
            vals = [s["unseen"]["rows"][i][k] for s in result["per_seed"]]
            return pm([np.mean(vals), np.std(vals)]) if vals[0] is not None else "—"

        for i, row in enumerate(s0["unseen"]["rows"]):
            arch = f"depth {row['arch']['depth']}, width {row['arch']['width']}"
            lines.append(f"| {arch} | {'yes' if row['seen'] else 'no'} | {cell(i, 'generated')} | {cell(i, 'training')} | "
                         f"{cell(i, 'generated_nearest_tv')} | {cell(i, 'heldout_nearest_tv')} |")
    if "graph_val_kl" in s0:
        lines += ["", "## Graph autoencoder checkpoint selection (validation KL per evaluation; the lowest is kept)", "",
                  "| zoo | seed | validation KL at steps " + ", ".join(str(st) for st, _ in s0["graph_val_kl"])
                  + " | kept step |", "|---|---|---|---|"]
        for s in result["per_seed"]:
            for zoo, h in ((result["zoo"], s.get("graph_val_kl")), (result["mixed_zoo"], s.get("unseen", {}).get("graph_val_kl"))):
                if h:
                    kept = min(h, key=lambda r: r[1])[0]
                    lines.append(f"| `{zoo}` | {s['seed']} | " + ", ".join(f"{v:.3f}" for _, v in h) + f" | {kept} |")
    if s0.get("graph_calibration"):
        lines += ["", "## Latent temperature (chosen on the validation split: validation inputs, validation runs)", "",
                  "Per candidate scale of the DDPM samples: mean validation accuracy of the decoded samples, the "
                  "probability that a decoded sample is farther from the training runs than a validation run is "
                  "(nearest TV; 0.5 = as far), and their pairwise IoU on validation inputs. Kept: the largest "
                  "scale reached, in increasing order, while the accuracy stays at least the training runs' mean.", "",
                  "| zoo | seed | training runs' validation accuracy | scale: accuracy / farther probability / pairwise IoU | kept |",
                  "|---|---|---|---|---|"]
        for s in result["per_seed"]:
            for zoo, cal in ((result["zoo"], s.get("graph_calibration")),
                             (result["mixed_zoo"], s.get("unseen", {}).get("graph_calibration"))):
                if cal:
                    cells = "; ".join(f"{r['scale']:g}: {r['val_accuracy']:.3f} / {r['farther_probability']:.2f} / "
                                      f"{r['pairwise_iou']:.2f}" for r in cal)
                    kept = next(r["scale"] for r in cal if r["kept"])
                    lines.append(f"| `{zoo}` | {s['seed']} | {cal[0]['training_val_accuracy']:.3f} | {cells} | {kept:g} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s0 = result["per_seed"][0]
    sets, vals = s0["sets"], s0["values"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    style = {"heldout": ("k", "held-out runs"), "p-diff": ("tab:gray", "p-diff"),
             "p-diff + alignment": ("tab:brown", "p-diff + alignment"),
             "graph latent diffusion": ("tab:red", "graph latent diffusion"),
             "graph latent diffusion, prompted": ("tab:purple", "graph LD, prompted"),
             "graph latent diffusion, probe encoder": ("tab:pink", "graph LD, probe encoder")}
    # the generators that work all sit near (TV 0.02, accuracy 0.98): an inset shows that corner
    inset = ax.inset_axes([0.55, 0.53, 0.43, 0.35])
    for a, main in ((ax, True), (inset, False)):
        for name, (c, label) in style.items():
            if name in vals and "nearest_tv" in vals[name]:
                a.scatter(vals[name]["nearest_tv"], vals[name]["test_accuracy"], s=8 if main else 10, alpha=0.35,
                          color=c)
                a.scatter([sets[name]["nearest_tv"]["mean"]], [sets[name]["test_accuracy"]["mean"]], s=90 if main else 70,
                          color=c, edgecolor="white", label=label if main else None, zorder=5)
        for fam, c in (("noise", "tab:blue"), ("average", "tab:green"), ("gaussian", "tab:orange")):
            names = s0["knobs"][fam]
            a.plot([sets[n]["nearest_tv"]["mean"] for n in names], [sets[n]["test_accuracy"]["mean"] for n in names],
                   "-o", color=c, ms=4, label=f"baseline: {fam}" if main else None)
        a.axhline(sets["training"]["test_accuracy"]["mean"], color="k", ls=":", lw=1,
                  label="training runs (mean)" if main else None)
    inset.set_xlim(0, 0.08)
    inset.set_ylim(0.93, 1.0)
    inset.tick_params(labelsize=7)
    inset.set_title("zoom: TV ≤ 0.08, accuracy ≥ 0.93", fontsize=7)
    ax.indicate_inset_zoom(inset, edgecolor="0.5")
    ax.set_xlabel("novelty: TV distance to nearest training net (higher = newer)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"accuracy vs novelty, seed {s0['seed']} (large dots: means; curves: baseline knobs)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _machine() -> str:
    import os

    return (f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs, {torch.get_num_threads()} torch "
            f"thread(s) per process, torch {torch.__version__} CPU, {time.strftime('%Y-%m-%d')}")


def diagnose(args) -> str:
    """Where a collapse comes from: the autoencoder or the DDPM. For the graph generator at 100 and at 600
    autoencoder steps (seed 0, otherwise the benchmark budget): accuracy and within-set pairwise IoU of
    100 training runs, their reconstructions decode(encode(.)), decodes of the zero latent and of
    N(0, I) latents, and DDPM samples; the spread of the standardized latents; nearest-training TV."""
    from weightspace.diffusion.data import predictions
    from weightspace.diffusion.metrics import nearest_training, pairwise_iou

    rows = []
    for steps in ((4, 8) if args.quick else (100, 600)):
        cfg = {**budgets(args.quick)["graph"], "ae_steps": steps, "eval_every": min(steps // 4, 100)}
        gen = WeightDiffusion.fit(args.zoo, "graph", seed=0, config=cfg, progress=args.progress)
        m, pop, data = gen.model, gen.population.archs[0], gen.population.data
        a, net, x, y = pop.config, pop.build(), data.x_test, data.y_test
        _, prob_t = predictions(net, pop.spec, pop.flat["train"], x)
        train = pop.flat["train"][:100]
        z = m.encode(a, train)
        g = torch.Generator().manual_seed(1)
        zs = m.ddpm.sample(100, m.cond(a, 100, None), torch.Generator().manual_seed(0))
        sets = {"training runs (100)": train, "held-out runs": pop.flat["test"],
                "reconstructions of the training runs": m.decode(a, z),
                "decode(0), 20 copies": m.decode(a, torch.zeros(20, z.shape[1])),
                "decode(N(0, I))": m.decode(a, torch.randn(100, z.shape[1], generator=g)),
                "DDPM samples": m.decode(a, zs)}
        for name, flat in sets.items():
            acc = accuracy(net, pop.spec, flat, x, y).numpy()
            _, prob = predictions(net, pop.spec, flat, x)
            tv = "—" if name.startswith("training") else f"{nearest_training(prob, prob_t, y)['nearest_tv'].mean():.4f}"
            rows.append(f"| {steps} | {name} | {acc.mean():.3f} | {pairwise_iou(prob, y):.3f} | {tv} |")
        rows.append(f"| {steps} | latent std per dim (training runs / DDPM samples) | "
                    f"{z.std(0).mean():.2f} / {zs.std(0).mean():.2f} | | |")
    md = ["# Weight generation: where the graph generator's collapse came from", "",
          f"`python benchmarks/generate.py --diagnose --zoo {args.zoo}` (seed 0; {_machine()}).", "",
          "| autoencoder steps | set | test accuracy | pairwise IoU (within set) | nearest-training TV |",
          "|---|---|---|---|---|", *rows]
    return "\n".join(md) + "\n"


GENERATORS = ("graph latent diffusion", "graph latent diffusion, probe encoder", "graph latent diffusion, prompted")


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(RESULTS.parent.parent.resolve()))
    except ValueError:
        return str(path)


def _match_accuracy(acc: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Indices of distinct runs, one per target accuracy, each the unused run nearest to it (ties: lowest index)."""
    if len(targets) > len(acc):
        raise ValueError(f"cannot match {len(targets)} accuracies with {len(acc)} runs")
    free, pick = np.ones(len(acc), bool), []
    for a in np.sort(targets):
        j = int(np.argmin(np.where(free, np.abs(acc - a), np.inf)))
        free[j] = False
        pick.append(j)
    return np.asarray(pick)


def diversity_by_accuracy(args) -> str:
    """Is within-set diversity tied to accuracy among independent runs? Per seed split: the training runs'
    pairwise IoU of mistakes (test half) for all runs, for the most accurate runs chosen by their
    *validation* accuracy (never the test half), and, descriptively, in bins of test accuracy. A generator
    whose samples are more accurate than the runs could look less diverse only because of that; this
    measures how much of the gap such a shift could explain. With ``<out>.json`` present, each generator's
    set is also compared with training runs matched one to one to its nets' test accuracies."""
    from weightspace.diffusion.data import load_population, predictions
    from weightspace.diffusion.metrics import pairwise_iou

    rows = []
    path = Path(args.out).with_suffix(".json")
    results = json.loads(path.read_text()) if path.exists() else None
    for seed in range(args.seeds):
        P = load_population(args.zoo, seed=seed, progress=args.progress)
        pop, data = P.archs[0], P.data
        net, train, y = pop.build(), pop.flat["train"], P.data.y_test
        acc = accuracy(net, pop.spec, train, data.x_test, y).numpy()
        _, prob = predictions(net, pop.spec, train, data.x_test)
        subsets = {"all training runs": np.arange(len(acc))}
        order = np.argsort(-pop.val_accuracy["train"].numpy(), kind="stable")
        for q in (0.5, 0.25, 0.1):
            subsets[f"top {q:.0%} by validation accuracy"] = order[: int(len(order) * q)]
        for lo, hi in ((0.96, 0.975), (0.975, 0.985), (0.985, 1.0)):
            subsets[f"test accuracy in [{lo}, {hi}{']' if hi == 1.0 else ')'}"] = np.where(
                (acc >= lo) & ((acc <= hi) if hi == 1.0 else (acc < hi)))[0]
        stored = results["per_seed"][seed] if results and seed < len(results["per_seed"]) else None
        for name in GENERATORS if stored else ():
            if name in stored["values"]:  # runs matched one to one to a generated set's accuracies
                subsets[f"matched to '{name}' (its IoU {stored['sets'][name]['pairwise_iou']:.3f})"] = \
                    _match_accuracy(acc, np.asarray(stored["values"][name]["test_accuracy"]))
        for name, idx in subsets.items():
            if len(idx) < 2:
                continue
            t = torch.as_tensor(idx)
            rows.append(f"| {seed} | {name} | {len(idx)} | {acc[idx].mean():.4f} | {pairwise_iou(prob[t], y):.3f} |")
    md = ["# Weight generation: within-set diversity of independent runs against their accuracy", "",
          f"`python benchmarks/generate.py --diversity-by-accuracy --zoo {args.zoo} --seeds {args.seeds}` "
          f"({_machine()}). Pairwise IoU of wrong-prediction sets on the test half (lower: more diverse). "
          "'matched to' rows: training runs chosen one per generated net, the unused run nearest in test accuracy, "
          f"against that set's own IoU as stored in `{_relative(path)}`"
          f"{'' if results is None else ' (' + results['machine'] + '; if the zoo was regenerated since, its runs differ slightly)'}.", "",
          "| seed | training runs | n | test accuracy | pairwise IoU |", "|---|---|---|---|---|", *rows]
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", default="zoos/digits_mlp_good")
    p.add_argument("--mixed-zoo", default=None)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny budgets (a smoke run; not for the README)")
    p.add_argument("--out", default=str(RESULTS / "generate"))
    p.add_argument("--progress", action="store_true")
    p.add_argument("--render-only", action="store_true", help="rewrite .md/.png from the .json")
    p.add_argument("--only-seed", type=int, default=None,
                   help="run this one seed into <out>.seedS.json (run seeds in parallel, then --merge)")
    p.add_argument("--merge", action="store_true", help="aggregate <out>.seed*.json into <out>.json")
    p.add_argument("--diagnose", action="store_true",
                   help="autoencoder vs DDPM diagnosis of the graph generator into <out>.diagnosis.md")
    p.add_argument("--diversity-by-accuracy", action="store_true",
                   help="training runs' pairwise IoU by accuracy into <out>.diversity_by_accuracy.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    command = "python benchmarks/generate.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.diagnose:
        Path(f"{out}.diagnosis.md").write_text(md := diagnose(args))
        print(md)
        return
    if args.diversity_by_accuracy:
        Path(f"{out}.diversity_by_accuracy.md").write_text(md := diversity_by_accuracy(args))
        print(md)
        return
    if args.only_seed is not None:
        t0 = time.perf_counter()
        res = run_seed(args, args.only_seed, budgets(args.quick))
        res["wall_s"] = time.perf_counter() - t0
        res["command"] = command
        res["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        out.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{out}.seed{args.only_seed}.json").write_text(json.dumps(res, indent=1) + "\n")
        return
    if args.render_only:
        result = json.loads(out.with_suffix(".json").read_text())
    elif args.merge:
        files = sorted(out.parent.glob(out.name + ".seed*.json"))
        if not files:
            raise SystemExit(f"no {out}.seed*.json to merge")
        per_seed = sorted((json.loads(f.read_text()) for f in files), key=lambda r: r["seed"])
        merge_cmd = "python benchmarks/generate.py " + " ".join(sys.argv[1:] if argv is None else argv)
        result = {"command": f"{per_seed[0]['command']}  (one process per seed {[r['seed'] for r in per_seed]}, "
                             f"each with --only-seed S; then {merge_cmd})",
                  "machine": _machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "zoo": args.zoo, "mixed_zoo": args.mixed_zoo, "n": args.n,
                  "budgets": budgets(args.quick), "wall_s": max(r["wall_s"] for r in per_seed), "per_seed": per_seed}
        result["aggregate"] = aggregate(per_seed)
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    else:
        bud = budgets(args.quick)
        per_seed = []
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            per_seed.append(run_seed(args, seed, bud))
        result = {"command": command, "machine": _machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "zoo": args.zoo, "mixed_zoo": args.mixed_zoo, "n": args.n, "budgets": bud,
                  "wall_s": time.perf_counter() - t0, "per_seed": per_seed}
        result["aggregate"] = aggregate(per_seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    md = render(result)
    out.with_suffix(".md").write_text(md)
    plot(result, out.with_suffix(".png"))
    print(md)


if __name__ == "__main__":
    main()
