"""Generate new networks with latent weight diffusion, and measure how new they are.

    python examples/generate_weights.py --zoo zoos/digits_mlp_good     # a real zoo (weightspace zoo digits_mlp_good)
    python examples/generate_weights.py                                 # builds a 100-run zoo first
    python examples/generate_weights.py --fast                          # tiny zoo and budgets (CI)

Shows: ``WeightDiffusion.fit`` (graph latent diffusion), sampling state dicts, encoding and decoding
a network, evaluating samples against the zoo's training and held-out runs (accuracy, novelty in
function space), saving the generator and loading it again.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch

import model_zoo
from weightspace.diffusion import WeightDiffusion

log = logging.getLogger("examples.generate_weights")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true", default=os.environ.get("WEIGHTSPACE_EXAMPLES_FAST") == "1")
    p.add_argument("--zoo", type=Path, default=None)
    p.add_argument("--kind", default="graph", help="graph (architecture-aware) | pdiff (fixed architecture)")
    p.add_argument("--n", type=int, default=None, help="networks to sample")
    p.add_argument("--out", type=Path, default=Path("runs/examples/generate_weights"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    zoo_dir = args.zoo
    if zoo_dir is None:
        zoo_dir = args.out / "zoo"
        cfg = {"name": "generate_example", "size": 30 if args.fast else 100, "seed": 0,
               "data": {"name": "digits", "flatten": True},
               "arch": {"_target_": "model_zoo.archs.MLP", "in_features": 64, "num_outputs": 10,
                        "depth": 1, "width": 16},
               "space": {"lr": {"log_uniform": [3e-3, 1e-2]}, "optimizer": "adam", "batch_size": 32},
               "trainer": {"epochs": 3 if args.fast else 20, "checkpoints": [0, 3] if args.fast else [0, 20]}}
        model_zoo.generate(cfg, zoo_dir, progress=not args.fast)

    # budgets: the fast mode only shows the calls; the defaults (preset=paper) are 600 / 3000 / 1000
    config = ({"ae_steps": 10, "ddpm_steps": 20, "timesteps": 50, "sample_scale": 1.0, "eval_every": 10}
              if args.fast else {"ae_steps": 300, "ddpm_steps": 1000})
    gen = WeightDiffusion.fit(zoo_dir, kind=args.kind, seed=0, config=config, progress=not args.fast)
    n = args.n or (4 if args.fast else 50)
    states = gen.sample(n, seed=0)                            # state dicts of the zoo's architecture
    zoo = model_zoo.load(zoo_dir)
    net = zoo.build_model(0)
    net.load_state_dict(states[0])
    data = zoo.dataset()
    with torch.no_grad():
        acc0 = (net(data.x_test).argmax(1) == data.y_test).float().mean().item()
    log.info("sampled %d networks; the first has test accuracy %.3f", len(states), acc0)

    if args.kind == "graph":
        twin = gen.decode(gen.encode(zoo.build_model(1)))     # network -> latent -> network
        log.info("encode/decode round trip of run 1: %s", type(twin).__name__)
    report = gen.evaluate(gen.sample_flat(n, seed=1))          # vs the zoo's training and held-out runs
    for name in ("training", "heldout", "generated"):
        log.info("%s: %s", name, {k: v for k, v in report[name].items() if not isinstance(v, (list, dict))})
    gen.save_pretrained(args.out / "generator")               # config.json + model.safetensors
    again = WeightDiffusion.from_pretrained(args.out / "generator", zoo=zoo_dir)
    log.info("reloaded: %s", type(again).__name__)
    print(f"generate_weights: {len(states)} networks sampled from {zoo_dir}; generator in {args.out / 'generator'}")


if __name__ == "__main__":
    main()
