"""Nowcasting with a learning-rate schedule (and gradient accumulation).

    python examples/nowcast_lr_schedule.py
    python examples/nowcast_lr_schedule.py --fast      # (CI)

The hook attaches to the optimizer's step, so a scheduler and gradient accumulation need nothing
special: the scheduler steps as usual, and the hook counts optimizer steps, not batches.
``total_steps`` (here read from the scheduler) tells the hook how the jump size should shrink.
"""

from __future__ import annotations

import argparse
import logging
import os

import torch
import torch.nn.functional as F

import model_zoo
import weightspace as ws
from weightspace.nowcast import total_steps_from_scheduler

log = logging.getLogger("examples.nowcast_lr_schedule")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true", default=os.environ.get("WEIGHTSPACE_EXAMPLES_FAST") == "1")
    p.add_argument("--accumulate", type=int, default=2, help="batches per optimizer step")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    steps = 120 if args.fast else 1200
    data = model_zoo.load_data("digits", flatten=True)

    torch.manual_seed(0)
    model = model_zoo.MLP(in_features=64, num_outputs=10, depth=2, width=32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    handle = ws.Nowcaster.pretrained().attach(model, opt, total_steps=total_steps_from_scheduler(sched))

    for _step in range(steps):
        for _ in range(args.accumulate):           # gradient accumulation: one optimizer step per `accumulate` batches
            i = torch.randint(0, len(data.x_train), (32,))
            loss = F.cross_entropy(model(data.x_train[i]), data.y_train[i]) / args.accumulate
            loss.backward()
        handle.report_loss(loss * args.accumulate)
        opt.step()
        opt.zero_grad()
        sched.step()

    summary = handle.close()
    with torch.no_grad():
        acc = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    log.info("final lr %.2e; %d jumps, %d steps ahead", sched.get_last_lr()[0], summary["jumps"],
             summary["steps_ahead"])
    print(f"nowcast_lr_schedule: test accuracy {acc:.3f} after {steps} steps, {summary['jumps']} jumps")


if __name__ == "__main__":
    main()
