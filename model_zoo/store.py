"""The zoo store: the on-disk format of ``docs/concepts/zoo-format.md`` with atomic, resumable writes.

Layout of a zoo directory::

    zoo.json                       schema version, dataset, generator config, architecture configs
                                   (Hydra ``_target_`` dicts), the chunk plan, software versions
    split.json                     exact train/test sample indices of the dataset
    chunks/chunk-00000.safetensors checkpoints of the chunk's runs: ``run000012/<param>`` -> [T, ...]
    chunks/chunk-00000.sha256.json sha256 and size of the chunk's two files, written before its CSV
    chunks/chunk-00000.csv         the chunk's metrics rows; written last, so it marks the chunk done
    metrics.csv                    all rows (one per run x checkpoint), written when every chunk is done
    manifest.json                  sha256 and size of every file, counts; written last

Every file is written to a temporary name in the same directory and moved into place with
``os.replace``, so a reader sees either nothing or a complete file. A chunk counts as done only
when its CSV exists, and its CSV is written after its weights: killing generation loses at most the
chunks in flight, and rerunning the same command trains exactly those. A resumed run re-hashes every
stored chunk against its ``.sha256.json`` record and trains again what does not match.

Every path read from a zoo file goes through :func:`safe_join`: it stays inside the zoo folder.
"""

from __future__ import annotations

import csv
import errno
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

__all__ = ["SCHEMA_VERSION", "METRIC_COLUMNS", "ZooFormatError", "ZooWriteError", "atomic_write_bytes",
           "atomic_save_safetensors", "run_key", "chunk_paths", "chunk_record_path", "write_chunk", "chunk_done",
           "verify_chunk", "read_csv_rows", "rows_to_csv", "finalize", "write_json", "read_json", "clean_stale_tmp",
           "safe_join", "file_digest", "verify_manifest"]

SCHEMA_VERSION = 1
METRIC_COLUMNS = ("run", "step", "epoch", "train_accuracy", "test_accuracy", "train_loss", "test_loss")


class ZooFormatError(ValueError):
    """A zoo directory or an imported file is missing, truncated or inconsistent."""


class ZooWriteError(OSError):
    """Writing a zoo file failed (full disk, permissions); the message names the file."""


def _write_error(path: Path, e: OSError) -> ZooWriteError:
    hint = " (free disk space and rerun the same command: finished chunks are kept)" \
        if getattr(e, "errno", None) == errno.ENOSPC else ""
    err = ZooWriteError(e.errno, f"cannot write {path}: {e.strerror or e}{hint}")
    return err


def safe_join(root: str | os.PathLike, relative: Any, source: str | os.PathLike) -> Path:
    """``root / relative`` for a path read from a data file, refusing anything that leaves ``root``.

    Args:
        root: the folder the path is relative to (the zoo, or an import source folder).
        relative: the path as read from the file.
        source: the file (and field) that held the path, for the error message.

    Raises:
        ZooFormatError: ``relative`` is not a non-empty string, is absolute, or leads outside ``root``
            (``..`` components or a symbolic link pointing elsewhere).
    """
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise ZooFormatError(f"{source}: expected a relative file path, got {relative!r}")
    if os.path.isabs(relative) or relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":"):
        raise ZooFormatError(f"{source}: path {relative!r} is absolute; paths in zoo files must be relative "
                             "to the folder holding them")
    root = Path(root)
    joined = root / relative
    base = root.resolve()
    try:
        joined.resolve().relative_to(base)
    except ValueError:
        raise ZooFormatError(f"{source}: path {relative!r} leads outside {root} (via '..' or a symbolic link); "
                             "refusing to read it") from None
    return joined


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
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, e) from e


def atomic_save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                            metadata: Mapping[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` to a temporary name, then ``os.replace``."""
    path = Path(path)
    tmp = _tmp(path)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=dict(metadata or {}))
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, e) from e
    except Exception as e:  # safetensors reports I/O failures as its own error types
        tmp.unlink(missing_ok=True)
        if "No space left" in str(e) or "os error 28" in str(e):
            raise _write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from e
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file.

    Raises:
        ZooFormatError: missing, unreadable, not UTF-8 or not valid JSON, naming the file.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ZooFormatError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ZooFormatError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from None
    except UnicodeDecodeError as e:
        raise ZooFormatError(f"{path}: not valid JSON (not UTF-8 text at byte {e.start})") from None
    except RecursionError:
        raise ZooFormatError(f"{path}: not valid JSON (nested too deeply)") from None
    except OSError as e:
        raise ZooFormatError(f"{path}: cannot read ({e.strerror or e})") from None


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


def chunk_record_path(root: Path, chunk: int) -> Path:
    """``chunks/chunk-XXXXX.sha256.json``: sha256 and size of the chunk's weights and CSV."""
    return root / "chunks" / f"chunk-{chunk:05d}.sha256.json"


def chunk_done(root: Path, chunk: int) -> bool:
    """Whether the chunk's CSV exists (the chunk was completely written; not yet verified)."""
    return chunk_paths(root, chunk)[1].is_file()


def verify_chunk(root: Path, chunk: int, *, hashes: bool = True) -> str | None:
    """Check a stored chunk against its ``.sha256.json`` record.

    Returns:
        ``None`` when both files match their recorded size (and sha256 with ``hashes``), else a
        sentence naming the file that does not.
    """
    st, cs = chunk_paths(root, chunk)
    rec_path = chunk_record_path(root, chunk)
    if not cs.is_file():
        return f"{cs}: missing"
    try:
        record = json.loads(rec_path.read_text())
        files = record["files"]
    except FileNotFoundError:
        return f"{rec_path}: missing (no recorded checksums for the chunk)"
    except (ValueError, KeyError, TypeError, OSError) as e:
        return f"{rec_path}: unreadable ({type(e).__name__})"
    for p in (st, cs):
        want = files.get(p.name) if isinstance(files, dict) else None
        if not isinstance(want, dict):
            return f"{rec_path}: no record for {p.name}"
        if not p.is_file():
            return f"{p}: missing"
        size = p.stat().st_size
        if size != want.get("bytes"):
            return f"{p}: {size} bytes, {want.get('bytes')} recorded when it was written (truncated or replaced)"
        if hashes and file_digest(p) != want.get("sha256"):
            return f"{p}: sha256 differs from the one recorded when it was written (corrupted)"
    return None


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
    data = rows_to_csv(rows)
    record = {"chunk": chunk, "runs": sorted({int(r["run"]) for r in rows}), "files": {
        st.name: {"sha256": file_digest(st), "bytes": st.stat().st_size},
        cs.name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}}
    write_json(chunk_record_path(root, chunk), record)
    atomic_write_bytes(cs, data)


def file_digest(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def finalize(root: str | os.PathLike) -> bool:
    """Merge the chunk CSVs into ``metrics.csv`` and write ``manifest.json`` once every chunk is done.

    Safe to call from several shards at once (each writes the same files atomically). Every chunk is
    first checked against its ``.sha256.json`` record (a chunk that fails counts as not done, with a
    warning naming the file). Returns whether the zoo is complete.
    """
    root = Path(root)
    info = read_json(root / "zoo.json")
    chunks = [c["id"] for c in info["chunks"]]
    missing = [c for c in chunks if not chunk_done(root, c)]
    if missing:
        log.info("%s: %d of %d chunks still to train", root, len(missing), len(chunks))
        return False
    problems = [(c, p) for c in chunks if (p := verify_chunk(root, c))]
    for c, problem in problems:
        log.warning("%s: chunk %d is not complete (%s); rerunning the generating command (its shard, when "
                    "sharded) trains it again", root, c, problem)
    if problems:
        return False
    rows: list[dict[str, str]] = []
    for c in chunks:
        rows += read_csv_rows(chunk_paths(root, c)[1], required=("run", "step"))
    rows.sort(key=lambda r: (int(r["run"]), int(r["step"])))
    atomic_write_bytes(root / "metrics.csv", rows_to_csv(rows))
    files = sorted(["zoo.json", "split.json", "metrics.csv"] + [
        p.relative_to(root).as_posix() for c in chunks for p in (*chunk_paths(root, c), chunk_record_path(root, c))])
    files = [f for f in files if (root / f).is_file()]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "runs": len({r["run"] for r in rows}),
        "rows": len(rows),
        "files": {f: {"sha256": file_digest(root / f), "bytes": (root / f).stat().st_size} for f in files},
    }
    write_json(root / "manifest.json", manifest)
    return True


def verify_manifest(root: str | os.PathLike, *, hashes: bool = False, required: Iterable[str] = ()) -> dict:
    """Check the files of a zoo against ``manifest.json``.

    Args:
        root: the zoo folder.
        hashes: also compare the sha256 of every file (reads all of them); sizes are always compared.
        required: files that must be listed in the manifest (e.g. every chunk file ``zoo.json`` names).

    Returns:
        The manifest.

    Raises:
        ZooFormatError: no or malformed manifest, a listed file missing or of another size or hash,
            a required file not listed - naming the file.
    """
    root = Path(root)
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise ZooFormatError(f"{mpath}: file not found - the zoo is incomplete (rerun the generating command) or "
                             "was not written by model_zoo; load(path, verify=False) skips the check")
    manifest = read_json(mpath)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise ZooFormatError(f"{mpath}: 'files' must map file names to {{'sha256', 'bytes'}}")
    for name in required:
        if name not in files:
            raise ZooFormatError(f"{mpath}: does not list {name}, which zoo.json uses")
    for name, want in files.items():
        p = safe_join(root, name, f"{mpath} (files)")
        if not p.is_file():
            raise ZooFormatError(f"{p}: listed in manifest.json but missing")
        size = p.stat().st_size
        if size != want.get("bytes"):
            raise ZooFormatError(f"{p}: {size} bytes, manifest.json records {want.get('bytes')} "
                                 "(truncated or modified; regenerate or re-download the zoo)")
        if hashes and file_digest(p) != want.get("sha256"):
            raise ZooFormatError(f"{p}: sha256 differs from manifest.json (corrupted or modified; regenerate "
                                 "or re-download the zoo)")
    return manifest
