"""Data from anywhere for zoo generation, behind one interface: :func:`load_data`.

A zoo can be trained on

* an **embedded** dataset, rebuilt offline from its name: ``"digits"``, ``"mnist1d"``, ``"synthetic"``
  (see :mod:`model_zoo.data`);
* **in-memory** data: a tuple ``(x_train, y_train, x_test, y_test)`` of tensors or NumPy arrays, a pair
  ``(x, y)`` (split by seed), a map-style :class:`torch.utils.data.Dataset` yielding ``(input, label)``
  (split by seed) or a pair of them ``(train_dataset, test_dataset)``, materialized once into tensors;
* a **source string** ``KIND:PATH`` naming files on the local disk (nothing is ever downloaded):

  ==================  =========================================================================
  ``file:X.npz``      a NumPy ``.npz`` with ``x_train, y_train, x_test, y_test`` (or ``x, y``,
                      split by seed), read with ``np.load(allow_pickle=False)``
  ``folder:DIR``      images, one subfolder per class (``DIR/<class>/*.png``), optionally under
                      ``DIR/train/`` and ``DIR/test/``; else split by seed
  ``mnist:ROOT``      the IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``fashion_mnist:``  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (plain or ``.gz``)
  ``cifar10:ROOT``    the binary version: ``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin``
  ``cifar100:ROOT``   the binary version: ``train.bin``, ``test.bin`` (fine labels)
  ``svhn:ROOT``       ``train_32x32.mat``, ``test_32x32.mat`` (cropped digits; label 10 -> 0)
  ==================  =========================================================================

**Layout.** Images become ``float32`` tensors ``[N, C, H, W]`` with values in ``[0, 1]`` (8-bit pixels
/ 255; grayscale ``C = 1``, colour ``C = 3`` in RGB order). In-memory and ``.npz`` arrays keep their
layout (give images as ``[N, C, H, W]``; ``x.transpose(0, 3, 1, 2)`` converts ``[N, H, W, C]``); ``uint8``
arrays are divided by 255, other numbers become ``float32`` unscaled. Integer labels become ``int64``
class indices ``[N]`` (a classification task with ``max label + 1`` classes, or the format's class
count); floating labels become ``float32`` regression targets ``[N, D]``. ``flatten=True`` reshapes
inputs to ``[N, C*H*W]`` for MLPs.

**Split and subsampling.** Sources with a published split (MNIST, CIFAR, SVHN, ``train/``+``test/``
folders, four-array ``.npz``) keep it: ``train_index``/``test_index`` index the source's train and
test parts. Others are split by ``seed`` with ``test_fraction`` and both index the one sample order.
``limit_train``/``limit_test`` keep a seeded random subset (sorted, so the order stays canonical) for
CPU budgets.

**Fingerprint.** :func:`fingerprint` describes data by source, shapes, dtypes and the sha256 of every
array and of the split indices; a zoo records it, and :func:`rebuild` reloads a zoo's data (re-reading
a recorded source, or taking the user's in-memory data) and refuses data that differs
(:class:`DataMismatchError` naming what differs).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .data import DATASETS, Dataset, dataset_options, load_dataset, split_indices
from .store import ZooFormatError

log = logging.getLogger(__name__)

__all__ = [
    "load_data",
    "read_source",
    "parse_source",
    "from_arrays",
    "from_torch_dataset",
    "fingerprint",
    "check_fingerprint",
    "fingerprint_differences",
    "recorded_options",
    "rebuild",
    "read_idx",
    "SOURCES",
    "OPTIONS",
    "IN_MEMORY",
    "DataSourceError",
    "DataMismatchError",
]

#: options every kind of data takes (recorded in the dataset's description, so it can be rebuilt)
OPTIONS = ("test_fraction", "seed", "flatten", "limit_train", "limit_test")
#: the ``source`` recorded for data handed over in memory
IN_MEMORY = "in-memory"

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")
_CIFAR10_FILES = tuple(f"data_batch_{k}.bin" for k in range(1, 6)) + ("test_batch.bin",)
_CIFAR100_FILES = ("train.bin", "test.bin")
_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
_ORIGIN = {
    "mnist": "the MNIST database (http://yann.lecun.com/exdb/mnist/ or a mirror of its four .gz files)",
    "fashion_mnist": "Fashion-MNIST (https://github.com/zalandoresearch/fashion-mnist, folder data/fashion)",
    "cifar10": "the 'CIFAR-10 binary version' (cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
               "unpacked: cifar-10-batches-bin/)",
    "cifar100": "the 'CIFAR-100 binary version' (cifar-100-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
                "unpacked: cifar-100-binary/)",
    "svhn": "SVHN format 2, cropped digits (http://ufldl.stanford.edu/housenumbers/)",
}
#: source kinds and what their PATH names
SOURCES = {
    "file": "a .npz file with x_train, y_train, x_test, y_test (or x, y)",
    "folder": "a folder of images, one subfolder per class, optionally under train/ and test/",
    "mnist": "a folder with the MNIST IDX files " + ", ".join(_MNIST_FILES) + " (plain or .gz)",
    "fashion_mnist": "a folder with the Fashion-MNIST IDX files " + ", ".join(_MNIST_FILES) + " (plain or .gz)",
    "cifar10": "a folder with the CIFAR-10 binary files " + ", ".join(_CIFAR10_FILES),
    "cifar100": "a folder with the CIFAR-100 binary files " + ", ".join(_CIFAR100_FILES),
    "svhn": "a folder with the SVHN files " + ", ".join(_SVHN_FILES),
}
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MAX_BYTES = 1 << 36  # 64 GiB: a header declaring more is corrupt


class DataSourceError(ValueError):
    """A data source is missing, unreadable or malformed, or data is of a kind that cannot be used;
    the message names the file (or field) and what to do."""


class DataMismatchError(ZooFormatError):
    """Data differs from the fingerprint (or split) recorded with a zoo; the message names what differs."""


# ----------------------------------------------------------------------------------------- options
def _options(test_fraction: float = 0.2, seed: int = 0, flatten: bool = False, limit_train: int | None = None,
             limit_test: int | None = None) -> dict[str, Any]:
    """Checked, normalized :data:`OPTIONS`."""
    test_fraction = float(test_fraction)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    out: dict[str, Any] = {"test_fraction": test_fraction, "seed": int(seed), "flatten": bool(flatten)}
    for key, v in (("limit_train", limit_train), ("limit_test", limit_test)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"{key} must be a positive integer or None, got {v!r}")
        out[key] = None if v is None else int(v)
    return out


# ----------------------------------------------------------------------------------------- the one interface
def load_data(data: Any = "digits", /, **options: Any) -> Dataset:
    """Turn data from anywhere into a :class:`~model_zoo.data.Dataset` (layout: see the module docstring).

    Args:
        data: one of

            * an embedded dataset name (``"digits"``, ``"mnist1d"``, ``"synthetic"``) or a source
              string ``KIND:PATH`` (see :data:`SOURCES`);
            * a data config mapping ``{"name": <name or source>, **options}`` (``configs/data/*.yaml``);
            * ``(x_train, y_train, x_test, y_test)`` or ``(x, y)``: tensors or NumPy arrays;
            * a map-style :class:`torch.utils.data.Dataset` of ``(input, label)`` pairs, or a pair
              ``(train_dataset, test_dataset)``;
            * a :class:`~model_zoo.data.Dataset` (returned as is unless ``flatten``/limits are given).
        **options: ``test_fraction`` (0.2) and ``seed`` (0) of the seeded split where the data has none
            (``seed`` also draws the ``limit_*`` subsets), ``flatten`` (False), ``limit_train`` and
            ``limit_test`` (None: all samples); an embedded dataset also takes its generator options
            (``num_samples``, ... see :func:`model_zoo.load_dataset`).

    Returns:
        The dataset; its ``info`` records the source (``"in-memory"`` for Python objects) and the
        options, so that :func:`rebuild` can make it again.

    Raises:
        DataSourceError: a source file that is missing (naming the files expected and where they come
            from), unreadable or malformed; data of a kind that cannot be used.
        ValueError: invalid options; unknown dataset name or source kind.
        TypeError: ``data`` of an unsupported type.
    """
    if isinstance(data, Mapping):
        merged = {**data, **options}
        if "name" not in merged:
            raise ValueError(f"a data config needs 'name' (an embedded dataset or a source KIND:PATH), got keys "
                             f"{sorted(merged)}")
        return load_data(merged.pop("name"), **merged)
    if isinstance(data, (str, os.PathLike)):
        data = os.fspath(data)
        if data in DATASETS:
            return _embedded(data, options)
        return read_source(data, **options)
    if isinstance(data, Dataset):
        opts = _options(**{k: v for k, v in options.items() if k in OPTIONS})
        extra = sorted(set(options) - set(OPTIONS))
        if extra:
            raise ValueError(f"unknown data options {extra}; allowed: {list(OPTIONS)}")
        return _finish(data, opts, keep_flatten=not options.get("flatten"))
    if isinstance(data, (tuple, list)):
        items = list(data)
        if len(items) in (2, 4) and all(_is_array(a) for a in items):
            return from_arrays(*items, **options)
        if len(items) == 2 and all(_is_torch_dataset(a) for a in items):
            return from_torch_dataset(items[0], items[1], **options)
        raise TypeError(f"data as a sequence must be (x_train, y_train, x_test, y_test), (x, y) of tensors or arrays, "
                        f"or (train_dataset, test_dataset); got {len(items)} items of types "
                        f"{[type(a).__name__ for a in items][:4]}")
    if _is_torch_dataset(data):
        return from_torch_dataset(data, **options)
    raise TypeError(f"cannot use data of type {type(data).__name__}; pass an embedded dataset name {DATASETS}, a source "
                    f"KIND:PATH (KIND one of {sorted(SOURCES)}), (x_train, y_train, x_test, y_test) tensors or arrays, "
                    "or a map-style torch.utils.data.Dataset")


def _embedded(name: str, options: Mapping[str, Any]) -> Dataset:
    opts = _options(**{k: v for k, v in options.items() if k in OPTIONS})
    extra = {k: v for k, v in options.items() if k not in OPTIONS}
    ds = load_dataset(name, test_fraction=opts["test_fraction"], seed=opts["seed"], flatten=opts["flatten"], **extra)
    return _finish(ds, opts, keep_flatten=True)


def _is_array(a: Any) -> bool:
    return isinstance(a, (Tensor, np.ndarray))


def _is_torch_dataset(a: Any) -> bool:
    return isinstance(a, torch.utils.data.Dataset)


def parse_source(source: str) -> tuple[str, Path]:
    """``"cifar10:~/data/cifar"`` -> ``("cifar10", Path("/home/me/data/cifar"))`` (``~`` expanded).

    Raises:
        ValueError: not ``KIND:PATH`` with a known kind (the message lists them and the embedded names).
    """
    kind, sep, path = str(source).partition(":")
    if not sep or kind not in SOURCES or not path:
        raise ValueError(f"unknown dataset {source!r}: choose an embedded dataset {DATASETS} or a source KIND:PATH "
                         f"with KIND one of {sorted(SOURCES)} (e.g. 'file:data.npz', 'cifar10:~/data/cifar-10-batches-bin'); "
                         "from Python, pass tensors or a torch Dataset as data=")
    return kind, Path(path).expanduser()


def read_source(source: str, **options: Any) -> Dataset:
    """Read a source string ``KIND:PATH`` (see :data:`SOURCES`) from the local disk.

    Args:
        source: e.g. ``"file:data.npz"``, ``"folder:images"``, ``"mnist:~/data/mnist"``.
        **options: see :func:`load_data`.

    Returns:
        The dataset, named by the kind (``"mnist"``, ``"file"``, ...); ``info["source"]`` holds the
        source with an absolute path.

    Raises:
        DataSourceError: a missing file (naming every file expected in that root and where they come
            from), a corrupt file (naming it).
        ValueError: an unknown kind or invalid options.
    """
    kind, path = parse_source(source)
    opts = _options(**_only_options(options, source))
    path = path.resolve()
    reader = {"file": _read_npz, "folder": _read_folder, "mnist": _read_mnist, "fashion_mnist": _read_mnist,
              "cifar10": _read_cifar10, "cifar100": _read_cifar100, "svhn": _read_svhn}[kind]
    raw = reader(path, kind)
    return _assemble(kind, f"{kind}:{path}", raw, opts)


def _only_options(options: Mapping[str, Any], what: str) -> dict[str, Any]:
    extra = sorted(set(options) - set(OPTIONS))
    if extra:
        raise ValueError(f"unknown data options {extra} for {what!r}; allowed: {list(OPTIONS)}")
    return dict(options)


def from_arrays(*arrays: Tensor | np.ndarray, **options: Any) -> Dataset:
    """In-memory data: ``(x_train, y_train, x_test, y_test)``, or ``(x, y)`` split by ``seed``.

    Inputs keep their layout (images ``[N, C, H, W]``); ``uint8`` inputs are divided by 255. See the
    module docstring for labels, ``options`` in :func:`load_data`.

    Raises:
        DataSourceError: sample counts of inputs and labels differ, labels of an unusable dtype/shape.
    """
    opts = _options(**_only_options(options, "in-memory data"))
    if len(arrays) not in (2, 4):
        raise TypeError(f"from_arrays takes (x_train, y_train, x_test, y_test) or (x, y), got {len(arrays)} arrays")
    a = [t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t) for t in arrays]
    raw = _Raw(a[0], a[1], a[2] if len(a) == 4 else None, a[3] if len(a) == 4 else None, None,
               {"kind": "arrays"}, "in-memory data")
    return _assemble(IN_MEMORY, IN_MEMORY, raw, opts)


def from_torch_dataset(train: Any, test: Any = None, **options: Any) -> Dataset:
    """Materialize map-style :class:`torch.utils.data.Dataset` s of ``(input, label)`` pairs into tensors.

    Each item is read once (``dataset[i]`` for ``i < len(dataset)``). Inputs may be tensors, arrays,
    numbers or PIL images (read like image folders: ``[C, H, W]`` / 255); labels integers or tensors.
    Without ``test`` the samples are split by ``seed`` (see :func:`load_data` for ``options``).

    Raises:
        DataSourceError: an iterable-style dataset, items that are not pairs, inputs of different shapes.
    """
    opts = _options(**_only_options(options, "a torch Dataset"))
    xtr, ytr = _materialize(train, "train dataset" if test is not None else "dataset")
    xte, yte = _materialize(test, "test dataset") if test is not None else (None, None)
    info = {"kind": f"torch Dataset {type(train).__name__}"}
    return _assemble(IN_MEMORY, IN_MEMORY, _Raw(xtr, ytr, xte, yte, None, info, "the torch Dataset"), opts)


def _materialize(ds: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(ds, torch.utils.data.IterableDataset) or not hasattr(ds, "__len__"):
        raise DataSourceError(f"the {what} ({type(ds).__name__}) is not map-style (no __len__/__getitem__); "
                              "materialize it into tensors and pass (x_train, y_train, x_test, y_test)")
    n = len(ds)
    if n == 0:
        raise DataSourceError(f"the {what} ({type(ds).__name__}) is empty")
    xs, ys = [], []
    for i in range(n):
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            got = f"{len(item)} values" if isinstance(item, (tuple, list)) else f"a {type(item).__name__}"
            raise DataSourceError(f"the {what} ({type(ds).__name__}): item {i} is {got}, expected an (input, label) "
                                  "pair")
        x, y = item
        x = _pil_to_array(x) if hasattr(x, "getbands") else (x.detach().cpu().numpy() if isinstance(x, Tensor)
                                                             else np.asarray(x))
        if xs and x.shape != xs[0].shape:
            raise DataSourceError(f"the {what} ({type(ds).__name__}): item {i} has input shape {x.shape}, item 0 "
                                  f"{xs[0].shape}; every input needs the same shape")
        xs.append(x)
        ys.append(y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y))
    log.info("materialized %d samples of the %s (%s)", n, what, type(ds).__name__)
    return np.stack(xs), np.stack(ys)


def _pil_to_array(img: Any) -> np.ndarray:
    """A PIL image -> ``uint8 [C, H, W]`` (grayscale 1 channel, else RGB)."""
    gray = img.mode in ("1", "L", "LA")
    a = np.asarray(img.convert("L" if gray else "RGB"))
    return a[None] if gray else a.transpose(2, 0, 1)


# ----------------------------------------------------------------------------------------- assembly
@dataclass
class _Raw:
    """What a reader found: arrays in the source's own dtype, a train/test split or one sample set."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int | None
    info: dict
    where: str  # names the source in error messages


def _inputs(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return (x.astype(np.float32) / np.float32(255.0))
    if x.dtype.kind not in "biuf":
        raise DataSourceError(f"{where}: inputs of dtype {x.dtype} are not numbers")
    return x.astype(np.float32)


def _labels(y: np.ndarray, n: int, where: str, part: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1 and y.dtype.kind in "iu":
        y = y[:, 0]
    if len(y) != n:
        raise DataSourceError(f"{where}: {part} has {n} inputs but {len(y)} labels")
    if y.dtype.kind in "iu" and y.ndim == 1:
        if n and y.min() < 0:
            raise DataSourceError(f"{where}: {part} labels must be class indices >= 0, found {int(y.min())}")
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        return (y[:, None] if y.ndim == 1 else y.reshape(n, -1)).astype(np.float32)
    raise DataSourceError(f"{where}: {part} labels of dtype {y.dtype} and shape {list(y.shape)} are neither integer class "
                          "indices [N] nor float regression targets [N, D]")


def _subset(n: int, limit: int | None, seed: int, stream: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, stream]).choice(n, size=limit, replace=False))


def _assemble(name: str, source: str, raw: _Raw, opts: dict[str, Any]) -> Dataset:
    where = raw.where
    if len(raw.x_train) == 0:
        raise DataSourceError(f"{where}: holds no samples")
    if raw.x_test is None:
        y_all = _labels(raw.y_train, len(raw.x_train), where, "the data")
        tr, te = split_indices(len(raw.x_train), opts["test_fraction"], opts["seed"])
        if not len(tr) or not len(te):
            raise DataSourceError(f"{where}: a test_fraction of {opts['test_fraction']} of {len(raw.x_train)} samples "
                                  f"leaves {len(tr)} train and {len(te)} test samples; both need at least one")
        xtr, ytr, xte, yte = raw.x_train[tr], y_all[tr], raw.x_train[te], y_all[te]
        split = {"split": "seeded", "test_fraction": opts["test_fraction"]}
    else:
        xtr, xte = raw.x_train, raw.x_test
        ytr = _labels(raw.y_train, len(xtr), where, "the train part")
        yte = _labels(raw.y_test, len(xte), where, "the test part")
        if xtr.shape[1:] != xte.shape[1:]:
            raise DataSourceError(f"{where}: train inputs have shape {list(xtr.shape[1:])} per sample, test inputs "
                                  f"{list(xte.shape[1:])}")
        if ytr.dtype != yte.dtype or ytr.shape[1:] != yte.shape[1:]:
            raise DataSourceError(f"{where}: train and test labels differ in kind ({ytr.dtype} {list(ytr.shape[1:])} "
                                  f"vs {yte.dtype} {list(yte.shape[1:])})")
        if not len(xte):
            raise DataSourceError(f"{where}: the test part holds no samples")
        tr, te = np.arange(len(xtr)), np.arange(len(xte))
        split = {"split": "source"}
    if ytr.dtype == np.int64:
        top = int(max(ytr.max(initial=0), yte.max(initial=0))) + 1
        k = raw.num_classes if raw.num_classes is not None else top
        if top > k:
            raise DataSourceError(f"{where}: labels go up to {top - 1}, but the format has {k} classes")
        task = "classification"
    else:
        task, k = "regression", int(ytr.shape[1])
    str_, ste = _subset(len(tr), opts["limit_train"], opts["seed"], 1), _subset(len(te), opts["limit_test"],
                                                                               opts["seed"], 2)
    xtr, ytr, tr = _inputs(xtr[str_], where), ytr[str_], tr[str_]
    xte, yte, te = _inputs(xte[ste], where), yte[ste], te[ste]
    if opts["flatten"]:
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    info = {**raw.info, "source": source, **split, "split_seed": opts["seed"], "flatten": opts["flatten"],
            "limit_train": opts["limit_train"], "limit_test": opts["limit_test"],
            "layout": "float32 [N, C, H, W] in [0, 1] (uint8 / 255)" if raw.info.get("images") else
                      "float32 inputs as given (uint8 / 255)"}
    info.pop("images", None)
    return Dataset(name, torch.from_numpy(np.ascontiguousarray(xtr)), torch.from_numpy(np.ascontiguousarray(ytr)),
                   torch.from_numpy(np.ascontiguousarray(xte)), torch.from_numpy(np.ascontiguousarray(yte)),
                   task, k, tr.astype(np.int64), te.astype(np.int64), info)


def _finish(ds: Dataset, opts: dict[str, Any], keep_flatten: bool) -> Dataset:
    """Apply ``limit_*`` (and ``flatten`` unless the dataset did it) to a built dataset."""
    if opts["limit_train"] is None and opts["limit_test"] is None and (keep_flatten or not opts["flatten"]):
        return ds
    s_tr = torch.from_numpy(_subset(len(ds.train_index), opts["limit_train"], opts["seed"], 1))
    s_te = torch.from_numpy(_subset(len(ds.test_index), opts["limit_test"], opts["seed"], 2))
    xtr, xte = ds.x_train[s_tr], ds.x_test[s_te]
    if opts["flatten"] and not keep_flatten:
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    info = {**ds.info, "limit_train": opts["limit_train"], "limit_test": opts["limit_test"]}
    if not keep_flatten:
        info["flatten"] = bool(opts["flatten"] or ds.info.get("flatten", False))
    return Dataset(ds.name, xtr, ds.y_train[s_tr], xte, ds.y_test[s_te], ds.task, ds.num_outputs,
                   np.asarray(ds.train_index)[s_tr.numpy()], np.asarray(ds.test_index)[s_te.numpy()], info)


# ----------------------------------------------------------------------------------------- readers
def _missing(kind: str, root: Path, names: Sequence[str], missing: str, note: str = "") -> DataSourceError:
    return DataSourceError(
        f"{kind}:{root}: missing {missing}; this source reads {', '.join(names)}{note} from that folder (looked in "
        f"{root}{' and its subfolders raw/' if kind in ('mnist', 'fashion_mnist') else ''}) - {_ORIGIN[kind]}. "
        "Nothing is downloaded: put the files there or point the source at the folder holding them")


def _find(root: Path, candidates: Sequence[str], dirs: Sequence[Path]) -> Path | None:
    for d in dirs:
        for c in candidates:
            p = d / c
            if p.is_file():
                _check_inside(p, root)
                return p
    return None


def _check_inside(p: Path, root: Path) -> None:
    if not p.resolve().is_relative_to(root.resolve()):
        raise DataSourceError(f"{p}: a symbolic link leading outside {root}; data sources are read only inside "
                              "their folder (copy the file in)")


def _read_bytes(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of a plain or gzip file (so a corrupt header cannot make us read forever)."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            return f.read(limit)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataSourceError(f"{path}: cannot read ({e}); the file is truncated or corrupt") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or ``.gz``.

    The header is two zero bytes, a type byte (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C``
    int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions, then each dimension as a
    big-endian uint32; the values follow, big-endian, row-major.

    Returns:
        The array in native byte order.

    Raises:
        DataSourceError: a header that is not IDX or a size that disagrees with the header, naming the file.
    """
    path = Path(path)
    head = _read_bytes(path, 4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES or head[3] == 0:
        raise DataSourceError(f"{path}: not an IDX file (header bytes {head.hex() or 'none'}; expected 00 00, a type "
                              "byte 08/09/0b/0c/0d/0e and the number of dimensions); the file is corrupt or of "
                              "another format")
    ndim = head[3]
    dt = np.dtype(_IDX_TYPES[head[2]])
    hdr = 4 + 4 * ndim
    dims_raw = _read_bytes(path, hdr)[4:]
    if len(dims_raw) < 4 * ndim:
        raise DataSourceError(f"{path}: the IDX header declares {ndim} dimensions but the file ends inside the header")
    dims = struct.unpack(f">{ndim}I", dims_raw)
    need = math.prod(dims) * dt.itemsize
    if need > _MAX_BYTES:
        raise DataSourceError(f"{path}: the IDX header declares shape {list(dims)} ({need} bytes); the file is corrupt")
    raw = _read_bytes(path, hdr + need + 1)
    if len(raw) != hdr + need:
        raise DataSourceError(f"{path}: the IDX header declares shape {list(dims)} of {dt.str[1:]} ({need} bytes of "
                              f"data), the file holds {max(0, len(raw) - hdr)}{'+' if len(raw) > hdr + need else ''}; "
                              "the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=dt, offset=hdr).reshape(dims).astype(dt.newbyteorder("="))


def _read_mnist(root: Path, kind: str) -> _Raw:
    sub = "FashionMNIST" if kind == "fashion_mnist" else "MNIST"
    dirs = [root, root / "raw", root / sub / "raw"]
    found = []
    for stem in _MNIST_FILES:
        dotted = stem.replace("-idx", ".idx")
        p = _find(root, [stem, stem + ".gz", dotted, dotted + ".gz"], dirs)
        if p is None:
            raise _missing(kind, root, _MNIST_FILES, f"{stem} (or {stem}.gz)", " (plain or .gz)")
        found.append(p)
    arrays = [read_idx(p) for p in found]
    for (img, lab), (pi, pl) in zip((arrays[:2], arrays[2:]), (found[:2], found[2:])):
        if img.ndim != 3 or lab.ndim != 1:
            raise DataSourceError(f"{pi if img.ndim != 3 else pl}: expected images [N, H, W] and labels [N], got "
                                  f"{list(img.shape)} and {list(lab.shape)}")
        if len(img) != len(lab):
            raise DataSourceError(f"{pi}: {len(img)} images but {pl} holds {len(lab)} labels")
    info = {"images": True, "files": [p.name for p in found]}
    return _Raw(arrays[0][:, None], arrays[1], arrays[2][:, None], arrays[3], 10, info, f"{kind}:{root}")


def _cifar_rows(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    row = label_bytes + 3072
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DataSourceError(f"{path}: cannot read ({e})") from None
    if len(raw) == 0 or len(raw) % row:
        raise DataSourceError(f"{path}: {len(raw)} bytes is not a whole number of {row}-byte rows ({label_bytes} label "
                              f"byte{'s' if label_bytes > 1 else ''} + 3072 pixel bytes); the file is truncated or not "
                              "the binary version")
    raw = raw.reshape(-1, row)
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32), raw[:, label_bytes - 1].astype(np.int64)


def _class_names(d: Path, name: str, root: Path) -> list[str] | None:
    p = d / name
    if not p.is_file():
        return None
    _check_inside(p, root)
    names = [ln.strip() for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
    return names or None


def _read_cifar10(root: Path, kind: str) -> _Raw:
    d = next((c for c in (root, root / "cifar-10-batches-bin") if (c / "test_batch.bin").is_file()), root)
    parts = []
    for name in _CIFAR10_FILES:
        p = _find(root, [name], [d])
        if p is None:
            raise _missing(kind, root, _CIFAR10_FILES, name, " (or their folder cifar-10-batches-bin/)")
        parts.append(_cifar_rows(p, 1))
    bad = [(n, int(y.max())) for n, (_, y) in zip(_CIFAR10_FILES, parts) if y.max() > 9]
    if bad:
        raise DataSourceError(f"{d / bad[0][0]}: label {bad[0][1]} outside 0..9; is this CIFAR-100 (use cifar100:)?")
    x = np.concatenate([p[0] for p in parts[:5]])
    y = np.concatenate([p[1] for p in parts[:5]])
    info = {"images": True, "classes": _class_names(d, "batches.meta.txt", root)}
    return _Raw(x, y, parts[5][0], parts[5][1], 10, info, f"{kind}:{root}")


def _read_cifar100(root: Path, kind: str) -> _Raw:
    d = next((c for c in (root, root / "cifar-100-binary") if (c / "test.bin").is_file()), root)
    parts = []
    for name in _CIFAR100_FILES:
        p = _find(root, [name], [d])
        if p is None:
            raise _missing(kind, root, _CIFAR100_FILES, name, " (or their folder cifar-100-binary/)")
        parts.append(_cifar_rows(p, 2))  # coarse label byte, fine label byte, pixels: the fine label is kept
    info = {"images": True, "labels": "fine", "classes": _class_names(d, "fine_label_names.txt", root)}
    return _Raw(parts[0][0], parts[0][1], parts[1][0], parts[1][1], 100, info, f"{kind}:{root}")


def _read_svhn(root: Path, kind: str) -> _Raw:
    from scipy.io import loadmat

    out = []
    for name in _SVHN_FILES:
        p = _find(root, [name], [root])
        if p is None:
            raise _missing(kind, root, _SVHN_FILES, name)
        try:
            m = loadmat(p, variable_names=["X", "y"])
        except Exception as e:  # scipy raises ValueError, TypeError, OSError, ... on a corrupt file
            raise DataSourceError(f"{p}: cannot read as a MATLAB file ({type(e).__name__}: {e})") from None
        x, y = m.get("X"), m.get("y")
        if x is None or y is None:
            raise DataSourceError(f"{p}: expected variables X [32, 32, 3, N] and y [N, 1], found {sorted(m)}")
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
            raise DataSourceError(f"{p}: X must be uint8 [32, 32, 3, N], got {x.dtype} {list(x.shape)}")
        y = np.asarray(y).reshape(-1)
        if len(y) != x.shape[3] or y.dtype.kind not in "iuf" or not np.isin(y, np.arange(1, 11)).all():
            raise DataSourceError(f"{p}: y must hold {x.shape[3]} labels in 1..10 (10 is the digit 0), got "
                                  f"{len(y)} of dtype {y.dtype}")
        out.append((x.transpose(3, 2, 0, 1), (y.astype(np.int64) % 10)))
    return _Raw(out[0][0], out[0][1], out[1][0], out[1][1], 10, {"images": True, "labels": "10 -> 0"},
                f"{kind}:{root}")


def _read_npz(path: Path, kind: str) -> _Raw:
    if not path.is_file():
        raise DataSourceError(f"{kind}:{path}: no such file; expected a NumPy .npz with arrays x_train, y_train, "
                              "x_test, y_test (or x, y), e.g. written by np.savez(path, x_train=..., ...)")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            want = ("x_train", "y_train", "x_test", "y_test") if {"x_train", "x_test"} & keys else ("x", "y")
            missing = [k for k in want if k not in keys]
            if missing:
                raise DataSourceError(f"{path}: missing arrays {missing}; found {sorted(keys)}; a .npz source holds "
                                      "x_train, y_train, x_test, y_test (or x, y split by seed)")
            arrays = [z[k] for k in want]
    except DataSourceError:
        raise
    except (ValueError, OSError, EOFError) as e:  # object arrays refused by allow_pickle=False, corrupt zip
        raise DataSourceError(f"{path}: cannot read as a .npz of numeric arrays ({e})") from None
    for k, a in zip(want, arrays):
        if a.ndim == 0 or a.dtype.kind not in "biuf":
            raise DataSourceError(f"{path}: array {k!r} must be numeric with a sample axis, got {a.dtype} {list(a.shape)}")
    if len(arrays) == 4:
        return _Raw(*arrays, None, {"file": path.name}, str(path))
    return _Raw(arrays[0], arrays[1], None, None, None, {"file": path.name}, str(path))


def _image_files(d: Path, root: Path) -> list[Path]:
    files = []
    for f in sorted(d.iterdir()):
        if f.name.startswith(".") or f.suffix.lower() not in _IMAGE_SUFFIXES or not f.is_file():
            continue
        _check_inside(f, root)
        files.append(f)
    return files


def _class_dirs(d: Path, root: Path) -> dict[str, list[Path]]:
    out = {}
    for c in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
        _check_inside(c, root)
        files = _image_files(c, root)
        if not files:
            raise DataSourceError(f"{c}: a class folder without images ({', '.join(sorted(_IMAGE_SUFFIXES))})")
        out[c.name] = files
    return out


def _read_images(files: list[Path]) -> np.ndarray:
    """``uint8 [N, C, H, W]``: grayscale (``C = 1``) when every image is, else RGB; one size for all."""
    from PIL import Image, UnidentifiedImageError

    modes, size0 = set(), None
    for f in files:  # headers only: decide the mode and check sizes before decoding anything
        try:
            with Image.open(f) as im:
                modes.add(im.mode)
                if size0 is None:
                    size0 = (im.size, f)
                elif im.size != size0[0]:
                    raise DataSourceError(f"{f}: image size {im.size[0]}x{im.size[1]}, but {size0[1]} is "
                                          f"{size0[0][0]}x{size0[0][1]}; every image needs the same size (resize them)")
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as e:
            raise DataSourceError(f"{f}: cannot read as an image ({e})") from None
    gray = modes <= {"1", "L", "LA"}
    out = np.empty((len(files), 1 if gray else 3, size0[0][1], size0[0][0]), dtype=np.uint8)
    for k, f in enumerate(files):
        try:
            with Image.open(f) as im:
                out[k] = _pil_to_array(im.convert("L" if gray else "RGB"))
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as e:
            raise DataSourceError(f"{f}: cannot read as an image ({e})") from None
    return out


def _read_folder(root: Path, kind: str) -> _Raw:
    if not root.is_dir():
        raise DataSourceError(f"{kind}:{root}: no such folder; expected one subfolder of images per class "
                              "(ROOT/<class>/*.png), optionally under ROOT/train/ and ROOT/test/")
    tr_dir, te_dir = root / "train", root / "test"
    if tr_dir.is_dir() != te_dir.is_dir():
        have, lack = (tr_dir, te_dir) if tr_dir.is_dir() else (te_dir, tr_dir)
        raise DataSourceError(f"{root}: has {have.name}/ but no {lack.name}/; give both split folders (each with "
                              "one subfolder per class) or neither (then the images are split by seed)")
    split = tr_dir.is_dir()
    train = _class_dirs(tr_dir if split else root, root)
    if not train:
        raise DataSourceError(f"{tr_dir if split else root}: no class subfolders; expected <class>/*.png per class")
    classes = list(train)
    index = {c: k for k, c in enumerate(classes)}
    files = [f for c in classes for f in train[c]]
    labels = np.array([index[c] for c in classes for _ in train[c]], dtype=np.int64)
    info = {"images": True, "classes": classes}
    if not split:
        return _Raw(_read_images(files), labels, None, None, len(classes), info, f"{kind}:{root}")
    test = _class_dirs(te_dir, root)
    unknown = sorted(set(test) - set(index))
    if unknown or not test:
        raise DataSourceError(f"{te_dir}: " + (f"classes {unknown} have no folder in {tr_dir}" if unknown else
                                               "no class subfolders") + f"; train classes: {classes}")
    tfiles = [f for c in test for f in test[c]]
    tlabels = np.array([index[c] for c in test for _ in test[c]], dtype=np.int64)
    images = _read_images(files + tfiles)
    return _Raw(images[: len(files)], labels, images[len(files):], tlabels, len(classes), info, f"{kind}:{root}")


# ----------------------------------------------------------------------------------------- fingerprint
def _sha256(a: Tensor | np.ndarray) -> str:
    arr = np.ascontiguousarray(a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a))
    return hashlib.sha256(arr.reshape(-1).view(np.uint8)).hexdigest()


def fingerprint(ds: Dataset) -> dict[str, Any]:
    """What identifies a dataset: its source, and per array its shape, dtype and sha256 (of the bytes
    the models see), and the count and sha256 of the split indices (as int64).

    Returns:
        ``{"source", "x_train": {"shape", "dtype", "sha256"}, ..., "train_index": {"n", "sha256"}, ...}``
        (plain JSON types).
    """
    fp: dict[str, Any] = {"source": ds.name if ds.name in DATASETS else str(ds.info.get("source", ds.name))}
    for k in ("x_train", "y_train", "x_test", "y_test"):
        t = getattr(ds, k)
        fp[k] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "sha256": _sha256(t)}
    for k in ("train_index", "test_index"):
        idx = np.asarray(getattr(ds, k), dtype=np.int64)
        fp[k] = {"n": int(len(idx)), "sha256": _sha256(idx)}
    return fp


def fingerprint_differences(recorded: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """What differs between two fingerprints (the source is not compared: the same data may move)."""
    out = []
    for k in ("x_train", "y_train", "x_test", "y_test", "train_index", "test_index"):
        r, a = recorded.get(k), actual.get(k)
        if not isinstance(r, Mapping):
            continue
        for field in ("shape", "dtype", "n"):
            if field in r and r[field] != a.get(field):
                out.append(f"{k} {field} {a.get(field)} (recorded {r[field]})")
                break
        else:
            if r.get("sha256") != a.get("sha256"):
                out.append(f"{k} content (sha256 {str(a.get('sha256'))[:12]}..., recorded {str(r.get('sha256'))[:12]}...)")
    return out


def check_fingerprint(ds: Dataset, recorded: Mapping[str, Any], where: str) -> None:
    """Refuse ``ds`` unless it matches the ``recorded`` fingerprint.

    Raises:
        DataMismatchError: naming ``where``, every array that differs (shape, dtype or content) and the
            recorded source.
    """
    diff = fingerprint_differences(recorded, fingerprint(ds))
    if diff:
        raise DataMismatchError(f"{where}: the data differs from the fingerprint recorded with the zoo: {'; '.join(diff)}. "
                                f"The zoo was made with {recorded.get('source')!r}; pass that same data (same "
                                "files, options limit_train/limit_test/seed/flatten and preprocessing)")


# ----------------------------------------------------------------------------------------- rebuild
def recorded_options(desc: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`OPTIONS` recorded in a dataset description (``zoo.json`` field ``dataset``)."""
    out = {}
    if "test_fraction" in desc:
        out["test_fraction"] = float(desc["test_fraction"])
    if "split_seed" in desc:
        out["seed"] = int(desc["split_seed"])
    for k in ("flatten", "limit_train", "limit_test"):
        if desc.get(k) is not None:
            out[k] = desc[k]
    return out


def rebuild(desc: Mapping[str, Any], data: Any = None, *, where: str = "zoo.json") -> Dataset:
    """Make a zoo's data again from its description (``zoo.json`` field ``dataset``) and check it.

    Without ``data``: an embedded dataset is rebuilt from its options; a source (``file:``, ``mnist:``,
    ...) is read again from the recorded path. With ``data`` (anything :func:`load_data` takes: the
    tensors or torch Dataset the zoo was made with, or a source string when files moved), the recorded
    options (limits, seed, flatten) are applied to it. Either way the result must match the recorded
    split and fingerprint.

    Raises:
        DataSourceError: in-memory data, or data an importer did not record, and no ``data`` given
            (the message says how to pass it); a recorded source that cannot be read.
        DataMismatchError: the data differs from the recorded fingerprint or split.
    """
    fp = desc.get("fingerprint") if isinstance(desc.get("fingerprint"), Mapping) else None
    name, source = desc.get("name"), desc.get("source")
    opts = recorded_options(desc)
    if data is not None:
        ds = load_data(data, **opts)
    elif name in DATASETS and "split_seed" in desc:  # (an embedded dataset's "source" says how it is made)
        extra = {k: desc[k] for k in dataset_options(name) if k in desc}
        if name == "synthetic":
            extra.update(in_features=int(desc["input_shape"][0]), out_features=int(desc["num_outputs"]))
        ds = _embedded(name, {**opts, **extra})
    elif isinstance(source, str) and source.partition(":")[0] in SOURCES:
        ds = read_source(source, **opts)
    elif source == IN_MEMORY or (fp or {}).get("source") == IN_MEMORY:
        shapes = f" (x_train {fp['x_train']['shape']}, x_test {fp['x_test']['shape']})" if fp else ""
        raise DataSourceError(f"{where}: the zoo was trained on in-memory data{shapes}, which is not stored with it; "
                              "pass the same data: zoo.dataset(data=...) or zoo.attach_data(data)")
    else:
        raise DataSourceError(f"{where}: the zoo records dataset {name!r} but not its data (imported without data=, "
                              "or made before data was recorded); pass the data its runs were trained on: "
                              "zoo.dataset(data=...) or zoo.attach_data(data), e.g. data='mnist:ROOT', or import "
                              "again with data=...")
    for part in ("train_index", "test_index"):
        if isinstance(desc.get(part), list) and not np.array_equal(np.asarray(desc[part]), getattr(ds, part)):
            raise DataMismatchError(f"{where}: the rebuilt {ds.name} dataset has a different {part} than the one "
                                    "stored with the zoo")
    if fp is not None:
        check_fingerprint(ds, fp, where)
    else:
        shape = desc.get("input_shape")
        if isinstance(shape, list) and shape and list(ds.input_shape) != shape:
            raise DataMismatchError(f"{where}: the data has input shape {list(ds.input_shape)}, the zoo records "
                                    f"dataset.input_shape {shape}")
        if data is not None:
            log.warning("%s records no fingerprint of its data; the data passed cannot be checked beyond its input "
                        "shape", where)
    return ds
