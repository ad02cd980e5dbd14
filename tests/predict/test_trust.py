"""A saved probing predictor names the architectures it runs: loading it never runs code the file
names, unless the user trusts the file."""

from __future__ import annotations

import json

import pytest
import torch

from weightspace.instantiate import UntrustedTargetError, resolve_target, trusted_code
from weightspace.predict import Predictor, PredictorConfig
from weightspace.pretrained import CheckpointError

ARCH = {"_target_": "model_zoo.archs.MLP", "in_features": 64, "num_outputs": 10, "depth": 1, "width": 8}


def _probe():
    cfg = PredictorConfig("probe", {"archs": [ARCH], "input_shape": [64], "num_probes": 4, "latent_dim": 4,
                                    "gen_hidden": 8, "hidden": [8]}, 0.5, 0.1, {})
    return Predictor.from_config(cfg)


def _probe_dir(tmp_path):
    return _probe().save_pretrained(tmp_path / "probe")


def test_probe_predictor_round_trip(tmp_path):
    p = _probe()
    q = Predictor.from_pretrained(p.save_pretrained(tmp_path / "probe"))
    a, b = p.model.state_dict(), q.model.state_dict()
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_code_target_in_a_saved_predictor_never_runs(tmp_path):
    d = _probe_dir(tmp_path)
    sentinel = tmp_path / "pwned"
    doc = json.loads((d / "config.json").read_text())
    doc["config"]["metanet"]["archs"] = [{"_target_": "subprocess.getoutput", "cmd": f"touch {sentinel}"}]
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"config\.json: .*subprocess\.getoutput.*trust_code=True"):
        Predictor.from_pretrained(d)
    assert not sentinel.exists()
    # sensitivity: the same file, trusted, does run the command (and then fails as a predictor)
    with pytest.raises(CheckpointError):
        Predictor.from_pretrained(d, trust_code=True)
    assert sentinel.exists()


def test_trusted_code_block():
    with pytest.raises(UntrustedTargetError):
        resolve_target("collections.OrderedDict")
    with trusted_code():
        assert resolve_target("collections.OrderedDict").__name__ == "OrderedDict"
        with trusted_code(False):  # an inner untrusted block does not undo the outer trust
            assert resolve_target("collections.OrderedDict").__name__ == "OrderedDict"
    with pytest.raises(UntrustedTargetError):
        resolve_target("collections.OrderedDict")
