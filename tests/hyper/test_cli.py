"""`weightspace hyper train|eval` end to end, CI-sized (subprocesses)."""

import json
import subprocess
import sys


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "weightspace.cli.main", "hyper", *args], capture_output=True,
                          text=True, timeout=300)


def test_hyper_train_then_eval(tmp_path):
    stem = tmp_path / "h"
    res = _run("train", "train.steps=2", "train.archs_per_step=1", "train.batch_size=16", "train.log_every=1",
               "model.hidden=8", "model.layers=1", f"out={stem}", f"hydra.run.dir={tmp_path / 'run'}",
               "progress=false")
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads((stem / "config.json").read_text())
    assert info["config"]["hidden"] == 8 and info["extras"]["train"]["steps"] == 2
    assert "weightspace hyper train" in info["extras"]["command"]
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 2
    assert (tmp_path / "run" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    res = _run("eval", f"checkpoint={stem}", "eval.splits=[unseen]", "eval.per_split=2",
               f"hydra.run.dir={tmp_path / 'eval'}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| unseen | 2 |" in res.stdout

