"""model_zoo.datasets: data from anywhere (tensors, torch Datasets, .npz, image folders, MNIST/CIFAR/SVHN files),
its fingerprint, and rebuilding a zoo's data."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import IterableDataset, TensorDataset

from model_zoo import load_dataset
from model_zoo.datasets import (
    IN_MEMORY,
    DataMismatchError,
    DataSourceError,
    check_fingerprint,
    fingerprint,
    load_data,
    read_idx,
    rebuild,
)
from model_zoo.store import ZooFormatError

from .data_formats import (
    write_cifar10,
    write_cifar100,
    write_idx,
    write_image_folder,
    write_mnist,
    write_svhn,
)


def _scaled(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.astype(np.float32) / 255.0)


def _described(ds):
    return {**ds.describe(), "fingerprint": fingerprint(ds)}


# ----------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("kind", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, kind, gz):
    want = write_mnist(tmp_path, gz=gz)
    ds = load_data(f"{kind}:{tmp_path}")
    assert ds.name == kind and ds.task == "classification" and ds.num_outputs == 10
    assert ds.x_train.shape == (6, 1, 8, 8) and ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert torch.equal(ds.x_train, _scaled(want["x_train"])) and torch.equal(ds.x_test, _scaled(want["x_test"]))
    assert torch.equal(ds.y_train, torch.from_numpy(want["y_train"]))
    assert torch.equal(ds.y_test, torch.from_numpy(want["y_test"]))
    assert list(ds.train_index) == list(range(6)) and ds.info["split"] == "source"
    assert ds.info["source"] == f"{kind}:{tmp_path.resolve()}"


def test_mnist_in_torchvision_raw_folder(tmp_path):
    want = write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    ds = load_dataset(f"mnist:{tmp_path}", flatten=True)  # model_zoo.load_dataset reads sources too
    assert ds.x_train.shape == (6, 64) and torch.equal(ds.x_train, _scaled(want["x_train"]).reshape(6, 64))


def test_idx_reader_dtypes_and_byte_order(tmp_path):
    a = np.arange(24, dtype=">i4").reshape(2, 3, 4) - 5
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "a", a)), a)
    f = np.linspace(-1, 1, 6, dtype=">f8")
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "f", f, gz=True)), f)


def test_idx_corrupt_header_names_the_file(tmp_path):
    write_mnist(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x01" + bad.read_bytes()[4:])
    with pytest.raises(DataSourceError, match=r"train-labels-idx1-ubyte: not an IDX file \(header bytes 12340801"):
        load_data(f"mnist:{tmp_path}")


def test_idx_truncated_and_gz_corrupt(tmp_path):
    write_mnist(tmp_path)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DataSourceError, match=r"t10k-images-idx3-ubyte: the IDX header declares shape \[4, 8, 8\].*"
                                              r"holds 246; the file is truncated"):
        load_data(f"mnist:{tmp_path}")
    g = tmp_path / "x.gz"
    g.write_bytes(gzip.compress(b"\x00\x00\x08\x01")[:-6])
    with pytest.raises(DataSourceError, match=r"x.gz: "):
        read_idx(g)


def test_mnist_counts_must_agree(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataSourceError, match=r"train-images-idx3-ubyte: 6 images but .*train-labels-idx1-ubyte holds 5"):
        load_data(f"mnist:{tmp_path}")


@pytest.mark.parametrize("kind,names", [
    ("mnist", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    ("fashion_mnist", ["t10k-labels-idx1-ubyte", "fashion-mnist"]),
    ("cifar10", ["data_batch_1.bin", "data_batch_5.bin", "test_batch.bin", "cifar-10-binary.tar.gz"]),
    ("cifar100", ["train.bin", "test.bin", "cifar-100-binary"]),
    ("svhn", ["train_32x32.mat", "test_32x32.mat", "ufldl.stanford.edu/housenumbers"]),
])
def test_missing_files_name_the_expected_files(tmp_path, kind, names):
    with pytest.raises(DataSourceError) as e:
        load_data(f"{kind}:{tmp_path}")
    msg = str(e.value)
    assert "missing" in msg and "Nothing is downloaded" in msg and str(tmp_path) in msg
    for n in names:
        assert n in msg


def test_cifar10_binary(tmp_path):
    want = write_cifar10(tmp_path / "cifar-10-batches-bin")
    ds = load_data(f"cifar10:{tmp_path}")  # the folder above cifar-10-batches-bin/ works too
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32) and ds.num_outputs == 10
    assert torch.equal(ds.x_train, _scaled(want["x_train"])) and torch.equal(ds.x_test, _scaled(want["x_test"]))
    assert torch.equal(ds.y_train, torch.from_numpy(want["y_train"]))
    # channel planes: the first 1024 pixel bytes of a row are red, row-major
    row = (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").read_bytes()[:3073]
    assert ds.y_train[0] == row[0]
    assert round(float(ds.x_train[0, 0, 0, 1]) * 255) == row[2] and round(float(ds.x_train[0, 1, 0, 0]) * 255) == row[1025]


def test_cifar10_truncated_file_is_named(tmp_path):
    write_cifar10(tmp_path)
    p = tmp_path / "data_batch_3.bin"
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(DataSourceError, match=r"data_batch_3.bin: 6145 bytes is not a whole number of 3073-byte rows"):
        load_data(f"cifar10:{tmp_path}")


def test_cifar100_uses_fine_labels(tmp_path):
    want = write_cifar100(tmp_path)
    ds = load_data(f"cifar100:{tmp_path}")
    assert ds.num_outputs == 100 and ds.info["labels"] == "fine"
    assert torch.equal(ds.y_train, torch.from_numpy(want["y_train"])) and torch.equal(ds.y_test, torch.from_numpy(want["y_test"]))
    assert torch.equal(ds.x_test, _scaled(want["x_test"]))


def test_svhn_mat(tmp_path):
    want = write_svhn(tmp_path)
    ds = load_data(f"svhn:{tmp_path}")
    assert ds.x_train.shape == (5, 3, 32, 32) and ds.num_outputs == 10
    assert torch.equal(ds.x_train, _scaled(want["x_train"])) and torch.equal(ds.x_test, _scaled(want["x_test"]))
    assert torch.equal(ds.y_train, torch.from_numpy(want["y_train"])) and int(ds.y_train[0]) == 0  # 10 -> 0


def test_svhn_bad_file(tmp_path):
    write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataSourceError, match=r"test_32x32.mat: cannot read as a MATLAB file"):
        load_data(f"svhn:{tmp_path}")
    from scipy.io import savemat

    savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[3], [11]])})
    with pytest.raises(DataSourceError, match=r"test_32x32.mat: y must hold 2 labels in 1..10"):
        load_data(f"svhn:{tmp_path}")


@pytest.mark.parametrize("rgb", [True, False])
def test_image_folder_with_split_folders(tmp_path, rgb):
    tr = write_image_folder(tmp_path / "train", rgb=rgb)
    te = write_image_folder(tmp_path / "test", classes=("cat", "eel"), per_class=2, rgb=rgb, seed=50)
    ds = load_data(f"folder:{tmp_path}")
    c = 3 if rgb else 1
    assert ds.x_train.shape == (9, c, 8, 8) and ds.x_test.shape == (4, c, 8, 8)
    assert torch.equal(ds.x_train, _scaled(tr["x"])) and torch.equal(ds.x_test, _scaled(te["x"]))
    assert ds.info["classes"] == ["cat", "dog", "eel"] and ds.num_outputs == 3
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and ds.y_test.tolist() == [0, 0, 2, 2]


def test_image_folder_seeded_split(tmp_path):
    want = write_image_folder(tmp_path, per_class=4)
    a, b = load_data(f"folder:{tmp_path}", test_fraction=0.25, seed=1), load_data(f"folder:{tmp_path}", seed=2,
                                                                                  test_fraction=0.25)
    assert len(a.test_index) == 3 and a.info["split"] == "seeded"
    assert torch.equal(a.x_test, _scaled(want["x"][a.test_index])) and a.y_train.tolist() == want["y"][a.train_index].tolist()
    assert not np.array_equal(a.test_index, b.test_index)  # the seed chooses the split


def test_image_folder_errors(tmp_path):
    from PIL import Image

    write_image_folder(tmp_path / "a")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(tmp_path / "a" / "dog" / "big.png")
    with pytest.raises(DataSourceError, match=r"dog/big.png: image size 8x9, but .*cat/000.png is 8x8"):
        load_data(f"folder:{tmp_path / 'a'}")
    write_image_folder(tmp_path / "b" / "train")
    with pytest.raises(DataSourceError, match=r"has train/ but no test/"):
        load_data(f"folder:{tmp_path / 'b'}")
    write_image_folder(tmp_path / "c" / "train")
    write_image_folder(tmp_path / "c" / "test", classes=("cat", "yak"))
    with pytest.raises(DataSourceError, match=r"classes \['yak'\] have no folder in"):
        load_data(f"folder:{tmp_path / 'c'}")
    (tmp_path / "d" / "empty").mkdir(parents=True)
    with pytest.raises(DataSourceError, match=r"empty: a class folder without images"):
        load_data(f"folder:{tmp_path / 'd'}")
    (tmp_path / "e" / "cat").mkdir(parents=True)
    (tmp_path / "e" / "cat" / "x.png").write_bytes(b"no png")
    with pytest.raises(DataSourceError, match=r"cat/x.png: cannot read as an image"):
        load_data(f"folder:{tmp_path / 'e'}")


def test_image_folder_link_leaving_the_root_is_refused(tmp_path):
    write_image_folder(tmp_path / "outside", classes=("x",), per_class=1)
    write_image_folder(tmp_path / "root", classes=("cat",), per_class=1)
    (tmp_path / "root" / "cat" / "leak.png").symlink_to(tmp_path / "outside" / "x" / "000.png")
    with pytest.raises(DataSourceError, match=r"leak.png: a symbolic link leading outside"):
        load_data(f"folder:{tmp_path / 'root'}")


def test_npz_file(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (7, 1, 4, 4), dtype=np.uint8), "y_train": np.arange(7) % 3,
              "x_test": rng.integers(0, 256, (2, 1, 4, 4), dtype=np.uint8), "y_test": np.array([2, 1])}
    np.savez(tmp_path / "d.npz", **arrays)
    ds = load_data(f"file:{tmp_path / 'd.npz'}")
    assert ds.name == "file" and ds.num_outputs == 3 and torch.equal(ds.x_train, _scaled(arrays["x_train"]))
    assert ds.y_test.tolist() == [2, 1] and ds.y_test.dtype == torch.int64
    # x, y: split by seed; float inputs unscaled, float labels: regression [N, 1]
    x, y = rng.standard_normal((10, 3)).astype(np.float64), rng.standard_normal(10)
    np.savez(tmp_path / "r.npz", x=x, y=y)
    r = load_data(f"file:{tmp_path / 'r.npz'}", test_fraction=0.3)
    assert r.task == "regression" and r.num_outputs == 1 and r.y_train.shape == (7, 1) and r.x_train.dtype == torch.float32
    np.testing.assert_allclose(r.x_test.numpy(), x[r.test_index].astype(np.float32))


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "obj.npz", x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1),
             x_test=np.zeros(1), y_test=np.zeros(1))
    with pytest.raises(DataSourceError, match=r"obj.npz: cannot read as a .npz of numeric arrays"):
        load_data(f"file:{tmp_path / 'obj.npz'}")  # allow_pickle=False: object arrays are never unpickled
    np.savez(tmp_path / "part.npz", x_train=np.zeros((2, 3)), y_train=np.zeros(2, int))
    with pytest.raises(DataSourceError, match=r"part.npz: missing arrays \['x_test', 'y_test'\]; found"):
        load_data(f"file:{tmp_path / 'part.npz'}")
    np.savez(tmp_path / "n.npz", x=np.zeros((3, 2)), y=np.zeros(4, int))
    with pytest.raises(DataSourceError, match=r"n.npz: the data has 3 inputs but 4 labels"):
        load_data(f"file:{tmp_path / 'n.npz'}")
    with pytest.raises(DataSourceError, match=r"no such file; expected a NumPy .npz with arrays x_train"):
        load_data(f"file:{tmp_path / 'none.npz'}")


# ----------------------------------------------------------------------------------------- in memory
def test_tensors_and_torch_datasets():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(20, 2, 3, 3, generator=g), torch.randint(0, 4, (20,), generator=g)
    four = load_data((x[:15], y[:15], x[15:], y[15:]))
    assert four.name == IN_MEMORY and four.info["source"] == IN_MEMORY and four.num_outputs == 4
    assert torch.equal(four.x_test, x[15:]) and four.task == "classification"
    one = load_data(TensorDataset(x, y), test_fraction=0.25, seed=3)  # split by seed
    assert torch.equal(one.x_test, x[torch.from_numpy(one.test_index)]) and len(one.test_index) == 5
    pair = load_data((TensorDataset(x[:15], y[:15]), TensorDataset(x[15:], y[15:])))
    assert fingerprint(pair) == {**fingerprint(four), "source": IN_MEMORY}
    u8 = load_data((torch.full((2, 1, 2, 2), 255, dtype=torch.uint8), torch.tensor([0, 1]),
                    torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.tensor([1])))
    assert u8.x_train.max() == 1.0 and u8.x_train.dtype == torch.float32


def test_torch_dataset_of_pil_images():
    from PIL import Image

    class Pics(TorchDataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return Image.fromarray(np.full((4, 5, 3), 10 * i, np.uint8)), i % 2

    ds = load_data(Pics())
    assert ds.x_train.shape[1:] == (3, 4, 5)
    i = int(ds.train_index[0])
    assert torch.allclose(ds.x_train[0], torch.full((3, 4, 5), 10 * i / 255.0))


def test_bad_in_memory_data():
    class Stream(IterableDataset):
        def __iter__(self):
            yield torch.zeros(2), 0

    with pytest.raises(DataSourceError, match="is not map-style"):
        load_data(Stream())
    with pytest.raises(DataSourceError, match=r"item 0 is 1 values, expected an \(input, label\) pair"):
        load_data(TensorDataset(torch.zeros(3, 2)))
    with pytest.raises(DataSourceError, match=r"the train part has 3 inputs but 2 labels"):
        load_data((torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long)))
    with pytest.raises(DataSourceError, match=r"train inputs have shape \[2\] per sample, test inputs \[3\]"):
        load_data((torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), torch.zeros(1, 3), torch.zeros(1, dtype=torch.long)))
    with pytest.raises(TypeError, match="cannot use data of type dict_keys"):
        load_data({}.keys())
    with pytest.raises(ValueError, match=r"unknown dataset 'moons': choose an embedded dataset .* or a source KIND:PATH"):
        load_data("moons")
    with pytest.raises(ValueError, match=r"unknown data options \['limt_train'\]"):
        load_data((torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)), limt_train=2)
    with pytest.raises(ValueError, match="limit_test must be a positive integer"):
        load_data("digits", limit_test=0)


# ----------------------------------------------------------------------------------------- options
def test_limits_take_seeded_sorted_subsets(tmp_path):
    want = write_cifar10(tmp_path, per_batch=4)
    a = load_data(f"cifar10:{tmp_path}", limit_train=7, limit_test=2, seed=5)
    b = load_data({"name": f"cifar10:{tmp_path}", "limit_train": 7, "limit_test": 2, "seed": 5})
    c = load_data(f"cifar10:{tmp_path}", limit_train=7, limit_test=2, seed=6)
    assert len(a.x_train) == 7 and len(a.x_test) == 2 and list(a.train_index) == sorted(a.train_index)
    assert torch.equal(a.x_train, _scaled(want["x_train"][a.train_index])) and a.y_test.tolist() == want["y_test"][a.test_index].tolist()
    assert fingerprint(a) == fingerprint(b) and fingerprint(a) != fingerprint(c)
    d = load_data("digits", limit_train=50, flatten=True)
    full = load_data("digits", flatten=True)
    assert d.x_train.shape == (50, 64) and torch.equal(d.x_test, full.x_test)
    assert np.isin(d.train_index, full.train_index).all()


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 30), limit=st.integers(1, 40), seed=st.integers(0, 5), frac=st.floats(0.1, 0.9))
def test_every_sample_is_the_source_row_its_index_names(n, limit, seed, frac):
    x = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)
    y = torch.arange(n) % 4
    if round(n * frac) in (0, n):  # a split that leaves one side empty is refused
        with pytest.raises(DataSourceError, match=rf"of {n} samples leaves \d+ train and \d+ test samples"):
            load_data((x, y), test_fraction=frac, seed=seed)
        return
    ds = load_data((x, y), test_fraction=frac, seed=seed, limit_train=limit)
    assert torch.equal(ds.x_train, x[torch.from_numpy(ds.train_index)]) and torch.equal(ds.y_test, y[torch.from_numpy(ds.test_index)])
    assert len(ds.x_train) == min(limit, n - len(ds.test_index)) and not set(ds.train_index) & set(ds.test_index)
    assert ds == ds and fingerprint(ds) == fingerprint(load_data((x, y), test_fraction=frac, seed=seed, limit_train=limit))


# ----------------------------------------------------------------------------------------- fingerprint
def test_fingerprint_sees_every_array_and_the_split():
    ds = load_data("digits", limit_train=40, limit_test=10)
    fp = fingerprint(ds)
    assert fp["source"] == "digits" and fp["x_train"]["shape"] == [40, 1, 8, 8] and fp["y_test"]["dtype"] == "int64"
    check_fingerprint(ds, fp, "zoo.json")  # the same data passes
    x = ds.x_test.clone()
    x[3, 0, 2, 2] += 1e-3
    other = type(ds)(ds.name, ds.x_train, ds.y_train, x, ds.y_test, ds.task, ds.num_outputs, ds.train_index,
                     ds.test_index, ds.info)
    with pytest.raises(DataMismatchError, match=r"zoo.json: the data differs .*: x_test content \(sha256"):
        check_fingerprint(other, fp, "zoo.json")
    moved = load_data("digits", limit_train=40, limit_test=10, seed=1)
    with pytest.raises(DataMismatchError, match=r"x_train content.*train_index content"):
        check_fingerprint(moved, fp, "zoo.json")
    flat = load_data("digits", limit_train=40, limit_test=10, flatten=True)
    with pytest.raises(DataMismatchError, match=r"x_train shape \[40, 64\] \(recorded \[40, 1, 8, 8\]\)"):
        check_fingerprint(flat, fp, "zoo.json")
    assert isinstance(DataMismatchError("x"), ZooFormatError)


def test_rebuild_in_memory_needs_the_data():
    g = torch.Generator().manual_seed(1)
    arrays = (torch.rand(8, 3, generator=g), torch.randint(0, 2, (8,), generator=g), torch.rand(4, 3, generator=g),
              torch.randint(0, 2, (4,), generator=g))
    desc = _described(load_data(arrays, limit_train=6))
    with pytest.raises(DataSourceError, match=r"trained on in-memory data \(x_train \[6, 3\], x_test \[4, 3\]\).*"
                                              r"zoo.dataset\(data=...\) or zoo.attach_data"):
        rebuild(desc)
    again = rebuild(desc, arrays)  # the recorded limit_train is applied to the data passed
    assert torch.equal(again.x_train, arrays[0][torch.from_numpy(again.train_index)]) and len(again.x_train) == 6
    changed = (arrays[0], 1 - arrays[1], arrays[2], arrays[3])
    with pytest.raises(DataMismatchError, match=r"y_train content"):
        rebuild(desc, changed)


def test_rebuild_rereads_a_source_and_refuses_changed_files(tmp_path):
    write_mnist(tmp_path / "m")
    ds = load_data(f"mnist:{tmp_path / 'm'}", limit_train=4)
    desc = _described(ds)
    assert torch.equal(rebuild(desc).x_train, ds.x_train)
    write_mnist(tmp_path / "moved")  # the same files elsewhere: pass the new source
    assert torch.equal(rebuild(desc, f"mnist:{tmp_path / 'moved'}").x_train, ds.x_train)
    write_mnist(tmp_path / "m", seed=9)
    with pytest.raises(DataMismatchError, match=r"x_train content.*made with 'mnist:"):
        rebuild(desc)


def test_rebuild_of_a_zoo_recorded_before_fingerprints():
    desc = load_data("digits", flatten=True).describe()  # embedded, split recorded, no fingerprint
    assert torch.equal(rebuild(desc).x_test, load_data("digits", flatten=True).x_test)
    with pytest.raises(DataMismatchError, match="different train_index"):
        rebuild({**desc, "split_seed": 4})
    with pytest.raises(DataMismatchError, match="different test_index"):
        rebuild({**desc, "test_index": desc["test_index"][::-1]})


def test_rebuild_without_recorded_data():
    with pytest.raises(DataSourceError, match=r"records dataset 'digits' but not its data \(imported without data="):
        rebuild({"name": "digits", "input_shape": [1, 8, 8]})
    ds = rebuild({"name": "digits", "input_shape": [1, 8, 8]}, "digits")
    assert ds.input_shape == (1, 8, 8)
    with pytest.raises(DataMismatchError, match=r"input shape \[64\], the zoo records dataset.input_shape \[1, 8, 8\]"):
        rebuild({"name": "digits", "input_shape": [1, 8, 8]}, load_data("digits", flatten=True))


# ----------------------------------------------------------------------------------------- zoos on your own data
def _zoo_config(data: dict, arch: dict) -> dict:
    return {"name": "own", "size": 2, "seed": 0, "chunk_size": 2, "data": data, "arch": arch,
            "space": {"lr": {"log_uniform": [1e-3, 1e-2]}, "batch_size": 4}, "trainer": {"epochs": 1, "checkpoints": [0, 1]}}


def _accuracy(zoo, run, ds) -> float:
    with torch.no_grad():
        return float((zoo.build_model(run)(ds.x_test).argmax(-1) == ds.y_test).float().mean())


def test_generate_on_an_npz_file_reloads_it_and_refuses_a_changed_file(tmp_path):
    import json

    import model_zoo

    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (12, 1, 4, 4), dtype=np.uint8), "y_train": np.arange(12) % 3,
              "x_test": rng.integers(0, 256, (6, 1, 4, 4), dtype=np.uint8), "y_test": np.arange(6) % 3}
    np.savez(tmp_path / "d.npz", **arrays)
    mlp = {"_target_": "model_zoo.archs.MLP", "in_features": 16, "num_outputs": 3, "depth": 1, "width": 4}
    cfg = _zoo_config({"name": f"file:{tmp_path / 'd.npz'}", "flatten": True, "limit_train": 10}, mlp)
    model_zoo.generate(cfg, tmp_path / "zoo", progress=False)
    zoo = model_zoo.load(tmp_path / "zoo")
    recorded = json.loads((tmp_path / "zoo" / "zoo.json").read_text())["dataset"]
    assert recorded["source"] == f"file:{(tmp_path / 'd.npz').resolve()}" and recorded["fingerprint"]["x_train"]["shape"] == [10, 16]
    ds = zoo.dataset()  # the file read again, with the recorded flatten and limit_train
    ref = load_data(f"file:{tmp_path / 'd.npz'}", flatten=True, limit_train=10)
    assert torch.equal(ds.x_train, ref.x_train) and torch.equal(ds.y_test, ref.y_test)
    assert _accuracy(zoo, 1, ds) == pytest.approx(zoo.rows(1)["test_accuracy"][-1], abs=1e-6)
    arrays["x_test"][0, 0, 0, 0] ^= 1
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataMismatchError, match=r"zoo.json: the data differs .*x_test content"):
        model_zoo.load(tmp_path / "zoo").dataset()
    with pytest.raises(DataMismatchError, match=r"zoo.json \(resuming\): the data differs"):
        model_zoo.generate(cfg, tmp_path / "zoo", progress=False)


def test_generate_on_cifar10_files(tmp_path):
    import model_zoo

    write_cifar10(tmp_path / "cifar", per_batch=2, n_test=4)
    cnn = {"_target_": "model_zoo.archs.SmallCNN", "in_channels": 3, "channels": 2, "strides": 2}
    zoo = model_zoo.generate(_zoo_config({"name": f"cifar10:{tmp_path / 'cifar'}"}, cnn), tmp_path / "zoo",
                             progress=False)
    assert len(zoo) == 2 and zoo.info["dataset"]["name"] == "cifar10" and zoo.info["dataset"]["input_shape"] == [3, 32, 32]
    again = model_zoo.load(tmp_path / "zoo").dataset()
    assert torch.equal(again.x_train, load_data(f"cifar10:{tmp_path / 'cifar'}").x_train)
    assert _accuracy(zoo, 0, again) == pytest.approx(zoo.rows(0)["test_accuracy"][-1], abs=1e-6)
    write_cifar10(tmp_path / "cifar", per_batch=2, n_test=4, seed=1)
    with pytest.raises(DataMismatchError, match=r"x_train content.*y_train content"):
        model_zoo.load(tmp_path / "zoo").dataset()


def test_generate_on_in_memory_data(tmp_path):
    import model_zoo

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 5, generator=g), torch.randint(0, 2, (16,), generator=g)
    mine = TensorDataset(x, y)
    mlp = {"_target_": "model_zoo.archs.MLP", "in_features": 5, "num_outputs": 2, "depth": 1, "width": 3}
    cfg = _zoo_config({"test_fraction": 0.25}, mlp)
    zoo = model_zoo.generate(cfg, tmp_path / "zoo", data=mine, progress=False)
    assert zoo.dataset().x_train.shape == (12, 5) and zoo.info["dataset"]["source"] == IN_MEMORY
    with pytest.raises(DataSourceError, match=r"trained on in-memory data .*zoo.dataset\(data=...\)"):
        model_zoo.load(tmp_path / "zoo").dataset()
    back = model_zoo.load(tmp_path / "zoo")
    ds = back.attach_data(mine)  # the recorded split (test_fraction, seed) is applied again
    assert back.dataset() is ds and _accuracy(back, 1, ds) == pytest.approx(back.rows(1)["test_accuracy"][-1], abs=1e-6)
    with pytest.raises(DataMismatchError, match=r"x_train content"):
        model_zoo.load(tmp_path / "zoo").dataset(data=TensorDataset(x + 1, y))
    with pytest.raises(DataMismatchError, match=r"zoo.json \(resuming\)"):
        model_zoo.generate(cfg, tmp_path / "zoo", data=TensorDataset(x.flip(0), y), progress=False)
    with pytest.raises(ValueError, match=r"data given twice: config data.name='digits' and data=..."):
        model_zoo.generate(_zoo_config({"name": "digits"}, mlp), tmp_path / "z2", data=mine, progress=False)
    with pytest.raises(ValueError, match=r"zoo config 'data' must be a mapping .* got a TensorDataset; pass tensors"):
        model_zoo.generate({**cfg, "data": mine}, tmp_path / "z3", progress=False)


def test_imported_zoo_with_data_can_be_evaluated(tmp_path):
    import model_zoo
    from weightspace.diffusion.data import EvalData

    from .test_importers import arch_of_row, write_small_cnn_zoo

    write_small_cnn_zoo(tmp_path / "src")
    zoo = model_zoo.import_small_cnn_zoo(tmp_path / "src", tmp_path / "with", arch_of_row, data="digits")
    assert zoo.info["dataset"]["input_shape"] == [1, 8, 8] and "fingerprint" in zoo.info["dataset"]
    fresh = model_zoo.load(tmp_path / "with")
    assert torch.equal(fresh.dataset().x_test, load_data("digits").x_test)
    assert len(EvalData.from_zoo(fresh).x_train) == len(load_data("digits").x_train)  # what `weightspace generate` needs
    bare = model_zoo.import_small_cnn_zoo(tmp_path / "src", tmp_path / "bare", arch_of_row, input_shape=[1, 8, 8])
    with pytest.raises(DataSourceError, match=r"records dataset 'digits' but not its data \(imported without data="):
        model_zoo.load(tmp_path / "bare").dataset()
    with pytest.raises(DataMismatchError, match=r"input shape \[64\], the zoo records dataset.input_shape \[1, 8, 8\]"):
        bare.attach_data(load_data("digits", flatten=True))
    assert bare.attach_data("digits").input_shape == (1, 8, 8)
    with pytest.raises(ValueError, match=r"the data \(inputs \[64\]\) does not fit the architecture model_zoo.archs.SmallCNN"):
        model_zoo.import_small_cnn_zoo(tmp_path / "src", tmp_path / "bad", arch_of_row,
                                       data=load_data("digits", flatten=True))
    assert not (tmp_path / "bad").exists()


def test_imported_state_dicts_with_data(tmp_path):
    import model_zoo

    from .test_importers import MLP, write_state_dict_folder

    write_state_dict_folder(tmp_path / "src")
    g = torch.Generator().manual_seed(2)
    arrays = (torch.rand(6, 4, generator=g), torch.tensor([0, 1] * 3), torch.rand(4, 4, generator=g), torch.tensor([1, 0] * 2))
    model_zoo.import_state_dicts(tmp_path / "src", tmp_path / "dst", MLP, data=arrays)
    zoo = model_zoo.load(tmp_path / "dst")
    assert torch.equal(zoo.dataset(data=arrays).x_test, arrays[2])
    assert zoo.split["test_index"] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"gives outputs of shape \[2\], the data has 3 classes"):
        model_zoo.import_state_dicts(tmp_path / "src", tmp_path / "d2", MLP,
                                     data=(arrays[0], torch.tensor([0, 1, 2] * 2), arrays[2], arrays[3]))
