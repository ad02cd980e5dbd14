"""Train a GHN checkpoint on one embedded dataset: ``python -m weightspace.cli.ghn_recipe --data digits|mnist1d --out DIR``.

The one command behind each shipped :class:`~weightspace.hyper.ghn.GHN` checkpoint (one CPU thread,
a wall-clock budget; :func:`weightspace.hyper.recipe.train_ghn` is the loop)::

    python -m weightspace.cli.ghn_recipe --data digits  --out weightspace/checkpoints/hypernet-digits  --minutes 13
    python -m weightspace.cli.ghn_recipe --data digits  --init hypernet-digits --lr 2.5e-3 --out weightspace/checkpoints/hypernet-digits --minutes 25
    python -m weightspace.cli.ghn_recipe --data digits  --init hypernet-digits --lr 2.5e-3 --out weightspace/checkpoints/hypernet-digits --minutes 60
    python -m weightspace.cli.ghn_recipe --data digits  --init hypernet-digits --lr 2.5e-3 --pool 600 --out weightspace/checkpoints/hypernet-digits --minutes 35
    python -m weightspace.cli.ghn_recipe --data digits  --init hypernet-digits --lr 2.5e-3 --pool 3000 --out weightspace/checkpoints/hypernet-digits --minutes 80
    python -m weightspace.cli.ghn_recipe --data digits  --init hypernet-digits --lr 2.5e-3 --pool 3000 --out weightspace/checkpoints/hypernet-digits --minutes 85
    python -m weightspace.cli.ghn_recipe --data digits  --init hypernet-digits --lr 2.5e-3 --pool 3000 --linear-embed 1 --out weightspace/checkpoints/hypernet-digits --minutes 55
    python -m weightspace.cli.ghn_recipe --data mnist1d --transfer hypernet-digits --lr 2.5e-3 --pool 3000 --out weightspace/checkpoints/hypernet-mnist1d --minutes 75
    python -m weightspace.cli.ghn_recipe --data mnist1d --init hypernet-mnist1d --lr 1.5e-3 --pool 3000 --kind-weight vit=3 --out weightspace/checkpoints/hypernet-mnist1d --minutes 60
    python -m weightspace.cli.ghn_recipe --data mnist1d --init hypernet-mnist1d --lr 1.5e-3 --pool 3000 --kind-weight vit=3 --out weightspace/checkpoints/hypernet-mnist1d --minutes 70
    python -m weightspace.cli.ghn_recipe --data mnist1d --init hypernet-mnist1d --lr 1.5e-3 --pool 3000 --kind-weight vit=3 --linear-embed 1 --out weightspace/checkpoints/hypernet-mnist1d --minutes 65

(the digits checkpoint is the seventh digits run, each continuing the previous one; the last four
train on pools of 600 and 3,000 configurations instead of 120, each pool holding the smaller ones.
The MNIST-1D checkpoint starts from the digits one's weights (``--transfer``): from a fresh
initialization its loss stays on the plateau at log 10 for thousands of steps; its second to fourth
runs draw the transformers of the pool three times as often, ``--kind-weight vit=3``, since MNIST-1D
ViTs lagged furthest behind. The last run of each adds to the pool the twin of every ViT with its
patch embedding written as a reshape + ``Linear`` (``--linear-embed 1``; the twin of a post-norm ViT
without a class token, the form of ``weightspace.archs.TinyViT``, is never drawn). Each checkpoint's
``config.json`` extras record the exact commands, CPU minutes, steps and load, nested under ``init``)

Data: ``model_zoo.load_dataset(data, seed=0)``, training split only (the shipped checkpoints train on
all of it; ``--hold-out-validation`` keeps out the 15% validation share on which
``benchmarks/hyper.py`` stops its references and makes its design choices, so that the GHN never
sees those inputs; :func:`weightspace.hyper.recipe.validation_split`). ``--snapshot-minutes M`` saves
the GHN's weights every ``M`` minutes (``OUT-snapshots/step*.safetensors``) for a validation curve
(``python benchmarks/hyper.py --validation-curve OUT-snapshots --data DATA``). Writes ``config.json`` +
``model.safetensors``; the extras record the command, schedule, wall and CPU minutes, load
average and the training curve.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time


def main(argv: list[str] | None = None) -> None:
    import torch

    from model_zoo import load_dataset
    from weightspace.hyper.ghn import GHN, GHNConfig
    from weightspace.hyper.recipe import GHNTrainConfig, train_ghn, validation_split
    from weightspace.hyper.space import CellSpace

    ap = argparse.ArgumentParser(description="Train a GHN checkpoint on one dataset (one CPU thread).")
    ap.add_argument("--data", choices=["digits", "mnist1d"], required=True)
    ap.add_argument("--out", required=True, help="checkpoint directory (save_pretrained)")
    ap.add_argument("--minutes", type=float, default=13.0, help="wall-clock budget of training")
    ap.add_argument("--hidden", type=int, default=GHNConfig.hidden)
    ap.add_argument("--layers", type=int, default=GHNConfig.layers)
    ap.add_argument("--pool", type=int, default=GHNTrainConfig.pool)
    ap.add_argument("--archs-per-step", type=int, default=GHNTrainConfig.archs_per_step)
    ap.add_argument("--batch-size", type=int, default=GHNTrainConfig.batch_size)
    ap.add_argument("--lr", type=float, default=GHNTrainConfig.lr)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--init", default=None,
                    help="continue from this GHN checkpoint (directory or shipped name) instead of a fresh "
                         "initialization; its model settings win over --hidden/--layers, and its provenance is "
                         "kept in the new extras ('init')")
    ap.add_argument("--transfer", default=None,
                    help="start from the weights of a GHN checkpoint trained on another dataset (directory or "
                         "shipped name; its model settings win over --hidden/--layers) and train it on --data; "
                         "its provenance is kept in the new extras ('init')")
    ap.add_argument("--snapshot-minutes", type=float, default=0.0,
                    help="save the GHN's weights every this many minutes into --snapshot-dir (0: never); "
                         "benchmarks/hyper.py --validation-curve evaluates them")
    ap.add_argument("--kind-weight", action="append", default=[], metavar="KIND=W",
                    help="draw architectures of family KIND (cnn, vit, mlp) W times as often as the others "
                         "(repeatable; default: every pool member equally)")
    ap.add_argument("--linear-embed", type=float, default=0.0, metavar="SHARE",
                    help="add the Linear-patch-embedding twin of this share of the pool's ViTs to the pool "
                         "(weightspace.hyper.space.CellSpace.train_pool; default 0: strided-convolution "
                         "embeddings only)")
    ap.add_argument("--snapshot-dir", default=None, help="snapshot directory (default: OUT-snapshots)")
    ap.add_argument("--hold-out-validation", action="store_true",
                    help="train on the training split minus its validation share (15%%, seed 0; "
                         "weightspace.hyper.recipe.validation_split), the share benchmarks/hyper.py "
                         "measures design choices on, so that the GHN never sees it")
    args = ap.parse_args(argv)
    kind_weights = {}
    for item in args.kind_weight:
        kind, _, w = item.partition("=")
        try:
            kind_weights[kind.strip()] = float(w)
        except ValueError:
            raise SystemExit(f"ghn_recipe: --kind-weight takes KIND=W with a number W (e.g. vit=3), "
                             f"got {item!r}") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ds = load_dataset(args.data, seed=0)
    x_train, y_train = ds.x_train, ds.y_train
    data_text = f"model_zoo.load_dataset({args.data!r}, seed=0) train split ({len(x_train)} samples)"
    if args.hold_out_validation:
        x_train, y_train, x_val, _ = validation_split(ds.x_train, ds.y_train)
        data_text = (f"model_zoo.load_dataset({args.data!r}, seed=0) train split without its validation share "
                     f"(weightspace.hyper.recipe.validation_split, 15%, seed 0): {len(x_train)} samples, "
                     f"{len(x_val)} held out")
    space = CellSpace(args.data)
    init_meta = None
    if args.init and args.transfer:
        raise SystemExit("ghn_recipe: pass --init (same dataset) or --transfer (another dataset), not both")
    if args.transfer:
        src = GHN.from_pretrained(args.transfer)
        ghn = GHN.from_config(dataclasses.replace(src.config, data=args.data))
        ghn.load_state_dict(src.state_dict())
        init_meta = {k: v for k, v in src.meta.items() if k != "history"}
        init_meta.update(source=args.transfer, transfer_from=src.data)
    elif args.init:
        ghn = GHN.from_pretrained(args.init)
        if ghn.data != args.data:
            raise SystemExit(f"ghn_recipe: --init {args.init} was trained on {ghn.data!r}, not {args.data!r}; "
                             f"pass the checkpoint of the same dataset")
        init_meta = {k: v for k, v in ghn.meta.items() if k != "history"}
        init_meta["source"] = args.init
    else:
        ghn = GHN(hidden=args.hidden, layers=args.layers, data=args.data)
    cfg = GHNTrainConfig(archs_per_step=args.archs_per_step, batch_size=args.batch_size, lr=args.lr,
                         pool=args.pool, seed=args.seed, max_minutes=args.minutes,
                         kind_weights=kind_weights or None, linear_embed=args.linear_embed)
    on_log = None
    if args.snapshot_minutes > 0:
        from pathlib import Path

        from safetensors.torch import save_file

        snap_dir = Path(args.snapshot_dir or f"{args.out.rstrip('/')}-snapshots")
        snap_dir.mkdir(parents=True, exist_ok=True)
        next_at = [0.0]

        def snapshot(rec: dict) -> None:
            state = {k: v.detach().clone().contiguous() for k, v in ghn.state_dict().items()}
            save_file(state, str(snap_dir / f"step{int(rec['step']):06d}.safetensors"),
                      metadata={k: str(v) for k, v in rec.items()})

        def on_log(rec: dict) -> None:
            if rec["minutes"] >= next_at[0]:
                next_at[0] = rec["minutes"] + args.snapshot_minutes
                snapshot(rec)

    t0, c0 = time.perf_counter(), time.process_time()
    history = train_ghn(ghn, x_train, y_train, space, cfg, progress=not args.no_progress, on_log=on_log)
    if on_log is not None and history:  # the final weights too, so that the curve ends at the checkpoint
        snapshot(history[-1])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    meta = {"command": "python -m weightspace.cli.ghn_recipe " + " ".join(sys.argv[1:] if argv is None else argv),
            "data": data_text, "hold_out_validation": bool(args.hold_out_validation),
            "space": repr(space), "train": cfg.to_dict(), "threads": args.threads,
            "train_wall_minutes": round(wall / 60, 2), "train_cpu_minutes": round(cpu / 60, 2),
            "load_average": list(os.getloadavg()), "final": history[-1] if history else None,
            "history": history, "init": init_meta}
    ghn.meta = {}
    out = ghn.save_pretrained(args.out, extras=meta)
    print(json.dumps({"out": str(out), "final": meta["final"], "wall_minutes": meta["train_wall_minutes"]}))


if __name__ == "__main__":
    main()
