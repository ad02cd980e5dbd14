"""Training predictors on a CI-sized zoo: every metanetwork trains for a few steps, reports metrics,
saves a predictor that reloads to the same predictions and answers for unseen networks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import model_zoo
from weightspace.examples import build_example
from weightspace.predict import (
    PredictConfig,
    load_predictor,
    load_zoo_graphs,
    pairwise_rank_loss,
    run_predict,
)
from weightspace.pretrained import CheckpointError

from ..tiny_zoo import tiny_zoo


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    return tiny_zoo(tmp_path_factory)


@pytest.fixture(scope="module")
def data(zoo_dir):
    return load_zoo_graphs(zoo_dir, fractions=(0.6, 0.2, 0.2))


@pytest.mark.parametrize("metanet", ["gmn", "probe", "statnn", "statnn_gbm", "hparams"])
def test_run_save_reload(metanet, zoo_dir, data, tmp_path):
    model = {"hidden": 8, "num_layers": 1, "embed_dim": 8} if metanet == "gmn" else (
        {"n_estimators": 5} if metanet == "statnn_gbm" else {"hidden": [16]})
    if metanet == "probe":
        model.update(num_probes=4, latent_dim=4, gen_hidden=8, stats=True)
    cfg = PredictConfig(metanet=metanet, model=model, epochs=2, batch_size=4, progress=False, device="cpu",
                        fractions=(0.6, 0.2, 0.2))
    pred, metrics = run_predict(zoo_dir, cfg, tmp_path, data=data)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for k in ("test/tau", "test/r2", "test/mae", "test_trained/tau", "val/tau", "train/time_s", "train/graphs_per_s"):
        assert k in saved
    assert math.isfinite(saved["test/mae"]) and saved["train/n"] == len(data.graphs["train"])
    again = load_predictor(tmp_path / "predictor")
    hps = data.hparams["test"]
    a = pred.predict([pred.prepare(g, h) for g, h in zip(data.graphs["test"], hps)], prepared=True)
    b = again.predict([again.prepare(g, h) for g, h in zip(data.graphs["test"], hps)], prepared=True)
    assert np.allclose(a, b, atol=1e-6)
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.pkl"))
    zoo = model_zoo.load(zoo_dir)
    net = zoo.build_model(0)
    if metanet == "hparams":
        with pytest.raises(ValueError, match="needs the network's training hyperparameters"):
            again(net)
        assert math.isfinite(again(net, hparams=zoo.hparams(0)))
    else:
        assert math.isfinite(again(net))
    if metanet == "probe":  # it runs the zoo's architectures only, and says which
        with pytest.raises(ValueError, match="none of the architectures this probing predictor runs.*SmallCNN"):
            again(build_example("resnet")[0])
        assert pred.encode(data.graphs["test"]).shape == (len(data.graphs["test"]), 16)
    if metanet == "statnn":  # damaged files name the file and the problem
        saved_dir = tmp_path / "predictor"
        assert sorted(p.name for p in saved_dir.iterdir()) == ["config.json", "model.safetensors"]
        assert load_predictor(saved_dir / "model.safetensors").kind == "statnn"  # the weights file finds its config
        w = (saved_dir / "model.safetensors").read_bytes()
        (saved_dir / "model.safetensors").write_bytes(w[: len(w) // 2])
        with pytest.raises(CheckpointError, match=r"model\.safetensors: cannot read the weights"):
            load_predictor(saved_dir)
        (saved_dir / "model.safetensors").unlink()
        with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
            load_predictor(saved_dir)
        (saved_dir / "config.json").write_bytes(b"\x00garbage")
        with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
            load_predictor(saved_dir)


def test_gmn_predicts_unseen_architecture_and_encodes(zoo_dir, data, tmp_path):
    cfg = PredictConfig(metanet="gmn", model={"hidden": 8, "num_layers": 1, "embed_dim": 8}, epochs=1,
                        batch_size=4, progress=False, fractions=(0.6, 0.2, 0.2), rank_weight=0.5)
    pred, met = run_predict(zoo_dir, cfg, tmp_path, data=data)
    assert all(math.isfinite(v) for v in met["history"]["train/loss"])
    mlp, _ = build_example("mlp")  # never seen: an MLP, the zoo holds CNNs
    assert math.isfinite(pred(mlp))
    z = pred.encode(data.graphs["test"])
    assert z.shape == (len(data.graphs["test"]), 8)
    resnet, _ = build_example("resnet")
    small = load_predictor(tmp_path / "predictor")
    small.meta["kernel_grid"] = [1, 1]
    with pytest.raises(ValueError, match="3x3 kernels"):
        small(resnet)


def test_hybrid_gmn_on_every_checkpoint_saves_and_reloads(zoo_dir, tmp_path):
    data = load_zoo_graphs(zoo_dir, fractions=(0.6, 0.2, 0.2), train_checkpoints="all")
    finals = load_zoo_graphs(zoo_dir, fractions=(0.6, 0.2, 0.2))
    # every checkpoint of the same train runs; val/test keep one final checkpoint per run
    assert len(data.graphs["train"]) > len(finals.graphs["train"])
    assert {int(g.run) for g in data.graphs["train"]} == {int(g.run) for g in finals.graphs["train"]}
    assert len({int(g.step) for g in data.graphs["train"]}) > 1
    assert [int(g.run) for g in data.graphs["test"]] == [int(g.run) for g in finals.graphs["test"]]
    cfg = PredictConfig(metanet="gmn", model={"hidden": 8, "num_layers": 1, "embed_dim": 8, "layer_bins": 2,
                                              "stats": True},
                        epochs=1, batch_size=8, progress=False, device="cpu", fractions=(0.6, 0.2, 0.2),
                        train_checkpoints="all")
    pred, metrics = run_predict(zoo_dir, cfg, tmp_path, data=data)
    assert pred.model.stat_tensors == pred.meta["max_tensors"] > 0
    assert not torch.equal(pred.model.stat_norm.std, torch.ones_like(pred.model.stat_norm.std))  # fitted
    again = load_predictor(tmp_path / "predictor")
    assert again.model.hparams["layer_bins"] == 2
    a = pred.predict(data.graphs["test"])
    b = again.predict(data.graphs["test"])
    assert np.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="train_checkpoints"):
        PredictConfig(train_checkpoints="best")


def test_bad_config_and_paths(tmp_path):
    with pytest.raises(ValueError, match="unknown metanet 'nfn'"):
        PredictConfig(metanet="nfn")
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        PredictConfig(epochs=-1)
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        load_predictor(tmp_path)


def test_pairwise_rank_loss_scores_order_only():
    y = torch.tensor([0.1, 0.5, 0.9])
    right, wrong = torch.tensor([-1.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, -1.0])
    assert pairwise_rank_loss(right, y) < 0.01 < 5.0 < pairwise_rank_loss(wrong, y)
    # a shift or a positive scale of the scores that keeps the order keeps the loss small
    assert pairwise_rank_loss(right * 3 + 7, y) < 0.01
    # gradients push a swapped pair apart in the right direction
    s = torch.tensor([0.0, 0.2], requires_grad=True)
    pairwise_rank_loss(s, torch.tensor([0.9, 0.1])).backward()
    assert s.grad[0] < 0 < s.grad[1]
    assert float(pairwise_rank_loss(torch.zeros(3), torch.full((3,), 0.5))) == 0.0
