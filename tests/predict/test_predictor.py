"""The predictor's persistence contract: save_pretrained -> from_pretrained gives identical predictions
for every metanetwork kind; the old predictor.json layout still loads; damaged directories raise
CheckpointError naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import save_file

from weightspace.predict import (
    KINDS,
    METANETS,
    PredictConfig,
    Predictor,
    PredictorConfig,
    build_metanet,
    load_predictor,
    load_zoo_graphs,
    run_predict,
)
from weightspace.pretrained import CheckpointError

from ..tiny_zoo import tiny_zoo

_MODELS = {
    "gmn": {"hidden": 8, "num_layers": 1, "embed_dim": 8},
    "probe": {"hidden": [8], "num_probes": 4, "latent_dim": 4, "gen_hidden": 8, "stats": True},
    "statnn": {"hidden": [16]},
    "statnn_gbm": {"n_estimators": 5},
    "hparams": {"hidden": [16]},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_zoo_graphs(tiny_zoo(tmp_path_factory), fractions=(0.6, 0.2, 0.2))


@pytest.fixture(scope="module")
def trained(data):
    out = {}
    for kind in KINDS:
        cfg = PredictConfig(metanet=kind, model=dict(_MODELS[kind]), epochs=1, batch_size=4, progress=False,
                            device="cpu", fractions=(0.6, 0.2, 0.2))
        out[kind] = run_predict(None, cfg, data=data)[0]
    return out


def _predictions(pred: Predictor, data) -> np.ndarray:
    return pred.predict([pred.prepare(g, h) for g, h in zip(data.graphs["test"], data.hparams["test"])], prepared=True)


def test_registry_holds_the_trained_metanetworks():
    assert set(METANETS.names()) == set(KINDS) - {"statnn_gbm"}
    assert type(build_metanet("statnn", {"max_tensors": 4, "hidden": [8]})).__name__ == "StatNN"
    with pytest.raises(ValueError, match="unknown metanet 'nfn'"):
        build_metanet("nfn", {})


@pytest.mark.parametrize("kind", KINDS)
def test_save_pretrained_round_trip(kind, trained, data, tmp_path):
    pred = trained[kind]
    d = pred.save_pretrained(tmp_path / kind)
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    doc = json.loads((d / "config.json").read_text())
    assert doc["format"] == "weightspace.predictor" and doc["config"]["kind"] == kind
    again = Predictor.from_pretrained(d)
    assert isinstance(again.config, PredictorConfig) and again.config == pred.config
    np.testing.assert_array_equal(_predictions(pred, data), _predictions(again, data))
    np.testing.assert_array_equal(_predictions(pred, data), _predictions(load_predictor(d), data))
    np.testing.assert_array_equal(_predictions(pred, data), _predictions(Predictor.load(pred.save(tmp_path / "a")),
                                                                         data))


@pytest.mark.parametrize("kind", ["gmn", "statnn_gbm"])
def test_load_predictor_reads_the_legacy_layout(kind, trained, data, tmp_path):
    pred = trained[kind]
    save_file(pred.pretrained_tensors(), str(tmp_path / "predictor.safetensors"))
    c = pred.config
    (tmp_path / "predictor.json").write_text(json.dumps({"format": "weightspace.predictor", "version": 1,
                                                         "kind": c.kind, "model": c.metanet, "y_mean": c.y_mean,
                                                         "y_std": c.y_std, "meta": c.meta}))
    for path in (tmp_path, tmp_path / "predictor.json", tmp_path / "predictor.safetensors"):
        np.testing.assert_array_equal(_predictions(pred, data), _predictions(load_predictor(path), data))
    (tmp_path / "predictor.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match=r"predictor\.safetensors: cannot read"):
        load_predictor(tmp_path)
    (tmp_path / "predictor.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"predictor\.json: not a weightspace predictor"):
        load_predictor(tmp_path)


def test_damaged_directories_name_the_file(trained, tmp_path):
    pred = trained["statnn"]
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        Predictor.from_pretrained(tmp_path)
    d = pred.save_pretrained(tmp_path / "partial")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        load_predictor(d)
    d = pred.save_pretrained(tmp_path / "truncated")
    w = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(w[: len(w) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: cannot read"):
        load_predictor(d)
    d = pred.save_pretrained(tmp_path / "wrongkind")
    doc = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**doc, "format": "weightspace.hypernet"}))
    with pytest.raises(CheckpointError, match=r"config\.json: holds format 'weightspace.hypernet'"):
        load_predictor(d)
    d = pred.save_pretrained(tmp_path / "mismatch")
    doc = json.loads((d / "config.json").read_text())
    doc["config"]["metanet"]["hidden"] = [32]
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: the weights do not fit"):
        load_predictor(d)
    d = pred.save_pretrained(tmp_path / "badfield")
    doc = json.loads((d / "config.json").read_text())
    doc["config"]["y_std"] = "one"
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"config\.json: .*y_std"):
        load_predictor(d)


@pytest.mark.parametrize("kind", ["gmn", "hparams"])
def test_call_on_a_list_matches_one_by_one(kind, trained, data):
    """``pred([g1, g2, ...])`` batches and equals calling on each network; hparams per network or shared."""
    pred = trained[kind]
    graphs, hps = data.graphs["test"][:3], data.hparams["test"][:3]
    one_by_one = np.array([pred(g, h) for g, h in zip(graphs, hps)])
    np.testing.assert_allclose(pred(list(graphs), list(hps)), one_by_one, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred(tuple(graphs), hps[0]), [pred(g, hps[0]) for g in graphs], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="3 networks and 2 hparams"):
        pred(list(graphs), list(hps[:2]))
