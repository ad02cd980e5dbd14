import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import model_zoo
from model_zoo.generator import ZooExistsError, normalize_config

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    import model_zoo
    cfg = json.loads(sys.argv[1])
    model_zoo.generate(cfg, sys.argv[2], progress=False)
""")


def _generate_in_subprocess(cfg: dict, out: Path, kill_after_chunks: int | None = None) -> int:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(cfg), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after_chunks is None:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        return 0
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "chunks").glob("chunk-*.csv"))) >= kill_after_chunks if (out / "chunks").exists() else False:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    return len(list((out / "chunks").glob("chunk-*.csv")))


def _assert_same_zoo(a: Path, b: Path) -> None:
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
    files = sorted(p.name for p in (a / "chunks").glob("*.safetensors"))
    assert files == sorted(p.name for p in (b / "chunks").glob("*.safetensors"))
    for f in files:
        x, y = load_file(str(a / "chunks" / f)), load_file(str(b / "chunks" / f))
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), (f, k)


def test_kill_mid_run_then_resume_equals_uninterrupted(tmp_path, small_config):
    cfg = {**small_config, "size": 16, "chunk_size": 2, "trainer": {"epochs": 3, "checkpoints": [0, 3]}}
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    _generate_in_subprocess(cfg, ref)
    n_done = _generate_in_subprocess(cfg, killed, kill_after_chunks=2)
    assert not (killed / "metrics.csv").exists(), "the run was not interrupted"
    assert 2 <= n_done < len(json.loads((ref / "zoo.json").read_text())["chunks"])
    with pytest.raises(model_zoo.ZooFormatError, match="the zoo is incomplete"):
        model_zoo.load(killed)
    _generate_in_subprocess(cfg, killed)  # the same command again finishes the rest
    _assert_same_zoo(ref, killed)
    assert not list(killed.glob("**/.*.tmp"))
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["runs"] == 16 and "metrics.csv" in manifest["files"]


def test_resume_skips_done_chunks(tmp_path, small_config, monkeypatch):
    out = tmp_path / "z"
    model_zoo.generate(small_config, out, progress=False)
    gen = sys.modules["model_zoo.generator"]

    def fail(*a, **k):
        raise AssertionError("nothing should be retrained")

    monkeypatch.setattr(gen, "train_group", fail)
    zoo = model_zoo.generate(small_config, out, progress=False)
    assert len(zoo) == small_config["size"]


def test_shards_merge_into_one_zoo(tmp_path, small_config):
    one, two = tmp_path / "one", tmp_path / "two"
    model_zoo.generate(small_config, one, progress=False)
    assert model_zoo.generate(small_config, two, shard=0, num_shards=2, progress=False) is None
    zoo = model_zoo.generate(small_config, two, shard=1, num_shards=2, progress=False)
    assert zoo is not None and len(zoo) == small_config["size"]
    _assert_same_zoo(one, two)


def test_zoo_json_records_everything(small_zoo, small_config):
    info = small_zoo.info
    assert info["schema_version"] == 1 and info["generator"]["size"] == small_config["size"]
    assert info["dataset"]["name"] == "digits" and info["dataset"]["n_test"] == 359
    assert set(info["archs"].values().__iter__().__next__()) >= {"_target_", "depth", "width"}
    split = json.loads((small_zoo.path / "split.json").read_text())
    d = model_zoo.load_dataset("digits", flatten=True)
    assert split["test_index"] == d.test_index.tolist()
    assert info["dataset"]["test_index"] == split["test_index"] and len(info["dataset"]["train_index"]) == 1438


def test_other_config_in_same_folder(tmp_path, small_config):
    out = tmp_path / "z"
    model_zoo.generate({**small_config, "size": 2}, out, progress=False)
    with pytest.raises(ZooExistsError, match="holds a zoo generated from another configuration"):
        model_zoo.generate({**small_config, "size": 3}, out, progress=False)


@pytest.mark.parametrize("cfg,message", [
    ({"sizes": 3}, r"unknown zoo config keys \['sizes'\]"),
    ({"trainer": {"epoch": 3}}, r"unknown trainer keys \['epoch'\]"),
    ({"size": 0}, "size and chunk_size must be positive"),
])
def test_bad_configs(cfg, message):
    with pytest.raises(ValueError, match=message):
        normalize_config(cfg)


def test_bad_shard(tmp_path, small_config):
    with pytest.raises(ValueError, match=r"shard must lie in \[0, num_shards=2\), got 2"):
        model_zoo.generate(small_config, tmp_path / "z", shard=2, num_shards=2)


def test_spread_of_outcomes(small_zoo):
    acc = small_zoo.final_metrics()["test_accuracy"]
    assert np.nanmax(acc) > 0.5 and np.nanmax(acc) - np.nanmin(acc) > 0.1
    assert os.path.exists(small_zoo.path / "manifest.json")
