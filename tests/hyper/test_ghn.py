"""weightspace.hyper.ghn: fills every family of the space, symmetry breaking, data checks, BatchNorm, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from weightspace.archs import MLP, SmallCNN, TinyViT
from weightspace.examples import ClassTokenViT, ResNet
from weightspace.hyper import GHN, DataMismatchError, load_hypernetwork
from weightspace.hyper.space import CellSpace, build_arch


@pytest.fixture(scope="module")
def tiny_ghn():
    torch.manual_seed(0)
    return GHN(hidden=16, layers=1, data="digits").eval()


def _families(data: str) -> list[nn.Module]:
    space = CellSpace(data)
    rng = np.random.default_rng(3)
    seen: dict[str, dict] = {}
    while len(seen) < 3:
        c = space.sample_train(rng)
        seen.setdefault(c["kind"], c)
    models = [build_arch(c) for c in seen.values()]
    models += [build_arch(c) for c in (space.split("no-norm", 1)[0], space.split("dense", 1)[0])]
    return models


@pytest.mark.parametrize("data", ["digits", "mnist1d"])
def test_fills_every_family_with_finite_parameters(data):
    torch.manual_seed(0)
    ghn = GHN(hidden=16, layers=1, data=data).eval()
    x = torch.randn(8, *ghn.example_input().shape[1:])
    for model in _families(data):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        ghn(model)
        after = model.state_dict()
        changed = [k for k in after if after[k].is_floating_point() and not torch.equal(after[k], before[k])]
        assert changed, type(model).__name__
        assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
        model.train()
        assert torch.isfinite(model(x)).all()


def test_fills_resnet_vit_attention_and_large_kernels(tiny_ghn):
    for model in (ResNet(1, (8, 16), (1, 1), stem_kernel=7), ClassTokenViT(image=8, patch=4, dim=16, depth=1),
                  TinyViT(1, 10, image_size=8, patch=2), SmallCNN(1, 10, channels=[8, 8], layers=2, kernel_size=5),
                  nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))):
        sd = tiny_ghn.predict_state_dict(model)
        assert set(sd) == {k for k, v in model.state_dict().items() if v.is_floating_point()}
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


def test_hidden_units_differ_and_need_the_codes(tiny_ghn):
    model = SmallCNN(1, 10, channels=[8, 6], layers=2, kernel_size=5)
    sd = tiny_ghn.predict_state_dict(model)
    w = sd["features.0.weight"].reshape(8, -1)
    assert len({tuple(np.round(r.numpy(), 5)) for r in w}) == 8
    # sensitivity: one code for every unit (and no random draw) makes the units coincide
    same = GHN(hidden=16, layers=1, data="digits")
    same.load_state_dict(tiny_ghn.state_dict())
    with torch.no_grad():
        same.codes.weight.copy_(same.codes.weight[:1].expand_as(same.codes.weight))
        same.init_gain.zero_()
    w = same.eval().predict_state_dict(model)["features.0.weight"].reshape(8, -1)
    assert torch.allclose(w, w[:1].expand_as(w), atol=1e-5)


def test_fan_in_scaling_of_hidden_weights(tiny_ghn):
    for width in (16, 128):
        sd = tiny_ghn.predict_state_dict(MLP(64, 10, depth=2, width=[width, width]))
        w = sd["net.3.weight"] if "net.3.weight" in sd else [v for k, v in sd.items() if k.endswith("weight")][1]
        # standardized per neuron, times sqrt(2 / fan_in) and a magnitude 1 + m (m = 0 untrained)
        assert w.pow(2).sum(1).mean().sqrt() == pytest.approx(np.sqrt(2.0), rel=0.05)


def test_seeded_and_deterministic(tiny_ghn):
    m = SmallCNN(1, 10, channels=[8], layers=1)
    a, b = tiny_ghn.predict_state_dict(m, seed=3), tiny_ghn.predict_state_dict(m, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model, why", [
    (MLP(30, 2, depth=1, width=16), "does not fit the data"),
    (MLP(64, 2, depth=1, width=16), r"expected \(2, 10\)"),
    (SmallCNN(3, 10, channels=[8], layers=1), "does not fit the data"),
    (TinyViT(1, 10, image_size=40, patch=4, dims=1), "does not fit the data"),
], ids=["30-inputs", "2-classes", "3-channels", "1-d-model"])
def test_data_mismatch_is_an_error_unless_forced(tiny_ghn, model, why):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DataMismatchError, match=why):
        tiny_ghn(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_force_fills_a_mismatched_model_with_a_warning(tiny_ghn, caplog):
    model = MLP(64, 2, depth=1, width=16)
    tiny_ghn(model, force=True)
    assert "force=True" in caplog.text


def test_layers_wider_than_the_unit_codes_are_named_in_a_warning(caplog):
    """Filling a layer with more units than the GHN has codes logs which layers repeat codes; a
    network of training widths fills silently."""
    ghn = GHN(hidden=8, layers=1, num_codes=16, data="digits")
    wide = MLP(64, 10, depth=2, width=[20, 12])
    t = ghn.target(wide)
    assert t.wide_operations(16) == {"net.1": 20} and t.wide_operations(20) == {}
    with caplog.at_level("WARNING", logger="weightspace.hyper.ghn"):
        ghn(wide)
    assert "1 operation(s) have more units than this GHN's 16 unit codes: 'net.1' (20)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="weightspace.hyper.ghn"):
        ghn(MLP(64, 10, depth=2, width=[16, 12]))  # sensitivity: 16 units fit 16 codes
    assert "unit codes" not in caplog.text


def test_a_patch_embedding_written_as_a_linear_is_named_in_a_warning(tiny_ghn, caplog):
    """A ViT that cuts its input into patches by a reshape and embeds them with a Linear (a form the
    GHNs were not trained on) gets a warning with the convolution to write instead; a strided-conv
    ViT, a CNN and an MLP on the flattened input do not."""
    with caplog.at_level("WARNING", logger="weightspace.hyper.ghn"):
        tiny_ghn(TinyViT(1, 10, image_size=8, patch=2, dim=8, heads=2, depth=1))
    assert "reads its input as 4 features per position" in caplog.text and "nn.Conv2d(1, dim" in caplog.text
    caplog.clear()
    conv_vit = build_arch({"kind": "vit", "dims": 2, "in_channels": 1, "size": 8, "num_classes": 10, "norm": "ln",
                           "act": "gelu", "dim": 8, "heads": 2, "depth": 1, "mlp_ratio": 2, "patch": 2,
                           "cls": False, "norm_first": True, "pool": "mean"})
    with caplog.at_level("WARNING", logger="weightspace.hyper.ghn"):
        for model in (conv_vit, SmallCNN(1, 10, channels=[8], layers=1), MLP(64, 10, depth=1, width=16)):
            tiny_ghn(model)
    assert "features per position" not in caplog.text
    caplog.clear()
    # a checkpoint continuing one trained with Linear embeddings (ghn_recipe --linear-embed) does not warn
    tiny_ghn.meta = {"train": {"linear_embed": 0.0}, "init": {"train": {"linear_embed": 1.0}}}
    assert tiny_ghn.trained_on_linear_embeddings
    with caplog.at_level("WARNING", logger="weightspace.hyper.ghn"):
        tiny_ghn(TinyViT(1, 10, image_size=8, patch=2, dim=8, heads=2, depth=1))
    assert "features per position" not in caplog.text
    tiny_ghn.meta = {}


def test_mismatch_check_passes_matching_models(tiny_ghn):
    # sensitivity of the check above: same classes, the checkpoint's input shape (image or flat)
    tiny_ghn(MLP(64, 10, depth=1, width=16))
    tiny_ghn(SmallCNN(1, 10, channels=[8], layers=1))


def test_save_and_load_round_trip(tiny_ghn, tmp_path):
    tiny_ghn.meta = {"note": "x"}
    tiny_ghn.save_pretrained(tmp_path / "g")
    back = GHN.from_pretrained(tmp_path / "g")
    assert back.data == "digits" and back.meta["note"] == "x"
    m = SmallCNN(1, 10, channels=[8], layers=1)
    a, b = tiny_ghn.predict_state_dict(m), back.predict_state_dict(m)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(load_hypernetwork(tmp_path / "g"), GHN)


@pytest.mark.parametrize("name, data", [("hypernet-digits", "digits"), ("hypernet-mnist1d", "mnist1d")])
def test_shipped_checkpoints_load_by_name(name, data):
    ghn = GHN.from_pretrained(name)
    assert ghn.data == data
    assert isinstance(load_hypernetwork(name), GHN)
    assert "command" in ghn.meta and "weightspace.hyper.recipe" in ghn.meta["command"] or "ghn_recipe" in ghn.meta["command"]


def test_old_name_still_loads_the_first_hypernetwork():
    from weightspace.hyper import GraphHyperNetwork

    assert isinstance(load_hypernetwork("hypernet"), GraphHyperNetwork)


@pytest.fixture(scope="module")
def digits():
    from model_zoo import load_dataset

    return load_dataset("digits", seed=0)


def _bn_archs(n: int) -> list[nn.Module]:
    configs = [c for c in CellSpace("digits").split("test", 40, seed=5) if c.get("norm") == "bn"][:n]
    assert len(configs) == n
    return [build_arch(c) for c in configs]


def _acc(model: nn.Module, x, y, train_mode: bool) -> float:
    model.train(train_mode)
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def test_recalibrated_batchnorm_eval_mode_is_at_least_train_mode(digits):
    from weightspace.hyper import recalibrate_batchnorm

    ghn = GHN.from_pretrained("hypernet-digits")
    train_mode, eval_mode, stale = [], [], []
    for model in _bn_archs(6):
        ghn(model)
        train_mode.append(_acc(model, digits.x_test, digits.y_test, True))
        stale.append(_acc(model, digits.x_test, digits.y_test, False))  # predicted statistics 0 / 1
        recalibrate_batchnorm(model, digits.x_train)
        eval_mode.append(_acc(model, digits.x_test, digits.y_test, False))
    assert np.mean(eval_mode) >= np.mean(train_mode) - 0.01, (eval_mode, train_mode)
    assert min(e - t for e, t in zip(eval_mode, train_mode)) >= -0.05, (eval_mode, train_mode)
    # sensitivity: without the recalibration, eval mode uses the placeholder statistics and is worse
    assert np.mean(stale) < np.mean(eval_mode) - 0.05, (stale, eval_mode)


@pytest.mark.parametrize("data", ["digits", "mnist1d"])
def test_shipped_checkpoint_beats_random_init_on_unseen_architectures(data, digits):
    from model_zoo import load_dataset
    from weightspace.hyper import recalibrate_batchnorm

    ds = digits if data == "digits" else load_dataset(data, seed=0)
    ghn = GHN.from_pretrained(f"hypernet-{data}")
    pred, rand = [], []
    for i, c in enumerate(CellSpace(data).split("test", 6, seed=11)):
        torch.manual_seed(i)
        model = build_arch(c)
        recalibrate_batchnorm(model, ds.x_train)
        rand.append(_acc(model, ds.x_test, ds.y_test, False))
        recalibrate_batchnorm(ghn(model), ds.x_train)
        pred.append(_acc(model, ds.x_test, ds.y_test, False))
    assert np.mean(pred) > np.mean(rand) + 0.1, (pred, rand)


def test_first_hypernetwork_checks_the_data_too():
    from weightspace.hyper import GraphHyperNetwork

    hyper = GraphHyperNetwork.from_pretrained("hypernet")
    with pytest.raises(DataMismatchError, match="30"):
        hyper(MLP(30, 2, depth=1, width=16))
    hyper(MLP(64, 10, depth=1, width=16))  # sensitivity: the digits shape passes


def test_recipe_snapshots_end_at_the_checkpoint(tmp_path):
    """``ghn_recipe --snapshot-minutes`` saves the final weights as the last snapshot, equal to the checkpoint."""
    from safetensors import safe_open

    from weightspace.cli import ghn_recipe

    out, snaps = tmp_path / "ghn", tmp_path / "snaps"
    ghn_recipe.main(["--data", "digits", "--out", str(out), "--minutes", "0.15", "--hidden", "8", "--layers", "1",
                     "--pool", "4", "--archs-per-step", "1", "--batch-size", "16", "--snapshot-minutes", "100",
                     "--snapshot-dir", str(snaps), "--no-progress"])
    ghn = GHN.from_pretrained(out)
    final = ghn.meta["final"]
    files = sorted(snaps.glob("step*.safetensors"))
    assert files and files[-1].name == f"step{int(final['step']):06d}.safetensors"
    with safe_open(str(files[-1]), "pt") as f:
        assert float(f.metadata()["step"]) == final["step"]
        for k, v in ghn.state_dict().items():
            assert torch.equal(f.get_tensor(k), v), k


def test_recipe_transfer_starts_from_another_datasets_weights(tmp_path):
    """``ghn_recipe --transfer`` trains a checkpoint of one dataset on another, starting from its weights."""
    from weightspace.cli import ghn_recipe

    small = ["--hidden", "8", "--layers", "1", "--pool", "2", "--archs-per-step", "1", "--batch-size", "8",
             "--no-progress"]
    src = tmp_path / "digits"
    ghn_recipe.main(["--data", "digits", "--out", str(src), "--minutes", "0.05", *small])
    source = GHN.from_pretrained(src)
    # a learning rate of 1e-12 leaves the weights where they started
    moved = tmp_path / "mnist1d"
    ghn_recipe.main(["--data", "mnist1d", "--transfer", str(src), "--lr", "1e-12", "--out", str(moved),
                     "--minutes", "0.03", *small])
    ghn = GHN.from_pretrained(moved)
    assert ghn.data == "mnist1d" and ghn.config.hidden == 8
    assert ghn.meta["init"]["transfer_from"] == "digits" and ghn.meta["init"]["source"] == str(src)
    for k, v in source.state_dict().items():
        torch.testing.assert_close(ghn.state_dict()[k], v, rtol=0, atol=1e-9, msg=k)
    # sensitivity: without --transfer the recipe starts from the seeded fresh initialization, elsewhere
    torch.manual_seed(0)
    fresh = GHN(hidden=8, layers=1, data="mnist1d").state_dict()
    assert any(not torch.allclose(fresh[k], v) for k, v in ghn.state_dict().items())
    # --init keeps to its own dataset, and the two starts exclude each other
    with pytest.raises(SystemExit, match="trained on 'digits'"):
        ghn_recipe.main(["--data", "mnist1d", "--init", str(src), "--out", str(tmp_path / "x"), *small])
    with pytest.raises(SystemExit, match="not both"):
        ghn_recipe.main(["--data", "mnist1d", "--init", str(src), "--transfer", str(src),
                         "--out", str(tmp_path / "y"), *small])
