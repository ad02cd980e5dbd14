"""The zoo store: the on-disk format of ``DESIGN.md`` with atomic, resumable writes.

Layout of a zoo directory::

    zoo.json                       schema version, dataset, generator config, architecture configs
                                   (Hydra ``_target_`` dicts), the chunk plan, software versions
    split.json                     exact train/test sample indices of the dataset
    chunks/chunk-00000.safetensors checkpoints of the chunk's runs: ``run000012/<param>`` -> [T, ...]
    chunks/chunk-00000.csv         the chunk's metrics rows; written last, so it marks the chunk done
    metrics.csv                    all rows (one per run x checkpoint), written when every chunk is done
    manifest.json                  sha256 and size of every file, counts; written last

Every file is written to a temporary name in the same directory and moved into place with
``os.replace``, so a reader sees either nothing or a complete file. A chunk counts as done only
when its CSV exists, and its CSV is written after its weights: killing generation loses at most the
chunks in flight, and rerunning the same command trains exactly those.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

log = logging.getLogger(__name__)

__all__ = ["SCHEMA_VERSION", "METRIC_COLUMNS", "ZooFormatError", "atomic_write_bytes", "atomic_save_safetensors",
           "run_key", "chunk_paths", "write_chunk", "chunk_done", "read_csv_rows", "rows_to_csv", "finalize",
           "write_json", "read_json", "clean_stale_tmp"]

SCHEMA_VERSION = 1
METRIC_COLUMNS = ("run", "step", "epoch", "train_accuracy", "test_accuracy", "train_loss", "test_loss")


class ZooFormatError(ValueError):
    """A zoo directory or an imported file is missing, truncated or inconsistent."""


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + ``os.replace``)."""
    path = Path(path)
    tmp = _tmp(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                            metadata: Mapping[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` to a temporary name, then ``os.replace``."""
    path = Path(path)
    tmp = _tmp(path)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=dict(metadata or {}))
    _fsync(tmp)
    os.replace(tmp, path)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ZooFormatError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ZooFormatError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from None


def clean_stale_tmp(folder: Path) -> int:
    """Remove temporary files left by processes that no longer run; return how many."""
    n = 0
    for p in list(folder.glob(".*.tmp")) + list(folder.glob("chunks/.*.tmp")):
        try:
            pid = int(p.name.rsplit(".", 2)[-2])
            os.kill(pid, 0)
            continue  # its writer is alive (another shard)
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        p.unlink(missing_ok=True)
        n += 1
    return n


def run_key(run: int) -> str:
    return f"run{run:06d}"


def chunk_paths(root: Path, chunk: int) -> tuple[Path, Path]:
    base = root / "chunks" / f"chunk-{chunk:05d}"
    return base.with_suffix(".safetensors"), base.with_suffix(".csv")


def chunk_done(root: Path, chunk: int) -> bool:
    return chunk_paths(root, chunk)[1].is_file()


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return "" if v is None else str(v)


def rows_to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> bytes:
    """Rows -> CSV bytes; columns: :data:`METRIC_COLUMNS` first, then the others sorted."""
    if columns is None:
        extra = sorted({k for r in rows for k in r} - set(METRIC_COLUMNS))
        columns = [c for c in METRIC_COLUMNS if any(c in r for r in rows)] + extra
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in columns])
    return buf.getvalue().encode()


def read_csv_rows(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict[str, str]]:
    """Read a CSV (``.csv`` or ``.csv.gz``) into dicts of strings, checking the header and every row.

    Raises:
        ZooFormatError: missing file, missing required columns, or a row with a wrong field count
            (e.g. a truncated file), naming the file and the row.
    """
    import gzip

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ZooFormatError(f"{path}: empty file (no header row)")
            missing = [c for c in required if c not in header]
            if missing:
                raise ZooFormatError(f"{path}: missing required columns {missing} (header: {header})")
            rows = []
            for i, rec in enumerate(reader, start=1):
                if len(rec) != len(header):
                    raise ZooFormatError(f"{path}: row {i} has {len(rec)} fields, the header has {len(header)} "
                                         "(truncated or corrupt file)")
                rows.append(dict(zip(header, rec)))
    except FileNotFoundError:
        raise ZooFormatError(f"{path}: file not found") from None
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise ZooFormatError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    return rows


def write_chunk(root: Path, chunk: int, tensors: Mapping[str, torch.Tensor], rows: Sequence[Mapping[str, Any]]) -> None:
    """Write one chunk: weights first, then the metrics CSV that marks it done."""
    st, cs = chunk_paths(root, chunk)
    st.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(tensors, st, {"schema_version": str(SCHEMA_VERSION), "chunk": str(chunk)})
    atomic_write_bytes(cs, rows_to_csv(rows))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def finalize(root: str | os.PathLike) -> bool:
    """Merge the chunk CSVs into ``metrics.csv`` and write ``manifest.json`` once every chunk is done.

    Safe to call from several shards at once (each writes the same files atomically). Returns whether
    the zoo is complete.
    """
    root = Path(root)
    info = read_json(root / "zoo.json")
    chunks = [c["id"] for c in info["chunks"]]
    missing = [c for c in chunks if not chunk_done(root, c)]
    if missing:
        log.info("%s: %d of %d chunks still to train", root, len(missing), len(chunks))
        return False
    rows: list[dict[str, str]] = []
    for c in chunks:
        rows += read_csv_rows(chunk_paths(root, c)[1], required=("run", "step"))
    rows.sort(key=lambda r: (int(r["run"]), int(r["step"])))
    atomic_write_bytes(root / "metrics.csv", rows_to_csv(rows))
    files = sorted(["zoo.json", "split.json", "metrics.csv"] + [
        str(p.relative_to(root)) for c in chunks for p in chunk_paths(root, c)])
    files = [f for f in files if (root / f).is_file()]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "runs": len({r["run"] for r in rows}),
        "rows": len(rows),
        "files": {f: {"sha256": _sha256(root / f), "bytes": (root / f).stat().st_size} for f in files},
    }
    write_json(root / "manifest.json", manifest)
    return True
