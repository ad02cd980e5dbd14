"""The persistence contract (weightspace.pretrained) on a toy model; each model class has its own
round-trip test beside its other tests."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from weightspace.pretrained import CheckpointError, PretrainedMixin, config_from_dict, list_checkpoints
from weightspace.resolver import Registry


@dataclass(frozen=True)
class ToyConfig:
    width: int = 4
    scale: float = 1.0
    dims: tuple[int, ...] = (2, 3)
    act: str = "relu"


class Toy(PretrainedMixin, nn.Module):
    config_class = ToyConfig
    checkpoint_format = "weightspace.test-toy"

    def __init__(self, width: int = 4, scale: float = 1.0, dims: tuple[int, ...] = (2, 3), act: str = "relu"):
        super().__init__()
        self.config = ToyConfig(width, scale, tuple(dims), act)
        self.lin = nn.Linear(width, 2)


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    m = Toy(width=5, scale=2.5, dims=(1, 2, 3))
    m.info = {"trained_on": "nothing"}
    m.save_pretrained(tmp_path / "toy")
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["config.json", "model.safetensors"]
    r = Toy.from_pretrained(tmp_path / "toy")
    assert r.config == m.config and r.info == {"trained_on": "nothing"} and not r.training
    x = torch.randn(3, 5)
    assert torch.equal(r.lin(x), m.lin(x))
    # also through the config file's path
    assert Toy.from_pretrained(tmp_path / "toy" / "config.json").config == m.config


def test_corrupt_and_partial_directories_name_the_file(tmp_path):
    d = Toy().save_pretrained(tmp_path / "toy")
    w = d / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors.*corrupt"):
        Toy.from_pretrained(d)
    w.unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: missing"):
        Toy.from_pretrained(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        Toy.from_pretrained(d)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json: missing"):
        Toy.from_pretrained(d)


def test_wrong_kind_and_wrong_weights(tmp_path):
    d = Toy().save_pretrained(tmp_path / "toy")
    doc = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**doc, "format": "weightspace.other"}))
    with pytest.raises(CheckpointError, match="not a Toy"):
        Toy.from_pretrained(d)
    (d / "config.json").write_text(json.dumps({**doc, "config": {**doc["config"], "width": 7}}))
    with pytest.raises(CheckpointError, match="do not belong together"):
        Toy.from_pretrained(d)


@pytest.mark.parametrize("bad, field", [({"width": "32"}, "width"), ({"width": True}, "width"),
                                        ({"scale": "1"}, "scale"), ({"dims": "23"}, "dims"),
                                        ({"nope": 1}, "unknown")])
def test_config_types_are_checked(bad, field):
    with pytest.raises(TypeError, match=field):
        config_from_dict(ToyConfig, bad)


def test_config_accepts_good_values():
    c = config_from_dict(ToyConfig, {"width": 3, "scale": 2, "dims": [4, 5]})
    assert c == ToyConfig(3, 2.0, (4, 5))


def test_unknown_name_lists_shipped_checkpoints():
    with pytest.raises(CheckpointError, match="shipped checkpoints"):
        Toy.from_pretrained("no-such-checkpoint")
    assert isinstance(list_checkpoints(), list)


def test_registry():
    reg: Registry = Registry("widget")
    reg.register("a", int)

    @reg.register("b-c")
    class B:
        pass

    assert reg.resolve("a") is int and reg.resolve("B_C") is B and reg.build("a", "3") == 3
    assert reg.names() == ("a", "b-c") and "a" in reg
    with pytest.raises(ValueError, match=r"unknown widget 'z'; choose one of \('a', 'b-c'\)"):
        reg.resolve("z")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", float)


def test_config_asking_for_a_huge_model_fails_before_allocating(tmp_path):
    d = Toy(width=4).save_pretrained(tmp_path / "toy")
    doc = json.loads((d / "config.json").read_text())
    doc["config"]["width"] = 10**12  # a Linear(10**12, 2) would need 8 TB
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"'lin.weight' has shape \[2, 4\].*needs \[2, 1000000000000\]"):
        Toy.from_pretrained(d)
