"""Random corruptions of saved models never crash with a foreign error, never hang, and always name
the file: every reader of ``config.json`` + ``model.safetensors`` raises
:class:`~weightspace.pretrained.CheckpointError` or loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightspace.hyper import GraphHyperNetwork
from weightspace.nowcast import NowcastConfig, Nowcaster
from weightspace.predict import Predictor, PredictorConfig
from weightspace.pretrained import CheckpointError

from .strategies import JSON_VALUES


def _nowcaster():
    return Nowcaster(NowcastConfig(hidden=8, param_hidden=4, horizons=4))


def _hyper():
    return GraphHyperNetwork(hidden=8, layers=1, code_dim=4, num_codes=8)


def _predictor():
    return Predictor.from_config(PredictorConfig("statnn", {"max_tensors": 3, "hidden": [8], "out": 1, "dropout": 0.0},
                                                 0.5, 0.1, {"max_tensors": 3}))


MODELS = {"nowcaster": (_nowcaster, Nowcaster), "hypernet": (_hyper, GraphHyperNetwork),
          "predictor": (_predictor, Predictor)}



@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    return {name: make().save_pretrained(root / name) for name, (make, _) in MODELS.items()}


def _load(cls, d: Path) -> None:
    try:
        cls.from_pretrained(d)
    except CheckpointError as e:
        assert str(d) in str(e), f"the error does not name the file: {e}"


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupt_config_values(name, saved, tmp_path_factory, data):
    d = tmp_path_factory.mktemp("c") / name
    shutil.copytree(saved[name], d)
    doc = json.loads((d / "config.json").read_text())
    where = data.draw(st.sampled_from(["config", "top"]))
    node = doc["config"] if where == "config" else doc
    key = data.draw(st.sampled_from(sorted(node)))
    node[key] = data.draw(JSON_VALUES)
    (d / "config.json").write_text(json.dumps(doc))
    _load(MODELS[name][1], d)


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupt_bytes(name, saved, tmp_path_factory, data):
    d = tmp_path_factory.mktemp("b") / name
    shutil.copytree(saved[name], d)
    target = d / data.draw(st.sampled_from(["config.json", "model.safetensors"]))
    raw = bytearray(target.read_bytes())
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 8))):
            # the header (first bytes) is where a flip changes structure; the tensor data may flip freely
            i = data.draw(st.integers(0, min(len(raw) - 1, 400)))
            raw[i] = data.draw(st.integers(0, 255))
    target.write_bytes(bytes(raw))
    _load(MODELS[name][1], d)


def test_sensitivity_a_clean_copy_loads_and_a_broken_one_is_refused(saved, tmp_path):
    """The fuzz tests accept loading: make sure a clean directory does load and a broken one is refused."""
    d = tmp_path / "n"
    shutil.copytree(saved["nowcaster"], d)
    assert isinstance(Nowcaster.from_pretrained(d), Nowcaster)
    doc = json.loads((d / "config.json").read_text())
    doc["config"]["hidden"] = -3
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=str(d)):
        Nowcaster.from_pretrained(d)
