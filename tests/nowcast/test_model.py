"""Nowcaster: Linefit exactness, start-as-Linefit, equivariance and sensitivity of predicted deltas,
persistence, meta-training (finite, logged, resumable) and loading zoo trajectories."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightspace as ws
from model_zoo.archs import TinyViT
from weightspace.examples import build_example
from weightspace.nowcast import (
    MetaTrainConfig,
    NowcastConfig,
    Nowcaster,
    NowcastLayout,
    Trajectory,
    load_trajectories,
    meta_train,
    window_features,
)
from weightspace.pretrained import CheckpointError

from ..helpers import node_permutation, permute_params

SEEDS = st.integers(0, 2**31 - 1)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 7), nn.Tanh(), nn.Linear(7, 3))


def _adam_trajectory(model: nn.Module, steps: int = 48, every: int = 1, seed: int = 0) -> Tensor:  # noqa: F821
    """Flat snapshots of ``model`` trained by Adam on a random regression problem."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, model[0].in_features, generator=g)
    y = torch.randn(64, model[-1].out_features, generator=g)
    spec = ws.GraphSpec.from_module(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    snaps = [spec.flatten(model.state_dict())]
    for i in range(steps):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (i + 1) % every == 0:
            snaps.append(spec.flatten(model.state_dict()).detach().clone())
    return torch.stack(snaps)


def _randomize(nc: Nowcaster, seed: int = 0) -> Nowcaster:
    """Give every weight (the zero-initialized heads too) a random value, so outputs are not Linefit."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in nc.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return nc


# ----------------------------------------------------------------------------- features / linefit
@settings(max_examples=10, deadline=None)
@given(seed=SEEDS, c=st.integers(2, 7))
def test_linefit_is_exact_on_straight_lines(seed, c):
    g = torch.Generator().manual_seed(seed)
    P = 11
    a, b = torch.randn(P, generator=g), torch.randn(P, generator=g) * 0.1
    window = a + b * torch.arange(c, dtype=torch.float32)[:, None]  # [c, P]
    lay = NowcastLayout(P, 1, 0, torch.zeros(P, dtype=torch.bool), torch.zeros(P, dtype=torch.long),
                        torch.zeros(P, dtype=torch.long), torch.arange(P) % 3, 3, torch.zeros(2, 0, dtype=torch.long),
                        torch.zeros(0, dtype=torch.long), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    nc = Nowcaster(kind="linefit", context=c, horizons=4)
    d = nc.predict(lay, window)
    expect = b * torch.arange(1, 5, dtype=torch.float32)[:, None]
    assert torch.allclose(d, expect, atol=1e-5, rtol=1e-4)


def test_features_are_scale_free():
    """Scaling a tensor's trajectory scales the predicted delta by the same factor (normalization undone)."""
    model = _mlp()
    traj = _adam_trajectory(model, steps=8)[-5:]
    spec = ws.GraphSpec.from_module(model)
    nc = _randomize(Nowcaster(kind="graph", horizons=3, hidden=16, layers=2))
    d1 = nc.predict(spec, traj)
    d2 = nc.predict(spec, traj * 7.0)
    assert torch.allclose(d2, 7.0 * d1, rtol=1e-3, atol=1e-6)


def test_untrained_learned_kinds_start_as_linefit():
    model = _mlp()
    traj = _adam_trajectory(model, steps=10)[-5:]
    spec = ws.GraphSpec.from_module(model)
    ref = Nowcaster(kind="linefit").predict(spec, traj)
    for kind in ("graph", "mlp"):
        torch.manual_seed(1)
        d = Nowcaster(kind=kind).predict(spec, traj)
        assert d.shape == (NowcastConfig().horizons, spec.num_params) == (32, spec.num_params)
        assert torch.allclose(d, ref, atol=1e-6)


def test_window_features_shapes_and_finiteness():
    w = torch.randn(2, 5, 10)
    w[:, :, :4] = 1.0  # a tensor that does not move
    feats, s, line = window_features(w, torch.tensor([0] * 4 + [1] * 6), 2)
    assert feats.shape == (2, 10, 7) and s.shape == (2, 10) and line.shape == (2, 10, 2)
    assert torch.isfinite(feats).all() and torch.isfinite(s).all() and (s > 0).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_parameter_that_did_not_move_has_zero_slope_and_differences(threads):
    """A still parameter's window features are exactly 0 (no rounding residue divided by the floor of its
    group's step scale), whatever the thread count; a parameter that moves, even slightly, is not."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        w = (torch.randn(1, 1, 300, generator=g) * 0.1).repeat(1, 5, 1)  # values of a trained layer, still
        w[:, :, 200:] += torch.arange(5.0)[None, :, None] * 1e-3  # a second group that moves
        tid = torch.tensor([0] * 200 + [1] * 100)
        feats, s, line = window_features(w, tid, 2)
        # features: last, the c-1 differences, logscale, slope
        assert (feats[0, :200, 1:5] == 0).all() and (feats[0, :200, -1] == 0).all() and (line[0, :200, 1] == 0).all()
        assert (feats[0, 200:, -1] > 0.5).all()  # sensitivity: the moving group's slope is seen
    finally:
        torch.set_num_threads(prev)


# ----------------------------------------------------------------------------- equivariance
def _permute_flat(spec: ws.GraphSpec, flat: torch.Tensor, rules) -> torch.Tensor:
    """Apply ``(name, axis, perm)`` rules to flat vectors ``[..., P]``."""
    lead = flat.dim() - 1
    parts = spec.unflatten(flat)
    for name, axis, perm in rules:
        parts[name] = parts[name].index_select(axis + lead, perm)
    return spec.flatten(parts)


def _example_window(name: str, seed: int):
    model, x = build_example(name)
    spec = ws.GraphSpec.from_module(model, x)
    g = torch.Generator().manual_seed(seed)
    base = spec.flatten(model.state_dict())
    steps = torch.randn(5, base.numel(), generator=g).cumsum(0) * 0.01
    drift = torch.randn(base.numel(), generator=g) * 0.02 * torch.arange(5.0)[:, None]
    return model, x, spec, base + steps + drift


@settings(max_examples=4, deadline=None)
@given(seed=SEEDS)
def test_predicted_deltas_are_equivariant_to_hidden_permutations(seed):
    model, x, spec, window = _example_window("mlp", seed)
    gen = torch.Generator().manual_seed(seed)
    p1, p2 = torch.randperm(32, generator=gen), torch.randperm(32, generator=gen)
    rules = [("0.weight", 0, p1), ("0.bias", 0, p1), ("2.weight", 1, p1), ("2.weight", 0, p2), ("2.bias", 0, p2),
             ("4.weight", 1, p2)]
    # the rules are function-preserving
    with torch.no_grad():
        y0 = model(x)
        permute_params(model, rules)
        assert torch.allclose(model(x), y0, atol=1e-5)
    assert not torch.equal(node_permutation(spec.num_nodes, spec.node_groups, {"0": p1, "2": p2}),
                           torch.arange(spec.num_nodes))
    nc = _randomize(Nowcaster(kind="graph", horizons=4, hidden=16, layers=2), seed % 1000)
    d = nc.predict(spec, window)
    d_perm = nc.predict(spec, _permute_flat(spec, window, rules))
    assert torch.allclose(d_perm, _permute_flat(spec, d, rules), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(d, Nowcaster(kind="linefit", horizons=4).predict(spec, window), atol=1e-4)


def test_equivariance_cnn_with_batchnorm_and_flatten():
    model, x, spec, window = _example_window("cnn_flatten_bn", 0)
    p = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    cols = (p[:, None] * 9 + torch.arange(9)).reshape(-1)
    rules = [("0.weight", 0, p), ("0.bias", 0, p)]
    rules += [(f"1.{k}", 0, p) for k in ("weight", "bias", "running_mean", "running_var")]
    rules += [("4.weight", 0, p), ("4.bias", 0, p), ("7.weight", 1, cols)]
    with torch.no_grad():
        model.eval()
        y0 = model(x)
        permute_params(model, rules)
        assert torch.allclose(model(x), y0, atol=1e-5)
    nc = _randomize(Nowcaster(kind="graph", horizons=3, hidden=16, layers=2))
    d = nc.predict(spec, window)
    d_perm = nc.predict(spec, _permute_flat(spec, window, rules))
    assert torch.allclose(d_perm, _permute_flat(spec, d, rules), atol=1e-5, rtol=1e-4)


def test_sensitivity_breaking_the_coupling_changes_predictions():
    """Permuting a layer's output neurons without the next layer's inputs changes the function; the
    graph nowcaster must see it (the predictions are not the permuted ones), whereas the per-parameter
    MLP, blind to connectivity, cannot."""
    model, x, spec, window = _example_window("mlp", 5)
    p1 = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    broken = [("0.weight", 0, p1), ("0.bias", 0, p1)]  # no matching ("2.weight", 1, p1)
    for kind, sees in (("graph", True), ("mlp", False)):
        nc = _randomize(Nowcaster(kind=kind, horizons=3, hidden=16, layers=2), 7)
        d = nc.predict(spec, window)
        d_b = nc.predict(spec, _permute_flat(spec, window, broken))
        same = torch.allclose(d_b, _permute_flat(spec, d, broken), atol=1e-5, rtol=1e-4)
        assert same != sees, kind


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("kind", ["graph", "mlp", "linefit"])
def test_save_pretrained_round_trip(tmp_path, kind):
    nc = _randomize(Nowcaster(kind=kind, horizons=4, hidden=16, layers=2))
    nc.info = {"note": "test"}
    d = nc.save_pretrained(tmp_path / "nc")
    assert (d / "config.json").is_file() and (d / "model.safetensors").is_file()
    doc = json.loads((d / "config.json").read_text())
    assert doc["format"] == "weightspace.nowcaster" and doc["config"]["hidden"] == 16
    assert doc["extras"]["note"] == "test"
    back = Nowcaster.from_pretrained(d)
    assert back.config == nc.config and back.info == {"note": "test"} and not back.training
    for (k, a), (_, b) in zip(nc.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
    model = _mlp()
    spec = ws.GraphSpec.from_module(model)
    window = _adam_trajectory(model, steps=8)[-nc.context:]
    assert torch.equal(nc.eval().predict(spec, window), back.predict(spec, window))
    # the aliases: save(path, info) / load(path)
    nc.save(tmp_path / "alias", info={"note": "alias"})
    assert Nowcaster.load(tmp_path / "alias").info == {"note": "alias"}


def test_load_reads_the_former_file_pair(tmp_path):
    """``<stem>.json`` + ``<stem>.safetensors`` (format ``weightspace.nowcaster/2``) still load."""
    from safetensors.torch import save_file

    nc = _randomize(Nowcaster(kind="graph", horizons=4, hidden=16, layers=1))
    save_file({k: v.contiguous() for k, v in nc.state_dict().items()}, str(tmp_path / "old.safetensors"))
    (tmp_path / "old.json").write_text(json.dumps({"format": "weightspace.nowcaster/2", "info": {"note": "old"},
                                                   "config": dataclasses.asdict(nc.config)}))
    for p in (tmp_path / "old", tmp_path / "old.safetensors", tmp_path / "old.json"):
        back = Nowcaster.load(p)
        assert back.config == nc.config and back.info == {"note": "old"}
        for (k, a), (_, b) in zip(nc.state_dict().items(), back.state_dict().items()):
            assert torch.equal(a, b), k


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="is not a checkpoint name|neither a directory"):
        Nowcaster.load(tmp_path / "missing")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CheckpointError, match="bad.json: not a nowcaster checkpoint"):
        Nowcaster.load(tmp_path / "bad")
    d = Nowcaster(kind="mlp", hidden=8, layers=1).save_pretrained(tmp_path / "ok")
    # partial: the weights are missing
    (d / "model.safetensors").rename(tmp_path / "weights")
    with pytest.raises(CheckpointError, match="model.safetensors: missing"):
        Nowcaster.from_pretrained(d)
    # corrupt: truncated weights
    (d / "model.safetensors").write_bytes((tmp_path / "weights").read_bytes()[:40])
    with pytest.raises(CheckpointError, match="model.safetensors: cannot read the weights"):
        Nowcaster.from_pretrained(d)
    # corrupt config
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        Nowcaster.from_pretrained(d)
    # another kind of model
    (d / "config.json").write_text(json.dumps({"format": "weightspace.hypernet", "version": 1, "config": {}}))
    with pytest.raises(CheckpointError, match="config.json: holds format"):
        Nowcaster.from_pretrained(d)


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="unknown nowcaster kind"):
        NowcastConfig(kind="transformer")
    with pytest.raises(ValueError, match="context must be at least 2"):
        Nowcaster(context=1)
    model = _mlp()
    spec = ws.GraphSpec.from_module(model)
    with pytest.raises(ValueError, match="reads windows of 5 snapshots"):
        Nowcaster(kind="mlp").predict(spec, torch.zeros(3, spec.num_params))
    with pytest.raises(ValueError, match="parameters, the architecture stores"):
        Nowcaster(kind="mlp").predict(spec, torch.zeros(5, spec.num_params + 1))


def test_pretrained_checkpoint_loads_and_predicts():
    nc = Nowcaster.pretrained()
    assert nc.kind == "graph"
    model = _mlp()
    spec = ws.GraphSpec.from_module(model)
    traj = _adam_trajectory(model, steps=8)[-nc.context:]
    d = nc.predict(spec, traj)
    assert d.shape == (nc.horizons, spec.num_params) and torch.isfinite(d).all()


# ----------------------------------------------------------------------------- meta-training
def _trajectories(n: int = 3) -> list[Trajectory]:
    out = []
    for i in range(n):
        torch.manual_seed(i)
        model = _mlp()
        spec = ws.GraphSpec.from_module(model)
        out.append(Trajectory(spec, _adam_trajectory(model, steps=40, seed=i), 1, f"t{i}"))
    return out


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


@pytest.mark.parametrize("name", ["mlp", "cnn_flatten_bn", "vit"])
def test_layout_slots_agree_with_the_converter(name):
    """Every flat parameter sits where ``GraphSpec.encode`` puts it: its node's column, or its edge."""
    model, x = build_example(name)
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    theta = torch.randn(spec.num_params, dtype=spec.dtype)
    xs, es = spec.encode(theta)
    node = ~lay.slot_edge
    assert torch.equal(xs[lay.slot_owner[node], lay.slot_col[node]], theta[node])
    F = es.shape[-1]
    pos = (spec.decode_index.long() - spec.num_nodes * xs.shape[-1]) % F
    assert torch.equal(es[lay.slot_owner[lay.slot_edge], pos[lay.slot_edge]], theta[lay.slot_edge])
    # the readout's per-parameter outputs, placed in the graph, decode exactly through the spec
    delta = torch.randn(spec.num_params, dtype=spec.dtype)
    xd, ed = torch.zeros_like(xs), torch.zeros_like(es)
    xd[lay.slot_owner[node], lay.slot_col[node]] = delta[node]
    ed[lay.slot_owner[lay.slot_edge], pos[lay.slot_edge]] = delta[lay.slot_edge]
    assert torch.equal(spec.decode(xd, ed), delta)
    assert int(lay.slot_tensor.max()) + 1 == lay.num_tensors
    fused = sum(2 for n in spec.names if n.endswith(("in_proj_weight", "in_proj_bias")))
    assert lay.num_tensors == len(spec.names) + fused  # q, k, v of a fused projection: three groups


def test_normalization_groups_split_a_fused_attention_projection_by_role():
    """``in_proj_weight`` / ``in_proj_bias`` pack the query, key and value maps: each gets its own group
    (row blocks, in flat order); every other tensor is one group."""
    model = TinyViT(image_size=8, patch=2, dim=16, heads=2, depth=1, mlp_ratio=2)
    x = torch.randn(2, 1, 8, 8)
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    o, seen = 0, []
    for name, shape in zip(spec.names, spec.shapes):
        n = math.prod(shape)
        g = lay.slot_tensor[o: o + n].view(shape[0], -1)
        if "in_proj" in name:
            blocks = g.view(3, shape[0] // 3, -1)
            assert all(bool((b == b.flatten()[0]).all()) for b in blocks), name
            ids = [int(b.flatten()[0]) for b in blocks]
            assert len(set(ids)) == 3 and ids == sorted(ids), name
        else:
            ids = g.unique().tolist()
            assert len(ids) == 1, name
        seen += ids
        o += n
    assert seen == list(range(lay.num_tensors))  # numbered in flat order, no group shared by two tensors


def test_normalization_groups_scale_query_and_key_apart():
    """A query block moving 100x slower than the value block is normalized by its own step size: its
    features and its Linefit-relative prediction do not change when the value block's scale changes."""
    model = TinyViT(image_size=8, patch=2, dim=16, heads=2, depth=1, mlp_ratio=2)
    x = torch.randn(2, 1, 8, 8)
    spec = ws.GraphSpec.from_module(model, x)
    lay = NowcastLayout.from_spec(spec)
    g = torch.Generator().manual_seed(0)
    win = torch.randn(5, spec.num_params, generator=g).cumsum(0) * 0.01
    o = 0
    for name, shape in zip(spec.names, spec.shapes):
        if name.endswith("in_proj_weight"):
            break
        o += math.prod(shape)
    third = math.prod(spec.shapes[spec.names.index(name)]) // 3
    q = slice(o, o + third)
    v = slice(o + 2 * third, o + 3 * third)
    feats, s, _ = window_features(win[None], lay.slot_tensor, lay.num_tensors)
    win2 = win.clone()
    win2[:, v] *= 100.0
    feats2, s2, _ = window_features(win2[None], lay.slot_tensor, lay.num_tensors)
    assert torch.allclose(feats[0, q], feats2[0, q]) and torch.allclose(s[0, q], s2[0, q])
    assert not torch.allclose(s[0, v], s2[0, v])


# ----------------------------------------------------------------------------- cached fast path
@pytest.mark.parametrize("kind", ["graph", "mlp", "linefit"])
def test_single_horizon_equals_its_column(kind):
    model, x, spec, window = _example_window("cnn_flatten_bn", 1)
    nc = Nowcaster(kind=kind, horizons=4, hidden=16, layers=2)
    if kind != "linefit":
        _randomize(nc, 3)
    full = nc.predict(spec, window)
    for k in (1, 4):
        assert torch.allclose(nc.predict(spec, window, horizon=k), full[k - 1], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="horizon"):
        nc.predict(spec, window, horizon=5)


def test_graph_index_is_cached_and_batches_are_block_diagonal():
    model, x, spec, window = _example_window("vit", 2)
    nc = _randomize(Nowcaster(kind="graph", horizons=3, hidden=16, layers=2), 4)
    lay = NowcastLayout.from_spec(spec)
    d1 = nc.predict(spec, window)
    gi = lay.graph_index(1)
    assert lay.graph_index(1) is gi  # built once
    w2 = torch.stack([window, window.flip(0)])
    d2 = nc.predict(spec, w2)  # two copies, one block-diagonal graph
    assert torch.allclose(d2[0], d1, atol=1e-5) and torch.allclose(d2[1], nc.predict(spec, window.flip(0)), atol=1e-5)


def test_sparse_messages_equal_a_dense_reference():
    """The cached CSR aggregation (duplicate entries for conv kernels included) equals explicit index_add."""
    from weightspace.nowcast.features import CHANNELS
    from weightspace.nowcast.layout import sparse_csr

    model, x, spec, window = _example_window("cnn_flatten_bn", 3)
    lay = NowcastLayout.from_spec(spec)
    gi = lay.graph_index(1)
    N, P = gi.num_nodes, gi.num_params
    edge, owner = lay.slot_edge, lay.slot_owner
    src = torch.where(edge, lay.edge_index[0, owner.clamp_max(lay.num_edges - 1)], owner)
    dst = torch.where(edge, lay.edge_index[1, owner.clamp_max(lay.num_edges - 1)], owner)
    a = torch.randn(P, 4)
    got = gi.agg @ a
    ref_in = torch.zeros(N, 4).index_add_(0, dst[edge], a[edge])
    cnt = torch.zeros(N).index_add_(0, dst[edge], torch.ones(int(edge.sum()))).clamp_min(1)
    assert torch.allclose(got[:N], ref_in / cnt[:, None], atol=1e-5)
    ref_node = torch.zeros(N, 4).index_add_(0, owner[~edge], a[~edge])
    cnt = torch.zeros(N).index_add_(0, owner[~edge], torch.ones(int((~edge).sum()))).clamp_min(1)
    assert torch.allclose(got[2 * N:], ref_node / cnt[:, None], atol=1e-5)
    # message passing: forward messages of channel 1 (values v) equal the explicit sum over incoming slots
    v = torch.randn(P, CHANNELS)
    S = sparse_csr(gi.mp_crow, gi.mp_col, v.reshape(-1).index_select(0, gi.mp_take) * gi.mp_scale,
                (2 * N, 2 * CHANNELS * N))
    m = torch.zeros(2 * CHANNELS * N, 3)
    m[N:2 * N] = torch.randn(N, 3)  # forward block of channel 1
    deg = torch.zeros(N).index_add_(0, dst[edge], torch.ones(int(edge.sum()))).clamp_min(1)
    ref = torch.zeros(N, 3).index_add_(0, dst[edge], v[edge, 1:2] * m[N + src[edge]]) / deg[:, None]
    assert torch.allclose((S @ m)[:N], ref, atol=1e-5)


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
