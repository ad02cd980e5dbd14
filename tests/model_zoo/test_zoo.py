import json
import shutil

import numpy as np
import pytest
import torch

import model_zoo
from model_zoo.store import ZooFormatError


def test_table_and_lengths(small_zoo, small_config):
    assert len(small_zoo) == small_config["size"]
    m = small_zoo.metrics
    assert len(m) == small_config["size"] * 3  # checkpoints at epochs 0, 1, 2
    for col in ("run", "step", "epoch", "train_accuracy", "test_accuracy", "train_loss", "test_loss",
                "config.lr", "config.optimizer", "config.seed", "config.arch_id"):
        assert col in m.columns
    assert m["run"].dtype == np.int64 and m["test_accuracy"].dtype == np.float64
    assert list(small_zoo.rows(0)["epoch"]) == [0.0, 1.0, 2.0]
    assert small_zoo.hparams(0)["optimizer"] in ("adam", "sgd", "rmsprop")
    with pytest.raises(KeyError, match="no metrics column 'accuracy'"):
        m["accuracy"]


def test_build_model_reproduces_stored_metrics(small_zoo):
    d = model_zoo.load_dataset("digits", flatten=True)
    for i in (0, 5, 11):
        for step in (small_zoo.steps(i)[0], None):
            model = small_zoo.build_model(i, step)
            with torch.no_grad():
                acc = float((model(d.x_test).argmax(-1) == d.y_test).float().mean())
            row = small_zoo.rows(i)
            stored = row["test_accuracy"][0 if step is not None else -1]
            assert acc == pytest.approx(stored, abs=1e-6)


def test_dataset_is_rebuilt_exactly(small_zoo, tmp_path):
    d = small_zoo.dataset()
    ref = model_zoo.load_dataset("digits", flatten=True)
    assert torch.equal(d.x_test, ref.x_test) and torch.equal(d.y_train, ref.y_train)
    model = small_zoo.build_model(3)
    with torch.no_grad():
        acc = float((model(d.x_test).argmax(-1) == d.y_test).float().mean())
    assert acc == pytest.approx(small_zoo.rows(3)["test_accuracy"][-1], abs=1e-6)
    # a stored split that the rebuilt dataset does not reproduce is refused, not silently used
    dst = _copy(small_zoo, tmp_path)
    info = json.loads((dst / "zoo.json").read_text())
    info["dataset"]["split_seed"] = 1
    (dst / "zoo.json").write_text(json.dumps(info))
    with pytest.raises(ZooFormatError, match="different train_index"):
        model_zoo.load(dst, verify=False).dataset()  # (verify=False: zoo.json no longer matches the manifest)
    info["dataset"]["name"] = "cifar10"
    (dst / "zoo.json").write_text(json.dumps(info))
    with pytest.raises(model_zoo.DataSourceError, match=r"records dataset 'cifar10' but not its data .*"
                                                        r"zoo.dataset\(data=...\) or zoo.attach_data"):
        model_zoo.load(dst, verify=False).dataset()


def test_state_dict_steps(small_zoo):
    steps = small_zoo.steps(2)
    first, last = small_zoo.state_dict(2, steps[0]), small_zoo.state_dict(2)
    assert set(first) == set(small_zoo.build_model(2).state_dict())
    assert not torch.equal(first["net.1.weight"], last["net.1.weight"])
    assert small_zoo.trajectory(2)["net.1.weight"].shape[0] == len(steps)
    with pytest.raises(KeyError, match=r"run 2 has no checkpoint at step 12345; stored steps: \["):
        small_zoo.state_dict(2, 12345)
    with pytest.raises(IndexError, match="run 99 out of range for a zoo of 12 runs"):
        small_zoo.state_dict(99)


def test_graph_of_a_run(small_zoo):
    g = small_zoo.graph(1)
    sd = small_zoo.graph_spec(1).to_state_dict(g)
    torch.testing.assert_close(sd["net.1.weight"], small_zoo.state_dict(1)["net.1.weight"], rtol=0, atol=0)
    assert small_zoo.graph_spec(1) is small_zoo.graph_spec(2)  # traced once per architecture


def _copy(zoo, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(zoo.path, dst)
    return dst


def test_missing_metrics_means_incomplete(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    (dst / "metrics.csv").unlink()
    with pytest.raises(ZooFormatError, match="no metrics.csv - the zoo is incomplete"):
        model_zoo.load(dst)


def test_not_a_zoo_folder(small_zoo, tmp_path):
    with pytest.raises(ZooFormatError, match="not a zoo folder \\(a file\\)"):
        model_zoo.load(small_zoo.path / "zoo.json")
    with pytest.raises(ZooFormatError, match="not a zoo folder \\(no such folder\\)"):
        model_zoo.load(tmp_path / "missing")
    with pytest.raises(ZooFormatError, match="zoo.json: file not found"):
        model_zoo.load(tmp_path)  # a folder, but no zoo in it


def test_corrupt_zoo_json(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    (dst / "zoo.json").write_text((dst / "zoo.json").read_text()[:100])
    with pytest.raises(ZooFormatError, match="zoo.json: not valid JSON"):
        model_zoo.load(dst)


def test_unsupported_schema(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    info = json.loads((dst / "zoo.json").read_text())
    info["schema_version"] = 7
    (dst / "zoo.json").write_text(json.dumps(info))
    with pytest.raises(ZooFormatError, match="unsupported schema_version 7"):
        model_zoo.load(dst)


def test_truncated_shard(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    shard = dst / "chunks" / "chunk-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(ZooFormatError, match=r"chunk-00000.safetensors: 200 bytes, manifest.json records \d+"):
        model_zoo.load(dst)
    zoo = model_zoo.load(dst, verify=False)  # without the manifest check, reading the run still fails clearly
    run = json.loads((dst / "zoo.json").read_text())["chunks"][0]["runs"][0]
    with pytest.raises(ZooFormatError, match=rf"chunk-00000.safetensors: cannot read checkpoints of run {run}"):
        zoo.state_dict(run)


def test_truncated_metrics(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    text = (dst / "metrics.csv").read_text()
    (dst / "metrics.csv").write_text(text[: len(text) // 2])
    with pytest.raises(ZooFormatError, match=r"metrics.csv: \d+ bytes, manifest.json records \d+"):
        model_zoo.load(dst)
    with pytest.raises(ZooFormatError, match=r"metrics.csv: row \d+ has \d+ fields"):
        model_zoo.load(dst, verify=False)
