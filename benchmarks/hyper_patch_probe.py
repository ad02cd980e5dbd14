"""Probe: does training on ViTs whose patch embedding is a ``Linear`` teach a GHN to fill them?

A GHN trained on strided-convolution patch embeddings only (without ``ghn_recipe --linear-embed``)
fills ``weightspace.archs.TinyViT`` (patches cut by a reshape, embedded by a ``Linear``) near
chance, while a sampled ViT of the same shape is filled well (``docs/design-notes/hyper.md``).
This probe continues such a checkpoint (``--checkpoint``; the results file was made from
``hypernet-mnist1d`` as of commit ``fcd09e4``, ``git checkout fcd09e4 --
weightspace/checkpoints/hypernet-mnist1d`` restores it) for
``--minutes`` with a share ``--linear-share`` of each step's architectures drawn from ``TinyViT``
settings (patch 4/5/8, width 16/24/32, 1/2/4 heads, 1/2 blocks, MLP ratio 1/2; the two settings of
the benchmark's real-library ``ws-tinyvit1d-p4``/``-p8`` excluded) and the rest from the recipe's
pool of 3,000 (ViTs drawn three times as often, as the shipped runs). It measures, before and
after, zero-shot accuracy on a fresh draw of the MNIST-1D generator (``validation_data`` of
``benchmarks/hyper.py``; never the test split) of the two real-library ``TinyViT``s (mean of 3
seeds) and of 60 validation architectures, and writes ``benchmarks/results/hyper.patch-probe.json``.
The probe's weights are not saved: it is evidence for a training-space change, not a checkpoint.

    python benchmarks/hyper_patch_probe.py --minutes 15 --linear-share 0.25
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import hyper as H  # noqa: E402  (benchmarks/hyper.py: data, validation architectures, real-library models)

from model_zoo import load_dataset  # noqa: E402
from weightspace.archs import TinyViT  # noqa: E402
from weightspace.hyper import GHN, recalibrate_batchnorm  # noqa: E402
from weightspace.hyper.recipe import GHNTargetCache, GHNTrainConfig, pool_probabilities  # noqa: E402
from weightspace.hyper.space import CellSpace, build_arch  # noqa: E402
from weightspace.hyper.train import fit_hypernetwork  # noqa: E402

HELD_OUT = {(4, 16, 2, 2, 2), (8, 32, 4, 1, 2)}  # (patch, dim, heads, depth, mlp_ratio) of ws-tinyvit1d-p4 / -p8


def evaluate(ghn: GHN, fit, val) -> dict:
    """Zero-shot accuracy on ``val`` of the real-library TinyViTs (3 seeds) and 60 validation architectures."""
    res = {}
    for name, build in H.real_library("mnist1d"):
        if not name.startswith("ws-tinyvit1d"):
            continue
        accs = []
        for seed in (0, 1, 2):
            torch.manual_seed(0)
            model = build()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ghn(model, seed=seed)
            accs.append(H.accuracy(model, *val))
        res[name] = float(np.mean(accs))
    accs, kinds = [], []
    for config in H.validation_archs(CellSpace("mnist1d"), 60, 3000, 0):
        torch.manual_seed(0)
        model = build_arch(config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ghn(model, seed=0)
        recalibrate_batchnorm(model, fit[0])
        accs.append(H.accuracy(model, *val))
        kinds.append(config["kind"])
    a, k = np.array(accs), np.array(kinds)
    res["validation"] = float(a.mean())
    res.update({f"validation_{kind}": float(a[k == kind].mean()) for kind in ("cnn", "vit", "mlp")})
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--linear-share", type=float, default=0.25)
    ap.add_argument("--checkpoint", default="hypernet-mnist1d", help="GHN directory or shipped name to continue")
    ap.add_argument("--out", default=str(H.RESULTS / "hyper.patch-probe.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0, load0 = time.perf_counter(), round(os.getloadavg()[0], 1)
    ds = load_dataset("mnist1d", seed=0)
    fit, val = H.validation_data("mnist1d", ds)
    ghn = GHN.from_pretrained(args.checkpoint)
    grid = [s for s in itertools.product((4, 5, 8), (16, 24, 32), (1, 2, 4), (1, 2), (1, 2))
            if s[1] % s[2] == 0 and s not in HELD_OUT]
    tinyvits: dict = {}

    def tinyvit(s):
        if s not in tinyvits:
            p, d, h, depth, r = s
            model = TinyViT(1, 10, image_size=40, patch=p, dim=d, heads=h, depth=depth, mlp_ratio=r, dims=1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tinyvits[s] = (model, ghn.target(model))
        return tinyvits[s]

    pool = CellSpace("mnist1d").train_pool(3000, seed=0)
    probs = pool_probabilities(pool, {"vit": 3.0})
    cache = GHNTargetCache(ghn)
    cfg = GHNTrainConfig(lr=1.5e-3, pool=3000, max_minutes=args.minutes, seed=1)

    def draw(rng):
        return [tinyvit(grid[int(rng.integers(len(grid)))]) if rng.random() < args.linear_share
                else cache(pool[int(rng.choice(len(pool), p=probs))]) for _ in range(cfg.archs_per_step)]

    ghn.eval()
    before = evaluate(ghn, fit, val)
    ghn.train()
    history = fit_hypernetwork(ghn, draw, fit[0], fit[1], cfg, progress=False, desc="patch probe")
    ghn.eval()
    after = evaluate(ghn, fit, val)
    doc = {"command": "python benchmarks/hyper_patch_probe.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
           "load": [load0, round(os.getloadavg()[0], 1)], "minutes": round((time.perf_counter() - t0) / 60, 1),
           "checkpoint": args.checkpoint, "linear_share": args.linear_share, "tinyvit_settings": len(grid),
           "steps": history[-1]["step"] if history else 0, "validation": H.validation_text("mnist1d"),
           "before": before, "after": after}
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
