"""Embedded datasets for zoo generation: scikit-learn digits, MNIST-1D (generated offline) and a
synthetic regression family. Nothing is downloaded at run time.

Every dataset has a fixed, seeded train/test split whose exact indices are recorded in the zoo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

__all__ = ["Dataset", "load_dataset", "split_indices", "DATASETS"]


@dataclass(frozen=True)
class Dataset:
    """A train/test split held in memory.

    Attributes:
        name: dataset name (``digits``, ``mnist1d``, ``synthetic``; a source kind such as ``cifar10`` or
            ``file``; ``in-memory`` for data handed over from Python, see :mod:`model_zoo.datasets`).
        x_train, x_test: inputs ``[n, *input_shape]`` (float32; images ``[n, C, H, W]`` in ``[0, 1]``).
        y_train, y_test: class indices ``[n]`` (int64) or regression targets ``[n, d]`` (float32).
        task: ``"classification"`` or ``"regression"``.
        num_outputs: classes or regression outputs.
        train_index, test_index: indices into the dataset's canonical sample order.
        info: extra description recorded in ``zoo.json`` (how the data was made: its ``source``, split
            seed and options), enough for :func:`model_zoo.datasets.rebuild` to make it again.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    task: str
    num_outputs: int
    train_index: np.ndarray
    test_index: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def describe(self) -> dict:
        """JSON-serializable description, split indices included."""
        return {
            "name": self.name,
            "task": self.task,
            "num_outputs": self.num_outputs,
            "input_shape": list(self.input_shape),
            "n_train": int(len(self.train_index)),
            "n_test": int(len(self.test_index)),
            "train_index": [int(i) for i in self.train_index],
            "test_index": [int(i) for i in self.test_index],
            **self.info,
        }


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/test split of ``n`` samples: ``(train_index, test_index)``, each sorted.

    Raises:
        ValueError: ``test_fraction`` outside (0, 1).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _digits(flatten: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)  # [n, 8, 8] in [0, 1]
    x = x.reshape(len(x), 64) if flatten else x[:, None]
    return x, d.target.astype(np.int64), {"source": "sklearn.datasets.load_digits", "scaling": "pixels/16"}


def _mnist1d(flatten: bool, num_samples: int = 5000, generator_seed: int = 42) -> tuple[np.ndarray, np.ndarray, dict]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the mnist1d dataset needs the `mnist1d` package (pip install mnist1d)") from e
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = generator_seed
    args.train_split = 1.0  # we split ourselves
    state = np.random.get_state()  # make_dataset reseeds numpy's global generator; restore it
    try:
        d = make_dataset(args)  # procedural generation, no download
    finally:
        np.random.set_state(state)
    x = d["x"].astype(np.float32)
    x = x if flatten else x[:, None]
    info = {"source": "mnist1d.data.make_dataset", "num_samples": num_samples, "generator_seed": generator_seed}
    return x, d["y"].astype(np.int64), info


def _synthetic(num_samples: int = 512, in_features: int = 8, out_features: int = 1, hidden: int = 16,
               generator_seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """A random teacher MLP (tanh) labels Gaussian inputs; a regression task for fast tests."""
    rng = np.random.default_rng(generator_seed)
    x = rng.standard_normal((num_samples, in_features)).astype(np.float32)
    w1 = rng.standard_normal((in_features, hidden)) / np.sqrt(in_features)
    w2 = rng.standard_normal((hidden, out_features)) / np.sqrt(hidden)
    y = (np.tanh(x @ w1) @ w2).astype(np.float32)
    info = {"source": "random teacher MLP", "num_samples": num_samples, "hidden": hidden,
            "generator_seed": generator_seed}
    return x, y, info


DATASETS = ("digits", "mnist1d", "synthetic")


def dataset_options(name: str) -> tuple[str, ...]:
    """The generator options that ``load_dataset(name, **options)`` takes besides ``flatten`` (they are
    recorded in the dataset's :meth:`Dataset.describe`, so a stored description can be rebuilt)."""
    import inspect

    gen = {"digits": _digits, "mnist1d": _mnist1d, "synthetic": _synthetic}.get(name)
    if gen is None:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    return tuple(k for k in inspect.signature(gen).parameters if k != "flatten")


def load_dataset(name: str = "digits", *, test_fraction: float = 0.2, seed: int = 0, flatten: bool = False,
                 limit_train: int | None = None, limit_test: int | None = None, **kwargs) -> Dataset:
    """Load an embedded dataset with a seeded train/test split, or read a source ``KIND:PATH`` from the
    local disk (``file:x.npz``, ``folder:DIR``, ``mnist:ROOT``, ``cifar10:ROOT``, ...; see
    :mod:`model_zoo.datasets`, whose :func:`~model_zoo.datasets.load_data` also takes in-memory data).

    Args:
        name: one of :data:`DATASETS`, or a source string ``KIND:PATH``.
        test_fraction: share of samples in the test split.
        seed: seed of the split permutation.
        flatten: inputs as vectors (MLPs) instead of ``[C, L]``/``[C, H, W]`` (CNNs).
        limit_train, limit_test: keep a seeded random subset of this many train/test samples (``None``: all).
        **kwargs: generator options (``num_samples``, ``generator_seed``, ... for mnist1d/synthetic).

    Raises:
        ValueError: unknown dataset name (the message lists the embedded names and the source kinds)
            or invalid ``test_fraction``.
        model_zoo.datasets.DataSourceError: a source whose files are missing or malformed.
    """
    if limit_train is not None or limit_test is not None:
        from .datasets import load_data

        full = load_dataset(name, test_fraction=test_fraction, seed=seed, flatten=flatten, **kwargs)
        return load_data(full, seed=seed, limit_train=limit_train, limit_test=limit_test)
    if name == "digits":
        if kwargs:
            raise ValueError(f"dataset 'digits' takes no options, got {sorted(kwargs)}")
        x, y, info = _digits(flatten)
        task, k = "classification", 10
    elif name == "mnist1d":
        x, y, info = _mnist1d(flatten, **kwargs)
        task, k = "classification", 10
    elif name == "synthetic":
        x, y, info = _synthetic(**kwargs)
        task, k = "regression", int(y.shape[1])
    else:
        from .datasets import read_source  # your own data from the local disk: KIND:PATH

        return read_source(name, test_fraction=test_fraction, seed=seed, flatten=flatten, **kwargs)
    tr, te = split_indices(len(x), test_fraction, seed)
    info = {**info, "test_fraction": test_fraction, "split_seed": seed, "flatten": flatten}
    return Dataset(name, torch.from_numpy(x[tr]), torch.from_numpy(y[tr]), torch.from_numpy(x[te]),
                   torch.from_numpy(y[te]), task, k, tr, te, info)
