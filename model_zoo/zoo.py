"""Reading a zoo: :func:`load` returns a :class:`Zoo` with its metrics table, weights and models."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from .archs import instantiate
from .data import DATASETS, Dataset, dataset_options, load_dataset
from .store import METRIC_COLUMNS, ZooFormatError, read_csv_rows, read_json, run_key

log = logging.getLogger(__name__)

__all__ = ["Zoo", "MetricsTable", "load"]


def _parse_column(name: str, values: list[str]) -> np.ndarray:
    if name in ("run", "step"):
        return np.array([int(v) for v in values], dtype=np.int64)
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.array([float(v) if v != "" else np.nan for v in values], dtype=np.float64)
    except ValueError:
        return np.array(values, dtype=object)


class MetricsTable:
    """A column table, one row per run × checkpoint (``run``, ``step``, ``epoch``, accuracies, losses,
    ``config.*`` hyperparameters). ``table["test_accuracy"]`` is a NumPy array; ``table.row(k)`` a dict.
    """

    def __init__(self, columns: Mapping[str, np.ndarray]) -> None:
        self.columns = list(columns)
        self._data = dict(columns)
        lens = {len(v) for v in self._data.values()}
        self._n = lens.pop() if lens else 0

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, str]]) -> MetricsTable:
        cols = list(rows[0]) if rows else list(METRIC_COLUMNS)
        return cls({c: _parse_column(c, [r[c] for r in rows]) for c in cols})

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, column: str) -> np.ndarray:
        try:
            return self._data[column]
        except KeyError:
            raise KeyError(f"no metrics column {column!r}; columns: {self.columns}") from None

    def __contains__(self, column: object) -> bool:
        return column in self._data

    def row(self, k: int) -> dict[str, Any]:
        return {c: (v[k].item() if isinstance(v[k], np.generic) else v[k]) for c, v in self._data.items()}

    def rows(self) -> Iterator[dict[str, Any]]:
        return (self.row(k) for k in range(self._n))

    def select(self, mask: np.ndarray) -> MetricsTable:
        return MetricsTable({c: v[mask] for c, v in self._data.items()})

    def to_pandas(self) -> Any:
        import pandas as pd  # optional

        return pd.DataFrame(self._data)

    def __repr__(self) -> str:
        return f"MetricsTable(rows={self._n}, columns={self.columns})"


class Zoo:
    """A stored zoo (see :mod:`model_zoo.store`). Index ``i`` is the run number ``0 .. len-1``.

    Example::

        zoo = model_zoo.load("zoos/digits_cnn")
        acc = zoo.final_metrics()["test_accuracy"]
        model = zoo.build_model(3)                # final weights
        sd = zoo.state_dict(3, step=0)            # initialization
        ds = zoo.graph_dataset(target="test_accuracy", split="train")
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ZooFormatError(f"{self.path}: not a zoo folder ({'a file' if self.path.exists() else 'no such folder'}); "
                                 "a zoo is the folder holding zoo.json")
        self.info: dict = read_json(self.path / "zoo.json")
        if self.info.get("schema_version") != 1:
            raise ZooFormatError(f"{self.path / 'zoo.json'}: unsupported schema_version {self.info.get('schema_version')!r}")
        if not (self.path / "metrics.csv").is_file():
            raise ZooFormatError(f"{self.path}: no metrics.csv - the zoo is incomplete; rerun the generating "
                                 "command to finish it")
        rows = read_csv_rows(self.path / "metrics.csv", required=("run", "step"))
        self.metrics = MetricsTable.from_rows(rows)
        runs = self.metrics["run"]
        self._runs = np.unique(runs)
        if len(self._runs) and not np.array_equal(self._runs, np.arange(len(self._runs))):
            raise ZooFormatError(f"{self.path / 'metrics.csv'}: run numbers are not 0..N-1")
        self._rows_of = {int(r): np.nonzero(runs == r)[0] for r in self._runs}
        self._file_of: dict[int, Path] = {}
        for c in self.info["chunks"]:
            for r in c["runs"]:
                self._file_of[int(r)] = self.path / c["file"]
        missing = [int(r) for r in self._runs if int(r) not in self._file_of]
        if missing:
            raise ZooFormatError(f"{self.path / 'zoo.json'}: runs {missing[:5]} are in metrics.csv but in no chunk")
        self._specs: dict[str, Any] = {}

    # ------------------------------------------------------------------ table access
    def __len__(self) -> int:
        return len(self._runs)

    def __repr__(self) -> str:
        return f"Zoo({str(self.path)!r}, runs={len(self)}, rows={len(self.metrics)}, name={self.info.get('name')!r})"

    def _check(self, i: int) -> int:
        if not 0 <= int(i) < len(self):
            raise IndexError(f"run {i} out of range for a zoo of {len(self)} runs")
        return int(i)

    def rows(self, i: int) -> MetricsTable:
        """The metrics rows of run ``i`` (sorted by step)."""
        idx = self._rows_of[self._check(i)]
        idx = idx[np.argsort(self.metrics["step"][idx], kind="stable")]
        return self.metrics.select(idx)

    def steps(self, i: int) -> list[int]:
        return [int(s) for s in self.rows(i)["step"]]

    def hparams(self, i: int) -> dict[str, Any]:
        """The run's ``config.*`` values (prefix removed)."""
        r = self.rows(i).row(0)
        return {k[7:]: v for k, v in r.items() if k.startswith("config.")}

    def final_metrics(self) -> MetricsTable:
        """One row per run: its last checkpoint."""
        last = [self._rows_of[int(r)][np.argmax(self.metrics["step"][self._rows_of[int(r)]])] for r in self._runs]
        return self.metrics.select(np.array(last, dtype=np.int64))

    @cached_property
    def split(self) -> dict[str, list[int]]:
        """The dataset's exact train/test sample indices (``split.json``)."""
        return read_json(self.path / self.info.get("split_file", "split.json"))

    def dataset(self) -> Dataset:
        """The embedded dataset the runs were trained and evaluated on, rebuilt from ``zoo.json``
        (generator options, split seed, preprocessing) and checked against the stored split.

        Raises:
            ZooFormatError: the zoo's data is not one of the embedded datasets (imported zoos), or the
                rebuilt train/test split differs from the one recorded in ``zoo.json``.
        """
        d = self.info.get("dataset", {})
        name = d.get("name")
        if name not in DATASETS or "split_seed" not in d:
            raise ZooFormatError(f"{self.path / 'zoo.json'}: dataset {name!r} is not an embedded dataset "
                                 f"that can be rebuilt (choose one of {DATASETS})")
        options = {k: d[k] for k in dataset_options(name) if k in d}
        if name == "synthetic":
            options.update(in_features=int(d["input_shape"][0]), out_features=int(d["num_outputs"]))
        ds = load_dataset(name, test_fraction=float(d["test_fraction"]), seed=int(d["split_seed"]),
                          flatten=bool(d.get("flatten", False)), **options)
        for part in ("train_index", "test_index"):
            if part in d and not np.array_equal(np.asarray(d[part]), getattr(ds, part)):
                raise ZooFormatError(f"{self.path / 'zoo.json'}: the rebuilt {name} dataset has a different "
                                     f"{part} than the one stored with the zoo")
        return ds

    # ------------------------------------------------------------------ weights and models
    def arch_config(self, i: int) -> dict:
        """The run's architecture as a ``_target_`` dict."""
        return dict(self.info["archs"][self.info["run_arch"][self._check(i)]])

    def trajectory(self, i: int) -> dict[str, Tensor]:
        """All stored checkpoints of run ``i``: ``{name: [T, *shape]}`` ordered like :meth:`steps`."""
        i = self._check(i)
        f = self._file_of[i]
        prefix = run_key(i) + "/"
        try:
            with safe_open(str(f), framework="pt") as h:
                out = {k[len(prefix):]: h.get_tensor(k) for k in h.keys() if k.startswith(prefix)}
        except (SafetensorError, OSError) as e:
            raise ZooFormatError(f"{f}: cannot read checkpoints of run {i} ({e})") from None
        if not out:
            raise ZooFormatError(f"{f}: holds no tensors for run {i}")
        T = len(self._rows_of[i])
        bad = [k for k, t in out.items() if t.shape[0] != T]
        if bad:
            raise ZooFormatError(f"{f}: run {i} has {T} metrics rows but tensor {bad[0]!r} holds "
                                 f"{out[bad[0]].shape[0]} checkpoints")
        return out

    def state_dict(self, i: int, step: int | None = None) -> dict[str, Tensor]:
        """Weights of run ``i`` at ``step`` (``None``: the final checkpoint)."""
        steps = self.steps(i)
        if step is None:
            k = len(steps) - 1
        elif int(step) in steps:
            k = steps.index(int(step))
        else:
            raise KeyError(f"run {i} has no checkpoint at step {step}; stored steps: {steps}")
        return {n: t[k].clone() for n, t in self.trajectory(i).items()}

    def build_model(self, i: int, step: int | None = None) -> nn.Module:
        """The run's ``nn.Module`` with its weights (final by default), in eval mode."""
        model = instantiate(self.arch_config(i))
        model.load_state_dict(self.state_dict(i, step))
        return model.eval()

    def example_input(self) -> Tensor:
        shape = self.info.get("dataset", {}).get("input_shape")
        if not shape:
            raise ZooFormatError(f"{self.path / 'zoo.json'}: dataset.input_shape is missing")
        return torch.zeros(1, *shape)

    def graph_spec(self, i: int) -> Any:
        """The run's :class:`weightspace.GraphSpec`, traced once per architecture."""
        import weightspace as ws

        aid = self.info["run_arch"][self._check(i)]
        if aid not in self._specs:
            model = instantiate(self.info["archs"][aid])
            try:
                self._specs[aid] = ws.GraphSpec.from_module(model)
            except ws.UnsupportedModuleError:
                self._specs[aid] = ws.GraphSpec.from_module(model, example_input=(self.example_input(),))
        return self._specs[aid]

    def graph(self, i: int, step: int | None = None, *, allow_nonfinite: bool = False) -> Any:
        """The :class:`weightspace.ParameterGraph` of run ``i`` at ``step`` (final by default)."""
        return self.graph_spec(i).to_graph(self.state_dict(i, step), allow_nonfinite=allow_nonfinite)

    def split_runs(self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> dict[str, list[int]]:
        """Split the runs (never checkpoints) into train/val/test by a seeded permutation."""
        from .dataset import split_runs

        return split_runs(len(self), fractions, seed)

    def graph_dataset(self, target: str = "test_accuracy", split: str | None = None, **kwargs: Any) -> Any:
        """A PyG dataset of parameter graphs (see :class:`model_zoo.dataset.ZooGraphDataset`)."""
        from .dataset import ZooGraphDataset

        return ZooGraphDataset(self, target=target, split=split, **kwargs)

    def describe(self) -> dict[str, Any]:
        fm = self.final_metrics()
        acc = fm["test_accuracy"] if "test_accuracy" in fm else np.array([])
        return {"name": self.info.get("name"), "runs": len(self), "rows": len(self.metrics),
                "archs": len(self.info["archs"]),
                "final_test_accuracy": {"mean": float(np.nanmean(acc)) if np.isfinite(acc).any() else None,
                                        "nonfinite": int((~np.isfinite(acc)).sum())}}


def load(path: str | os.PathLike) -> Zoo:
    """Open a zoo folder (generated or imported).

    Raises:
        ZooFormatError: missing/corrupt ``zoo.json`` or ``metrics.csv``, or an incomplete zoo.
    """
    return Zoo(path)


