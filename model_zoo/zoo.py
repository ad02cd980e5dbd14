"""Reading a zoo: :func:`load` returns a :class:`Zoo` with its metrics table, weights and models."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from weightspace.instantiate import UntrustedTargetError, check_config, instantiate

from .data import Dataset
from .datasets import rebuild
from .store import (
    METRIC_COLUMNS,
    ZooFormatError,
    read_csv_rows,
    read_json,
    run_key,
    safe_join,
    verify_manifest,
)

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

    def __init__(self, path: str | os.PathLike, *, verify: bool | str = "size", trust_code: bool = False) -> None:
        self.path = Path(path)
        self.trust_code = bool(trust_code)
        if verify not in (True, False, "size"):
            raise ValueError(f"verify must be True (hash every file), 'size' (the default) or False, got {verify!r}")
        if not self.path.is_dir():
            raise ZooFormatError(f"{self.path}: not a zoo folder ({'a file' if self.path.exists() else 'no such folder'}); "
                                 "a zoo is the folder holding zoo.json")
        zpath = self.path / "zoo.json"
        self.info: dict = read_json(zpath)
        if not isinstance(self.info, dict):
            raise ZooFormatError(f"{zpath}: the top level must be a JSON object, got {type(self.info).__name__}")
        if self.info.get("schema_version") != 1:
            raise ZooFormatError(f"{zpath}: unsupported schema_version {self.info.get('schema_version')!r}")
        _validate_info(self.info, zpath)
        self._file_of: dict[int, Path] = {}
        for k, c in enumerate(self.info["chunks"]):
            f = safe_join(self.path, c["file"], f"{zpath} (chunks[{k}].file)")
            for r in c["runs"]:
                self._file_of[int(r)] = f
        self._check_archs(zpath)
        if not (self.path / "metrics.csv").is_file():
            raise ZooFormatError(f"{self.path}: no metrics.csv - the zoo is incomplete; rerun the generating "
                                 "command to finish it")
        manifest = None
        if verify:
            chunk_files = sorted({c["file"] for c in self.info["chunks"]})
            manifest = verify_manifest(self.path, hashes=verify is True,
                                       required=["zoo.json", "metrics.csv", *chunk_files])
        rows = read_csv_rows(self.path / "metrics.csv", required=("run", "step"))
        try:
            self.metrics = MetricsTable.from_rows(rows)
        except ValueError as e:
            raise ZooFormatError(f"{self.path / 'metrics.csv'}: the run and step columns must hold integers ({e})") from None
        runs = self.metrics["run"]
        self._runs = np.unique(runs)
        n = int(self.info["size"])
        mpath = self.path / "metrics.csv"
        if len(self._runs) != n or (len(self._runs) and not np.array_equal(self._runs, np.arange(n))):
            raise ZooFormatError(f"{mpath}: holds rows of {len(self._runs)} runs, zoo.json records size {n} "
                                 "(runs 0..N-1 each need rows); the file is truncated or belongs to another zoo")
        if manifest is not None:
            for key, have in (("runs", n), ("rows", len(self.metrics))):
                if key in manifest and manifest[key] != have:
                    raise ZooFormatError(f"{self.path / 'manifest.json'}: records {manifest[key]} {key}, but "
                                         f"zoo.json and metrics.csv hold {have}")
        self._rows_of = {int(r): np.nonzero(runs == r)[0] for r in self._runs}
        if verify:
            self._check_shards()
        self._specs: dict[str, Any] = {}
        self._data: Dataset | None = None

    def _check_archs(self, zpath: Path) -> None:
        """Check every architecture's arguments against its class (allowlisted ones; others are
        refused when a model is built)."""
        for aid, a in self.info["archs"].items():
            try:
                check_config(a, trust_code=self.trust_code)
            except UntrustedTargetError:
                continue  # refused (naming zoo.json) only if a model is built: metrics stay readable
            except ValueError as e:
                raise ZooFormatError(f"{zpath}: archs[{aid!r}]: {e}") from None

    def _check_shards(self) -> None:
        """Every chunk file holds exactly the runs ``zoo.json`` assigns to it (safetensors headers only)."""
        for k, c in enumerate(self.info["chunks"]):
            f = self._file_of[int(c["runs"][0])] if c["runs"] else None
            if f is None:
                continue
            try:
                with safe_open(str(f), framework="pt") as h:
                    held = {key.split("/", 1)[0] for key in h.keys()}
            except (SafetensorError, OSError, ValueError) as e:
                raise ZooFormatError(f"{f}: cannot read the safetensors header ({e})") from None
            want = {run_key(int(r)) for r in c["runs"]}
            if held != want:
                raise ZooFormatError(f"{f}: holds checkpoints of {len(held)} runs, zoo.json (chunks[{k}]) assigns "
                                     f"{len(want)} runs to it" + (f" (missing {sorted(want - held)[:3]})" if want - held else ""))

    def _stored_shapes(self, aid: str) -> tuple[Path, int, dict[str, tuple[int, ...]]] | None:
        """``(file, run, {name: shape})`` of a stored run of architecture ``aid`` (header only)."""
        runs = [r for r, a in enumerate(self.info["run_arch"]) if a == aid]
        if not runs or runs[0] not in self._file_of:
            return None
        f, prefix = self._file_of[runs[0]], run_key(runs[0]) + "/"
        try:
            with safe_open(str(f), framework="pt") as h:
                return f, runs[0], {k[len(prefix):]: tuple(h.get_slice(k).get_shape()[1:])
                                    for k in h.keys() if k.startswith(prefix)}
        except (SafetensorError, OSError, ValueError) as e:
            raise ZooFormatError(f"{f}: cannot read the safetensors header ({e})") from None

    def _instantiate(self, aid: str) -> nn.Module:
        """Build architecture ``aid``: first on the meta device (no memory), checked against the
        shapes stored for its runs, so that a corrupted ``zoo.json`` can neither allocate a huge model
        nor build one that does not fit its weights."""
        zpath = self.path / "zoo.json"
        config = self.info["archs"][aid]
        try:
            try:
                with torch.device("meta"):
                    meta = instantiate(config, trust_code=self.trust_code)
            except (NotImplementedError, RuntimeError):
                meta = None  # a class that cannot be built on the meta device: built directly below
            stored = self._stored_shapes(aid) if isinstance(meta, nn.Module) else None
            if stored is not None:
                f, run, shapes = stored
                built = {n: tuple(t.shape) for n, t in meta.state_dict().items()}
                if built != shapes:
                    diff = sorted(set(built.items()) ^ set(shapes.items()))[:2]
                    raise ZooFormatError(f"{zpath}: archs[{aid!r}] builds tensors that differ from the weights of run "
                                         f"{run} in {f} (e.g. {diff}); zoo.json or the chunk file is corrupt")
            return instantiate(config, trust_code=self.trust_code)
        except UntrustedTargetError as e:
            raise UntrustedTargetError(f"{zpath}: archs[{aid!r}]: {e}; pass trust_code=True to model_zoo.load only "
                                       "if you trust whoever made this zoo") from None
        except ZooFormatError:
            raise
        except (ValueError, TypeError) as e:  # ArchConfigError, or the constructor refusing its arguments
            raise ZooFormatError(f"{zpath}: archs[{aid!r}]: {e}") from None

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
        zpath = self.path / "zoo.json"
        path = safe_join(self.path, self.info.get("split_file", "split.json"), f"{zpath} (split_file)")
        split = read_json(path)
        if not isinstance(split, dict):
            raise ZooFormatError(f"{path}: the top level must be a JSON object with train_index and test_index")
        for part in ("train_index", "test_index"):
            v = split.get(part)
            if v is not None and not (isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                                                  for i in v)):
                raise ZooFormatError(f"{path}: {part} must be a list of integers or null")
        return split

    def dataset(self, data: Any = None) -> Dataset:
        """The data the runs were trained and evaluated on (layout: see :mod:`model_zoo.datasets`).

        Without ``data``: the data attached before (:meth:`attach_data`), else an embedded dataset
        rebuilt from ``zoo.json`` (generator options, split seed, preprocessing), or a source
        (``file:``, ``folder:``, ``mnist:``, ``cifar10:``, ...) read again from the path recorded in
        ``zoo.json``. With ``data`` (the tensors or torch Dataset the zoo was made with, or a source
        string where the files moved): that data, with the zoo's recorded options (limits, seed,
        flatten) applied. Either way it must match the split and fingerprint recorded in ``zoo.json``;
        the result is kept, so later calls (``predict``, ``generate``) reuse it.

        Raises:
            DataSourceError: in-memory data, or an imported zoo without recorded data, and no ``data``
                given (the message says how to pass it); recorded files that cannot be read.
            DataMismatchError: (a :class:`ZooFormatError`) the data differs from the recorded split or
                fingerprint, naming what differs.
        """
        if data is None and self._data is not None:
            return self._data
        self._data = rebuild(self.info.get("dataset", {}), data, where=str(self.path / "zoo.json"))
        return self._data

    def attach_data(self, data: Any) -> Dataset:
        """Give the zoo its data (for zoos made from in-memory data, or imported without ``data=``), after
        checking it against the fingerprint in ``zoo.json``; :meth:`dataset` returns it from then on.

        Args:
            data: anything :func:`model_zoo.datasets.load_data` takes (tensors, torch Dataset, source, ...).

        Returns:
            The checked :class:`~model_zoo.data.Dataset`.

        Raises:
            DataMismatchError: the data differs from the recorded fingerprint (or, without one, from the
                recorded input shape), naming what differs.
        """
        return self.dataset(data)

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
        model = self._instantiate(self.info["run_arch"][self._check(i)])
        try:
            model.load_state_dict(self.state_dict(i, step))
        except RuntimeError as e:
            raise ZooFormatError(f"{self._file_of[i]}: the weights of run {i} do not fit its architecture in "
                                 f"zoo.json ({str(e).splitlines()[0]})") from None
        return model.eval()

    def example_input(self) -> Tensor:
        shape = self.info.get("dataset", {}).get("input_shape")
        if not shape:
            raise ZooFormatError(f"{self.path / 'zoo.json'}: dataset.input_shape is missing")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                                  for d in shape) or math.prod(shape) > 1 << 26:
            raise ZooFormatError(f"{self.path / 'zoo.json'}: field 'dataset.input_shape' must be a list of positive "
                                 f"integers (at most 2**26 values in all), got {shape!r:.80}")
        return torch.zeros(1, *shape)

    def graph_spec(self, i: int) -> Any:
        """The run's :class:`weightspace.GraphSpec`, traced once per architecture."""
        import weightspace as ws

        aid = self.info["run_arch"][self._check(i)]
        if aid not in self._specs:
            model = self._instantiate(aid)
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


def _validate_info(info: dict, zpath: Path) -> None:
    """Check the structure of ``zoo.json`` (types, lengths, cross references).

    Raises:
        ZooFormatError: naming ``zoo.json`` and the field.
    """
    def bad(field: str, msg: str) -> ZooFormatError:
        return ZooFormatError(f"{zpath}: field {field!r} {msg}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    size = info.get("size")
    if not is_int(size) or size < 0:
        raise bad("size", f"must be a non-negative integer, got {size!r}")
    archs = info.get("archs")
    if not isinstance(archs, dict) or not archs and size:
        raise bad("archs", f"must be an object mapping ids to '_target_' configs, got {type(archs).__name__}")
    for aid, a in archs.items():
        if not isinstance(a, dict) or not isinstance(a.get("_target_"), str):
            raise bad(f"archs.{aid}", f"must be an object with a string '_target_', got {a!r:.80}")
    run_arch = info.get("run_arch")
    if not isinstance(run_arch, list) or len(run_arch) != size:
        n = len(run_arch) if isinstance(run_arch, list) else type(run_arch).__name__
        raise bad("run_arch", f"must list the architecture id of each of the {size} runs, got {n}")
    unknown = [a for a in run_arch if not isinstance(a, str) or a not in archs]
    if unknown:
        raise bad("run_arch", f"names architectures not in 'archs': {unknown[:3]}")
    chunks = info.get("chunks")
    if not isinstance(chunks, list):
        raise bad("chunks", f"must be a list of {{'id', 'file', 'runs'}}, got {type(chunks).__name__}")
    seen: set[int] = set()
    for k, c in enumerate(chunks):
        if not isinstance(c, dict) or not isinstance(c.get("file"), str) or not isinstance(c.get("runs"), list):
            raise bad(f"chunks[{k}]", f"must be an object with a string 'file' and a list 'runs', got {c!r:.80}")
        runs = c["runs"]
        if not all(is_int(r) and 0 <= r < size for r in runs):
            raise bad(f"chunks[{k}].runs", f"must hold run numbers in 0..{size - 1}")
        dup = seen.intersection(runs)
        if dup or len(set(runs)) != len(runs):
            raise bad(f"chunks[{k}].runs", f"repeats runs {sorted(dup)[:3] or runs[:3]} stored in another chunk")
        seen.update(runs)
    if len(seen) != size:
        raise bad("chunks", f"cover {len(seen)} runs, but the zoo has size {size}")
    if "split_file" in info and not isinstance(info["split_file"], str):
        raise bad("split_file", f"must be a relative path, got {info['split_file']!r}")
    if not isinstance(info.get("dataset", {}), dict):
        raise bad("dataset", "must be an object")


def load(path: str | os.PathLike, *, verify: bool | str = "size", trust_code: bool = False) -> Zoo:
    """Open a zoo folder (generated or imported) and check it.

    Args:
        path: the folder holding ``zoo.json``.
        verify: ``"size"`` (default): every file listed in ``manifest.json`` exists with its recorded
            size, and every chunk file holds exactly its runs (safetensors headers); ``True``: also
            compare the sha256 of every file (reads the whole zoo); ``False``: skip these checks.
            The structure of ``zoo.json`` and the run counts of ``zoo.json`` and ``metrics.csv`` are
            checked always.
        trust_code: allow architecture ``_target_`` s outside the allowlist when building models
            (runs code named by the file: only for zoos from people you trust).

    Raises:
        ZooFormatError: missing/corrupt/malformed ``zoo.json``, ``metrics.csv`` or ``manifest.json``,
            a file that does not match the manifest, counts that disagree, a path leaving the
            folder, an incomplete zoo - naming the file (and the field).
    """
    return Zoo(path, verify=verify, trust_code=trust_code)


