import csv
import gzip
import io
import math

import numpy as np
import pytest
import torch

import model_zoo
from model_zoo.archs import SmallCNN
from model_zoo.importers import tf_to_torch
from model_zoo.store import ZooFormatError

CNN = {"_target_": "model_zoo.archs.SmallCNN", "channels": 4, "strides": 2}


def arch_of_row(row):
    return {**CNN, "activation": row["config.activation"]}


def _torch_to_tf(t: torch.Tensor) -> np.ndarray:
    if t.dim() == 4:
        return t.permute(2, 3, 1, 0).numpy()
    if t.dim() == 2:
        return t.t().numpy()
    return t.numpy()


def write_small_cnn_zoo(folder, runs=3, steps=(0, 10), gz=True):
    """A fake zoo in the Small CNN Zoo layout (TensorFlow order) and the models it holds."""
    folder.mkdir(parents=True, exist_ok=True)
    models, rows, weights = [], [], []
    names = [n for n, _ in SmallCNN(channels=4, strides=2).named_parameters()]
    for r in range(runs):
        act = ["relu", "tanh"][r % 2]
        for step in steps:
            torch.manual_seed(100 * r + step)
            m = SmallCNN(channels=4, strides=2, activation=act)
            models.append(m.state_dict())
            weights.append(np.concatenate([_torch_to_tf(p.detach()).reshape(-1) for p in m.parameters()]))
            rows.append({"config.activation": act, "config.dataset": "digits", "config.learning_rate": 0.01,
                         "modeldir": f"run_{r}", "step": step, "test_accuracy": 0.1 * r + step / 100,
                         "test_loss": 1.0, "train_accuracy": 0.5, "train_loss": 1.0})
    np.save(folder / "weights.npy", np.stack(weights).astype(np.float32))
    m = SmallCNN(channels=4, strides=2)
    layout, start = [], 0
    for n, p in zip(names, m.parameters()):
        shape = _torch_to_tf(p.detach()).shape
        layout.append({"varname": f"sequential/{n}:0", "start_idx": start, "end_idx": start + math.prod(shape),
                       "shape": str(tuple(shape))})
        start += math.prod(shape)
    _write_csv(folder / "layout.csv", layout)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    if gz:
        with gzip.open(folder / "metrics.csv.gz", "wt") as f:
            f.write(buf.getvalue())
    else:
        (folder / "metrics.csv").write_text(buf.getvalue())
    return models, rows


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_tf_to_torch_layouts():
    k = np.arange(3 * 3 * 2 * 5).reshape(3, 3, 2, 5)
    assert tuple(tf_to_torch(k).shape) == (5, 2, 3, 3)
    assert tf_to_torch(k)[4, 1, 2, 0] == k[2, 0, 1, 4]
    d = np.arange(6).reshape(2, 3)
    assert torch.equal(tf_to_torch(d), torch.as_tensor(d).t())


def test_import_small_cnn_zoo(tmp_path):
    models, rows = write_small_cnn_zoo(tmp_path / "src")
    zoo = model_zoo.import_small_cnn_zoo(tmp_path / "src", tmp_path / "dst", arch_of_row, input_shape=[1, 8, 8])
    assert len(zoo) == 3 and len(zoo.metrics) == 6
    assert zoo.steps(1) == [0, 10]
    for i in range(3):
        for k, step in enumerate((0, 10)):
            sd = zoo.state_dict(i, step)
            for n, t in models[2 * i + k].items():
                assert torch.equal(sd[n], t), (i, step, n)
    assert zoo.arch_config(1)["activation"] == "tanh"
    assert isinstance(zoo.build_model(1).features[1], torch.nn.Tanh)
    assert zoo.metrics["config.learning_rate"][0] == 0.01
    g = zoo.graph(2)
    torch.testing.assert_close(zoo.graph_spec(2).to_state_dict(g)["head.weight"], models[5]["head.weight"])
    assert (tmp_path / "dst" / "manifest.json").is_file()


def test_import_with_fixed_arch_and_plain_csv(tmp_path):
    write_small_cnn_zoo(tmp_path / "src", runs=2, gz=False)
    zoo = model_zoo.import_small_cnn_zoo(tmp_path / "src", tmp_path / "dst", CNN)
    assert len(zoo) == 2 and len(zoo.info["archs"]) == 1


def _nothing_left(tmp_path):
    assert not (tmp_path / "dst").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dst")]


def test_nan_weights_name_the_row_and_leave_nothing(tmp_path):
    write_small_cnn_zoo(tmp_path / "src")
    w = np.load(tmp_path / "src" / "weights.npy")
    w[3, 7] = np.nan
    np.save(tmp_path / "src" / "weights.npy", w)
    with pytest.raises(ZooFormatError, match=r"weights.npy row 4 \(metrics row 4, modeldir 'run_1'\): NaN or inf"):
        model_zoo.import_small_cnn_zoo(tmp_path / "src", tmp_path / "dst", arch_of_row)
    _nothing_left(tmp_path)


def test_truncated_weights(tmp_path):
    write_small_cnn_zoo(tmp_path / "src")
    p = tmp_path / "src" / "weights.npy"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ZooFormatError, match=r"weights.npy: cannot read .*truncated or not a .npy array"):
        model_zoo.import_small_cnn_zoo(tmp_path / "src", tmp_path / "dst", arch_of_row)
    _nothing_left(tmp_path)


def test_wrong_layout_shape(tmp_path):
    write_small_cnn_zoo(tmp_path / "src")
    rows = list(csv.DictReader(open(tmp_path / "src" / "layout.csv")))
    rows[0]["shape"] = "(3, 3, 4, 1)"  # in/out swapped: same size, wrong shape
    _write_csv(tmp_path / "src" / "layout.csv", rows)
    with pytest.raises(ZooFormatError, match=r"layout.csv row 1 \(sequential/features.0.weight:0\): shape \(3, 3, 4, 1\) "
                                             r"-> \(1, 4, 3, 3\) in PyTorch order, but parameter 'features.0.weight'"):
        model_zoo.import_small_cnn_zoo(tmp_path / "src", tmp_path / "dst", arch_of_row)
    _nothing_left(tmp_path)


def test_layout_slice_mismatch(tmp_path):
    write_small_cnn_zoo(tmp_path / "src")
    rows = list(csv.DictReader(open(tmp_path / "src" / "layout.csv")))
    rows[1]["end_idx"] = str(int(rows[1]["end_idx"]) + 1)
    _write_csv(tmp_path / "src" / "layout.csv", rows)
    with pytest.raises(ZooFormatError, match=r"layout.csv row 2 .*slice length 5 does not match shape \(4,\)"):
        model_zoo.import_small_cnn_zoo(tmp_path / "src", tmp_path / "dst", arch_of_row)


def test_layout_for_another_architecture(tmp_path):
    write_small_cnn_zoo(tmp_path / "src")
    with pytest.raises(ZooFormatError, match=r"layout.csv: 8 layout rows but the architecture .* has 10 parameters"):
        model_zoo.import_small_cnn_zoo(tmp_path / "src", tmp_path / "dst", {**CNN, "layers": 4})


def test_missing_metrics_column(tmp_path):
    write_small_cnn_zoo(tmp_path / "src", gz=False)
    text = (tmp_path / "src" / "metrics.csv").read_text().replace("test_accuracy", "acc", 1)
    (tmp_path / "src" / "metrics.csv").write_text(text)
    with pytest.raises(ZooFormatError, match=r"metrics.csv: missing required columns \['test_accuracy'\]"):
        model_zoo.import_small_cnn_zoo(tmp_path / "src", tmp_path / "dst", arch_of_row)


def test_row_count_mismatch(tmp_path):
    write_small_cnn_zoo(tmp_path / "src", gz=False)
    lines = (tmp_path / "src" / "metrics.csv").read_text().splitlines()
    (tmp_path / "src" / "metrics.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ZooFormatError, match=r"metrics.csv: 5 metrics rows but .*weights.npy holds 6 weight rows"):
        model_zoo.import_small_cnn_zoo(tmp_path / "src", tmp_path / "dst", arch_of_row)


def test_bad_arch_callable_and_existing_destination(tmp_path):
    write_small_cnn_zoo(tmp_path / "src")
    with pytest.raises(ZooFormatError, match=r"metrics.csv.gz row 1: the arch callable returned 'relu'"):
        model_zoo.import_small_cnn_zoo(tmp_path / "src", tmp_path / "dst", lambda row: row["config.activation"])
    (tmp_path / "dst").mkdir()
    with pytest.raises(FileExistsError, match="dst already exists"):
        model_zoo.import_small_cnn_zoo(tmp_path / "src", tmp_path / "dst", arch_of_row)


# ---------------------------------------------------------------- folders of state dicts
MLP = {"_target_": "model_zoo.archs.MLP", "in_features": 4, "num_outputs": 2, "depth": 1, "width": 3}


def write_state_dict_folder(folder, runs=2, steps=(0, 5)):
    folder.mkdir(parents=True, exist_ok=True)
    rows, sds = [], []
    for r in range(runs):
        for s in steps:
            torch.manual_seed(10 * r + s)
            sd = model_zoo.instantiate(MLP).state_dict()
            name = f"r{r}_s{s}.pt"
            torch.save(sd if r else {"state_dict": sd}, folder / name)
            sds.append(sd)
            rows.append({"file": name, "run": f"seed{r}", "step": s, "test_accuracy": 0.5 + r / 10})
    _write_csv(folder / "metrics.csv", rows)
    return sds, rows


def test_import_state_dicts(tmp_path):
    sds, _ = write_state_dict_folder(tmp_path / "src")
    zoo = model_zoo.import_state_dicts(tmp_path / "src", tmp_path / "dst", MLP)
    assert len(zoo) == 2 and zoo.steps(0) == [0, 5]
    for i in range(2):
        for k, step in enumerate((0, 5)):
            for n, t in sds[2 * i + k].items():
                assert torch.equal(zoo.state_dict(i, step)[n], t)
    assert zoo.metrics["source_file"][0] == "r0_s0.pt"


def _rewrite(tmp_path, name, obj):
    torch.save(obj, tmp_path / "src" / name)


@pytest.mark.parametrize("corrupt,message", [
    (lambda p: (p / "r1_s5.pt").write_bytes((p / "r1_s5.pt").read_bytes()[:50]),
     r"r1_s5.pt \(CSV row 4\): cannot load with torch.load\(weights_only=True\)"),
    (lambda p: torch.save({"net.1.weight": torch.ones(3, 4), "hook": print}, p / "r0_s5.pt"),
     r"r0_s5.pt \(CSV row 2\): cannot load with torch.load\(weights_only=True\): UnpicklingError"),
    (lambda p: torch.save({"net.1.weight": torch.ones(3, 4)}, p / "r1_s0.pt"),
     r"r1_s0.pt \(CSV row 3\): keys differ from model_zoo.archs.MLP: missing \['net.1.bias'"),
    (lambda p: torch.save({**torch.load(p / "r1_s0.pt"), "net.1.bias": torch.ones(4)}, p / "r1_s0.pt"),
     r"r1_s0.pt \(CSV row 3\): 'net.1.bias' has shape \(4,\), the architecture needs \(3,\)"),
    (lambda p: torch.save({k: v * float("nan") for k, v in torch.load(p / "r1_s0.pt").items()}, p / "r1_s0.pt"),
     r"r1_s0.pt \(CSV row 3\): 'net.1.weight' holds NaN or inf values"),
    (lambda p: (p / "r1_s0.pt").unlink(), r"r1_s0.pt \(CSV row 3\): file not found"),
    (lambda p: torch.save([torch.ones(1)], p / "r1_s0.pt"), r"r1_s0.pt \(CSV row 3\): expected a state dict of tensors"),
])
def test_state_dict_folder_errors(tmp_path, corrupt, message):
    write_state_dict_folder(tmp_path / "src")
    corrupt(tmp_path / "src")
    with pytest.raises(ZooFormatError, match=message):
        model_zoo.import_state_dicts(tmp_path / "src", tmp_path / "dst", MLP)
    _nothing_left(tmp_path)


def test_state_dict_csv_errors(tmp_path):
    write_state_dict_folder(tmp_path / "src")
    text = (tmp_path / "src" / "metrics.csv").read_text().replace("file,", "path,", 1)
    (tmp_path / "src" / "metrics.csv").write_text(text)
    with pytest.raises(ZooFormatError, match=r"metrics.csv: missing required columns \['file'\]"):
        model_zoo.import_state_dicts(tmp_path / "src", tmp_path / "dst", MLP)
    text = (tmp_path / "src" / "metrics.csv").read_text().replace("path,", "file,", 1).replace(",5,", ",x,", 1)
    (tmp_path / "src" / "metrics.csv").write_text(text)
    with pytest.raises(ZooFormatError, match=r"metrics.csv row 2: column 'step' holds 'x', not a number"):
        model_zoo.import_state_dicts(tmp_path / "src", tmp_path / "dst", MLP)
