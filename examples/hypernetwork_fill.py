"""Fill architectures the hypernetwork has never seen, then fine-tune from its weights.

    python examples/hypernetwork_fill.py
    python examples/hypernetwork_fill.py --fast      # (CI)

Shows: ``ws.load_hypernetwork()`` (the shipped checkpoint), filling MLPs and CNNs in place,
zero-shot accuracy against random initialization, a few fine-tuning steps from each, and the error
for a module the hypernetwork cannot fill.
"""

from __future__ import annotations

import argparse
import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

import model_zoo
import weightspace as ws
from model_zoo.archs import MLP, SmallCNN

log = logging.getLogger("examples.hypernetwork_fill")


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        i = torch.randint(0, len(x), (32,), generator=g)
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true", default=os.environ.get("WEIGHTSPACE_EXAMPLES_FAST") == "1")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    flat = model_zoo.load_data("digits", flatten=True)            # the hypernetwork's training data: digits
    images = model_zoo.load_data("digits")                        # [N, 1, 8, 8] for the CNNs
    hyper = ws.load_hypernetwork()
    steps = 10 if args.fast else 100

    archs = {"MLP 2x[48, 24]": lambda: MLP(depth=2, width=[48, 24]),
             "MLP 3x40, tanh": lambda: MLP(depth=3, width=40, activation="tanh"),
             "CNN [16, 32]": lambda: SmallCNN(channels=[16, 32], layers=2, strides=[2, 1])}
    if args.fast:
        archs.pop("MLP 3x40, tanh")
    results = {}
    for name, build in archs.items():
        data = flat if name.startswith("MLP") else images
        torch.manual_seed(0)
        random_init = build()
        filled = hyper(build())                                   # filled in place and returned
        zero_shot, rand = accuracy(filled, data.x_test, data.y_test), accuracy(random_init, data.x_test, data.y_test)
        tuned = accuracy(finetune(filled, data.x_train, data.y_train, steps), data.x_test, data.y_test)
        tuned_rand = accuracy(finetune(random_init, data.x_train, data.y_train, steps), data.x_test, data.y_test)
        results[name] = zero_shot
        log.info("%s: zero-shot %.3f (random init %.3f); after %d Adam steps %.3f (from random %.3f)",
                 name, zero_shot, rand, steps, tuned, tuned_rand)

    try:
        hyper(nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(8, 10)))
    except ws.UnsupportedModuleError as e:
        log.info("refused as expected: %s", str(e).splitlines()[0][:160])
    print("hypernetwork_fill: zero-shot accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
