"""``weightspace zoo`` short forms (``arch.K=V``, ``arch=pkg.Class``, ...) and validation before writing, in process."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from weightspace.cli.main import config_dir
from weightspace.cli.zoo import _discard_hydra_only, check_zoo_config, positional_overrides, run

TINY = ["size=2", "trainer.epochs=1", "trainer.checkpoints=[0,1]", "progress=false", "report=false", "threads=1"]

NET = '''
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, hidden: int = 16, num_outputs: int = 10):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs))

    def forward(self, x):
        return self.body(x)
'''


def _compose(*argv):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("zoo", overrides=positional_overrides(list(argv)))


def _zoo_arch(out):
    return json.loads((out / "zoo.json").read_text())["generator"]["arch"]


def test_short_forms_rewrite():
    assert positional_overrides(["digits_mlp_demo", "arch.depth=3", "+arch.width=8", "trainer.epochs=1",
                                 "data.limit_train=5", "space.lr=0.01", "~arch.activation"]) == [
        "zoo=digits_mlp_demo", "++zoo.arch.depth=3", "++zoo.arch.width=8", "++zoo.trainer.epochs=1",
        "++zoo.data.limit_train=5", "++zoo.space.lr=0.01", "~zoo.arch.activation"]
    # a class replaces the architecture before any of its keys are set, wherever it appears
    assert positional_overrides(["arch.hidden=4", "arch=pkg.nets.Net"]) == [
        "~zoo.arch", "+zoo.arch._target_=pkg.nets.Net", "++zoo.arch.hidden=4"]
    assert positional_overrides(["arch=small_cnn", "trainer=fast", "data=cifar10", "data=file:x.npz"]) == [
        "arch@zoo.arch=small_cnn", "trainer@zoo.trainer=fast", "data@zoo.data=cifar10", "zoo.data.name=file:x.npz"]
    assert positional_overrides(["zoo.arch.depth=3", "size=2"]) == ["zoo.arch.depth=3", "size=2"]  # long form kept


def test_arch_key_short_form_trains_that_architecture(tmp_path):
    out = tmp_path / "z"
    run(_compose("digits_mlp_demo", "arch.depth=3", f"out={out}", *TINY))
    assert _zoo_arch(out)["depth"] == 3


def test_plus_arch_never_trains_the_default(tmp_path):
    """``+arch.depth=3`` used to add an unused top-level key and train depth 2 silently."""
    out = tmp_path / "z"
    run(_compose("digits_mlp_demo", "+arch.depth=3", f"out={out}", *TINY))
    assert _zoo_arch(out)["depth"] == 3
    with pytest.raises(SystemExit, match=r"unknown option\(s\) \['depth'\].*arch.KEY=V"):
        run(_compose("digits_mlp_demo", "+depth=3", f"out={tmp_path / 'y'}", *TINY))
    assert not (tmp_path / "y").exists()


def test_unknown_arch_key_fails_before_writing_and_lists_keys(tmp_path):
    out = tmp_path / "z"
    with pytest.raises(SystemExit, match=r"unknown argument 'dept'; it takes \['in_features', 'num_outputs', "
                                         r"'depth', 'width', 'activation'\]; nothing was written"):
        run(_compose("digits_mlp_demo", "arch.dept=3", f"out={out}", *TINY))
    assert not out.exists()
    with pytest.raises(SystemExit, match="unknown trainer keys"):
        run(_compose("digits_mlp_demo", "trainer.epoch=1", f"out={out}", *TINY))
    assert not out.exists()


def test_own_class_from_the_command_line(tmp_path, monkeypatch):
    (tmp_path / "ws_test_nets.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "mine"
    # not on the allowlist: refused before writing, saying how to allow it
    with pytest.raises(SystemExit, match="not an allowed architecture.*trust_code=true"):
        run(_compose("digits_mlp_demo", "arch=ws_test_nets.Net", "arch.hidden=12", f"out={out}", *TINY))
    assert not out.exists()
    # a key of the old architecture (MLP's depth) is not carried over to the new class
    with pytest.raises(SystemExit, match=r"unknown argument 'depth'; it takes \['hidden', 'num_outputs'\]"):
        run(_compose("digits_mlp_demo", "arch=ws_test_nets.Net", "arch.depth=2", "trust_code=true", f"out={out}",
                     *TINY))
    assert not out.exists()
    run(_compose("digits_mlp_demo", "arch=ws_test_nets.Net", "arch.hidden=12", "trust_code=true", f"out={out}", *TINY))
    assert _zoo_arch(out) == {"_target_": "ws_test_nets.Net", "hidden": 12}


def test_builtin_arch_by_name():
    cfg = _compose("digits_cnn", "arch=small_cnn_1d", "size=2")
    assert check_zoo_config(cfg)["arch"]["_target_"] == "model_zoo.archs.SmallCNN"
    assert cfg.zoo.arch.dims == 1


def test_failed_call_leaves_no_hydra_folder(tmp_path, monkeypatch):
    out = tmp_path / "z"
    (out / ".hydra" / "run").mkdir(parents=True)
    (out / ".hydra" / "run" / "zoo.log").write_text("log")
    _discard_hydra_only(out)
    assert not out.exists()
    keep = tmp_path / "k"
    (keep / ".hydra").mkdir(parents=True)
    (keep / "zoo.json").write_text("{}")
    _discard_hydra_only(keep)  # a folder with anything else in it is left alone
    assert (keep / "zoo.json").is_file()
    here = tmp_path / "here"
    (here / ".hydra").mkdir(parents=True)
    monkeypatch.chdir(here)
    _discard_hydra_only(Path("."))  # out=. : the folder the command runs in is never removed
    assert here.is_dir()


def test_failed_command_leaves_no_folder_through_hydra(tmp_path):
    """Through the entry point (Hydra creates ``out/.hydra/run`` before the verb runs): still no folder."""
    from weightspace.cli.main import main

    out = tmp_path / "z"
    with pytest.raises(SystemExit, match="unknown argument 'dept'"):
        main(["zoo", "digits_mlp_demo", f"out={out}", "arch.dept=3", *TINY])
    assert not out.exists()
