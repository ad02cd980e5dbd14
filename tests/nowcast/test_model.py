"""Nowcaster: start-as-Linefit, equivariance and sensitivity of predicted deltas, persistence
(save_pretrained/from_pretrained, aliases, the former file pair, errors naming the file), bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import weightspace as ws
from weightspace.nowcast import (
    NowcastConfig,
    Nowcaster,
)
from weightspace.pretrained import CheckpointError

from ..helpers import node_permutation, permute_params
from .helpers import adam_trajectory as _adam_trajectory
from .helpers import example_window as _example_window
from .helpers import randomize as _randomize
from .helpers import small_mlp as _mlp

SEEDS = st.integers(0, 2**31 - 1)


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


# ----------------------------------------------------------------------------- equivariance
def _permute_flat(spec: ws.GraphSpec, flat: torch.Tensor, rules) -> torch.Tensor:
    """Apply ``(name, axis, perm)`` rules to flat vectors ``[..., P]``."""
    lead = flat.dim() - 1
    parts = spec.unflatten(flat)
    for name, axis, perm in rules:
        parts[name] = parts[name].index_select(axis + lead, perm)
    return spec.flatten(parts)

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
