"""``weightspace predict`` end to end on a CI-sized zoo, and under ``torchrun`` with 2 processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from ..tiny_zoo import tiny_zoo

ARGS = ["metanet.epochs=1", "metanet.batch_size=4", "metanet.model.hidden=8", "metanet.model.num_layers=1",
        "progress=false", "threads=1", "fractions=[0.6,0.2,0.2]"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_predict_verb_writes_metrics_predictor_and_plot(tmp_path_factory, tmp_path):
    zoo = tiny_zoo(tmp_path_factory)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "weightspace.cli.main", "predict", f"zoo={zoo}", "metanet=gmn", "seed=1",
           *ARGS, f"hydra.run.dir={out}"]
    subprocess.run(cmd, check=True, env=_env(), capture_output=True, timeout=300)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test/tau", "test/r2", "test/mae"} <= metrics.keys() and metrics["seed"] == 1
    assert (out / "predictor" / "model.safetensors").is_file()
    assert (out / "predictor" / "config.json").is_file()
    assert (out / "embedding.png").is_file()


def test_predict_verb_trains_the_probing_metanetwork(tmp_path_factory, tmp_path):
    zoo = tiny_zoo(tmp_path_factory)
    out = tmp_path / "probe"
    cmd = [sys.executable, "-m", "weightspace.cli.main", "predict", f"zoo={zoo}", "metanet=probe", "metanet.epochs=1",
           "metanet.batch_size=4", "metanet.model.num_probes=4", "metanet.model.hidden=[8]", "rank_weight=0.5",
           "progress=false", "threads=1", "fractions=[0.6,0.2,0.2]", f"hydra.run.dir={out}"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metanet"] == "probe" and "test/tau" in metrics
    saved = json.loads((out / "predictor" / "config.json").read_text())
    assert saved["format"] == "weightspace.predictor"
    assert saved["config"]["kind"] == "probe"
    assert saved["config"]["metanet"]["archs"][0]["_target_"] == "model_zoo.archs.SmallCNN"
    assert (out / "embedding.png").is_file()


def test_predict_verb_rejects_unknown_metanet(tmp_path_factory, tmp_path):
    zoo = tiny_zoo(tmp_path_factory)
    cmd = [sys.executable, "-m", "weightspace.cli.main", "predict", f"zoo={zoo}", "metanet=nfn",
           f"hydra.run.dir={tmp_path}"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "nfn" in res.stderr


@pytest.mark.slow
def test_predict_under_torchrun_ddp_gloo(tmp_path_factory, tmp_path):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not installed")
    zoo = tiny_zoo(tmp_path_factory)
    out = tmp_path / "ddp"
    cmd = [torchrun, "--nproc_per_node=2", "--master_port=29517", "-m", "weightspace.cli.main", "predict",
           f"zoo={zoo}", "metanet=gmn", "device=cpu", *ARGS, "metanet.epochs=2", f"hydra.run.dir={out}"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert "test/tau" in metrics and metrics["train/n"] > 0
