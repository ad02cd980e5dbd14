"""Meta-training: finite, logged, resumable (a killed run resumes to the same network), errors."""

from __future__ import annotations

import json

import pytest
import torch

import weightspace as ws
from weightspace.nowcast import (
    MetaTrainConfig,
    Nowcaster,
    Trajectory,
    meta_train,
)

from .helpers import adam_trajectory as _adam_trajectory
from .helpers import small_mlp as _mlp
from .helpers import trajectories as _trajectories


def test_meta_train_is_finite_logged_and_resumable(tmp_path):
    trajs = _trajectories()
    cfg = dict(batch=2, strides=(1, 2), log_every=2, save_every=2)
    torch.manual_seed(0)
    a = Nowcaster(kind="graph", horizons=4, hidden=16, layers=1)
    full = meta_train(a, trajs, tmp_path / "full", MetaTrainConfig(steps=4, **cfg), progress=False)
    assert full["skipped_steps"] == 0
    rows = [json.loads(r) for r in (tmp_path / "full/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(torch.isfinite(torch.tensor([r["train/loss"], r["val/loss"]])).all() for r in rows)
    assert (tmp_path / "full/nowcaster/model.safetensors").exists()
    torch.manual_seed(0)
    b = Nowcaster(kind="graph", horizons=4, hidden=16, layers=1)
    meta_train(b, trajs, tmp_path / "part", MetaTrainConfig(steps=4, **cfg), progress=False)
    assert json.loads((tmp_path / "part/last.json").read_text())["step"] == 4
    # a new process (fresh module, other seed) continues from the saved step 4 up to 6
    torch.manual_seed(9)
    c = Nowcaster(kind="graph", horizons=4, hidden=16, layers=1)
    out = meta_train(c, trajs, tmp_path / "part", MetaTrainConfig(steps=6, **cfg), progress=False)
    assert out["steps"] == 6
    assert json.loads((tmp_path / "part/last.json").read_text())["step"] == 6
    rows = [json.loads(r) for r in (tmp_path / "part/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k  # same seed, same samples: deterministic


def test_meta_train_resume_equals_uninterrupted(tmp_path, monkeypatch):
    import weightspace.nowcast.train as train_mod

    trajs = _trajectories()
    kw = dict(batch=2, strides=(1, 2), log_every=3, save_every=3)
    torch.manual_seed(0)
    a = Nowcaster(kind="mlp", horizons=4, hidden=16, layers=1)
    meta_train(a, trajs, tmp_path / "a", MetaTrainConfig(steps=6, **kw), progress=False)
    # the same 6-step run, killed right after its step-3 checkpoint is written
    write = train_mod.write_json_atomic

    def write_then_die(path, obj):
        write(path, obj)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "write_json_atomic", write_then_die)
    torch.manual_seed(0)
    b = Nowcaster(kind="mlp", horizons=4, hidden=16, layers=1)
    with pytest.raises(KeyboardInterrupt):
        meta_train(b, trajs, tmp_path / "b", MetaTrainConfig(steps=6, **kw), progress=False)
    monkeypatch.setattr(train_mod, "write_json_atomic", write)
    assert json.loads((tmp_path / "b/last.json").read_text())["step"] == 3
    # a fresh module with other weights: everything must come back from disk
    torch.manual_seed(123)
    c = Nowcaster(kind="mlp", horizons=4, hidden=16, layers=1)
    meta_train(c, trajs, tmp_path / "b", MetaTrainConfig(steps=6, **kw), progress=False)
    for (k, x), (_, y) in zip(a.state_dict().items(), c.state_dict().items()):
        assert torch.equal(x, y), k
    # sensitivity: stopping after 3 steps is not the same network
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_meta_train_errors(tmp_path):
    with pytest.raises(ValueError, match="no parameters"):
        meta_train(Nowcaster(kind="linefit"), _trajectories(2), tmp_path)
    with pytest.raises(ValueError, match="at least 2 trajectories"):
        meta_train(Nowcaster(kind="mlp"), _trajectories(1), tmp_path)
    trajs = _trajectories(2)
    meta_train(Nowcaster(kind="mlp", hidden=8, layers=1), trajs, tmp_path / "x",
               MetaTrainConfig(steps=2, batch=1, save_every=1, log_every=1), progress=False)
    with pytest.raises(ValueError, match="another nowcaster config"):
        meta_train(Nowcaster(kind="mlp", hidden=16, layers=1), trajs, tmp_path / "x",
                   MetaTrainConfig(steps=3, batch=1), progress=False)


def test_cache_built_under_inference_mode_serves_meta_training():
    model = _mlp()
    traj = _adam_trajectory(model, steps=12)
    spec = ws.GraphSpec.from_module(model)
    nc = Nowcaster(kind="graph", context=3, horizons=2, hidden=8, layers=1)
    nc.predict(spec, traj[:3])  # builds the layout's index tensors under inference mode
    from weightspace.nowcast import window_loss

    t = Trajectory(spec, traj, 1)
    loss = window_loss(nc, t, traj[None, :3], (traj[3:5] - traj[2])[None], torch.ones(1, 2, dtype=torch.bool))
    loss.backward()
    assert all(p.grad is not None for p in nc.parameters() if p.requires_grad)
