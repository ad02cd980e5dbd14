"""Fuzzing the zoo readers: random corruptions of zoo.json, metrics.csv, manifest.json, split.json and
the chunk files never run code, never hang, and raise only the project's error types naming a file."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import model_zoo
from model_zoo import UntrustedTargetError, ZooFormatError

FILES = ["zoo.json", "metrics.csv", "manifest.json", "split.json", "chunks/chunk-00000.safetensors",
         "chunks/chunk-00001.csv", "chunks/chunk-00002.sha256.json"]
JSON_FILES = {"zoo.json", "manifest.json", "split.json"}


def sentinel_target(path: Path) -> dict:
    return {"_target_": "subprocess.getoutput", "cmd": f"touch {path}"}


def wrong_values(sentinel: Path) -> st.SearchStrategy:
    return st.one_of(
        st.none(), st.booleans(), st.integers(-3, 10**12), st.floats(allow_nan=True), st.text(max_size=8),
        st.sampled_from(["32", "../../x", "/etc/passwd", "a0000", "chunks/chunk-00000.safetensors"]),
        st.lists(st.one_of(st.integers(-2, 40), st.text(max_size=3)), max_size=4),
        st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
        st.just(sentinel_target(sentinel)))


def _paths(obj, prefix=()):
    """Every location in a JSON tree (lists truncated to their first 3 items)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            yield from _paths(v, prefix + (i,))


def _set(obj, path, value):
    if not path:
        return value
    cur = obj
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return obj


def _reseal(root: Path, name: str) -> None:
    try:
        m = json.loads((root / "manifest.json").read_text())
        data = (root / name).read_bytes()
        m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        (root / "manifest.json").write_text(json.dumps(m))
    except (ValueError, KeyError, TypeError, AttributeError):
        pass  # the manifest itself is what was corrupted


def _exercise(root: Path, verify) -> None:
    zoo = model_zoo.load(root, verify=verify)
    _ = zoo.split
    zoo.final_metrics()
    for i in (0, len(zoo) - 1):
        zoo.build_model(i)
        zoo.trajectory(i)
    zoo.graph(0)


@pytest.fixture(scope="module")
def zoo_dir(small_zoo):
    return small_zoo.path


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_corrupted_zoo_files(zoo_dir, data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "zoo"
        shutil.copytree(zoo_dir, root)
        sentinel = Path(tmp) / "pwned"
        name = data.draw(st.sampled_from(FILES), label="file")
        path = root / name
        raw = path.read_bytes()
        kind = data.draw(st.sampled_from(["flip", "truncate", "json"] if name in JSON_FILES else ["flip", "truncate"]),
                         label="kind")
        if kind == "flip":
            pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
            bit = data.draw(st.integers(0, 7), label="bit")
            path.write_bytes(raw[:pos] + bytes([raw[pos] ^ (1 << bit)]) + raw[pos + 1:])
        elif kind == "truncate":
            path.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1), label="length")])
        else:
            obj = json.loads(raw)
            where = data.draw(st.sampled_from(list(_paths(obj))), label="where")
            obj = _set(obj, where, data.draw(wrong_values(sentinel), label="value"))
            path.write_text(json.dumps(obj))
        if name != "manifest.json" and data.draw(st.booleans(), label="reseal"):
            _reseal(root, name)  # as a forger would, so that the readers behind the manifest are reached
        verify = data.draw(st.sampled_from([False, "size", True]), label="verify")
        try:
            _exercise(root, verify)
        except (ZooFormatError, UntrustedTargetError) as e:
            assert str(root) in str(e), f"the error names no zoo file: {e}"
        assert not sentinel.exists(), "a corrupted file ran code"


def test_sentinel_would_fire_with_trust_code(zoo_dir, tmp_path):
    """Sensitivity check of the fuzz test: the sentinel target does run when code is trusted."""
    root = tmp_path / "zoo"
    shutil.copytree(zoo_dir, root)
    sentinel = tmp_path / "pwned"
    info = json.loads((root / "zoo.json").read_text())
    info["archs"]["a0000"] = sentinel_target(sentinel)
    (root / "zoo.json").write_text(json.dumps(info))
    _reseal(root, "zoo.json")
    with pytest.raises(UntrustedTargetError):
        _exercise(root, "size")
    assert not sentinel.exists()
    with pytest.raises(AttributeError):
        model_zoo.load(root, trust_code=True).build_model(0)
    assert sentinel.exists()
