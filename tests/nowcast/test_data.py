"""The shipped nowcaster's meta-training data and its far-horizon predictions: the zoo configs of
``weightspace nowcast`` keep the benchmark's held-out tasks out, and the shipped checkpoint beats
Linefit on windows spaced like a NiNo-style hook (period 100, snapshots 20 steps apart)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import weightspace as ws
from model_zoo.archs import MLP
from model_zoo.data import load_dataset
from weightspace.nowcast import Nowcaster, load_trajectories

ROOT = Path(__file__).resolve().parents[2]


def _zoo_configs() -> dict[str, dict]:
    """The zoos of preset=paper (the laptop preset's are a subset of them)."""
    cfg = OmegaConf.load(ROOT / "configs/preset/nowcast/paper.yaml")
    names = [next(iter(d.values())) for d in cfg.defaults if isinstance(d, dict) or OmegaConf.is_dict(d)]
    return {n: OmegaConf.to_container(OmegaConf.load(ROOT / f"configs/nowcast/zoo/{n}.yaml"), resolve=True)
            for n in names}


def test_meta_training_zoos_keep_the_benchmark_tasks_held_out():
    zoos = _zoo_configs()
    assert len(zoos) >= 7 and {"digits_mlp_long", "digits_cnn_long", "synthetic_vit_long"} <= set(zoos)
    for name, z in zoos.items():
        assert z["data"]["name"] != "mnist1d", name  # MNIST-1D is the CNN task's unseen dataset
        arch = z["arch"]["_target_"].rsplit(".", 1)[-1]
        if arch == "TinyViT":  # transformers only on synthetic data, never on digits
            assert z["data"]["name"] == "synthetic", name
        if arch == "MLP":  # the wide-MLP task's width stays unseen
            widths = z["space"].get("arch.width", {"choice": [z["arch"]["width"]]})["choice"]
            assert max(widths) <= 48, name
        if arch == "SmallCNN":
            assert z["arch"].get("dims", 2) == 2, name  # 1-D convolutions stay unseen
    # the benchmark's LM task (TinyGPT on the docs corpus, AdamW with weight decay 0.1) stays unseen too
    from weightspace.nowcast.lm import LMRunsConfig, sample_recipes

    assert LMRunsConfig().corpus == "code"
    recipes = sample_recipes(64, LMRunsConfig().seed)
    assert {r.family for r in recipes} == {"mha"} and max(r.weight_decay for r in recipes) < 0.1
    laptop = OmegaConf.load(ROOT / "configs/preset/nowcast/laptop.yaml")
    assert {next(iter(d.values())) for d in laptop.defaults} <= set(zoos)


def test_long_zoos_hold_trajectories_long_enough_for_far_horizons():
    zoos = _zoo_configs()
    for name in ("digits_mlp_long", "digits_cnn_long", "synthetic_vit_long"):
        z = zoos[name]
        n_train = {"digits": 1437, "synthetic": 819}[z["data"]["name"]]
        steps = z["trainer"]["epochs"] * (n_train // z["space"]["batch_size"])
        # a window of 5 snapshots 20 steps apart plus 16 spacings ahead: 400 steps, several times over
        assert steps >= 1500 and z["trainer"]["dense_every"] <= 4, name


def _digits_trajectory(steps: int, every: int, seed: int = 0) -> tuple[ws.GraphSpec, torch.Tensor]:
    torch.manual_seed(seed)
    data = load_dataset("digits", flatten=True)
    model = MLP(width=32, depth=2)
    spec = ws.GraphSpec.from_module(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    snaps = [spec.flatten(model.state_dict()).clone()]
    for i in range(steps):
        idx = torch.randint(len(data.x_train), (32,), generator=g)
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (i + 1) % every == 0:
            snaps.append(spec.flatten(model.state_dict()).clone())
    return spec, torch.stack(snaps)


@pytest.mark.parametrize("horizon", [4, 8, 16])
def test_shipped_nowcaster_beats_linefit_far_ahead(horizon):
    torch.set_num_threads(1)
    nc, lf = Nowcaster.pretrained(), Nowcaster(kind="linefit")
    spec, traj = _digits_trajectory(steps=20 * (4 + 16 + 12), every=20)  # snapshots 20 steps apart
    err_nc, err_lf = 0.0, 0.0
    for start in range(0, 12, 3):  # windows starting at steps 0, 60, 120, 180
        win = traj[start: start + 5]
        truth = traj[start + 4 + horizon] - traj[start + 4]
        err_nc += float((nc.predict(spec, win, horizon=horizon) - truth).abs().mean())
        err_lf += float((lf.predict(spec, win, horizon=horizon) - truth).abs().mean())
    assert err_nc < 0.6 * err_lf  # an untrained nowcaster is Linefit (ratio 1); the shipped one: 0.26-0.41


def test_load_trajectories_from_a_dense_zoo(tmp_path):
    import model_zoo

    cfg = {"name": "dense", "size": 2, "seed": 0, "chunk_size": 2,
           "data": {"name": "digits", "flatten": True},
           "arch": {"_target_": "model_zoo.archs.MLP", "in_features": 64, "num_outputs": 10, "depth": 1, "width": 8},
           "space": {"lr": 3e-3, "optimizer": "adam", "batch_size": 128, "dropout": 0.0, "train_fraction": 1.0},
           "trainer": {"epochs": 1, "checkpoints": [0, 1], "dense_every": 2}}
    model_zoo.generate(cfg, tmp_path / "z", progress=False)
    trajs = load_trajectories([tmp_path / "z"])
    assert len(trajs) == 2
    t = trajs[0]
    assert t.every == 2 and t.flat.shape[0] == 1 + 12 // 2  # 12 steps of 128 from 1437 samples
    assert t.flat.shape[1] == t.spec.num_params and torch.isfinite(t.flat).all()
