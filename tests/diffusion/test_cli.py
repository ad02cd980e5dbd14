"""weightspace generate (weightspace.cli.generate), in process."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from model_zoo.archs import instantiate

from .tiny import GRAPH, A


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


def _graph_opts():
    return [f"graph.{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in GRAPH.items()]


def test_cli_draws_report_png_and_resumes_without_retraining(zoo, tmp_path, monkeypatch, capsys):
    import weightspace.diffusion as wd

    out = tmp_path / "gen"
    common = [f"zoo={zoo}", f"out={out}", "progress=false", *_graph_opts()]
    _cli(*common, "n=3")
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text())
    assert report["results"][0]["generated"]["values"]["nearest_tv"]  # the plot's figures are kept
    stamps = {s["file"]: (out / s["file"]).stat().st_mtime_ns for s in report["samples"]}
    (out / "report.png").unlink()

    def refuse(*args, **kwargs):
        raise AssertionError("retrained or resampled although OUT holds the result")

    monkeypatch.setattr(wd.WeightDiffusion, "fit", classmethod(refuse))
    monkeypatch.setattr(wd, "write_samples", refuse)
    _cli(*common, "n=3")  # the same command again: generator and samples reused, the plot drawn again
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "report.json").read_text()) == report
    assert {f: (out / f).stat().st_mtime_ns for f in stamps} == stamps
    # sensitivity: other sampling options draw again from the saved generator (fit still refused) ...
    monkeypatch.undo()
    monkeypatch.setattr(wd.WeightDiffusion, "fit", classmethod(refuse))
    _cli(*common, "n=2")
    assert sorted(p.name for p in out.glob("sample_*.safetensors")) == ["sample_0000.safetensors",
                                                                        "sample_0001.safetensors"]
    # ... and another training option trains again
    capsys.readouterr()
    with pytest.raises(SystemExit):  # Hydra reports the job's exception and exits
        _cli(*common, "graph.ae_steps=3", "n=2")
    assert "retrained or resampled" in capsys.readouterr().err


def test_cli_plot_report_without_references(tmp_path):
    from weightspace.cli.generate import plot_report

    arch = {"_target_": "model_zoo.archs.MLP", "width": 4}
    report = {"samples": [{"file": "sample_0000.safetensors", "arch": arch, "test_accuracy": 0.5}],
              "results": [{"arch": arch, "generated": {"test_accuracy": {"mean": 0.5}}}]}
    assert plot_report(report, tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    unscored = {"samples": report["samples"], "results": [{"arch": arch, "generated": None}]}
    assert plot_report(unscored, tmp_path / "u.png") is None and not (tmp_path / "u.png").exists()


def test_cli_data_source_attaches_data(tmp_path):
    """A zoo made from in-memory data needs ``data=KIND:PATH`` for predict and generate."""
    import numpy as np
    from omegaconf import OmegaConf

    import model_zoo
    from weightspace.cli.generate import positional_overrides as gen_overrides
    from weightspace.cli.predict import open_zoo
    from weightspace.cli.predict import positional_overrides as predict_overrides

    assert gen_overrides(["data=file:x.npz"]) == ["data_source=file:x.npz"]
    assert predict_overrides(["zoo=D", "data=mnist:/m"]) == ["zoo_dir=D", "data_source=mnist:/m"]
    digits = model_zoo.load_dataset("digits", flatten=True)
    arrays = {"x_train": digits.x_train[:40].numpy(), "y_train": digits.y_train[:40].numpy(),
              "x_test": digits.x_test[:20].numpy(), "y_test": digits.y_test[:20].numpy()}
    np.savez(tmp_path / "mine.npz", **arrays)
    cfg = {"name": "mine", "size": 2, "seed": 0, "chunk_size": 2, "arch": {**A, "width": 4},
           "space": {"lr": 0.01, "optimizer": "adam", "batch_size": 16}, "trainer": {"epochs": 1, "checkpoints": [0, 1]}}
    data = tuple(torch.as_tensor(arrays[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    model_zoo.generate(cfg, tmp_path / "zoo", data=data, progress=False)
    base = {"zoo_dir": str(tmp_path / "zoo"), "trust_code": False}
    with pytest.raises(Exception, match="data"):  # without data= the zoo cannot rebuild its data
        open_zoo(OmegaConf.create({**base, "data_source": None})).dataset()
    zoo = open_zoo(OmegaConf.create({**base, "data_source": f"file:{tmp_path / 'mine.npz'}"}))
    assert torch.equal(zoo.dataset().y_test, data[3])
    np.savez(tmp_path / "other.npz", **{**arrays, "y_test": (arrays["y_test"] + 1) % 10})
    with pytest.raises(SystemExit, match=r"data=file:.*other\.npz: .*zoo\.json"):
        open_zoo(OmegaConf.create({**base, "data_source": f"file:{tmp_path / 'other.npz'}"}))
    out = tmp_path / "gen"  # end to end: generate on that zoo with data=
    _cli(f"zoo={tmp_path / 'zoo'}", f"data=file:{tmp_path / 'mine.npz'}", "n=2", f"out={out}", "progress=false",
         *_graph_opts())
    assert all(s["test_accuracy"] is not None for s in json.loads((out / "report.json").read_text())["samples"])


def test_cli_interrupted_sampling_keeps_written_networks(zoo, tmp_path, monkeypatch, capsys):
    """Killed after the first architecture's networks: the rerun draws only the second one's."""
    import weightspace.diffusion as wd

    out = tmp_path / "gen"
    common = [f"zoo={zoo}", f"out={out}", "progress=false", "n=4", *_graph_opts()]
    real_evaluate, real_sample = wd.WeightDiffusion.evaluate, wd.WeightDiffusion.sample_flat
    calls = []

    def evaluate_once(self, flat, arch=None):
        calls.append(arch)
        if len(calls) > 1:
            raise KeyboardInterrupt("interrupted")
        return real_evaluate(self, flat, arch)

    monkeypatch.setattr(wd.WeightDiffusion, "evaluate", evaluate_once)
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        _cli(*common)
    assert not (out / "report.json").exists() and (out / ".report_partial.json").is_file()
    first = sorted(p.name for p in out.glob("sample_*.safetensors"))
    assert first == ["sample_0000.safetensors", "sample_0001.safetensors"]
    stamps = {f: (out / f).stat().st_mtime_ns for f in first}
    monkeypatch.undo()
    drawn = []

    def sample_counted(self, n, arch=None, **kw):
        drawn.append(n)
        return real_sample(self, n, arch, **kw)

    monkeypatch.setattr(wd.WeightDiffusion, "sample_flat", sample_counted)
    monkeypatch.setattr(wd.WeightDiffusion, "fit", classmethod(lambda *a, **k: pytest.fail("retrained")))
    _cli(*common)
    assert drawn == [2]  # only the second architecture's two networks
    report = json.loads((out / "report.json").read_text())
    assert [s["file"] for s in report["samples"]] == [f"sample_{i:04d}.safetensors" for i in range(4)]
    assert {f: (out / f).stat().st_mtime_ns for f in first} == stamps
    assert len(report["results"]) == 2 and not (out / ".report_partial.json").exists()
    # sensitivity: another n draws every network again, although sample files of the same names exist
    drawn.clear()
    _cli(*common, "n=6")
    assert sum(drawn) == 6 and len(json.loads((out / "report.json").read_text())["samples"]) == 6
