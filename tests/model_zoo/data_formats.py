"""Tiny files in each real on-disk data format, written from the formats' public descriptions.

Every writer returns what a reader must find: images as ``uint8 [N, C, H, W]`` and labels as ``int64 [N]``.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def images(n: int, channels: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8)


def labels(n: int, classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 1000).integers(0, classes, n).astype(np.int64)


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """IDX: 00 00, type byte, ndim, big-endian uint32 dims, big-endian values."""
    a = np.asarray(array)
    be = a.astype(a.dtype.newbyteorder(">")) if a.dtype.itemsize > 1 else a
    head = struct.pack(">BBBB", 0, 0, IDX_CODES[np.dtype(be.dtype)], a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    data = head + be.tobytes()
    path = Path(str(path) + ".gz") if gz else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist(root: Path, n_train: int = 6, n_test: int = 4, size: int = 8, gz: bool = False,
                seed: int = 0) -> dict[str, np.ndarray]:
    """The four MNIST IDX files (images ``[N, H, W]`` uint8, labels ``[N]`` uint8)."""
    out = {"x_train": images(n_train, 1, size, seed), "y_train": labels(n_train, 10, seed),
           "x_test": images(n_test, 1, size, seed + 1), "y_test": labels(n_test, 10, seed + 1)}
    write_idx(root / "train-images-idx3-ubyte", out["x_train"][:, 0], gz)
    write_idx(root / "train-labels-idx1-ubyte", out["y_train"].astype(np.uint8), gz)
    write_idx(root / "t10k-images-idx3-ubyte", out["x_test"][:, 0], gz)
    write_idx(root / "t10k-labels-idx1-ubyte", out["y_test"].astype(np.uint8), gz)
    return out


def _cifar_file(path: Path, x: np.ndarray, label_columns: list[np.ndarray]) -> None:
    """Rows of label byte(s) + 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major)."""
    rows = np.concatenate([*(c.astype(np.uint8)[:, None] for c in label_columns), x.reshape(len(x), 3072)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rows.astype(np.uint8).tobytes())


def write_cifar10(root: Path, per_batch: int = 2, n_test: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin``."""
    xs, ys = [], []
    for k in range(1, 6):
        x, y = images(per_batch, 3, 32, seed + k), labels(per_batch, 10, seed + k)
        _cifar_file(root / f"data_batch_{k}.bin", x, [y])
        xs.append(x)
        ys.append(y)
    xt, yt = images(n_test, 3, 32, seed + 9), labels(n_test, 10, seed + 9)
    _cifar_file(root / "test_batch.bin", xt, [yt])
    return {"x_train": np.concatenate(xs), "y_train": np.concatenate(ys), "x_test": xt, "y_test": yt}


def write_cifar100(root: Path, n_train: int = 5, n_test: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """``train.bin`` and ``test.bin``: coarse label byte, fine label byte, pixels."""
    out = {}
    for part, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        x, fine = images(n, 3, 32, s), labels(n, 100, s)
        coarse = (fine + 7) % 20  # never the fine label for labels >= 20: a reader taking the wrong byte fails
        _cifar_file(root / f"{part}.bin", x, [coarse, fine])
        out[f"x_{part}"], out[f"y_{part}"] = x, fine
    return out


def write_svhn(root: Path, n_train: int = 5, n_test: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """``train_32x32.mat`` / ``test_32x32.mat``: ``X [32, 32, 3, N]`` uint8, ``y [N, 1]`` in 1..10 (10 = digit 0)."""
    from scipy.io import savemat

    out = {}
    root.mkdir(parents=True, exist_ok=True)
    for part, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        x = images(n, 3, 32, s)
        digit = labels(n, 10, s)
        digit[0] = 0  # at least one 0, stored as 10
        savemat(root / f"{part}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": np.where(digit == 0, 10, digit)[:, None]})
        out[f"x_{part}"], out[f"y_{part}"] = x, digit
    return out


def write_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "eel"), per_class: int = 3,
                       size: int = 8, rgb: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """``root/<class>/<k>.png`` via PIL; returns images in the reader's canonical order (class, file name)."""
    from PIL import Image

    xs, ys = [], []
    for c_idx, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            x = images(1, 3 if rgb else 1, size, seed + 31 * c_idx + k)[0]
            Image.fromarray(x.transpose(1, 2, 0) if rgb else x[0]).save(root / c / f"{k:03d}.png")
            xs.append(x)
            ys.append(c_idx)
    return {"x": np.stack(xs), "y": np.array(ys, dtype=np.int64)}
