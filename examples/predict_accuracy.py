"""Train an accuracy predictor on a zoo and use it on networks it has never seen.

    python examples/predict_accuracy.py                     # builds a 300-run digits zoo first
    python examples/predict_accuracy.py --zoo zoos/digits_cnn --metanet gmn
    python examples/predict_accuracy.py --fast              # a tiny zoo (CI)

Shows: ``run_predict`` (train, select on validation runs, report on test runs), saving and loading
the predictor, predicting one network, a batch of graphs, and embeddings.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import model_zoo
import weightspace as ws
from weightspace.predict import PredictConfig, run_predict

log = logging.getLogger("examples.predict_accuracy")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true", default=os.environ.get("WEIGHTSPACE_EXAMPLES_FAST") == "1")
    p.add_argument("--zoo", type=Path, default=None, help="an existing zoo (default: build one)")
    p.add_argument("--metanet", default="probe", help="probe | gmn | statnn | statnn_gbm | hparams")
    p.add_argument("--out", type=Path, default=Path("runs/examples/predict_accuracy"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    zoo_dir = args.zoo
    if zoo_dir is None:
        zoo_dir = args.out / "zoo"
        cfg = {"name": "predict_example", "size": 40 if args.fast else 300, "seed": 0,
               "data": {"name": "digits", "flatten": True},
               "arch": {"_target_": "model_zoo.archs.MLP", "in_features": 64, "num_outputs": 10,
                        "depth": 1, "width": 16},
               "space": {"lr": {"log_uniform": [1e-3, 3e-2]}, "optimizer": "adam", "batch_size": 32,
                         "init_std": {"log_uniform": [1e-2, 0.3]}, "train_fraction": {"uniform": [0.1, 1.0]}},
               "trainer": {"epochs": 3 if args.fast else 10, "checkpoints": [0, 1, 3] if args.fast else [0, 5, 10]}}
        model_zoo.generate(cfg, zoo_dir, progress=not args.fast)

    cfg = PredictConfig(metanet=args.metanet, epochs=3 if args.fast else 15, progress=not args.fast)
    pred, metrics = run_predict(zoo_dir, cfg, out_dir=args.out / "run")
    log.info("test: Kendall tau %.3f, R2 %.3f, MAE %.3f", metrics["test/tau"], metrics["test/r2"],
             metrics["test/mae"])

    pred = ws.load_predictor(args.out / "run" / "predictor")      # config.json + model.safetensors
    zoo = model_zoo.load(zoo_dir)
    split = zoo.split_runs()                                      # the same run-level split
    test_runs = split["test"][:5]
    one = pred(zoo.build_model(test_runs[0]))                     # one nn.Module
    many = pred.predict([zoo.graph(i) for i in test_runs])       # a batch of graphs
    emb = pred.encode([zoo.graph(i) for i in test_runs])
    true = zoo.final_metrics()["test_accuracy"][test_runs]
    for i, (pr, t) in enumerate(zip(many, true)):
        log.info("test run %d: predicted %.3f, true %.3f", test_runs[i], pr, t)
    log.info("embeddings: %s; single call %.3f", tuple(emb.shape), float(one))
    print(f"predict_accuracy: {args.metanet} test tau {metrics['test/tau']:.3f} on {zoo_dir}")


if __name__ == "__main__":
    main()
