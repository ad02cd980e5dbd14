"""Nowcasting in a plain training loop: train with Adam and with Adam + the shipped nowcaster.

    python examples/nowcast_loop.py             # a digits MLP, 1,500 steps each
    python examples/nowcast_loop.py --fast      # 150 steps (CI)

Shows: ``Nowcaster.pretrained().attach(model, optimizer)``, ``report_loss`` (spike guard), the
summary, the per-jump history, the loss curve with jump markers, and a comparison with plain Adam
from the same initialization and batches.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F

import model_zoo
import weightspace as ws

log = logging.getLogger("examples.nowcast_loop")


def train(model, steps: int, data, seed: int, nowcast: bool):
    """Adam on digits; the same batches for every call with the same seed."""
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    handle = ws.Nowcaster.pretrained().attach(model, opt, total_steps=steps) if nowcast else None
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, len(data.x_train), (32,), generator=g)
        loss = F.cross_entropy(model(data.x_train[i]), data.y_train[i])
        if handle is not None:
            handle.report_loss(loss)              # optional: lets the hook undo a jump that spikes the loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    return acc, handle


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true", default=os.environ.get("WEIGHTSPACE_EXAMPLES_FAST") == "1")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("runs/examples/nowcast_loop"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    steps = args.steps or (150 if args.fast else 1500)
    data = model_zoo.load_data("digits", flatten=True)

    torch.manual_seed(0)
    init = model_zoo.MLP(in_features=64, num_outputs=10, depth=2, width=32)
    acc_adam, _ = train(copy.deepcopy(init), steps, data, seed=1, nowcast=False)
    acc_nc, handle = train(copy.deepcopy(init), steps, data, seed=1, nowcast=True)
    summary = handle.close()                       # detach; the summary is also logged at INFO

    log.info("Adam: test accuracy %.3f; Adam + nowcaster: %.3f after %d steps", acc_adam, acc_nc, steps)
    log.info("jumps kept %d, undone %d, steps ahead %d, estimated steps saved %.0f, hook cost %.1f%% of "
             "the time it saved", summary["jumps"], summary["undone"], summary["steps_ahead"],
             summary["steps_saved"], 100 * summary["cost_share"])
    for jump in handle.history[:5]:
        log.info("jump at step %d: horizon %d, %d steps ahead, applied %s, undone %s, loss %s -> %s",
                 jump["step"], jump["horizon"], jump["steps_ahead"], jump["applied"], jump["undone"],
                 jump["loss_before"], jump["loss_after"])

    import matplotlib
    matplotlib.use("Agg")
    args.out.mkdir(parents=True, exist_ok=True)
    ax = ws.nowcast.plot(handle)                   # reported losses with the jumps marked
    ax.figure.savefig(args.out / "nowcast.png", dpi=100)
    print(f"nowcast_loop: Adam {acc_adam:.3f}, with nowcaster {acc_nc:.3f}; {summary['jumps']} jumps; "
          f"plot in {args.out / 'nowcast.png'}")


if __name__ == "__main__":
    main()
