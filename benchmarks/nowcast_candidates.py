"""Compare candidate graph-nowcaster checkpoints without touching the held-out tasks of ``nowcast.py``.

Three checks, each written to a JSON file:

* ``score``: the in-distribution tuning score the README uses to choose a checkpoint. Each candidate is
  tuned as in ``benchmarks/nowcast.py`` (period x largest horizon on ``digits_mlp_tune``, the hook's cost
  counted; ``hold`` on ``synthetic_vit_tune``); the score is the mean of (time to target with the hook's
  cost / Adam's steps) on the first task and (steps to target with the chosen ``hold`` / Adam's steps) on
  the second. Lower is better.
* ``fresh``: steps to target on ``mnist1d_mlp``, a task defined for confirming a choice after the held-out
  tasks have been looked at (an MLP on MNIST-1D: meta-training uses neither, and ``nowcast.py`` uses
  MNIST-1D only with a 1-D CNN). Each candidate runs at the period and horizon its ``score`` chose.

* ``val``: meta-training's validation L1 of each candidate on the same windows: the split and the
  window sampler of ``weightspace nowcast`` (meta-training seed ``--split-seed``, ``--batch`` windows per
  batch) over the zoos of ``--work-dir``, with Linefit's beside it.

    python benchmarks/nowcast_candidates.py score shipped runs/v1/nowcaster --out runs/candidates_score.json
    python benchmarks/nowcast_candidates.py fresh shipped:20:32 runs/v1/nowcaster:10:32 --out runs/fresh.json
    python benchmarks/nowcast_candidates.py val shipped runs/v1/nowcaster --work-dir runs/nowcast_long --out runs/val.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nowcast as B  # noqa: E402

from model_zoo.archs import MLP  # noqa: E402
from weightspace.nowcast import HOLD_DEFAULT, Nowcaster  # noqa: E402

log = logging.getLogger("benchmarks.nowcast_candidates")

FRESH = B.Task("mnist1d_mlp", "mnist1d", True, lambda: MLP(in_features=40, width=64, depth=2), 3e-3, 32, 1500,
               "confirmation task (never used for tuning or in meta-training)", eval_every=4)


def _load(path: str) -> Nowcaster:
    return Nowcaster.pretrained() if path == "shipped" else Nowcaster.load(path)


def score(paths: list[str], tune_seeds: int = 5) -> dict:
    args = argparse.Namespace(tune_seeds=tune_seeds)
    out = {}
    for path in paths:
        methods = {"adam": None, "nino": _load(path)}
        best = B.tune(args, methods)
        hold = B.choose_hold(args, methods, best)
        n = best["nino"]
        vit = n["hold_steps"][n["hold"]]
        s = 0.5 * (n["tune_cost"] / best["adam"]["tune_steps"] + vit / hold["steps"]["adam"])
        out[path] = {"score": s, "period": n["period"], "k_max": n["k_max"], "hold": n["hold"],
                     "mlp_tune_steps": n["tune_steps"], "mlp_tune_cost": n["tune_cost"],
                     "adam_mlp_tune": best["adam"]["tune_steps"], "vit_tune_steps": n["hold_steps"],
                     "adam_vit_tune": hold["steps"]["adam"]}
        log.info("%s: score %.3f (period %d, k_max %d)", path, s, n["period"], n["k_max"])
    return out


def fresh(candidates: list[str], seeds: int = 10) -> dict:
    task, data = FRESH, B._data(FRESH)
    adam = [B.run_one(task, data, s, None, {}) for s in range(seeds)]
    target = statistics.mean(statistics.mean(r["acc"][-3:]) for r in adam)
    a = [B.first_reach(r["acc"], target) or task.budget for r in adam]
    out = {"task": task.name, "budget": task.budget, "seeds": seeds, "target_accuracy": target,
           "adam_steps": a, "candidates": {}}
    for cand in candidates:
        path, period, k = cand.rsplit(":", 2)
        nc = _load(path)
        kw = {"period": int(period), "hold": HOLD_DEFAULT,
              "horizon": None if int(k) == nc.horizons else B._decay(int(k), task.budget)}
        n = [B.first_reach(r["acc"], target) or task.budget for r in (B.run_one(task, data, s, nc, kw) for s in range(seeds))]
        red = 1 - statistics.mean(n) / statistics.mean(a)
        out["candidates"][path] = {"period": int(period), "k_max": int(k), "steps": n, "reduction": red}
        log.info("%s: %.1f steps (Adam %.1f): %.1f%% fewer", path, statistics.mean(n), statistics.mean(a), 100 * red)
    return out


def val(paths: list[str], work_dir: str, split_seed: int = 0, batch: int = 4) -> dict:
    import yaml

    from weightspace import nowcast as N

    # the zoos in the order of configs/nowcast.yaml, as `weightspace nowcast` loads them (the split depends on it)
    defaults = yaml.safe_load((B.ROOT / "configs/nowcast.yaml").read_text())["defaults"]
    names = [next(iter(d)).split("zoos.", 1)[1] for d in defaults if isinstance(d, dict) and "zoos." in next(iter(d))]
    trajs = N.load_trajectories([Path(work_dir) / "zoos" / n for n in names])
    cfg = N.MetaTrainConfig(seed=split_seed, batch=batch)
    perm = torch.randperm(len(trajs), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    held = [trajs[i] for i in perm[: max(1, int(round(cfg.val_fraction * len(trajs))))]]
    strides = cfg.strides  # the recipe's (configs/nowcast.yaml keeps MetaTrainConfig's default)
    cands = {p: _load(p) for p in paths}
    shapes = {(m.context, m.horizons) for m in cands.values()}
    if len(shapes) != 1:
        raise SystemExit(f"val compares candidates of one context and horizon count, got {sorted(shapes)}")
    (c, H), = shapes
    models = {"linefit": N.Nowcaster(kind="linefit", context=c, horizons=H), **cands}
    gen, windows = torch.Generator().manual_seed(cfg.seed + 1), []
    for j in range(16):  # meta_train's validation batches
        tr = held[j % len(held)]
        b = N.sample_windows(tr, c, H, strides[j % len(strides)], batch, gen)
        if b is not None:
            windows.append((tr, *b))
    out = {"work_dir": work_dir, "split_seed": split_seed, "batch": batch, "val_runs": len(held), "val_l1": {}}
    for name, m in models.items():
        m.eval()
        with torch.no_grad():
            out["val_l1"][name] = sum(float(N.window_loss(m, tr, *b)) for tr, *b in windows) / len(windows)
        log.info("%s: validation L1 %.4f", name, out["val_l1"][name])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("check", choices=("score", "fresh", "val"))
    ap.add_argument("candidates", nargs="+", help="score, val: PATH or 'shipped'; fresh: PATH:PERIOD:K_MAX")
    ap.add_argument("--work-dir", default="runs/nowcast_long", help="val: the `weightspace nowcast` work_dir")
    ap.add_argument("--split-seed", type=int, default=0, help="val: meta-training seed whose split is used")
    ap.add_argument("--batch", type=int, default=4, help="val: windows per validation batch")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.check == "score":
        res = score(args.candidates)
    elif args.check == "fresh":
        res = fresh(args.candidates)
    else:
        res = val(args.candidates, args.work_dir, args.split_seed, args.batch)
    res["command"] = "python benchmarks/nowcast_candidates.py " + " ".join(sys.argv[1:])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
