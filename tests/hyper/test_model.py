"""weightspace.hyper.model: symmetry breaking, scaling, BatchNorm, errors, checkpoints, the shipped checkpoint."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import weightspace as ws
from model_zoo.archs import MLP, SmallCNN, TinyViT
from weightspace.hyper import (
    GraphHyperNetwork,
    HyperNetworkConfig,
    load_hypernetwork,
    recalibrate_batchnorm,
)
from weightspace.pretrained import CheckpointError


def _distinct_rows(w: torch.Tensor) -> int:
    rows = w.detach().reshape(w.shape[0], -1)
    return len({tuple(np.round(r.numpy(), 5)) for r in rows})


# ---------------------------------------------------------------- symmetry breaking
@pytest.mark.parametrize("model", [MLP(depth=2, width=[16, 12]), SmallCNN(channels=[8, 6], layers=2, strides=[2, 1])],
                         ids=["mlp", "cnn"])
def test_hidden_units_are_not_all_equal(small_hyper, model):
    sd = small_hyper.predict_state_dict(model)
    for name, w in sd.items():
        if name.endswith("weight") and not name.startswith("head") and name != "net.5.weight":
            assert _distinct_rows(w) == w.shape[0], f"{name}: predicted units coincide"


def test_symmetry_breaking_needs_the_codes(small_hyper):
    """Sensitivity: with every hidden neuron given the same code, the units do coincide, so the
    distinct units above come from the neuron codes (the deliberate symmetry breaker)."""
    model = MLP(depth=1, width=8)
    t = small_hyper.target(model)
    same = GraphHyperNetwork(hidden=16, layers=1)
    same.load_state_dict(small_hyper.state_dict())
    with torch.no_grad():
        same.codes.weight.copy_(same.codes.weight[:1].expand_as(same.codes.weight))
        same.init_gain.zero_()
        flat = same.predict([t], [t.draw_init(torch.Generator().manual_seed(0))])[0]
    w = t.spec.unflatten(flat)["net.1.weight"]
    assert torch.allclose(w, w[:1].expand_as(w), atol=1e-5)


def test_seed_and_determinism(small_hyper):
    m = MLP(depth=1, width=8)
    a = small_hyper.predict_state_dict(m, seed=3)
    b = small_hyper.predict_state_dict(m, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- normalization
@pytest.mark.parametrize("depth,width", [(1, 16), (3, 100), (6, 24)])
def test_fan_in_normalization_of_every_neuron(small_hyper, depth, width):
    """Each hidden neuron's incoming weights: zero mean, RMS sqrt(gain^2 / fan_in) x its magnitude
    (1 for an untrained node head)."""
    model = MLP(depth=depth, width=width, activation="relu")
    t = small_hyper.target(model)
    flat = small_hyper.predict([t], [t.draw_init(torch.Generator().manual_seed(0))])[0].detach()
    sd = t.spec.unflatten(flat)
    for i in range(depth):
        w = sd[f"net.{2 * i + 1}.weight"]
        gain2 = 1.0 if i == 0 else 2.0
        assert torch.allclose(w.mean(1), torch.zeros(width), atol=1e-5)
        assert torch.allclose(w.pow(2).mean(1).sqrt(), torch.full((width,), math.sqrt(gain2 / w.shape[1])), rtol=1e-4)


@pytest.mark.parametrize("depth,width", [(1, 16), (2, 128), (3, 64), (3, 128)])
def test_activations_stay_bounded_in_the_trained_depth_range(shipped, digits, depth, width):
    """Shipped checkpoint, digits pixels in [0, 1]: hidden RMS stays within (0.1, 50) for the trained
    depths (1-3) at any width. Deeper nets drift (about x3 per layer, see the module docs)."""
    model = shipped(MLP(depth=depth, width=width))
    h = digits.x_train[:256].flatten(1)
    rms = []
    for layer in model.net[1:]:
        h = layer(h)
        if isinstance(layer, nn.ReLU):
            rms.append(float(h.detach().pow(2).mean().sqrt()))
    assert all(0.1 < r < 50.0 for r in rms), rms


@pytest.mark.parametrize("depth,width", [(1, 16), (4, 128), (8, 32)])
def test_untrained_hypernetwork_keeps_activations_scaled(small_hyper, digits, depth, width):
    model = small_hyper(MLP(depth=depth, width=width))
    h = digits.x_train[:256].flatten(1)
    h = (h - h.mean(0)) / (h.std(0) + 1e-3)
    rms = []
    for layer in model.net[1:]:
        h = layer(h)
        if isinstance(layer, nn.ReLU):
            rms.append(float(h.detach().pow(2).mean().sqrt()))
    assert all(0.1 < r < 10.0 for r in rms), rms


# ---------------------------------------------------------------- user API, BatchNorm, errors
def test_fill_in_place_returns_model_and_changes_weights(small_hyper, digits):
    model = MLP(depth=2, width=[24, 16])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = small_hyper(model)
    assert out is model
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.isfinite(model(digits.x_test)).all()


def test_batchnorm_parameters_and_statistics(small_hyper, digits):
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))
    small_hyper(model)
    bn = model[1]
    assert torch.equal(bn.running_mean, torch.zeros(6)) and torch.equal(bn.running_var, torch.ones(6))
    assert ((bn.weight > 0) & (bn.weight < 2)).all() and (bn.bias.abs() < 1).all()
    recalibrate_batchnorm(model, digits.x_train[:512])
    assert not torch.equal(bn.running_mean, torch.zeros(6))
    assert bn.momentum == 0.1


class _EmbedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(16, 8), nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(x).mean(1))


@pytest.mark.parametrize("model,example,where", [
    (TinyViT(), torch.zeros(2, 1, 8, 8), "position connection [at 'embed' (Linear)]"),
    (_EmbedNet(), torch.zeros(2, 4, dtype=torch.long), "'emb' (Embedding)"),
    (SmallCNN(channels=4, layers=1, kernel_size=5), None, "'features.0' (Conv2d)"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.LSTM(8, 8)), None, "'2' (LSTM)"),
], ids=["attention", "embedding", "kernel5", "lstm"])
def test_unsupported_architecture_names_the_module_and_leaves_model(small_hyper, model, example, where):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ws.UnsupportedModuleError) as err:
        small_hyper(model, example_input=example)
    assert where in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- checkpoints
def test_save_pretrained_round_trip(small_hyper, tmp_path):
    small_hyper.meta = {"note": "test"}
    d = small_hyper.save_pretrained(tmp_path / "h")
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    assert (d / "model.safetensors").read_bytes()[8:9] == b"{"  # safetensors: a length, then a JSON header
    doc = json.loads((d / "config.json").read_text())
    assert doc["format"] == "weightspace.hypernet" and doc["extras"] == {"note": "test"}
    assert doc["config"]["hidden"] == 16 and doc["config"]["layers"] == 1
    loaded = GraphHyperNetwork.from_pretrained(d)
    assert loaded.config == small_hyper.config == HyperNetworkConfig(hidden=16, layers=1)
    assert loaded.meta == {"note": "test"}
    m = MLP(depth=2, width=[8, 8])
    a, b = small_hyper.predict_state_dict(m), loaded.predict_state_dict(m)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = load_hypernetwork(d)  # the alias reads the same directory
    assert all(torch.equal(a[k], v) for k, v in c.predict_state_dict(m).items())
    small_hyper.meta = {}


def test_save_alias_writes_the_same_directory(small_hyper, tmp_path):
    d = small_hyper.save(tmp_path / "h", meta={"note": 1})
    assert GraphHyperNetwork.from_pretrained(d).meta == {"note": 1}


def test_load_hypernetwork_reads_the_legacy_layout(small_hyper, tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in small_hyper.state_dict().items()}, str(tmp_path / "h.safetensors"))
    cfg = {"hidden": 16, "layers": 1, "grid": 3, "max_positions": 1024, "max_depth": 64, "code_dim": 32,
           "num_codes": 64}
    (tmp_path / "h.json").write_text(json.dumps({"format": "weightspace.hypernet/1", "config": cfg,
                                                 "meta": {"old": True}}))
    m = MLP(depth=1, width=8)
    ref = small_hyper.predict_state_dict(m)
    for path in (tmp_path / "h", tmp_path / "h.safetensors", tmp_path / "h.json"):
        loaded = load_hypernetwork(path)
        assert loaded.meta == {"old": True}
        assert all(torch.equal(ref[k], v) for k, v in loaded.predict_state_dict(m).items())
    (tmp_path / "h.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="h.json.*not a hypernetwork checkpoint"):
        load_hypernetwork(tmp_path / "h")


def test_load_errors_name_the_file(small_hyper, tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        load_hypernetwork(tmp_path / "missing")
    d = small_hyper.save_pretrained(tmp_path / "partial")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        GraphHyperNetwork.from_pretrained(d)
    d = small_hyper.save_pretrained(tmp_path / "corrupt")
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: cannot read"):
        GraphHyperNetwork.from_pretrained(d)
    d = small_hyper.save_pretrained(tmp_path / "badjson")
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_hypernetwork(d)
    d = small_hyper.save_pretrained(tmp_path / "wrongkind")
    doc = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**doc, "format": "weightspace.nowcaster"}))
    with pytest.raises(CheckpointError, match=r"config\.json: holds format 'weightspace.nowcaster'"):
        GraphHyperNetwork.from_pretrained(d)
    d = small_hyper.save_pretrained(tmp_path / "mismatch")
    doc = json.loads((d / "config.json").read_text())
    doc["config"]["hidden"] = 24
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor .* do not belong together"):
        GraphHyperNetwork.from_pretrained(d)




# Predictions of the shipped checkpoint recorded before it moved to weightspace/checkpoints/hypernet/
# (first four values and the sum of every predicted tensor; fixed tiny models, fixed seeds).
_SHIPPED_MLP = {  # nn.Sequential(Linear(64, 16), ReLU(), Linear(16, 10)), seed=0
    "0.weight": ([-0.3229910135269165, -0.8385058641433716, 1.5996272563934326, -0.3035831153392792],
                 0.0004804708732990548),
    "0.bias": ([-0.8418802618980408, -0.9265179634094238, -0.7937758564949036, -0.8762112855911255],
               -13.65828138589859),
    "2.weight": ([-7.739184856414795, 7.6486897468566895, -1.0358325242996216, 3.3421661853790283],
                 -69.70000105267536),
    "2.bias": ([0.06831534951925278, -0.16583092510700226, -0.05581725016236305, -0.10509071499109268],
               -0.6166444756090641),
}
_SHIPPED_CNN = {  # Conv2d(1, 8, 3, padding=1), Tanh, AdaptiveAvgPool2d(1), Flatten, Linear(8, 10); seed=3
    "0.weight": ([-0.1706925481557846, 1.9780986309051514, 3.056976556777954, -0.6983377933502197], 0.0),
    "0.bias": ([-0.8729177713394165, -0.9356896281242371, -0.8266921043395996, -0.918722927570343],
               -6.706147253513336),
    "4.weight": ([-14.490255355834961, 22.087806701660156, 14.649120330810547, -8.26091194152832],
                 -41.17153763771057),
    "4.bias": ([0.011774005368351936, -0.13314346969127655, -0.027620822191238403, -0.06536424905061722],
               -0.28424889780581),
}


def test_shipped_checkpoint_loads_by_name_with_recorded_outputs():
    hyper = GraphHyperNetwork.from_pretrained("hypernet")
    assert hyper.config == HyperNetworkConfig(hidden=48, layers=2)
    assert hyper.meta["train"]["steps"] == 2000 and "continued_from" in hyper.meta
    mlp = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 10))
    for model, seed, ref in ((mlp, 0, _SHIPPED_MLP), (cnn, 3, _SHIPPED_CNN)):
        sd = hyper.predict_state_dict(model, seed=seed)
        assert sd.keys() == ref.keys()
        for k, (head, total) in ref.items():
            torch.testing.assert_close(sd[k].flatten()[:4], torch.tensor(head), rtol=1e-5, atol=1e-5)
            assert abs(float(sd[k].double().sum()) - total) < 1e-3, k
    same = load_hypernetwork()  # the alias, None -> the shipped checkpoint
    assert all(torch.equal(a, b) for a, b in zip(hyper.state_dict().values(), same.state_dict().values()))
