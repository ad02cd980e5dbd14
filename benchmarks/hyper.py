"""Benchmark of the GHN checkpoints on held-out architectures (issue #26 protocol).

For one dataset (``--data digits|mnist1d``) and its checkpoint (``hypernet-<data>``), per split of
:class:`weightspace.hyper.space.CellSpace` (``test`` in-distribution, ``wide``, ``deep``,
``dense``, ``no-norm``) plus ``real-library`` (``transformers`` image classifiers built from small
configs for 1x8x8 inputs and 10 classes -- configs only, nothing downloaded -- and the project's
own ResNet/ViT/CNN/MLP classes), none of them seen in training:

* **zero-shot** test accuracy of predicted parameters vs PyTorch's default random init, on
  ``--per-split`` architectures (BatchNorm statistics of both recomputed on the training inputs
  with ``recalibrate_batchnorm``, evaluated in eval mode; the train-mode accuracy of the predicted
  network is recorded too). A predicted network without any normalization layer first gets
  ``standardize_units`` on 512 training inputs (no labels; its accuracy before is recorded too), and
  fine-tuning starts from there: that is the library's documented use;
* on the first ``--trained`` of them: a **reference** trained by Adam (lr 1e-3, batch 64) from
  the random init until the validation accuracy (15% of the training split, seeded; never the test
  split) has not improved for ``--patience`` epochs (at most ``--max-epochs``), best-validation
  weights restored; the zero-shot ratio predicted / trained. The report counts the references that
  ran to ``--max-epochs`` without stopping early (their best epoch within ``--patience`` of the cap,
  so possibly still improving): the defaults (40 epochs, patience 4) leave few; 15 epochs left 40
  of the 67 digits references at the cap;
* **fine-tuning** with the same optimizer from predicted vs random init: test accuracy after one
  epoch (GHN-3's headline), and Adam steps until the test accuracy reaches the reference's test
  accuracy ("trained") minus 1 point (checked every ``--eval-every`` steps, a measurement only:
  nothing is chosen on it; runs that do not get there within the cap, twice the reference's best
  step, count as the cap, and the share that got there is reported). Not the validation split:
  the shipped GHNs were trained on the whole training split, so predicted networks have seen the
  validation share (on digits, 60 validation architectures: MLPs 1.000 there against 0.966 on the
  test split), which would favour predicted starts. The reference draws its minibatches with another
  seed (``seed + REFERENCE_SEED_OFFSET``) than the fine-tuning runs: had it used theirs,
  fine-tuning from the random init would replay the very trajectory that set the target and reach
  it by construction.

Results are merged per dataset into ``benchmarks/results/hyper.json`` (rows are written as they
are measured, so an interrupted run keeps what it finished) and rendered to ``hyper.md`` and
``hyper.png``.

    python benchmarks/hyper.py --data digits --per-split 50 --trained 10
    python benchmarks/hyper.py --render-only
    # one process per group of splits on a shared machine, then one report:
    python benchmarks/hyper.py --data digits --splits test,real-library,no-norm --out runs/hA
    python benchmarks/hyper.py --data digits --splits wide,deep,dense --out runs/hB
    python benchmarks/hyper.py --data digits --merge runs/hA,runs/hB

The GHN-independent measurements (random init, the Adam reference, fine-tuning from random init)
can be computed ahead, without a checkpoint, and reused (same seeds, same code path); a main run with
``--reference-cache`` adds the references it had to measure itself::

    python benchmarks/hyper.py --data digits --trained 10 --references-only --reference-cache refs.json
    python benchmarks/hyper.py --data digits --trained 10 --reference-cache refs.json

Design choices are measured on validation architectures (training-share configurations outside the
GHN's pool) and validation inputs (:func:`validation_data`), never on the held-out splits or the
test split: fine-tuning starts
and learning rates (``hyper.finetune.md``), ``standardize_units`` variants (``hyper.standardize.md``)
and a training run's snapshots (``hyper.validation-<data>.json``)::

    python benchmarks/hyper.py --data digits --finetune-ablation --validation-archs 12 --eval-every 20
    python benchmarks/hyper.py --data digits --standardize-ablation --per-split 50
    python benchmarks/hyper.py --data digits --validation-curve SNAPSHOT_DIR --validation-pool 3000
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from model_zoo import load_dataset  # noqa: E402
from weightspace.hyper import (  # noqa: E402
    GHN,
    has_normalization,
    prepare_for_finetuning,
    recalibrate_batchnorm,
    standardize_units,
)
from weightspace.hyper.recipe import validation_split  # noqa: E402
from weightspace.hyper.space import SPLITS, CellSpace, build_arch, config_key, linear_embed_twin  # noqa: E402

log = logging.getLogger("benchmarks.hyper")
RESULTS = Path(__file__).parent / "results"
ALL_SPLITS = (*SPLITS, "real-library")
BATCH = 64  # minibatch of every Adam run here (references and fine-tuning)


# ------------------------------------------------------------------------------ real-library split
class HFLogits(nn.Module):
    """A ``transformers`` image classifier returning its logits tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


_IMG = dict(image_size=8, num_channels=1, num_labels=10)
_HF = {
    "hf-resnet-basic": ("ResNetConfig", "ResNetForImageClassification",
                        dict(num_channels=1, num_labels=10, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                             layer_type="basic")),
    "hf-resnet-bottleneck": ("ResNetConfig", "ResNetForImageClassification",
                             dict(num_channels=1, num_labels=10, embedding_size=16, hidden_sizes=[16, 32],
                                  depths=[1, 1], layer_type="bottleneck")),
    "hf-convnext": ("ConvNextConfig", "ConvNextForImageClassification",
                    dict(num_channels=1, num_labels=10, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1],
                         patch_size=2)),
    "hf-convnextv2": ("ConvNextV2Config", "ConvNextV2ForImageClassification",
                      dict(num_channels=1, num_labels=10, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1],
                           patch_size=2)),
    "hf-regnet": ("RegNetConfig", "RegNetForImageClassification",
                  dict(num_channels=1, num_labels=10, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                       groups_width=8)),
    "hf-mobilenet-v2": ("MobileNetV2Config", "MobileNetV2ForImageClassification",
                        dict(_IMG, depth_multiplier=0.25, min_depth=4, classifier_dropout_prob=0.0)),
    "hf-vit": ("ViTConfig", "ViTForImageClassification",
               dict(_IMG, patch_size=2, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64)),
    "hf-deit": ("DeiTConfig", "DeiTForImageClassification",
                dict(_IMG, patch_size=2, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64)),
    "hf-beit": ("BeitConfig", "BeitForImageClassification",
                dict(_IMG, patch_size=2, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64)),
}


def real_library(data: str) -> list[tuple[str, callable]]:
    """``(name, builder)`` of the real-library split of ``data`` (HF models only for 2-D digits)."""
    from weightspace.archs import MLP, SmallCNN, SmallResNet, TinyViT
    from weightspace.examples import ClassTokenViT, ResNet

    out: list[tuple[str, callable]] = []
    if data == "digits":
        try:
            import transformers

            transformers.logging.set_verbosity_error()
            for name, (cc, mc, kw) in _HF.items():
                out.append((name, lambda cc=cc, mc=mc, kw=kw: HFLogits(
                    getattr(transformers, mc)(getattr(transformers, cc)(**kw)))))
        except ImportError:
            log.warning("transformers is not installed: the real-library split has the project's classes only")
        first = ["hf-resnet-basic", "hf-vit", "ws-resnet-8-16", "hf-convnext", "ws-classtoken-vit"]
        ws_models = [
            ("ws-resnet-8-16", lambda: ResNet(1, (8, 16), (1, 1))),
            ("ws-resnet-16-32-5x5stem", lambda: ResNet(1, (16, 32), (1, 1), stem_kernel=5)),
            ("ws-smallresnet", lambda: SmallResNet(1, 10, width=8, blocks=(2, 1))),
            ("ws-classtoken-vit", lambda: ClassTokenViT(image=8, patch=4, dim=16, depth=2, heads=2)),
            ("ws-classtoken-vit-p2", lambda: ClassTokenViT(image=8, patch=2, dim=24, depth=1, heads=2)),
            ("ws-tinyvit", lambda: TinyViT(1, 10, image_size=8, patch=2, dim=16, heads=2, depth=2)),
            ("ws-smallcnn-5x5", lambda: SmallCNN(1, 10, channels=[16, 32], layers=2, kernel_size=5, strides=[1, 2])),
            ("ws-mlp", lambda: MLP(64, 10, depth=2, width=[64, 32])),
        ]
        out += ws_models
        out.sort(key=lambda item: first.index(item[0]) if item[0] in first else len(first))
    else:
        out += [
            ("ws-tinyvit1d-p4", lambda: TinyViT(1, 10, image_size=40, patch=4, dim=16, heads=2, depth=2, dims=1)),
            ("ws-tinyvit1d-p8", lambda: TinyViT(1, 10, image_size=40, patch=8, dim=32, heads=4, depth=1, dims=1)),
            ("ws-smallcnn1d-k5", lambda: SmallCNN(1, 10, channels=[16, 32], layers=2, kernel_size=5,
                                                  strides=[1, 2], dims=1)),
            ("ws-smallcnn1d-k7", lambda: SmallCNN(1, 10, channels=[32, 32, 32], layers=3, kernel_size=7,
                                                  strides=[2, 1, 2], dims=1)),
            ("ws-mlp1d", lambda: MLP(40, 10, depth=2, width=[64, 64])),
        ]
    return out


def training_pools(ghn: GHN, data: str) -> list[dict]:
    """Every configuration of ``data``'s space that a checkpoint (or a run it continues) trained on:
    the union of the pools its recorded runs on ``data`` drew from (``config.json`` extras: ``train``
    ``pool``/``seed``/``linear_embed`` per run, nested under ``init``; runs on another dataset, the
    source of a ``--transfer``, are skipped)."""
    pools, meta = {}, ghn.meta
    while isinstance(meta, dict):
        train = meta.get("train") or {}
        if f"CellSpace({data!r}" in str(meta.get("space", "")) and "pool" in train:
            pools[(int(train["pool"]), int(train.get("seed", 0)), float(train.get("linear_embed") or 0.0))] = True
        meta = meta.get("init")
    space, out = CellSpace(data), {}
    for n, seed, share in pools:
        for c in space.train_pool(n, seed=seed, linear_embed=share):
            out.setdefault(config_key(c), c)
    return list(out.values())


def seen_in_training(ghn: GHN, model: nn.Module, pool: list[dict], counts: dict) -> list[str]:
    """Training-pool configurations whose parameter graph is the same as ``model``'s, as the GHN reads it.

    Two architectures are the same to the GHN when it predicts the same parameters for them from the
    same seeded draws; candidates are the pool members with ``model``'s parameter count (``counts``:
    config key -> count, filled on first use). A real-library model with such a twin was not unseen.
    """
    n = sum(p.numel() for p in model.parameters())
    if not counts:
        for c in pool:
            counts[config_key(c)] = sum(p.numel() for p in build_arch(c).parameters())

    def predicted(m: nn.Module) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = ghn.target(m)
        with torch.no_grad():
            return ghn.predict([t], [t.draw_init(torch.Generator().manual_seed(0))])[0]

    mine, out = predicted(model), []
    for c in pool:
        if counts[config_key(c)] == n:
            other = predicted(build_arch(c))
            if other.shape == mine.shape and torch.equal(other, mine):
                out.append(config_key(c))
    return out


def mark_seen(out: Path, data: str, seed: int = 0) -> None:
    """Add ``seen_in_training`` to every measured row of ``data``'s part of ``out/hyper.json``, for the
    checkpoint the part records (see :func:`seen_in_training`); the measurements are not touched."""
    path = out / "hyper.json"
    doc = json.loads(path.read_text())
    part = doc[data]
    ghn = GHN.from_pretrained(part["meta"]["checkpoint"])
    pool, counts = training_pools(ghn, data), {}
    builds = dict(real_library(data))
    space = CellSpace(data)
    for split, rows in part["rows"].items():
        configs = None if split == "real-library" else space.split(split, len(rows), seed=seed)
        for i, row in enumerate(rows):
            if "refused" in row:
                continue
            if configs is not None and row["name"] != f"{split}-{i}":
                raise SystemExit(f"benchmarks/hyper.py: row {i} of split {split!r} is {row['name']!r}, "
                                 f"expected {split}-{i}; cannot rebuild it")
            model = builds[row["name"]]() if configs is None else build_arch(configs[i])
            row["seen_in_training"] = seen_in_training(ghn, model, pool, counts)
        log.info("%s %s: %d of %d rows have a pool twin", data, split,
                 sum(bool(r.get("seen_in_training")) for r in rows), len(rows))
    part["meta"]["seen_marked"] = ("seen_in_training added afterwards by `python benchmarks/hyper.py --data "
                                   f"{data} --mark-seen` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    path.write_text(json.dumps(doc, indent=1))


# ------------------------------------------------------------------------------------ training


FRESH_MNIST1D = {"num_samples": 1250, "generator_seed": 1042}  # a draw of MNIST-1D no GHN or reference trains on


def validation_data(data: str, ds) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``(fit, val)`` of the design-choice tools (ablations, validation curve): ``fit`` is the training
    split minus its seeded 15% validation share (:func:`validation_split`), as in the benchmark.
    ``val`` is inputs no shipped GHN was trained on: for MNIST-1D, a fresh draw of its generator
    (:data:`FRESH_MNIST1D`, 1,250 samples); for digits, which has no more samples, the validation
    share, which the GHN did see (its training data is the whole training split), so predicted
    networks look better there than they are (on 60 validation architectures MLPs score 1.000 there
    against 0.966 on the test split; all architectures 0.804 against 0.828)."""
    fit_x, fit_y, val_x, val_y = validation_split(ds.x_train, ds.y_train, 0.15, seed=0)
    if data == "mnist1d":
        fresh = load_dataset("mnist1d", seed=0, **FRESH_MNIST1D)
        val_x, val_y = torch.cat([fresh.x_train, fresh.x_test]), torch.cat([fresh.y_train, fresh.y_test])
    return (fit_x, fit_y), (val_x, val_y)


SEEN_VALIDATION = ("the validation share of the training split (15%, seeded), which the GHN saw in training "
                   "(its training data is the whole training split)")


def validation_text(data: str) -> str:
    """What :func:`validation_data` holds out for ``data``, for the reports."""
    if data == "mnist1d":
        return (f"a fresh draw of the MNIST-1D generator ({FRESH_MNIST1D['num_samples']:,} samples, generator seed "
                f"{FRESH_MNIST1D['generator_seed']}) that no GHN or reference trains on")
    return SEEN_VALIDATION


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train_mode: bool = False) -> float:
    was = model.training
    model.train(train_mode)
    acc = float((model(x).argmax(-1) == y).float().mean())
    model.train(was)
    return acc


class Trainer:
    """Adam (lr 1e-3, batch 64) with a seeded minibatch order; BatchNorm statistics recomputed
    before every evaluation in eval mode."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, batch: int = BATCH,
                 lr: float = 1e-3) -> None:
        self.model, self.x, self.y, self.batch = model, x, y, batch
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.gen = torch.Generator().manual_seed(seed)
        self.steps_per_epoch = -(-len(x) // batch)
        self.order, self.pos, self.step = torch.randperm(len(x), generator=self.gen), 0, 0

    def train_step(self) -> None:
        if self.pos >= len(self.x):
            self.order, self.pos = torch.randperm(len(self.x), generator=self.gen), 0
        idx = self.order[self.pos : self.pos + self.batch]
        self.pos += self.batch
        self.model.train()
        loss = F.cross_entropy(self.model(self.x[idx]), self.y[idx])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> float:
        recalibrate_batchnorm(self.model, self.x)
        return accuracy(self.model, x, y)


def finetune_target(ref: dict) -> tuple[float, int]:
    """Fine-tuning target and step cap from a :func:`train_reference` result: its best validation
    accuracy minus 1 point, within twice its best step (at least 100). The held-out benchmark counts
    steps on the test split instead (:func:`test_target`); the ablations, which choose, on validation
    data."""
    return ref["val"] - 0.01, max(2 * ref["best_step"], 100)


def test_target(row: dict) -> float:
    """The held-out benchmark's fine-tuning target: the reference's test accuracy minus 1 point."""
    return row["trained"] - 0.01


def steps_or_cap(rows: list[dict], field: str) -> list[int]:
    """Steps to the fine-tuning target per row (``row[field]``), runs that never got there counted as
    the row's ``finetune_cap``."""
    return [r[field] if r[field] is not None else r["finetune_cap"] for r in rows]


def train_reference(model: nn.Module, fit, val, seed: int, max_epochs: int, patience: int) -> dict:
    """Adam until validation accuracy stalls for ``patience`` epochs; best weights restored."""
    tr = Trainer(model, *fit, seed)
    best, best_state, best_step, bad = -1.0, None, 0, 0
    for _ in range(max_epochs):
        for _ in range(tr.steps_per_epoch):
            tr.train_step()
        acc = tr.evaluate(*val)
        if acc > best:
            best, best_state, best_step, bad = acc, copy.deepcopy(model.state_dict()), tr.step, 0
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    return {"val": best, "best_step": best_step, "steps_run": tr.step}


def finetune(model: nn.Module, fit, track, test, seed: int, target: float, cap: int, eval_every: int,
             lr: float = 1e-3) -> dict:
    """Accuracy on ``test`` after one epoch and steps until the accuracy on ``track`` is >= ``target``
    (None: not within ``cap``)."""
    tr = Trainer(model, *fit, seed, lr=lr)
    reached = 0 if tr.evaluate(*track) >= target else None
    one_epoch = None
    while tr.step < max(cap, tr.steps_per_epoch):
        tr.train_step()
        if tr.step == tr.steps_per_epoch:
            one_epoch = tr.evaluate(*test)
        if reached is None and tr.step % eval_every == 0 and tr.step <= cap and tr.evaluate(*track) >= target:
            reached = tr.step
        if reached is not None and one_epoch is not None:
            break
    return {"acc_1_epoch": one_epoch, "steps_to_target": reached}


# ------------------------------------------------------------------------------------ one architecture
REFERENCE_KEYS = ("random", "trained", "trained_val", "trained_steps", "finetune_cap", "ft_rand_1_epoch",
                  "ft_rand_steps", "steps_on")
STEPS_ON = "test"  # what fine-tuning steps are counted on (cache entries counted on "validation" are upgraded)


def reference_key(data: str, split: str, name: str, config: dict | None, args) -> str:
    """Key of an architecture's GHN-independent measurements in the reference cache."""
    arch = json.dumps(config, sort_keys=True) if config is not None else name
    return (f"{data}|{split}|{arch}|seed={args.seed}|max_epochs={args.max_epochs}|patience={args.patience}|"
            f"eval_every={args.eval_every}|reference_seed=+{REFERENCE_SEED_OFFSET}")


WEAK_REFERENCE = 0.5  # references below this share of their split's median trained accuracy are flagged in the report
REFERENCE_SEED_OFFSET = 1  # the reference's minibatch order differs from the fine-tuning runs' (module docs)


def measure_reference(name: str, build, ds, fit, val, args) -> dict:
    """The GHN-independent part of :func:`measure`: random-init accuracy, the Adam reference and
    fine-tuning from the random init (the same seeds and code path as :func:`measure`)."""
    test = (ds.x_test, ds.y_test)
    t0 = time.perf_counter()
    random_model = random_init(build, fit, args.seed)
    row = {"name": name, "random": accuracy(random_model, *test)}
    ref_model = copy.deepcopy(random_model)
    ref = train_reference(ref_model, fit, val, args.seed + REFERENCE_SEED_OFFSET, args.max_epochs, args.patience)
    row["trained"] = accuracy(ref_model, *test)
    row["trained_val"], row["trained_steps"] = ref["val"], ref["best_step"]
    row["finetune_cap"] = finetune_target(ref)[1]
    row.update(random_finetune(random_model, row, fit, test, args))
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def upgrade_reference(cached: dict, build, fit, test, args) -> dict:
    """A cached reference whose fine-tuning from the random init was counted on the validation split,
    with that run done again and counted on the test split (the Adam reference itself is kept: its
    protocol, and so its cache key, is unchanged)."""
    return {**cached, **random_finetune(random_init(build, fit, args.seed), cached, fit, test, args)}


def random_init(build, fit, seed: int) -> nn.Module:
    """The architecture's seeded default initialization (the same seed rebuilds the same weights), its
    BatchNorm statistics recomputed on the training inputs."""
    torch.manual_seed(seed)
    model = build()
    recalibrate_batchnorm(model, fit[0])
    return model


def random_finetune(random_model: nn.Module, row: dict, fit, test, args) -> dict:
    """Fine-tuning from the random init: 1-epoch test accuracy and steps to :func:`test_target`."""
    ft = finetune(random_model, fit, test, test, args.seed, test_target(row), row["finetune_cap"], args.eval_every)
    return {"ft_rand_1_epoch": ft["acc_1_epoch"], "ft_rand_steps": ft["steps_to_target"], "steps_on": STEPS_ON}


STANDARDIZE_INPUTS = 512  # training inputs on which standardize_units measures a norm-free network's units


def prepared(pred_model: nn.Module, fit, seed: int, noise: float | None = None) -> tuple[nn.Module, float]:
    """A copy of the predicted network after :func:`~weightspace.hyper.prepare_for_finetuning` on the
    first 256 training inputs (``noise``: None for the library's default), and the noise it added."""
    model = copy.deepcopy(pred_model)
    prep = prepare_for_finetuning(model, fit[0][:256], seed=seed, **({} if noise is None else {"noise": noise}))
    return model, prep.noise


def measure(name: str, build, ghn: GHN, ds, fit, val, args, train_ref: bool, cached: dict | None = None) -> dict:
    """Zero-shot, random-init, reference and fine-tuning results of one architecture.

    ``cached``: the architecture's :func:`measure_reference` row (from ``--reference-cache``); its
    GHN-independent numbers are reused instead of recomputed (same seeds, same code path)."""
    row: dict = {"name": name}
    test = (ds.x_test, ds.y_test)
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    random_model = build()
    row["params"] = sum(p.numel() for p in random_model.parameters())
    pred_model = copy.deepcopy(random_model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ghn(pred_model, seed=args.seed)
    except Exception as e:  # noqa: BLE001 - a refusal is a result of the benchmark
        row["refused"] = f"{type(e).__name__}: {str(e)[:300]}"
        return row
    recalibrate_batchnorm(pred_model, fit[0])
    row["zero_shot"] = accuracy(pred_model, *test)
    if standardize_units(pred_model, fit[0][:STANDARDIZE_INPUTS]).standardized:  # norm-free: evaluate again
        row["zero_shot_unstandardized"], row["zero_shot"] = row["zero_shot"], accuracy(pred_model, *test)
    row["zero_shot_train_mode"] = accuracy(pred_model, *test, train_mode=True)
    if not train_ref:
        recalibrate_batchnorm(random_model, fit[0])
        row["random"] = accuracy(random_model, *test)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        return row
    if cached is None:  # the same seed rebuilds the same random init
        cached = measure_reference(name, build, ds, fit, val, args)
    else:
        row["reference_cached"] = True
        if cached.get("steps_on") != STEPS_ON:
            cached, row["reference_upgraded"] = upgrade_reference(cached, build, fit, test, args), True
    row.update({k: cached[k] for k in REFERENCE_KEYS})
    target, cap = test_target(row), row["finetune_cap"]
    prep_model, row["prep_noise"] = prepared(pred_model, fit, args.seed)
    for kind, model in (("pred", pred_model), ("prep", prep_model)):
        ft = finetune(model, fit, test, test, args.seed, target, cap, args.eval_every)
        row[f"ft_{kind}_1_epoch"], row[f"ft_{kind}_steps"] = ft["acc_1_epoch"], ft["steps_to_target"]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


# ------------------------------------------------------------------------------------ report
def _ms(v: list[float]) -> str:
    v = [x for x in v if x is not None]
    return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if v else "-"


def summarize(rows: list[dict]) -> dict:
    ok = [r for r in rows if "refused" not in r]
    tr = [r for r in ok if "trained" in r]
    s = {"archs": len(rows), "refused": len(rows) - len(ok), "zero_shot": [r["zero_shot"] for r in ok],
         "zero_shot_train_mode": [r["zero_shot_train_mode"] for r in ok], "random": [r["random"] for r in ok],
         "n_trained": len(tr), "trained": [r["trained"] for r in tr], "zero_shot_on_trained": [r["zero_shot"] for r in tr],
         "ratio": [r["zero_shot"] / r["trained"] for r in tr if r["trained"] > 0],
         "ft_pred_1_epoch": [r["ft_pred_1_epoch"] for r in tr], "ft_rand_1_epoch": [r["ft_rand_1_epoch"] for r in tr]}
    for k in ("pred", "rand", "prep"):
        rs = [r for r in tr if f"ft_{k}_steps" in r]  # "prep": rows measured since prepare_for_finetuning
        s[f"ft_{k}_steps"] = steps_or_cap(rs, f"ft_{k}_steps")
        s[f"ft_{k}_reached"] = sum(r[f"ft_{k}_steps"] is not None for r in rs)
    s["ft_prep_1_epoch"] = [r["ft_prep_1_epoch"] for r in tr if "ft_prep_1_epoch" in r]
    return s


GOALS = {"test": 0.8, "wide": 0.6, "deep": 0.6, "dense": 0.6, "no-norm": 0.6, "real-library": 0.5}


def merge_parts(dirs: list[Path], data: str, out: Path) -> None:
    """Merge the ``data`` parts of runs over disjoint groups of splits (one process each, same protocol
    and seeds) into ``out/hyper.json``; the other datasets' parts there are kept.

    Raises:
        SystemExit: a part is missing, two parts measured the same split, or their protocols differ.
    """
    parts = []
    for d in dirs:
        doc = json.loads((d / "hyper.json").read_text()) if (d / "hyper.json").is_file() else {}
        if data not in doc:
            raise SystemExit(f"benchmarks/hyper.py --merge: {d / 'hyper.json'} has no {data!r} part")
        parts.append(doc[data])
    protocol = ("checkpoint", "seed", "per_split", "trained", "max_epochs", "patience", "threads", "torch", "steps_on")
    for p in parts[1:]:
        diff = [k for k in protocol if p["meta"].get(k) != parts[0]["meta"].get(k)]
        if diff:
            raise SystemExit(f"benchmarks/hyper.py --merge: the parts differ in {diff}; merge only runs of one protocol")
    rows: dict = {}
    for p in parts:
        for split, r in p["rows"].items():
            if split in rows:
                raise SystemExit(f"benchmarks/hyper.py --merge: split {split!r} was measured by two parts")
            rows[split] = r
    rows = {sp: rows[sp] for sp in sorted(rows, key=lambda sp: ALL_SPLITS.index(sp) if sp in ALL_SPLITS else len(ALL_SPLITS))}
    metas = [p["meta"] for p in parts]
    meta = dict(metas[0])
    meta.update(
        command=metas[0]["command"].split(" --out ")[0] + " (and the same command with "
                + "; with ".join("--splits " + ",".join(p["rows"]) for p in parts[1:])
                + "; the parts merged by split with --merge)",
        command_parts=[m["command"] for m in metas], date=max(m["date"] for m in metas),
        load_start=max(m["load_start"] for m in metas), load_end=max(m.get("load_end", 0) for m in metas),
        wall_minutes=max(m.get("wall_minutes", 0) for m in metas), merged=True,
        note=(f"{len(parts)} processes of the same protocol and seeds, one per group of splits, merged by split "
              "(`--merge`); " + "; ".join(f"{', '.join(p['rows'])} run {p['meta']['date']} (load average "
                                          f"{p['meta']['load_start']}-{p['meta'].get('load_end', '?')}, "
                                          f"{p['meta'].get('wall_minutes', '?')} min)" for p in parts) + "."
              + (" Adam references (and fine-tuning from the random init) read from the "
                                "`--reference-cache` where present (same seeds and schedule), else measured and "
                                "added to it; zero-shot and fine-tuning from the predicted weights measured by "
                                "these runs." if "--reference-cache" in metas[0]["command"] else "")))
    path = out / "hyper.json"
    current = json.loads(path.read_text()) if path.is_file() else {}
    current[data] = {"meta": meta, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=1))


def references_at_cap(part: dict) -> tuple[int, int] | None:
    """(references whose training reached ``max_epochs`` without an early stop, references); ``None``
    when the part does not record its steps per epoch. Early stopping after epoch ``e`` needs a best
    epoch of at most ``e - patience``, so a best epoch above ``max_epochs - patience`` means the cap."""
    meta = part["meta"]
    spe = meta.get("steps_per_epoch")
    if not spe:
        return None
    last_stop = (meta["max_epochs"] - meta["patience"]) * spe
    rows = [r for rows in part["rows"].values() for r in rows if r.get("trained_steps") is not None]
    return sum(r["trained_steps"] > last_stop for r in rows), len(rows)


def weak_references(rows_by_split: dict) -> tuple[list[tuple[str, dict]], dict[str, list[float]]]:
    """References below ``WEAK_REFERENCE`` of their split's median trained accuracy (Adam stalled), and
    per split with any, the zero-shot / trained ratios of the others."""
    weak, kept = [], {}
    for split, rows in rows_by_split.items():
        tr = [r for r in rows if r.get("trained") is not None and "refused" not in r]
        if not tr:
            continue
        floor = WEAK_REFERENCE * float(np.median([r["trained"] for r in tr]))
        weak += [(split, r) for r in tr if r["trained"] < floor]
        if any(r["trained"] < floor for r in tr):
            kept[split] = [r["zero_shot"] / r["trained"] for r in tr if r["trained"] >= floor]
    return weak, kept


def prep_noise_text(doc: dict) -> str:
    """How the *prepared* rows were made: the noise of ``prepare_for_finetuning`` they record (rows
    measured before the record existed used the former default, 0.5)."""
    noises = sorted({r.get("prep_noise", 0.5) for part in doc.values() if isinstance(part, dict)
                     for rows in part.get("rows", {}).values() for r in rows if "ft_prep_steps" in r})
    if noises == [0.0]:
        return "no noise: the outputs are kept"
    return "relative noise " + " or ".join(f"{n:g}" for n in noises)


def render(out: Path) -> None:
    doc = json.loads((out / "hyper.json").read_text())
    lines = ["# GHN benchmark: predicted parameters on held-out architectures", "",
             "Produced by `benchmarks/hyper.py` (protocol in its docstring). Zero-shot: test accuracy with no "
             "training; *trained*: Adam from the random init with early stopping on a validation split (15% of "
             "the training split; never the test split); ratio: zero-shot / trained per architecture "
             "(mean ± std over architectures) on the architectures that got a reference. Fine-tuning: Adam "
             "lr 1e-3, batch 64 from predicted vs random init; *prepared*: predicted weights after "
             "`prepare_for_finetuning` (scale-invariant layers rescaled to the default init's size; "
             f"{prep_noise_text(doc)}); *steps to trained−1pt*: Adam steps until the test accuracy reaches the "
             "reference's test accuracy minus 1 point (a measurement, checked every few steps; the GHN was trained "
             "on the whole training split, validation share included, so that share would favour predicted starts); "
             "runs that never got there count as the cap (2x the reference's best step); *reached* counts "
             "those that did; the reference draws its minibatches in another order than the fine-tuning runs, so "
             "that fine-tuning from the random init does not replay the run that set its target. BatchNorm statistics are recomputed on the training inputs before every "
             "evaluation. Predicted networks without any normalization layer get `standardize_units` on 512 training "
             "inputs (no labels) before evaluation and fine-tuning; the random init does not.", ""]
    for data, part in doc.items():
        m = part["meta"]
        lines += [f"## {data} (checkpoint `{m['checkpoint']}`)", "",
                  f"Command: `{m['command']}`; {m['date']}; {m['threads']} thread, torch {m['torch']}; load average "
                  f"{m['load_start']} at the start, {m['load_end']} at the end (2 CPU cores shared); "
                  f"{m['wall_minutes']} min; seed {m['seed']} (architecture sampling, init, minibatches).", ""]
        if m.get("note"):
            lines += [m["note"], ""]
        if m.get("steps_on") != STEPS_ON:
            lines += ["Fine-tuning steps of this part are counted on the validation split, against the reference's "
                      "best validation accuracy minus 1 point.", ""]
        lines += ["| split | archs (refused) | zero-shot | random init | train-mode zero-shot | trained (n) | "
                  "zero-shot / trained | goal | 1 epoch: pred / prepared / rand | steps to trained−1pt: pred / prepared / "
                  "rand (reached: pred/prepared/rand of n) | step ratio pred/rand, prepared/rand (goal ≤ 0.33) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for split, rows in part["rows"].items():
            s = summarize(rows)
            ratio = np.mean(s["ratio"]) if s["ratio"] else float("nan")
            goal = GOALS.get(split, 0.6)
            met = "-" if not s["ratio"] else ("met" if ratio >= goal else "not met")
            sp, sr, sq = s["ft_pred_steps"], s["ft_rand_steps"], s["ft_prep_steps"]
            step_ratio = (f"{np.mean(sp) / np.mean(sr):.2f}" if sp and np.mean(sr) > 0 else "-")
            step_ratio += (f", {np.mean(sq) / np.mean(sr):.2f}" if sq and np.mean(sr) > 0 else ", -")
            lines.append(
                f"| {split} | {s['archs']} ({s['refused']}) | {_ms(s['zero_shot'])} | {_ms(s['random'])} | "
                f"{_ms(s['zero_shot_train_mode'])} | {_ms(s['trained'])} ({s['n_trained']}) | {_ms(s['ratio'])} | "
                f"≥ {goal}: {met} | {_ms(s['ft_pred_1_epoch'])} / {_ms(s['ft_prep_1_epoch'])} / "
                f"{_ms(s['ft_rand_1_epoch'])} | {np.mean(sp) if sp else float('nan'):.0f} / "
                f"{np.mean(sq) if sq else float('nan'):.0f} / {np.mean(sr) if sr else float('nan'):.0f} "
                f"({s['ft_pred_reached']}/{s['ft_prep_reached'] if sq else '-'}/{s['ft_rand_reached']} of "
                f"{s['n_trained']}) | {step_ratio} |")
        goals = []
        for split, rows in part["rows"].items():
            s = summarize(rows)
            if not s["ratio"]:
                continue
            sr = np.mean(s["ft_rand_steps"])
            ft, epoch = [], []
            for k, label in (("pred", "pred"), ("prep", "prepared")):
                if not s[f"ft_{k}_steps"]:
                    continue
                sk = np.mean(s[f"ft_{k}_steps"])
                ft.append(f"{label} / rand {sk / sr:.2f} ({'met' if sk <= sr / 3 else 'not met'})")
                if split == "real-library":
                    a1, r1 = np.mean(s[f"ft_{k}_1_epoch"]), np.mean(s["ft_rand_1_epoch"])
                    epoch.append(f"{label} / rand {a1 / r1:.2f} ({'met' if a1 >= 2 * r1 else 'not met'})")
            goals.append(f"- {split}: zero-shot / trained {np.mean(s['ratio']):.2f} (goal ≥ {GOALS.get(split, 0.6)}: "
                         f"{'met' if np.mean(s['ratio']) >= GOALS.get(split, 0.6) else 'not met'}); fine-tuning steps "
                         f"(goal ≤ 1/3): " + ", ".join(ft)
                         + (f"; 1-epoch accuracy (goal ≥ 2): {', '.join(epoch)}" if epoch else ""))
        if goals:
            lines += ["", "Goals of issue #26:", ""] + goals
        capped = references_at_cap(part)
        if capped is not None:
            n_cap, n_ref = capped
            lines += ["", f"Adam references that ran to the epoch cap ({part['meta']['max_epochs']} epochs) without early "
                      f"stopping, their best validation epoch within the patience ({part['meta']['patience']}) of the "
                      f"cap, so possibly still improving: {n_cap} of {n_ref}."]
        unstd = {split: [r for r in rows if "zero_shot_unstandardized" in r] for split, rows in part["rows"].items()}
        unstd = {split: rs for split, rs in unstd.items() if rs}
        if unstd:
            lines += ["", "Norm-free predicted networks, zero-shot accuracy before → after `standardize_units` "
                      "(mean ± std): " + "; ".join(
                          f"{split} ({len(rs)} of {len(part['rows'][split])}) "
                          f"{_ms([r['zero_shot_unstandardized'] for r in rs])} → {_ms([r['zero_shot'] for r in rs])}"
                          for split, rs in unstd.items()) + "."]
        weak, kept = weak_references(part["rows"])
        if weak:
            lines += ["", f"References below {WEAK_REFERENCE} of their split's median trained accuracy (Adam stalled "
                      "before converging; their zero-shot / trained ratios weigh heavily in the split's mean): "
                      + ", ".join(f"{r['name']} ({split}, trained {r['trained']:.3f}, zero-shot "
                                  f"{r['zero_shot']:.3f})" for split, r in weak)
                      + ". Zero-shot / trained without them: "
                      + "; ".join(f"{split} {np.mean(v):.2f}" for split, v in kept.items() if v) + "."]
        refused = [(split, r["name"], r["refused"]) for split, rows in part["rows"].items() for r in rows
                   if "refused" in r]
        if refused:
            lines += ["", "Refused:", ""] + [f"- {sp} / {n}: {why}" for sp, n, why in refused]
        seen_lines = []
        for split, rows in part["rows"].items():
            seen = [r for r in rows if r.get("seen_in_training")]
            if not seen:
                continue
            s, goal = summarize([r for r in rows if not r.get("seen_in_training")]), GOALS.get(split, 0.6)
            text = (f"- {split}: " + ", ".join(f"{r['name']} ({len(r['seen_in_training'])} pool twin"
                                              f"{'s' if len(r['seen_in_training']) > 1 else ''})" for r in seen)
                    + f". Without them ({s['archs'] - s['refused']}): zero-shot {_ms(s['zero_shot'])}")
            if s["ratio"]:
                text += (f", zero-shot / trained {np.mean(s['ratio']):.2f} ({s['n_trained']} references; goal ≥ "
                         f"{goal}: {'met' if np.mean(s['ratio']) >= goal else 'not met'})")
            if split == "real-library" and s["ft_prep_1_epoch"]:
                a1, r1 = np.mean(s["ft_prep_1_epoch"]), np.mean(s["ft_rand_1_epoch"])
                text += f"; 1 epoch prepared / rand {a1 / r1:.2f} (goal ≥ 2: {'met' if a1 >= 2 * r1 else 'not met'})"
            seen_lines.append(text + ".")
        checked_rows = [r for rows in part["rows"].values() for r in rows if "seen_in_training" in r]
        if checked_rows:
            lines += ["", "Held-out architectures whose parameter graph is, to the GHN, the same as an architecture of "
                      "its training pool (it predicts the same parameters for both; `seen_in_training`, checked on "
                      f"{len(checked_rows)} architectures" + (f"; {part['meta']['seen_marked']}" if
                                                               part["meta"].get("seen_marked") else "")
                      + "): " + ("none." if not seen_lines else ""), ""] + seen_lines
        rl = part["rows"].get("real-library", [])
        if rl:
            checked = any("seen_in_training" in r for r in rl)
            lines += ["", "Real-library architectures:", "", "| model | params | zero-shot | random | trained | "
                      "1 epoch pred / rand |" + (" same graph as a pool architecture |" if checked else ""),
                      "|---|---|---|---|---|---|" + ("---|" if checked else "")]
            for r in rl:
                twin = (" yes |" if r.get("seen_in_training") else " no |") if checked else ""
                if "refused" in r:
                    lines.append(f"| {r['name']} | {r.get('params', '-')} | refused | | | |" + (" |" if checked else ""))
                    continue
                zs = (f"{r['zero_shot']:.3f} ({r['zero_shot_unstandardized']:.3f} unstandardized)"
                      if "zero_shot_unstandardized" in r else f"{r['zero_shot']:.3f}")
                lines.append(f"| {r['name']} | {r['params']} | {zs} | {r['random']:.3f} | "
                             f"{r.get('trained', float('nan')):.3f} | {r.get('ft_pred_1_epoch') or float('nan'):.3f} / "
                             f"{r.get('ft_rand_1_epoch') or float('nan'):.3f} |" + twin)
        lines.append("")
    (out / "hyper.md").write_text("\n".join(lines) + "\n")
    datasets = list(doc)
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(6 * max(1, len(datasets)), 4), squeeze=False)
    for ax, data in zip(axes[0], datasets):
        splits = list(doc[data]["rows"])
        xs = np.arange(len(splits))
        for j, (key, label) in enumerate([("random", "random init"), ("zero_shot", "GHN zero-shot"),
                                          ("trained", "Adam-trained")]):
            vals = [summarize(doc[data]["rows"][s])[key] for s in splits]
            ax.bar(xs + (j - 1) * 0.27, [np.mean(v) if v else 0 for v in vals], 0.27,
                   yerr=[np.std(v) if v else 0 for v in vals], label=label, capsize=2)
        ax.set_xticks(xs, splits, rotation=20)
        ax.set_ylim(0, 1)
        ax.set_title(f"{data}: test accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "hyper.png", dpi=110)


# ------------------------------------------------------------------------------------ standardization ablation
ABLATION_GROUPS = (("no-norm", False), ("real-library", False), ("test", True), ("real-library", True))


def standardize_ablation(data: str, per_split: int, out: Path, seed: int = 0) -> dict:
    """Zero-shot validation accuracy (:func:`validation_data`; the design choices of
    ``standardize_units`` are made here, never on the test split) of predicted networks as filled, after ``standardize_units`` with
    ``center=False`` (rescaled only) and after it in full; for norm-free networks (``no-norm`` split,
    norm-free real-library models) and, with ``force=True``, for networks with normalization
    (``test`` split, real-library models with normalization). Written to ``out/hyper.standardize.json|md``
    (one part per dataset)."""
    ds = load_dataset(data, seed=0)
    (fit_x, _), val = validation_data(data, ds)
    ghn = GHN.from_pretrained(f"hypernet-{data}")
    space = CellSpace(data)
    items = [("no-norm", f"no-norm-{i}", lambda c=c: build_arch(c)) for i, c in enumerate(space.split("no-norm", per_split, seed))]
    items += [("test", f"test-{i}", lambda c=c: build_arch(c)) for i, c in enumerate(space.split("test", per_split, seed))]
    items += [("real-library", n, b) for n, b in real_library(data)]
    rows, t0 = [], time.perf_counter()
    for split, name, build in tqdm(items, desc=f"{data} standardization"):
        torch.manual_seed(seed)
        model = build()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ghn(model, seed=seed)
        except Exception as e:  # noqa: BLE001 - refused models are reported by the main benchmark
            log.warning("%s: refused (%s)", name, type(e).__name__)
            continue
        recalibrate_batchnorm(model, fit_x)
        row = {"split": split, "name": name, "norm": has_normalization(model), "raw": accuracy(model, *val)}
        for key, center in (("scale_only", False), ("standardized", True)):
            m = copy.deepcopy(model)
            standardize_units(m, fit_x[:STANDARDIZE_INPUTS], center=center, force=True)
            recalibrate_batchnorm(m, fit_x)
            row[key] = accuracy(m, *val)
        rows.append(row)
    path = out / "hyper.standardize.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc[data] = {"meta": {"command": "python benchmarks/hyper.py " + " ".join(sys.argv[1:]), "seed": seed,
                          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
                          "minutes": round((time.perf_counter() - t0) / 60, 1), "checkpoint": f"hypernet-{data}",
                          "inputs": STANDARDIZE_INPUTS, "validation": validation_text(data)}, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    lines = ["# Standardizing the units of predicted networks (`standardize_units`)", "",
             "Zero-shot accuracy on validation inputs (the test split is not used here; per dataset below) (mean ± std over architectures) of networks filled by the shipped GHN: as "
             "filled (BatchNorm statistics recalibrated on the rest of the training split), after `standardize_units(model, x, center=False)` "
             "(each unit's pre-activation rescaled to standard deviation 1 on 512 training inputs) and after "
             "`standardize_units(model, x)` (also centred). Networks with normalization layers are standardized "
             "here with `force=True`; the library leaves them unchanged. Produced by `benchmarks/hyper.py "
             "--standardize-ablation`.", ""]
    for d, part in doc.items():
        m = part["meta"]
        lines += [f"## {d} (`{m['checkpoint']}`)", "", f"Command: `{m['command']}`; {m['date']}; torch {m['torch']}; "
                  f"{m['minutes']} min; seed {m['seed']}. Validation inputs: {m.get('validation', SEEN_VALIDATION)}.", "",
                  "| architectures | n | as filled | rescaled only | standardized |", "|---|---|---|---|---|"]
        for split, norm in ABLATION_GROUPS:
            rs = [r for r in part["rows"] if r["split"] == split and r["norm"] == norm]
            if rs:
                label = f"{split} architectures, {'with normalization (forced)' if norm else 'norm-free'}"
                lines.append(f"| {label} | {len(rs)} | {_ms([r['raw'] for r in rs])} | "
                             f"{_ms([r['scale_only'] for r in rs])} | {_ms([r['standardized'] for r in rs])} |")
        lines.append("")
    (out / "hyper.standardize.md").write_text("\n".join(lines))
    fig, axes = plt.subplots(1, len(doc), figsize=(6 * len(doc), 4), squeeze=False)
    for ax, (d, part) in zip(axes[0], doc.items()):
        groups = [(sp, nm) for sp, nm in ABLATION_GROUPS
                  if any(r["split"] == sp and r["norm"] == nm for r in part["rows"])]
        xs = np.arange(len(groups))
        for j, (key, label) in enumerate((("raw", "as filled"), ("scale_only", "rescaled only"),
                                          ("standardized", "standardized"))):
            vals = [[r[key] for r in part["rows"] if r["split"] == sp and r["norm"] == nm] for sp, nm in groups]
            ax.bar(xs + (j - 1) * 0.27, [np.mean(v) for v in vals], 0.27, yerr=[np.std(v) for v in vals],
                   label=label, capsize=2)
        ax.set_xticks(xs, [f"{sp} archs\n{'normalized (forced)' if nm else 'norm-free'}" for sp, nm in groups], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("zero-shot validation accuracy")
        ax.set_title(f"{d}: standardize_units")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "hyper.standardize.png", dpi=110)
    plt.close(fig)
    return doc


# ------------------------------------------------------------------------------------ fine-tuning ablation
FINETUNE_VARIANTS = (  # (key, label, start, prepare_for_finetuning noise or None, Adam lr)
    ("rand", "random init", "random", None, 1e-3),
    ("rand_lr3e-3", "random init, lr 3e-3", "random", None, 3e-3),
    ("pred", "as filled", "predicted", None, 1e-3),
    ("pred_lr3e-4", "as filled, lr 3e-4", "predicted", None, 3e-4),
    ("pred_lr3e-3", "as filled, lr 3e-3", "predicted", None, 3e-3),
    ("prep0", "prepared, no noise (default)", "predicted", 0.0, 1e-3),
    ("prep0.5", "prepared, noise 0.5", "predicted", 0.5, 1e-3),
)


def finetune_ablation(data: str, n_archs: int, out: Path, args, pool: int = 3000) -> dict:
    """Fine-tuning variants on *validation architectures* (:func:`validation_archs`: training-share
    configurations outside the recipe's pool of ``pool``; never the held-out splits) and the
    validation inputs of :func:`validation_data` (the test split is not used): for each architecture an Adam
    reference from the random init as in the main benchmark, then every variant of
    :data:`FINETUNE_VARIANTS` (start, ``prepare_for_finetuning`` noise, learning rate) fine-tuned with
    the fine-tuning runs' minibatch order: validation accuracy after one epoch and steps until the
    reference's best validation accuracy - 1 point (cap: 2x the reference's best step). Written to
    ``out/hyper.finetune.json|md|png`` (one part per dataset). The choices of
    ``prepare_for_finetuning``'s defaults are made here."""
    ds = load_dataset(data, seed=0)
    fit, val = validation_data(data, ds)
    fit_x = fit[0]
    ghn = GHN.from_pretrained(args.checkpoint or f"hypernet-{data}")
    rows, t0, load0 = [], time.perf_counter(), round(os.getloadavg()[0], 1)
    for i, config in enumerate(tqdm(validation_archs(CellSpace(data), n_archs, pool, args.seed),
                                    desc=f"{data} fine-tuning ablation")):
        torch.manual_seed(args.seed)
        random_model = build_arch(config)
        pred_model = copy.deepcopy(random_model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ghn(pred_model, seed=args.seed)
        recalibrate_batchnorm(pred_model, fit_x)
        standardize_units(pred_model, fit_x[:STANDARDIZE_INPUTS])
        ref_model = copy.deepcopy(random_model)
        ref = train_reference(ref_model, fit, val, args.seed + REFERENCE_SEED_OFFSET, args.max_epochs, args.patience)
        target, cap = finetune_target(ref)
        row = {"name": f"validation-{i}", "kind": config["kind"], "norm": config.get("norm"),
               "trained_val": ref["val"], "finetune_cap": cap, "zero_shot_val": accuracy(pred_model, *val)}
        for key, _, start, noise, lr in FINETUNE_VARIANTS:
            if noise is not None:
                model = prepared(pred_model, fit, args.seed, noise)[0]
            else:
                model = copy.deepcopy(random_model if start == "random" else pred_model)
            ft = finetune(model, fit, val, val, args.seed, target, cap, args.eval_every, lr=lr)
            row[f"{key}_1_epoch"], row[f"{key}_steps"] = ft["acc_1_epoch"], ft["steps_to_target"]
        rows.append(row)
    path = out / "hyper.finetune.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc[data] = {"meta": {"command": "python benchmarks/hyper.py " + " ".join(sys.argv[1:]), "seed": args.seed,
                          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
                          "minutes": round((time.perf_counter() - t0) / 60, 1), "load": [load0, round(os.getloadavg()[0], 1)],
                          "checkpoint": args.checkpoint or f"hypernet-{data}", "pool": pool,
                          "validation": validation_text(data)}, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    render_finetune_ablation(doc, out)
    return doc


def render_finetune_ablation(doc: dict, out: Path) -> None:
    lines = ["# Fine-tuning from predicted weights: starts and learning rates", "",
             "Validation architectures (training-share configurations outside the GHN's training pool; not the "
             "benchmark's held-out splits) and validation inputs (per dataset below; the test split is not used). Adam, batch 64, the same minibatch order for every variant; the reference "
             "is Adam lr 1e-3 from the random init with early stopping, as in `hyper.md`. *Steps*: until "
             "validation accuracy reaches the reference's best - 1 point (mean over architectures; runs that never "
             "got there count as the cap, 2x the reference's best step); *ratio*: mean steps / mean steps of the "
             "random init at lr 1e-3 (issue #26's goal: ≤ 0.33). Predicted networks without normalization get "
             "`standardize_units` first, as in the main benchmark. Produced by `benchmarks/hyper.py "
             "--finetune-ablation`.", ""]
    for d, part in doc.items():
        m, rows = part["meta"], part["rows"]
        base = np.mean(steps_or_cap(rows, "rand_steps"))
        lines += [f"## {d} (`{m['checkpoint']}`, {len(rows)} architectures)", "",
                  f"Command: `{m['command']}`; {m['date']}; torch {m['torch']}; {m['minutes']} min; load average "
                  f"{m['load'][0]}-{m['load'][1]} (2 CPU cores); seed {m['seed']}. Validation inputs: "
                  f"{m.get('validation', SEEN_VALIDATION)}.", "",
                  "| start | 1-epoch validation accuracy | steps to trained−1pt | reached | ratio to random init |",
                  "|---|---|---|---|---|"]
        for key, label, *_ in FINETUNE_VARIANTS:
            st = steps_or_cap(rows, f"{key}_steps")
            reached = sum(r[f"{key}_steps"] is not None for r in rows)
            lines.append(f"| {label} | {_ms([r[f'{key}_1_epoch'] for r in rows])} | {np.mean(st):.0f} | "
                         f"{reached}/{len(rows)} | {np.mean(st) / base:.2f} |")
        lines.append("")
    (out / "hyper.finetune.md").write_text("\n".join(lines))
    fig, axes = plt.subplots(1, len(doc), figsize=(6 * len(doc), 4), squeeze=False)
    for ax, (d, part) in zip(axes[0], doc.items()):
        rows = part["rows"]
        base = np.mean(steps_or_cap(rows, "rand_steps"))
        ratios = [np.mean(steps_or_cap(rows, f"{key}_steps")) / base for key, *_ in FINETUNE_VARIANTS]
        ys = np.arange(len(FINETUNE_VARIANTS))
        ax.barh(ys, ratios, color=["0.6" if start == "random" else "C0" for _, _, start, *_ in FINETUNE_VARIANTS])
        ax.axvline(1.0, color="k", lw=0.8)
        ax.axvline(1 / 3, color="C3", ls="--", lw=0.8, label="goal 1/3")
        ax.set_yticks(ys, [label for _, label, *_ in FINETUNE_VARIANTS], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("steps to trained−1pt / random init's (lr 1e-3)")
        ax.set_title(f"{d}: {len(rows)} validation architectures")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "hyper.finetune.png", dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------ validation curve
def validation_archs(space: CellSpace, n: int, pool: int = 120, seed: int = 0) -> list[dict]:
    """``n`` configurations of the *training* share that a recipe with this ``pool``/``seed`` never
    trains on (its pool excluded; a separate seed): the architecture validation set of the recipe,
    disjoint from the benchmark's held-out splits."""
    from weightspace.hyper.space import config_key

    seen = {config_key(c) for c in space.train_pool(pool, seed=seed)}
    rng, out = np.random.default_rng([seed, 4242]), {}
    while len(out) < n:
        c = space.sample_train(rng)
        if config_key(c) not in seen:
            out.setdefault(config_key(c), c)
    return list(out.values())


def validation_curve(snap_dirs: list[Path], data: str, n_archs: int, out: Path, seed: int = 0,
                     pool: int = 120) -> dict:
    """Zero-shot accuracy of every snapshot of one or more consecutive training runs (``ghn_recipe
    --snapshot-minutes``; a later run continues the previous one with ``--init``) on ``n_archs``
    validation architectures (:func:`validation_archs` outside a training pool of ``pool``
    configurations) and the validation inputs of :func:`validation_data` (for digits the GHN saw
    them as training data of other architectures; the architectures never), beside
    the training-minibatch accuracy of the same snapshots (on pool architectures): the gap between
    the two is the GHN's overfitting to its pool. The validation ViTs' ``Linear``-patch-embedding
    twins (:func:`~weightspace.hyper.space.linear_embed_twin`; in no pool, since their sources are
    not) are measured beside them (``val_linear_embed``). Writes ``hyper.validation-<data>.json|png``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    ds = load_dataset(data, seed=0)
    (fit_x, _), (val_x, val_y) = validation_data(data, ds)
    runs = [sorted(d.glob("step*.safetensors")) for d in snap_dirs]
    for d, snaps in zip(snap_dirs, runs):
        if not snaps:
            raise SystemExit(f"benchmarks/hyper.py: no step*.safetensors in {d}; train with "
                             "python -m weightspace.cli.ghn_recipe ... --snapshot-minutes M")
    ghn = GHN(data=data)
    ghn.load_state_dict(load_file(str(runs[0][0])))
    ghn.eval()
    configs = validation_archs(CellSpace(data), n_archs, pool=pool, seed=seed)
    twins = [t for t in map(linear_embed_twin, configs) if t is not None]
    def built(config: dict) -> tuple[nn.Module, object]:
        torch.manual_seed(seed)
        model = build_arch(config)
        return model, ghn.target(model)

    archs, twin_archs = [built(c) for c in configs], [built(c) for c in twins]

    def zero_shot(items) -> list[float]:
        accs = []
        for model, t in items:
            with torch.no_grad():
                flat = ghn.predict([t], [t.draw_init(torch.Generator().manual_seed(seed))])[0]
                model.load_state_dict({k: v for k, v in t.spec.unflatten(flat).items()}, strict=False)
            recalibrate_batchnorm(model, fit_x)
            accs.append(accuracy(model, val_x, val_y))
        return accs
    rows, offset = [], 0
    for run, (d, snaps) in enumerate(zip(snap_dirs, runs)):
        last = 0
        for snap in tqdm(snaps, desc=f"{data} validation curve, run {run}"):
            with safe_open(str(snap), "pt") as f:
                rec = {k: float(v) for k, v in f.metadata().items()}
            ghn.load_state_dict(load_file(str(snap)))
            accs, twin_accs = zero_shot(archs), zero_shot(twin_archs)
            last = max(last, int(rec["step"]))
            rows.append({**rec, "run": run, "snapshots": str(d), "total_step": offset + int(rec["step"]),
                         "val_zero_shot": float(np.mean(accs)), "val_zero_shot_std": float(np.std(accs)),
                         "val_accs": accs, "val_linear_embed": float(np.mean(twin_accs)) if twin_accs else None,
                         "val_linear_embed_accs": twin_accs})
            log.info("run %d %s step %d: validation zero-shot %.3f (Linear-embedding twins %.3f)", run, snap.name,
                     rec["step"], rows[-1]["val_zero_shot"], np.mean(twin_accs) if twin_accs else float("nan"))
        offset += last
    doc = {"data": data, "snapshots": [str(d) for d in snap_dirs], "archs": len(configs), "seed": seed,
           "kinds": [c["kind"] for c in configs], "linear_embed_twins": len(twins),
           "validation": validation_text(data),
           "pool_excluded": pool, "command": "python benchmarks/hyper.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": round(os.getloadavg()[0], 1),
           "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"hyper.validation-{data}.json").write_text(json.dumps(doc, indent=1))
    plot_validation_curve(doc, out)
    return doc


def plot_validation_curve(doc: dict, out: Path) -> None:
    """``hyper.validation-<data>.png`` of a :func:`validation_curve` document."""
    data, rows, runs = doc["data"], doc["rows"], sorted({r["run"] for r in doc["rows"]})
    fig, ax = plt.subplots(1, 2, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1, 1.2]})
    for run in runs:
        rr = [r for r in rows if r["run"] == run]
        steps = [r["total_step"] for r in rr]
        ax[0].plot(steps, [r["train/loss"] for r in rr], marker="o", c=f"C{run}", label=f"run {run}")
        m, sd = np.array([r["val_zero_shot"] for r in rr]), np.array([r["val_zero_shot_std"] for r in rr])
        ax[1].plot(steps, m, marker="o", c=f"C{run}", label=f"run {run}: validation archs (zero-shot)")
        ax[1].fill_between(steps, m - sd, m + sd, alpha=0.15, color=f"C{run}")
        ax[1].plot(steps, [r["train/accuracy"] for r in rr], ls=":", marker=".", c=f"C{run}",
                   label=f"run {run}: training pool (minibatches)")
        if any(r.get("val_linear_embed") is not None for r in rr):
            ax[1].plot(steps, [r.get("val_linear_embed") for r in rr], ls="--", marker="x", c=f"C{run}",
                       label=f"run {run}: Linear-embedding twins of the validation ViTs")
    ax[0].axhline(np.log(10), ls="--", c="gray", label="log 10 (uniform)")
    ax[0].set(xlabel="step (runs continued)", ylabel="training loss (window mean)", title=f"{data}: training loss")
    ax[0].legend(fontsize=8)
    ax[1].axhline(0.1, ls="--", c="gray", label="chance")
    ax[1].set(xlabel="step (runs continued)", ylabel="accuracy", ylim=(0, 1),
              title=f"{data}: {doc['archs']} validation archs vs training pool")
    ax[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out / f"hyper.validation-{data}.png", dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------ model card
_INPUTS = {"digits": "`[B, 1, 8, 8]` (sklearn digits, pixels / 16) or the flattened `[B, 64]` inputs",
           "mnist1d": "`[B, 1, 40]` (MNIST-1D) or the flattened `[B, 40]` inputs"}


def command_data(command: str) -> str | None:
    """The ``--data`` of a recorded ``ghn_recipe`` command."""
    words = command.split()
    return next((words[i + 1] for i, w in enumerate(words[:-1]) if w == "--data"), None)


def shipped_command(command: str, name: str, data: str | None = None) -> str:
    """A recorded ``ghn_recipe`` command as it reproduces the shipped checkpoint ``name``: ``--out`` is
    the shipped folder and a snapshot folder is a placeholder (runs write them to temporary places).
    A run on another dataset than ``data`` (the source of a ``--transfer``) writes that dataset's
    shipped checkpoint, ``hypernet-<its data>``."""
    words = command.split()
    own = command_data(command)
    for i, w in enumerate(words[:-1]):
        if w == "--out":
            words[i + 1] = f"weightspace/checkpoints/{name if data is None or own == data else f'hypernet-{own}'}"
        elif w == "--snapshot-dir":
            words[i + 1] = "SNAPSHOT_DIR"
    return " ".join(words)


def model_card(ckpt: Path, data: str, results: Path) -> str:
    """``README.md`` of a GHN checkpoint from its ``config.json`` extras, the validation curve and
    the benchmark results (``hyper.validation-<data>.json``, ``hyper.json``); every figure is read
    from those files."""
    info = json.loads((ckpt / "config.json").read_text())
    cfg, ex = info["config"], info["extras"]
    name = ckpt.name
    hist = ex.get("history") or []
    init = ex.get("init")
    lines = [f"# {name}: graph hypernetwork (GHN) for {data}", "",
             f'`weightspace.hyper.GHN.from_pretrained("{name}")` -- predicts every parameter of a network for '
             f"{_INPUTS[data]} and 10 classes, for any architecture the parameter-graph converter reads "
             "(convolutions of any kernel size, residual sums, concatenations, attention, class tokens, positional "
             "tables, BatchNorm/LayerNorm). Design: `docs/design-notes/hyper.md`, `weightspace/hyper/ghn.py`.", "",
             "## Data", ""]
    chain, e = [ex], init  # the runs, oldest first, following the nested ``init`` provenance
    while e:
        chain.insert(0, e)
        e = e.get("init")
    recorded = [e["command"] for e in chain if e.get("command")]
    cmds = [shipped_command(c, ckpt.name, data) for c in recorded]
    sources = [command_data(c) for c in recorded if command_data(c) != data]
    source_data = f"; the runs that made the source checkpoint used the {sources[0]} training split" if sources else ""
    lines += [f"{ex['data']}{source_data}; the test split is never used in training.", "", "## Recipe", ""]
    if sources:  # the first runs train another dataset's checkpoint, the rest continue from its weights
        src = sources[0]
        head = (f"{len(cmds)} commands, one CPU thread each: the first {len(sources)} make `hypernet-{src}` on {src} "
                f"as it was when this checkpoint started from it (each continuing the previous one, `--init`; the "
                f"shipped `hypernet-{src}` may have been continued since, see its own card); the next starts from its weights and trains them on "
                f"{data} (`--transfer`)" + (", and each later one continues it" if len(cmds) - len(sources) > 1 else "")
                + ":")
    elif len(cmds) > 1:
        head = f"{len(cmds)} commands, one CPU thread each; each continues the checkpoint the previous one wrote (`--init`):"
    else:
        head = "One command, one CPU thread:"
    lines += [head, "", "```", *cmds, "```", ""]
    if cmds != recorded:
        lines += ["(Written here to produce the shipped folder; `config.json` keeps each run's command as it was run, "
                  "with its own output and snapshot folders, under `extras.command` and `extras.init`.)", ""]
    model = ", ".join(f"{k}={v!r}" for k, v in sorted(cfg.items()))
    train = ", ".join(f"{k}={v!r}" for k, v in sorted(ex["train"].items()))
    lines += [f"Model: `GHNConfig({model})`. Training (last command): `GHNTrainConfig({train})` over "
              f"`{ex['space']}` (a fixed pool of {ex['train']['pool']} training configurations; the held-out splits "
              "are never drawn). Adam, warm-up over 2% then cosine decay to 5% of the learning rate, following "
              "the larger of the step and wall-clock fractions.", "", "## Cost", ""]
    for i, e in enumerate(chain):
        final = e.get("final") or {}
        la = ", ".join(f"{v:.1f}" for v in e.get("load_average", []))
        label = "run" if len(chain) == 1 else f"run {i + 1} of {len(chain)}"
        run_data = command_data(e.get("command") or "")
        if sources and run_data:
            label += f" ({run_data})"
        lines.append(f"- {label}: {e.get('train_wall_minutes')} min wall, {e.get('train_cpu_minutes')} min CPU "
                     f"({e.get('threads', 1)} thread), {final.get('step')} optimizer steps, final training-loss window "
                     f"{final.get('train/loss', float('nan')):.3f}; load average at the end {la} on 2 shared cores.")
    total = sum(float(e.get("train_cpu_minutes") or 0) for e in chain)
    per_data = ""
    if sources:
        own = sum(float(e.get("train_cpu_minutes") or 0) for e in chain if command_data(e.get("command") or "") == data)
        per_data = f" ({total - own:.1f} on {sources[0]}, {own:.1f} on {data})"
    lines += [f"- total: {total:.1f} CPU minutes{per_data}. The wall-clock cap makes the step count, hence the weights, "
              "depend on the load.", "", "## Validation", ""]
    if hist:
        lines.append(f"Training curve of the last run (train-split minibatches, predicted networks in train mode): "
                     f"first logged window loss {hist[0]['train/loss']:.3f} / accuracy {hist[0]['train/accuracy']:.3f}, "
                     f"last {hist[-1]['train/loss']:.3f} / {hist[-1]['train/accuracy']:.3f}.")
    vpath = results / f"hyper.validation-{data}.json"
    if vpath.is_file():
        v = json.loads(vpath.read_text())
        pts = "; ".join(f"step {int(r.get('total_step', r['step']))}: {r['val_zero_shot']:.3f} "
                        f"(training minibatches {r['train/accuracy']:.3f})" for r in v["rows"])
        runs = len(v["snapshots"]) if isinstance(v["snapshots"], list) else 1
        lines += ["", f"Zero-shot accuracy of snapshots of the last {f'{runs} runs' if runs > 1 else 'run'} "
                  f"on {v['archs']} validation architectures (training-share configurations outside a training pool "
                  f"of {v.get('pool_excluded', 120)}; {v.get('validation', SEEN_VALIDATION)}; steps counted across "
                  f"runs; `benchmarks/results/hyper.validation-{data}.png`), with the training-minibatch accuracy "
                  f"of the same snapshot: {pts}."]
        if v.get("kinds") and len(v["rows"]) > 1:  # per family, first and last snapshot
            kinds = v["kinds"]
            fam = "; ".join(
                f"{k} ({kinds.count(k)}) " + " -> ".join(
                    f"{np.mean([a for a, kk in zip(r['val_accs'], kinds) if kk == k]):.3f}"
                    for r in (v["rows"][0], v["rows"][-1]))
                for k in ("cnn", "vit", "mlp") if k in kinds)
            lines += ["", f"Per family, first -> last snapshot: {fam}."]
    bpath = results / "hyper.json"
    doc = json.loads(bpath.read_text()) if bpath.is_file() else {}
    if data in doc:
        lines += ["", "Held-out architectures (`benchmarks/results/hyper.md`, test split of the data, BatchNorm "
                  "recalibrated; mean ± std over architectures):", "",
                  "| split | archs | zero-shot | random init | zero-shot / trained (n) |", "|---|---|---|---|---|"]
        for split, rows in doc[data]["rows"].items():
            sm = summarize(rows)
            lines.append(f"| {split} | {sm['archs']} | {_ms(sm['zero_shot'])} | {_ms(sm['random'])} | "
                         f"{_ms(sm['ratio'])} ({sm['n_trained']}) |")
    sums = {split: summarize(rows) for split, rows in doc.get(data, {}).get("rows", {}).items()}
    unstd = [r for r in doc.get(data, {}).get("rows", {}).get("no-norm", []) if "zero_shot_unstandardized" in r]
    norm_free = (f" (held-out no-norm split: zero-shot {np.mean([r['zero_shot_unstandardized'] for r in unstd]):.2f} "
                 f"as filled, {np.mean([r['zero_shot'] for r in unstd]):.2f} after it; `benchmarks/results/hyper.md`)"
                 if unstd else "")
    ratios = {split: np.mean(sm["ratio"]) for split, sm in sums.items() if sm["ratio"]}
    met = [sp for sp, r in ratios.items() if r >= GOALS.get(sp, 0.6)]
    met_line = (f"zero-shot / trained {min(ratios.values()):.2f}-{max(ratios.values()):.2f} over the held-out splits; "
                f"issue #26's zero-shot goal met on {', '.join(met) if met else 'none'} of {len(ratios)} splits"
                if ratios else "no benchmark results")
    weak, kept = weak_references(doc.get(data, {}).get("rows", {}))
    if weak:
        met_line += "; " + "; ".join(
            f"the {split} figure includes a reference where Adam stalled ({r['name']}, trained {r['trained']:.3f}; "
            f"without it {np.mean(kept[split]):.2f})" for split, r in weak if kept.get(split))
    slower = [sp for sp, sm in sums.items()
              if sm["ft_pred_steps"] and np.mean(sm["ft_pred_steps"]) > np.mean(sm["ft_rand_steps"])]
    ft_line = (f"needs more Adam steps than random init to reach trained accuracy - 1 point on {len(slower)} of "
               f"{len(ratios)} splits ({', '.join(slower)})" if slower else "reaches trained accuracy - 1 point in "
               "fewer steps than random init on every split")
    prep = [sp for sp, sm in sums.items() if sm.get("ft_prep_steps") and sm["ft_pred_steps"]]
    better = [sp for sp in prep if np.mean(sums[sp]["ft_prep_steps"]) < np.mean(sums[sp]["ft_pred_steps"])]
    prep_line = (f"; `prepare_for_finetuning(model, x_train)` before fine-tuning took fewer steps than the weights "
                 f"as filled on {len(better)} of {len(prep)} splits" + (f" ({', '.join(better)})" if better else "")
                 if prep else "")
    lines += ["", "## Intended use", "",
              f"A starting point for a new {data} classifier: `model = ghn(model)`, then "
              "`recalibrate_batchnorm(model, x_train)` before `model.eval()` if it has BatchNorm, or "
              "`standardize_units(model, x_train[:512])` if it has no normalization layer at all, then fine-tune. "
              "A model whose input or output size does not match the data raises `DataMismatchError` "
              "(`force=True` fills it anyway, with a warning).", "", "## Limits", "",
              f"- Trained for {total:.0f} CPU minutes{per_data} on one thread: zero-shot accuracy stays below trained accuracy "
              f"({met_line}); fine-tuning from its weights {ft_line}{prep_line} (`benchmarks/results/hyper.md`).",
              "- Only this dataset's input shape and 10 classes; other data needs its own checkpoint.",
              "- Architectures far outside the training space (much wider, deeper, without normalization, or "
              "written by others) are filled, but their accuracy is measured, not promised.",
              "- BatchNorm running statistics are placeholders (0 / 1) until `recalibrate_batchnorm`.",
              "- Trained only on networks with normalization layers: a network without any needs "
              "`standardize_units`" + norm_free + ".", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["digits", "mnist1d"], default="digits")
    ap.add_argument("--checkpoint", default=None, help="GHN directory or shipped name (default: hypernet-<data>)")
    ap.add_argument("--splits", default=",".join(ALL_SPLITS))
    ap.add_argument("--per-split", type=int, default=50, help="architectures per split (zero-shot)")
    ap.add_argument("--trained", type=int, default=10, help="of them, architectures with a reference + fine-tuning")
    ap.add_argument("--real-trained", type=int, default=100, help="real-library models with a reference + fine-tuning")
    ap.add_argument("--max-epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--merge", default=None, metavar="DIR[,DIR]",
                    help="merge the --data part of runs that measured different splits with the same protocol "
                         "(each DIR holds a hyper.json) into --out, and render it")
    ap.add_argument("--reference-cache", default=None,
                    help="JSON file of GHN-independent measurements (random init, Adam reference, fine-tuning "
                         "from random init) keyed by dataset, split, architecture and schedule; read if present, and every reference a run "
                         "measures anew is added to it")
    ap.add_argument("--references-only", action="store_true",
                    help="only fill --reference-cache for the first --trained / --real-trained architectures "
                         "of each split (no checkpoint needed)")
    ap.add_argument("--validation-curve", default=None, metavar="SNAPSHOT_DIR[,SNAPSHOT_DIR]",
                    help="evaluate the snapshots of ghn_recipe runs (comma-separated, in the order they "
                         "continued each other) on validation architectures and exit")
    ap.add_argument("--validation-archs", type=int, default=16)
    ap.add_argument("--validation-pool", type=int, default=120,
                    help="validation architectures lie outside the training pool of this many configurations "
                         "(the recipe's --pool)")
    ap.add_argument("--finetune-ablation", action="store_true",
                    help="fine-tuning starts and learning rates on --validation-archs validation architectures "
                         "(writes hyper.finetune.json|md|png)")
    ap.add_argument("--standardize-ablation", action="store_true",
                    help="measure standardize_units variants on --per-split no-norm and test architectures and the "
                         "real-library models (zero-shot only), write hyper.standardize.json|md in --out, and exit")
    ap.add_argument("--mark-seen", action="store_true",
                    help="add seen_in_training to every row of the --data part of --out/hyper.json (the "
                         "training-pool architectures whose graph is the row's, for the checkpoint it records; "
                         "nothing else is measured again), re-render, and exit")
    ap.add_argument("--model-card", default=None, metavar="CHECKPOINT_DIR",
                    help="write CHECKPOINT_DIR/README.md from its config.json and the results in --out, and exit")
    args = ap.parse_args()
    out = Path(args.out)
    if args.mark_seen:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        torch.set_num_threads(args.threads)
        mark_seen(out, args.data, args.seed)
        render(out)
        return
    if args.model_card:
        ckpt = Path(args.model_card)
        (ckpt / "README.md").write_text(model_card(ckpt, args.data, out))
        return
    if args.finetune_ablation:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        torch.set_num_threads(args.threads)
        finetune_ablation(args.data, args.validation_archs, out, args)
        return
    if args.standardize_ablation:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        torch.set_num_threads(args.threads)
        standardize_ablation(args.data, args.per_split, out, args.seed)
        return
    if args.validation_curve:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        torch.set_num_threads(args.threads)
        validation_curve([Path(d) for d in args.validation_curve.split(",")], args.data, args.validation_archs, out,
                         args.seed, args.validation_pool)
        return
    if args.merge:
        merge_parts([Path(d) for d in args.merge.split(",")], args.data, out)
        render(out)
        return
    if args.render_only:
        render(out)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    t0, load0 = time.perf_counter(), round(os.getloadavg()[0], 1)
    ds = load_dataset(args.data, seed=0)
    fit_x, fit_y, val_x, val_y = validation_split(ds.x_train, ds.y_train, 0.15, seed=0)
    fit, val = (fit_x, fit_y), (val_x, val_y)
    name = args.checkpoint or f"hypernet-{args.data}"
    space = CellSpace(args.data)
    cache_path = Path(args.reference_cache) if args.reference_cache else None
    ref_cache = json.loads(cache_path.read_text()) if cache_path is not None and cache_path.is_file() else {}

    def split_items(split: str) -> list[tuple[str, callable, dict | None]]:
        if split == "real-library":
            return [(n, b, None) for n, b in real_library(args.data)]
        return [(f"{split}-{i}", lambda c=c: build_arch(c), c)
                for i, c in enumerate(space.split(split, args.per_split, seed=args.seed))]

    def store_references() -> None:
        """Merge the references measured so far into the cache file (others may have added to it)."""
        current = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
        current.update(ref_cache)
        tmp = cache_path.with_suffix(f".{args.data}.{os.getpid()}.tmp")  # one per process: runs may share the cache
        tmp.write_text(json.dumps(current, indent=1))
        tmp.replace(cache_path)

    if args.references_only:
        if cache_path is None:
            raise SystemExit("benchmarks/hyper.py: --references-only needs --reference-cache PATH")
        splits = args.splits.split(",")
        todo = {sp: split_items(sp)[:(args.real_trained if sp == "real-library" else args.trained)] for sp in splits}
        # round-robin over splits, so that an interrupted run leaves about as many references in each
        order = [(sp, todo[sp][i]) for i in range(max(map(len, todo.values()), default=0)) for sp in splits
                 if i < len(todo[sp])]
        for split, (n, build, config) in tqdm(order, desc=f"{args.data} references"):
            key = reference_key(args.data, split, n, config, args)
            if ref_cache.get(key, {}).get("steps_on") == STEPS_ON:
                continue
            try:
                ref_cache[key] = (upgrade_reference(ref_cache[key], build, fit, (ds.x_test, ds.y_test), args)
                                  if key in ref_cache else measure_reference(n, build, ds, fit, val, args))
            except Exception as e:  # noqa: BLE001 - unbuildable models are reported by the main run
                log.warning("%s: no reference (%s: %s)", n, type(e).__name__, e)
                continue
            log.info("%s %s", split, json.dumps(ref_cache[key]))
            store_references()
        return
    ghn = GHN.from_pretrained(name)
    path = out / "hyper.json"
    meta = {"checkpoint": name, "command": "python benchmarks/hyper.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": args.threads,
            "torch": torch.__version__, "seed": args.seed, "load_start": load0, "per_split": args.per_split,
            "trained": args.trained, "max_epochs": args.max_epochs, "patience": args.patience,
            "steps_per_epoch": -(-len(fit[0]) // BATCH), "steps_on": STEPS_ON}
    part = {"meta": meta, "rows": {}}

    def save() -> None:
        meta["load_end"] = round(os.getloadavg()[0], 1)
        meta["wall_minutes"] = round((time.perf_counter() - t0) / 60, 1)
        out.mkdir(parents=True, exist_ok=True)
        current = json.loads(path.read_text()) if path.is_file() else {}  # other datasets' parts, as on disk
        if not isinstance(current, dict) or any(not isinstance(v, dict) or "rows" not in v for v in current.values()):
            current = {}
        current[args.data] = part
        tmp = path.with_suffix(f".{args.data}.tmp")
        tmp.write_text(json.dumps(current, indent=1))
        tmp.replace(path)

    splits = args.splits.split(",")
    items = {split: split_items(split) for split in splits}
    for split in splits:
        part["rows"][split] = []
    # round-robin over splits: an interrupted run leaves about as many architectures in each split
    order = [(split, i) for i in range(max(map(len, items.values()), default=0)) for split in splits
             if i < len(items[split])]
    pool, pool_counts = None, {}  # the checkpoint's training configurations, for the twin check
    for split, i in tqdm(order, desc=args.data):
        n, build, config = items[split][i]
        train_ref = i < (args.real_trained if split == "real-library" else args.trained)
        key = reference_key(args.data, split, n, config, args)
        row = measure(n, build, ghn, ds, fit, val, args, train_ref, ref_cache.get(key))
        if "refused" not in row:
            if pool is None:
                pool = training_pools(ghn, args.data)
            row["seen_in_training"] = seen_in_training(ghn, build(), pool, pool_counts)
        part["rows"][split].append(row)
        if cache_path is not None and "trained" in row and (not row.get("reference_cached")
                                                            or row.get("reference_upgraded")):
            ref_cache[key] = {k: row[k] for k in REFERENCE_KEYS}  # a new or upgraded reference joins the cache
            store_references()
        log.info("%s %s", split, json.dumps(part["rows"][split][-1]))
        save()
    save()
    render(out)
    print((out / "hyper.md").read_text())


if __name__ == "__main__":
    main()
