"""Nowcasting with PyTorch Lightning: one callback.

    pip install -e '.[lightning]'
    python examples/nowcast_lightning.py
    python examples/nowcast_lightning.py --fast      # (CI)

``NowcastCallback`` attaches the shipped nowcaster to the trainer's first optimizer when ``fit``
starts, takes ``total_steps`` from the trainer's plan and the losses from ``on_before_backward``, and
detaches and logs its summary when training ends.
"""

from __future__ import annotations

import argparse
import logging
import os

import torch
import torch.nn.functional as F

import model_zoo

log = logging.getLogger("examples.nowcast_lightning")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true", default=os.environ.get("WEIGHTSPACE_EXAMPLES_FAST") == "1")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        import pytorch_lightning as pl
    except ImportError as e:
        raise SystemExit("nowcast_lightning: needs pytorch-lightning: pip install -e '.[lightning]'") from e
    from weightspace.nowcast.lightning import NowcastCallback

    class DigitsMLP(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = model_zoo.MLP(in_features=64, num_outputs=10, depth=2, width=32)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), 1e-3)

    torch.manual_seed(0)
    data = model_zoo.load_data("digits", flatten=True)
    train = torch.utils.data.TensorDataset(data.x_train, data.y_train)
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True)
    callback = NowcastCallback(model=lambda m: m.net)     # jump the network inside the LightningModule
    trainer = pl.Trainer(max_epochs=2 if args.fast else 20, callbacks=[callback], logger=False,
                         enable_checkpointing=False, enable_progress_bar=not args.fast,
                         enable_model_summary=False, accelerator="cpu")
    module = DigitsMLP()
    trainer.fit(module, loader)
    with torch.no_grad():
        acc = (module.net(data.x_test).argmax(1) == data.y_test).float().mean().item()
    log.info("nowcaster summary: %s", callback.summary)
    print(f"nowcast_lightning: test accuracy {acc:.3f}, {callback.summary['jumps']} jumps")


if __name__ == "__main__":
    main()
