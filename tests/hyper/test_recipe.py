"""weightspace.hyper.recipe: the GHN training loop leaves the uniform prediction on both datasets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weightspace.hyper import GHN
from weightspace.hyper.recipe import GHNTrainConfig, train_ghn
from weightspace.hyper.space import CellSpace


class _FixedPool:
    """A 'space' whose training pool is a fixed list of configurations."""

    def __init__(self, configs: list[dict]) -> None:
        self.configs = configs

    def train_pool(self, n: int, seed: int = 0) -> list[dict]:
        return self.configs


def _tiny_mlps(data: str, n: int = 2) -> list[dict]:
    space, rng, out = CellSpace(data), np.random.default_rng(3), []
    while len(out) < n:
        c = space.sample_train(rng)
        if c["kind"] == "mlp" and len(c["widths"]) == 1:
            out.append(c)
    return out


def _toy_data(data: str, n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of the dataset's shape whose class is the sign pattern of a few fixed input positions
    (learnable by any architecture of the space; no dataset file needed)."""
    g = torch.Generator().manual_seed(0)
    shape = (1, 8, 8) if data == "digits" else (1, 40)
    x = torch.randn(n, *shape, generator=g)
    flat = x.flatten(1)
    y = (flat[:, 0] > 0).long() + 2 * (flat[:, 5] > 0).long() + 4 * (flat[:, 11] > 0).long()
    return x, y


def _train(data: str, lr: float, steps: int) -> list[dict]:
    torch.manual_seed(0)
    ghn = GHN(hidden=16, layers=1, data=data)
    x, y = _toy_data(data)
    cfg = GHNTrainConfig(steps=steps, archs_per_step=2, batch_size=64, lr=lr, max_minutes=None, log_every=10,
                         seed=0)
    return train_ghn(ghn, x, y, _FixedPool(_tiny_mlps(data)), cfg, progress=False)


@pytest.mark.parametrize("data", ["digits", "mnist1d"])
def test_training_leaves_the_uniform_prediction(data):
    """Regression test of the MNIST-1D checkpoint that stayed at log 10 for all its training: a few
    dozen steps on two small MLPs must bring the training loss clearly below log 10."""
    history = _train(data, lr=1e-2, steps=30)
    assert history[-1]["train/loss"] < math.log(10) - 0.25, history
    # sensitivity: without optimizer steps (lr 0) the zero-initialized readout keeps the loss at log 10
    frozen = _train(data, lr=0.0, steps=2)
    assert abs(frozen[-1]["train/loss"] - math.log(10)) < 1e-3, frozen


class _Flaky(GHN):
    """A GHN whose predictions overflow on chosen calls (as one exploding architecture would)."""

    bad_calls: set[int] = set()

    def predict(self, targets, inits=None):
        out = super().predict(targets, inits)
        self.calls = getattr(self, "calls", 0) + 1
        return [o * float("nan") for o in out] if self.calls in self.bad_calls else out


def _train_flaky(bad_calls: set[int], steps: int) -> tuple[GHN, list[dict]]:
    torch.manual_seed(0)
    ghn = _Flaky(hidden=16, layers=1, data="digits")
    ghn.bad_calls = bad_calls
    x, y = _toy_data("digits")
    cfg = GHNTrainConfig(steps=steps, archs_per_step=2, batch_size=64, lr=1e-2, max_minutes=None, log_every=10,
                         seed=0)
    return ghn, train_ghn(ghn, x, y, _FixedPool(_tiny_mlps("digits")), cfg, progress=False)


def test_a_non_finite_step_is_skipped_not_applied():
    ghn, history = _train_flaky({3}, steps=30)
    assert history[-1]["skipped_steps"] == 1
    assert all(bool(torch.isfinite(p).all()) for p in ghn.parameters())
    assert history[-1]["train/loss"] < math.log(10) - 0.25  # training went on
    # sensitivity: without the bad call nothing is skipped
    _, clean = _train_flaky(set(), steps=10)
    assert "skipped_steps" not in clean[-1]


def test_non_finite_steps_in_a_row_stop_training_with_advice():
    from weightspace.hyper.train import MAX_BAD_STEPS

    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        _train_flaky(set(range(1, MAX_BAD_STEPS + 2)), steps=MAX_BAD_STEPS + 5)


def test_kind_weights_set_how_often_each_family_is_drawn():
    """``GHNTrainConfig.kind_weights`` oversamples a family in proportion to its weight (property over
    pools and weights), uniform without it, and rejects weights that name no family of the pool."""
    from weightspace.hyper.recipe import pool_probabilities

    pool = CellSpace("mnist1d").train_pool(300, seed=1)
    kinds = np.array([c["kind"] for c in pool])
    count = {k: int((kinds == k).sum()) for k in ("cnn", "vit", "mlp")}
    assert all(count.values()), count
    assert pool_probabilities(pool, None) is None
    for w in (0.0, 0.5, 3.0, 10.0):
        p = pool_probabilities(pool, {"vit": w})
        assert p.sum() == pytest.approx(1.0)
        vit_share = p[kinds == "vit"].sum()
        expected = w * count["vit"] / (w * count["vit"] + count["cnn"] + count["mlp"])
        assert vit_share == pytest.approx(expected)
        assert len(set(np.round(p[kinds == "cnn"], 12))) == 1  # the rest stay uniform among themselves
    # the draws of a training step follow the probabilities
    rng = np.random.default_rng(0)
    p = pool_probabilities(pool, {"vit": 3.0})
    drawn = kinds[rng.choice(len(pool), size=20000, p=p)]
    assert (drawn == "vit").mean() == pytest.approx(p[kinds == "vit"].sum(), abs=0.02)
    # sensitivity: the weighted ViT share is far from the pool's own share
    assert p[kinds == "vit"].sum() > 1.5 * count["vit"] / len(pool)
    with pytest.raises(ValueError, match="not in the pool: \\['resnet'\\]"):
        pool_probabilities(pool, {"resnet": 2.0})
    with pytest.raises(ValueError, match="weight 0"):
        pool_probabilities(pool, {"cnn": 0.0, "vit": 0.0, "mlp": 0.0})


def test_training_with_kind_weights_runs():
    torch.manual_seed(0)
    ghn = GHN(hidden=16, layers=1, data="digits")
    x, y = _toy_data("digits")
    cfg = GHNTrainConfig(steps=4, archs_per_step=2, batch_size=32, max_minutes=None, log_every=2, seed=0,
                         kind_weights={"mlp": 2.0})
    history = train_ghn(ghn, x, y, _FixedPool(_tiny_mlps("digits")), cfg, progress=False)
    assert [h["step"] for h in history] == [2, 4]


def test_recipe_cli_rejects_a_malformed_kind_weight(tmp_path):
    from weightspace.cli import ghn_recipe

    with pytest.raises(SystemExit, match="KIND=W with a number W"):
        ghn_recipe.main(["--data", "digits", "--out", str(tmp_path / "g"), "--minutes", "0.01", "--hidden", "8",
                         "--layers", "1", "--kind-weight", "vit=many", "--no-progress"])
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("n,fraction,seed", [(10, 0.15, 0), (1438, 0.15, 0), (97, 0.3, 5), (50, 0.0, 1)])
def test_validation_split_holds_out_a_seeded_share(n, fraction, seed):
    """``validation_split`` partitions the samples (no overlap, none lost) into a held-out share of the
    requested size, the same one for the same seed and another one for another seed."""
    from weightspace.hyper.recipe import validation_split

    x, y = torch.arange(n).float()[:, None], torch.arange(n)
    xf, yf, xv, yv = validation_split(x, y, fraction, seed)
    assert len(xv) == round(fraction * n) and len(xf) + len(xv) == n
    assert sorted(torch.cat([yf, yv]).tolist()) == list(range(n))
    assert torch.equal(xf[:, 0].long(), yf) and torch.equal(xv[:, 0].long(), yv)  # pairs kept together
    assert torch.equal(validation_split(x, y, fraction, seed)[3], yv)
    if len(yv) >= 3:  # sensitivity: another seed holds out other samples
        assert not torch.equal(validation_split(x, y, fraction, seed + 1)[3], yv)
    with pytest.raises(ValueError, match="fraction"):
        validation_split(x, y, 1.0)
    with pytest.raises(ValueError, match="samples"):
        validation_split(x, y[:-1])


def test_recipe_cli_can_hold_out_the_validation_share(tmp_path, monkeypatch):
    """``ghn_recipe --hold-out-validation`` trains on the fitting share only and records it; without the
    flag it trains on the whole training split."""
    import weightspace.hyper.recipe as recipe
    from model_zoo import load_dataset
    from weightspace.cli import ghn_recipe

    seen = []
    monkeypatch.setattr(recipe, "train_ghn", lambda ghn, x, y, *a, **k: seen.append((x, y)) or [])
    small = ["--data", "digits", "--minutes", "0.01", "--hidden", "8", "--layers", "1", "--no-progress"]
    ghn_recipe.main([*small, "--out", str(tmp_path / "held"), "--hold-out-validation"])
    ghn_recipe.main([*small, "--out", str(tmp_path / "all")])
    ds = load_dataset("digits", seed=0)
    _, _, x_val, _ = recipe.validation_split(ds.x_train, ds.y_train)
    (x_held, _), (x_all, _) = seen
    assert len(x_held) + len(x_val) == len(ds.x_train) and len(x_all) == len(ds.x_train)
    flat = lambda t: {tuple(r) for r in t.flatten(1).tolist()}  # noqa: E731
    assert not flat(x_held) & flat(x_val)  # no held-out input reaches training...
    assert flat(x_val) <= flat(x_all)  # ...which it does without the flag (sensitivity)
    meta = GHN.from_pretrained(tmp_path / "held").meta
    assert meta["hold_out_validation"] and f"{len(x_val)} held out" in meta["data"]
    assert not GHN.from_pretrained(tmp_path / "all").meta["hold_out_validation"]


def test_recipe_cli_trains_on_linear_embedding_twins(tmp_path, monkeypatch):
    """``ghn_recipe --linear-embed S`` passes the share to the pool and records it in the extras, so the
    checkpoint stops warning about Linear patch embeddings; without it the pool has convolutions only."""
    import weightspace.hyper.recipe as recipe
    from weightspace.cli import ghn_recipe

    pools = []
    monkeypatch.setattr(recipe, "train_ghn", lambda ghn, x, y, space, cfg, **k: pools.append(
        space.train_pool(40, seed=cfg.seed, linear_embed=cfg.linear_embed)) or [])
    small = ["--data", "digits", "--minutes", "0.01", "--hidden", "8", "--layers", "1", "--no-progress"]
    ghn_recipe.main([*small, "--out", str(tmp_path / "lin"), "--linear-embed", "1"])
    ghn_recipe.main([*small, "--out", str(tmp_path / "conv")])
    assert any(c.get("embed") == "linear" for c in pools[0])
    assert not any(c.get("embed") == "linear" for c in pools[1])
    assert GHN.from_pretrained(tmp_path / "lin").trained_on_linear_embeddings
    assert not GHN.from_pretrained(tmp_path / "conv").trained_on_linear_embeddings
