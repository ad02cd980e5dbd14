"""Importers for zoos published by others, into the store format of :mod:`model_zoo.store`.

* :func:`import_small_cnn_zoo` reads the Small CNN Zoo layout (Unterthiner et al. 2020):
  ``weights.npy`` (N×P, TensorFlow order), ``layout.csv`` (``varname,start_idx,end_idx,shape``) and
  ``metrics.csv[.gz]`` (``config.*``, ``modeldir``, ``step``, ``test_accuracy``, ...).
* :func:`import_state_dicts` reads a folder of PyTorch state dicts listed in a metrics CSV.

Both validate everything (shapes, columns, finite weights, readable files) and write into a
temporary folder that is moved into place at the end, so an error leaves nothing half-imported.
Both take the data the runs were trained on (``data=``: a source such as ``"mnist:ROOT"``, tensors, a
torch Dataset; see :mod:`model_zoo.datasets`): the zoo then records its description, split and
fingerprint, so it can be re-evaluated (``zoo.dataset()``), used by ``predict`` and learned by
``generate`` like a generated zoo. Without it, ``zoo.attach_data(data)`` gives it the data later.
Errors are :class:`~model_zoo.store.ZooFormatError` naming the file and the row.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .archs import instantiate
from .data import Dataset
from .datasets import fingerprint, load_data
from .store import (
    METRIC_COLUMNS,
    SCHEMA_VERSION,
    ZooFormatError,
    finalize,
    read_csv_rows,
    run_key,
    safe_join,
    write_chunk,
    write_json,
)

log = logging.getLogger(__name__)

__all__ = ["import_small_cnn_zoo", "import_state_dicts", "tf_to_torch"]

ArchSpec = Mapping[str, Any] | Callable[[dict], Mapping[str, Any]]


def tf_to_torch(array: np.ndarray | Tensor) -> Tensor:
    """TensorFlow layout -> PyTorch: conv kernels HWIO -> OIHW, 1-D kernels WIO -> OIW, dense (in, out) -> (out, in)."""
    t = torch.as_tensor(np.ascontiguousarray(array))
    if t.dim() == 4:
        return t.permute(3, 2, 0, 1).contiguous()
    if t.dim() == 3:
        return t.permute(2, 1, 0).contiguous()
    if t.dim() == 2:
        return t.t().contiguous()
    return t


def _parse_shape(text: str) -> tuple[int, ...]:
    v = ast.literal_eval(text.strip()) if text.strip() else ()
    if isinstance(v, int):
        v = (v,)
    if not isinstance(v, (tuple, list)) or not all(isinstance(d, int) and d >= 0 for d in v):
        raise ValueError(f"not a shape: {text!r}")
    return tuple(v)


class _Writer:
    """Collects runs, writes chunks into a temporary folder, and moves it to ``dst`` on success."""

    def __init__(self, dst: Path, source: str, chunk_size: int) -> None:
        if dst.exists():
            raise FileExistsError(f"{dst} already exists; importers never overwrite a folder")
        dst.parent.mkdir(parents=True, exist_ok=True)
        self.dst = dst
        self.tmp = dst.parent / f".{dst.name}.importing-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        (self.tmp / "chunks").mkdir(parents=True)
        self.source, self.chunk_size = source, chunk_size
        self.archs: dict[str, dict] = {}
        self.run_arch: list[str] = []
        self.chunks: list[dict] = []
        self._tensors: dict[str, Tensor] = {}
        self._rows: list[dict] = []
        self._runs: list[int] = []

    def arch_id(self, arch: Mapping[str, Any]) -> str:
        key = json.dumps(dict(arch), sort_keys=True)
        for aid, a in self.archs.items():
            if json.dumps(a, sort_keys=True) == key:
                return aid
        aid = f"a{len(self.archs):04d}"
        self.archs[aid] = json.loads(key)
        return aid

    def add_run(self, aid: str, state: Mapping[str, Tensor], rows: list[dict]) -> None:
        run = len(self.run_arch)
        self.run_arch.append(aid)
        for n, t in state.items():
            self._tensors[f"{run_key(run)}/{n}"] = t
        for r in rows:
            full = {c: "" for c in METRIC_COLUMNS}  # absent metrics stay empty (read as NaN)
            full.update(r)
            self._rows.append({**full, "run": run, "config.arch_id": aid})
        self._runs.append(run)
        if len(self._runs) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        if not self._runs:
            return
        cid = len(self.chunks)
        write_chunk(self.tmp, cid, self._tensors, self._rows)
        self.chunks.append({"id": cid, "file": f"chunks/chunk-{cid:05d}.safetensors", "runs": self._runs})
        self._tensors, self._rows, self._runs = {}, [], []

    def commit(self, dataset: dict, extra: dict) -> Path:
        self.flush()
        if "train_index" in dataset:
            write_json(self.tmp / "split.json", {"train_index": dataset["train_index"],
                                                 "test_index": dataset["test_index"]})
        else:
            write_json(self.tmp / "split.json", {"train_index": None, "test_index": None,
                                                 "note": "the source zoo does not publish its data split"})
        write_json(self.tmp / "zoo.json", {
            "schema_version": SCHEMA_VERSION, "format": "weightspace-zoo", "name": self.dst.name,
            "size": len(self.run_arch), "dataset": dataset, "split_file": "split.json",
            "generator": {"imported_from": self.source, **extra}, "archs": self.archs,
            "run_arch": self.run_arch, "chunks": self.chunks,
            "software": {"torch": torch.__version__}})
        if not finalize(self.tmp):  # pragma: no cover - every chunk was just written
            raise RuntimeError("import incomplete")
        os.replace(self.tmp, self.dst)
        return self.dst

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _arch_for(arch: ArchSpec, row: dict, where: str) -> dict:
    a = arch(row) if callable(arch) else arch
    if not isinstance(a, Mapping) or "_target_" not in a:
        raise ZooFormatError(f"{where}: the arch callable returned {a!r}, not a '_target_' dict")
    return dict(a)


def _import_data(data: Any, input_shape: Sequence[int] | None, name: str) -> tuple[Dataset | None, dict]:
    """The data an imported zoo was trained on and the ``zoo.json`` description of it."""
    if data is None:
        return None, {"name": name, "input_shape": list(input_shape) if input_shape else None}
    ds = load_data(data)
    if input_shape is not None and list(input_shape) != list(ds.input_shape):
        raise ValueError(f"input_shape={list(input_shape)} but the data has inputs of shape {list(ds.input_shape)}; "
                         "leave input_shape out (the data's is used) or fix one of them")
    return ds, {**ds.describe(), "fingerprint": fingerprint(ds)}


def _check_fits(model: torch.nn.Module, ds: Dataset | None, arch: Mapping[str, Any]) -> None:
    """The data's inputs run through the architecture and give one output per class (two samples)."""
    if ds is None:
        return
    try:
        with torch.no_grad():
            out = model(ds.x_train[:2])
    except Exception as e:  # shape errors from any layer
        raise ValueError(f"the data (inputs {list(ds.input_shape)}) does not fit the architecture {arch['_target_']}: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if out.dim() != 2 or out.shape[1] != ds.num_outputs:
        raise ValueError(f"the architecture {arch['_target_']} gives outputs of shape {list(out.shape[1:])}, the data "
                         f"has {ds.num_outputs} {'classes' if ds.task == 'classification' else 'targets'}")


def _numeric(row: dict, col: str, where: str) -> float:
    try:
        return float(row[col])
    except (TypeError, ValueError):
        raise ZooFormatError(f"{where}: column {col!r} holds {row[col]!r}, not a number") from None


def import_small_cnn_zoo(src_dir: str | os.PathLike, dst_dir: str | os.PathLike, arch: ArchSpec, *,
                         data: Any = None, input_shape: Sequence[int] | None = None, chunk_size: int = 1000,
                         trust_code: bool = False) -> Any:
    """Import a zoo in the Small CNN Zoo layout.

    Layout rows map, in order, onto the parameters of the module built from ``arch`` (its
    ``named_parameters()`` order); kernels are converted from TensorFlow order (HWIO -> OIHW,
    dense ``(in, out)`` -> ``(out, in)``). Metrics rows map one to one onto weight rows; runs are
    grouped by ``modeldir`` (each row is its own run without that column).

    Args:
        src_dir: folder with ``weights.npy``, ``layout.csv`` and ``metrics.csv`` or ``metrics.csv.gz``.
        dst_dir: new zoo folder (must not exist).
        arch: a ``_target_`` dict, or a callable taking a metrics row (dict of strings) and returning
            one (the Small CNN Zoo varies the activation per run).
        data: the data the runs were trained on (e.g. ``"mnist:ROOT"``, ``"svhn:ROOT"``, tensors; anything
            :func:`model_zoo.datasets.load_data` takes), recorded with its fingerprint so that the zoo
            can be re-evaluated; checked to fit the architecture. ``None``: attach it later.
        input_shape: model input shape without batch (recorded for graph tracing), e.g. ``[1, 28, 28]``;
            taken from ``data`` when given.
        chunk_size: runs per safetensors shard.
        trust_code: allow an architecture ``_target_`` outside the allowlist (see ``docs/trust-model.md``).

    Returns:
        The imported :class:`~model_zoo.zoo.Zoo` (with ``data`` attached).

    Raises:
        ZooFormatError: missing or truncated files, missing columns, shape mismatches, NaN weights,
            row counts that disagree - naming the file and row.
        FileExistsError: ``dst_dir`` exists.
        ValueError: ``data`` that does not fit the architecture or ``input_shape``.
        DataSourceError: a data source whose files are missing or malformed.
    """

    src, dst = Path(src_dir), Path(dst_dir)
    wpath, lpath = src / "weights.npy", src / "layout.csv"
    mpath = src / "metrics.csv" if (src / "metrics.csv").is_file() else src / "metrics.csv.gz"
    try:
        weights = np.load(wpath, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise ZooFormatError(f"{wpath}: file not found") from None
    except (ValueError, OSError, EOFError) as e:
        raise ZooFormatError(f"{wpath}: cannot read ({e}); the file is truncated or not a .npy array") from None
    if weights.ndim != 2:
        raise ZooFormatError(f"{wpath}: expected a 2-D array (models x parameters), got shape {weights.shape}")
    layout = read_csv_rows(lpath, required=("varname", "start_idx", "end_idx", "shape"))
    rows = read_csv_rows(mpath, required=("step", "test_accuracy"))
    dname = rows[0].get("config.dataset", "unknown") if rows else "unknown"
    ds, desc = _import_data(data, input_shape, dname)
    if len(rows) != weights.shape[0]:
        raise ZooFormatError(f"{mpath}: {len(rows)} metrics rows but {wpath} holds {weights.shape[0]} weight rows")
    P = weights.shape[1]
    slots = []
    for k, lr in enumerate(layout, start=1):
        where = f"{lpath} row {k} ({lr['varname']})"
        try:
            start, end, shape = int(lr["start_idx"]), int(lr["end_idx"]), _parse_shape(lr["shape"])
        except (ValueError, SyntaxError) as e:
            raise ZooFormatError(f"{where}: cannot parse start_idx/end_idx/shape ({e})") from None
        if not 0 <= start <= end <= P:
            raise ZooFormatError(f"{where}: slice [{start}, {end}) lies outside the {P} columns of {wpath}")
        if end - start != math.prod(shape):
            raise ZooFormatError(f"{where}: slice length {end - start} does not match shape {shape}")
        slots.append((lr["varname"], start, end, shape))
    if not slots:
        raise ZooFormatError(f"{lpath}: no layout rows")

    # runs in order of first appearance
    order: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        order.setdefault(r.get("modeldir", str(k)), []).append(k)

    writer = _Writer(dst, "small_cnn_zoo", chunk_size)
    checked: dict[str, dict[str, tuple[int, ...]]] = {}
    try:
        for run_rows in order.values():
            first = rows[run_rows[0]]
            where0 = f"{mpath} row {run_rows[0] + 1}"
            a = _arch_for(arch, first, where0)
            aid = writer.arch_id(a)
            model = instantiate(a, trust_code=trust_code)
            names = [n for n, _ in model.named_parameters()]
            if aid not in checked:
                if len(names) != len(slots):
                    raise ZooFormatError(f"{lpath}: {len(slots)} layout rows but the architecture {a['_target_']} "
                                         f"has {len(names)} parameters ({names})")
                pshapes = dict((n, tuple(p.shape)) for n, p in model.named_parameters())
                for (var, _, _, shape), n in zip(slots, names):
                    conv = tuple(tf_to_torch(np.zeros(shape, dtype=np.float32)).shape)
                    if conv != pshapes[n]:
                        k = [s[0] for s in slots].index(var) + 1
                        raise ZooFormatError(f"{lpath} row {k} ({var}): shape {shape} -> {conv} in PyTorch order, "
                                             f"but parameter {n!r} has shape {pshapes[n]}")
                checked[aid] = pshapes
                _check_fits(model, ds, a)
            run_rows = sorted(run_rows, key=lambda k: _numeric(rows[k], "step", f"{mpath} row {k + 1}"))
            steps = [int(_numeric(rows[k], "step", f"{mpath} row {k + 1}")) for k in run_rows]
            if len(set(steps)) != len(steps):
                raise ZooFormatError(f"{mpath} row {run_rows[0] + 1}: run {first.get('modeldir', '')!r} repeats a step ({steps})")
            block = np.asarray(weights[run_rows], dtype=np.float32)
            bad = ~np.isfinite(block).all(1)
            if bad.any():
                k = run_rows[int(np.nonzero(bad)[0][0])]
                raise ZooFormatError(f"{wpath} row {k + 1} (metrics row {k + 1}, modeldir "
                                     f"{rows[k].get('modeldir', '')!r}): NaN or inf weights")
            state = {n: torch.stack([tf_to_torch(block[t, s:e].reshape(shape)) for t in range(len(run_rows))])
                     for (_, s, e, shape), n in zip(slots, names)}
            for n, b in model.named_buffers():
                state[n] = b.unsqueeze(0).repeat(len(run_rows), *([1] * b.dim()))
            out_rows = []
            for k, st in zip(run_rows, steps):
                r = dict(rows[k])
                r["step"] = st
                r.setdefault("epoch", "")
                out_rows.append(r)
            writer.add_run(aid, state, out_rows)
        writer.commit(desc, {"source": str(src.resolve())})
    except BaseException:
        writer.abort()
        raise
    log.info("imported %d runs (%d rows) from %s into %s", len(writer.run_arch), len(rows), src, dst)
    return _opened(dst, ds, trust_code)


def _opened(dst: Path, ds: Dataset | None, trust_code: bool) -> Any:
    from .zoo import load

    zoo = load(dst, trust_code=trust_code)
    if ds is not None:
        zoo.attach_data(ds)
    return zoo


def import_state_dicts(src_dir: str | os.PathLike, dst_dir: str | os.PathLike, arch: ArchSpec, *,
                       data: Any = None, metrics: str = "metrics.csv", file_column: str = "file",
                       run_column: str = "run", input_shape: Sequence[int] | None = None,
                       chunk_size: int = 1000, trust_code: bool = False) -> Any:
    """Import a folder of PyTorch state dicts described by a metrics CSV.

    Every CSV row names a checkpoint file (``file_column``, relative to ``src_dir``) and its metrics;
    rows with the same ``run_column`` value are checkpoints of one run (each row is its own run
    without that column), ordered by ``step`` (0 when absent). Files are read with
    ``torch.load(weights_only=True)`` - never an unsafe fallback. File paths must stay inside
    ``src_dir`` (no absolute paths, ``..`` or symbolic links leading out). ``trust_code`` allows an
    architecture ``_target_`` outside the allowlist. ``data`` is the data the runs were trained on,
    recorded with its fingerprint (see :func:`import_small_cnn_zoo`); ``input_shape`` is taken from it
    when given.

    Raises:
        ZooFormatError: unreadable/truncated files, non-tensor content, missing or extra keys, wrong
            shapes, NaN weights, bad CSV rows - naming the file and the CSV row.
        FileExistsError: ``dst_dir`` exists.
        ValueError: ``data`` that does not fit the architecture or ``input_shape``.
        DataSourceError: a data source whose files are missing or malformed.
    """
    src, dst = Path(src_dir), Path(dst_dir)
    mpath = src / metrics
    rows = read_csv_rows(mpath, required=(file_column,))
    if not rows:
        raise ZooFormatError(f"{mpath}: no rows")
    ds, desc = _import_data(data, input_shape, "unknown")
    order: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        order.setdefault(r.get(run_column, str(k)), []).append(k)
    writer = _Writer(dst, "state_dicts", chunk_size)
    fitted: set[str] = set()
    try:
        for run_rows in order.values():
            a = _arch_for(arch, rows[run_rows[0]], f"{mpath} row {run_rows[0] + 1}")
            aid = writer.arch_id(a)
            module = instantiate(a, trust_code=trust_code)
            if aid not in fitted:
                _check_fits(module, ds, a)
                fitted.add(aid)
            ref = module.state_dict()
            steps = [int(_numeric(rows[k], "step", f"{mpath} row {k + 1}")) if rows[k].get("step", "") != "" else 0
                     for k in run_rows]
            pairs = sorted(zip(steps, run_rows))
            if len({s for s, _ in pairs}) != len(pairs):
                raise ZooFormatError(f"{mpath} row {run_rows[0] + 1}: run {rows[run_rows[0]].get(run_column)!r} repeats a step")
            states, out_rows = [], []
            for st, k in pairs:
                f = safe_join(src, rows[k][file_column], f"{mpath} row {k + 1} (column {file_column!r})")
                where = f"{f} (CSV row {k + 1})"
                try:
                    sd = torch.load(f, map_location="cpu", weights_only=True)
                except FileNotFoundError:
                    raise ZooFormatError(f"{where}: file not found") from None
                except Exception as e:  # unpickling errors, truncated zip archives, disallowed globals
                    raise ZooFormatError(f"{where}: cannot load with torch.load(weights_only=True): "
                                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
                if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
                    sd = sd["state_dict"]
                if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
                    raise ZooFormatError(f"{where}: expected a state dict of tensors, got {type(sd).__name__}")
                missing, extra = sorted(set(ref) - set(sd)), sorted(set(sd) - set(ref))
                if missing or extra:
                    raise ZooFormatError(f"{where}: keys differ from {a['_target_']}: missing {missing}, unexpected {extra}")
                for n, t in ref.items():
                    if tuple(sd[n].shape) != tuple(t.shape):
                        raise ZooFormatError(f"{where}: {n!r} has shape {tuple(sd[n].shape)}, the architecture needs {tuple(t.shape)}")
                    if sd[n].is_floating_point() and not bool(torch.isfinite(sd[n]).all()):
                        raise ZooFormatError(f"{where}: {n!r} holds NaN or inf values")
                states.append({n: sd[n].to(ref[n].dtype) for n in ref})
                r = {c: v for c, v in rows[k].items() if c not in (file_column, run_column)}
                r["step"] = st
                r.setdefault("epoch", "")
                r["source_file"] = rows[k][file_column]
                out_rows.append(r)
            state = {n: torch.stack([s[n] for s in states]) for n in ref}
            writer.add_run(aid, state, out_rows)
        writer.commit(desc, {"source": str(src.resolve())})
    except BaseException:
        writer.abort()
        raise
    return _opened(dst, ds, trust_code)
