"""Build a model zoo on your own data, read it back, and check the data it was trained on.

    python examples/zoo_own_data.py                       # synthetic data standing in for yours
    python examples/zoo_own_data.py --npz my_data.npz     # x_train, y_train, x_test, y_test arrays
    python examples/zoo_own_data.py --fast                # a few runs (CI)

Shows: ``model_zoo.generate`` with in-memory tensors or a ``file:`` source, resuming, ``model_zoo.load``,
the data fingerprint check, and a run's model and trajectory.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import torch

import model_zoo

log = logging.getLogger("examples.zoo_own_data")


def synthetic_npz(path: Path, n: int, features: int = 20, classes: int = 3) -> None:
    """A stand-in for your data: Gaussian clusters, saved as the four arrays ``file:`` reads."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 0.5, (classes, features))
    y = rng.integers(0, classes, n)
    x = (centres[y] + rng.normal(0, 1, (n, features))).astype(np.float32)
    k = int(0.75 * n)
    np.savez(path, x_train=x[:k], y_train=y[:k], x_test=x[k:], y_test=y[k:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true", default=os.environ.get("WEIGHTSPACE_EXAMPLES_FAST") == "1")
    p.add_argument("--npz", type=Path, default=None, help="your data: x_train, y_train, x_test, y_test")
    p.add_argument("--out", type=Path, default=Path("runs/examples/zoo_own_data"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)

    npz = args.npz
    if npz is None:
        npz = args.out / "data.npz"
        synthetic_npz(npz, 400 if args.fast else 4000)
    source = f"file:{npz.resolve()}"
    data = model_zoo.load_data(source)                      # read with allow_pickle=False
    features, classes = data.x_train.shape[1], int(data.y_train.max()) + 1
    log.info("data: %s train, %s test, %d classes", tuple(data.x_train.shape), tuple(data.x_test.shape), classes)

    cfg = {
        "name": "my_zoo", "size": 8 if args.fast else 200, "seed": 0,
        "data": {"name": source},
        "arch": {"_target_": "model_zoo.archs.MLP", "in_features": features, "num_outputs": classes,
                 "depth": 1, "width": 16},
        "space": {"lr": {"log_uniform": [1e-3, 3e-2]}, "optimizer": "adam", "batch_size": 32,
                  "init_std": {"log_uniform": [1e-2, 0.3]}},
        "trainer": {"epochs": 2 if args.fast else 10, "checkpoints": [0, 1, 2] if args.fast else [0, 1, 5, 10]},
    }
    zoo_dir = args.out / "zoo"
    zoo = model_zoo.generate(cfg, zoo_dir, progress=not args.fast)   # rerun: resumes, or returns the finished zoo
    zoo = model_zoo.load(zoo_dir, verify=True)                # sizes, run counts and sha256 checked
    final = zoo.final_metrics()["test_accuracy"]
    log.info("%d runs; final test accuracy mean %.3f, best %.3f", len(zoo), final.mean(), final.max())

    best = int(np.argmax(final))
    model = zoo.build_model(best)                             # final weights in the run's architecture
    traj = zoo.trajectory(best)                               # every stored checkpoint, stacked
    ds = zoo.dataset()                                        # the file read again, checked against zoo.json
    with torch.no_grad():
        acc = (model(ds.x_test).argmax(1) == ds.y_test).float().mean().item()
    log.info("run %d: steps %s, re-evaluated test accuracy %.3f (stored %.3f)", best, zoo.steps(best), acc,
             final[best])
    log.info("trajectory tensors: %s", {k: tuple(v.shape) for k, v in list(traj.items())[:2]})
    print(f"zoo_own_data: {len(zoo)} runs in {zoo_dir}, best test accuracy {final.max():.3f}")


if __name__ == "__main__":
    main()
