"""weightspace generate (weightspace.cli.generate), in process."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from model_zoo.archs import instantiate

from .tiny import GRAPH


def _cli(*args):
    """``weightspace generate ARGS`` in this process (a subprocess would pay the imports again)."""
    from weightspace.cli.main import main

    main(["generate", *args])


def test_cli_end_to_end(zoo, tmp_path):
    out = tmp_path / "gen"
    opts = [f"graph.{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in GRAPH.items()]
    _cli(f"zoo={zoo}", "n=4", f"out={out}", "progress=false", *opts)
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 4 and len(report["samples"]) == 4 and report["throughput_nets_per_s"] > 0
    assert {s["arch"]["width"] for s in report["samples"]} == {6, 8}  # a mixed zoo's architectures share n
    for s in report["samples"]:
        net = instantiate(s["arch"])
        net.load_state_dict(load_file(str(out / s["file"])))
        assert 0 <= s["test_accuracy"] <= 1
    assert {"generated", "training", "encode_decode"} <= set(report["results"][0])
    kept = [r for r in report["latent_scale_calibration"] if r["kept"]]
    assert len(kept) == 1 and report["latent_scale"] == kept[0]["scale"]
    # the run saved its generator into OUT: generator=OUT samples the same networks without training
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    again = tmp_path / "again"
    _cli(f"generator={out}", "n=4", f"out={again}", "progress=false")
    report2 = json.loads((again / "report.json").read_text())
    assert not (again / "config.json").exists()  # nothing trained, nothing saved
    assert [s["test_accuracy"] for s in report2["samples"]] == [s["test_accuracy"] for s in report["samples"]]
    assert report2["latent_scale"] == report["latent_scale"] and report2["zoo"] == report["zoo"]
    for s in report["samples"]:
        a, b = load_file(str(out / s["file"])), load_file(str(again / s["file"]))
        assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SystemExit, match="generator=.*nowhere: no such directory"):
        _cli(f"generator={tmp_path / 'nowhere'}", "n=1", f"out={tmp_path / 'x'}", "progress=false")


def test_cli_bad_input(zoo, tmp_path):
    from omegaconf import OmegaConf

    from weightspace.cli.generate import positional_overrides, run

    assert positional_overrides(["zoo=D", "arch={a:1}", "n=3", "graph.ae_steps=2"]) == [
        "zoo_dir=D", "target_arch={a:1}", "n=3", "graph.ae_steps=2"]
    base = {"zoo_dir": str(zoo), "n": 1, "out": str(tmp_path / "o"), "target_arch": None, "kind": "graph",
            "accuracy": None, "seed": 0, "threads": 1, "progress": False}
    cases = [({"target_arch": {"_target_": "model_zoo.archs.MLP", "depht": 2}}, "has no argument(s) ['depht']"),
             ({"target_arch": {"_target_": "model_zoo.archs.Nope"}}, "unknown architecture"),
             ({"target_arch": {"depth": 2}}, "must be a _target_ config"),
             ({"zoo_dir": str(tmp_path / "nowhere")}, "does not exist"),
             ({"zoo_dir": None}, "pass zoo=DIR"),
             ({"n": 0}, "n must be at least 1")]
    for override, message in cases:
        with pytest.raises(SystemExit, match=re.escape(message)):
            run(OmegaConf.create({**base, **override}))
