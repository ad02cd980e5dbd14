import gzip

import pytest
import torch

from model_zoo.store import (
    ZooFormatError,
    atomic_save_safetensors,
    atomic_write_bytes,
    clean_stale_tmp,
    read_csv_rows,
    read_json,
    rows_to_csv,
)


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    atomic_write_bytes(tmp_path / "a.txt", b"hello")
    atomic_save_safetensors({"w": torch.ones(2, 3)}, tmp_path / "w.safetensors", {"k": "v"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "w.safetensors"]
    assert (tmp_path / "a.txt").read_bytes() == b"hello"


def test_atomic_write_replaces_whole_file(tmp_path, monkeypatch):
    target = tmp_path / "m.csv"
    atomic_write_bytes(target, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("model_zoo.store.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"old"  # a failed write never touches the committed file


def test_clean_stale_tmp_keeps_live_writers(tmp_path):
    import os

    (tmp_path / "chunks").mkdir()
    dead = tmp_path / "chunks" / ".chunk-00000.csv.999999999.tmp"
    live = tmp_path / "chunks" / f".chunk-00001.csv.{os.getpid()}.tmp"
    dead.write_text("x")
    live.write_text("x")
    assert clean_stale_tmp(tmp_path) == 1
    assert not dead.exists() and live.exists()


def test_csv_round_trip_and_formats(tmp_path):
    rows = [{"run": 0, "step": 0, "test_accuracy": float("nan"), "config.arch.width": [8, 4], "config.x": None}]
    (tmp_path / "m.csv").write_bytes(rows_to_csv(rows))
    (back,) = read_csv_rows(tmp_path / "m.csv", required=("run", "step"))
    assert back == {"run": "0", "step": "0", "test_accuracy": "nan", "config.arch.width": "[8, 4]", "config.x": ""}
    with gzip.open(tmp_path / "m.csv.gz", "wb") as f:
        f.write(rows_to_csv(rows))
    assert read_csv_rows(tmp_path / "m.csv.gz") == [back]


def test_csv_missing_columns(tmp_path):
    (tmp_path / "m.csv").write_text("run,epoch\n0,1\n")
    with pytest.raises(ZooFormatError, match=r"m.csv: missing required columns \['step'\]"):
        read_csv_rows(tmp_path / "m.csv", required=("run", "step"))


def test_csv_truncated_row(tmp_path):
    (tmp_path / "m.csv").write_text("run,step,test_accuracy\n0,1,0.5\n1,2")
    with pytest.raises(ZooFormatError, match=r"m.csv: row 2 has 2 fields, the header has 3 \(truncated"):
        read_csv_rows(tmp_path / "m.csv")


def test_csv_empty_and_missing(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(ZooFormatError, match="e.csv: empty file"):
        read_csv_rows(tmp_path / "e.csv")
    with pytest.raises(ZooFormatError, match="nope.csv: file not found"):
        read_csv_rows(tmp_path / "nope.csv")
    (tmp_path / "bad.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ZooFormatError, match=r"bad.csv.gz: cannot read \(BadGzipFile"):
        read_csv_rows(tmp_path / "bad.csv.gz")


def test_read_json_errors(tmp_path):
    (tmp_path / "z.json").write_text('{"a": 1')
    with pytest.raises(ZooFormatError, match=r"z.json: not valid JSON \(line 1\)"):
        read_json(tmp_path / "z.json")
    with pytest.raises(ZooFormatError, match="missing.json: file not found"):
        read_json(tmp_path / "missing.json")
