"""Issue 23: shared zoos are safe to open (no code from files, paths stay inside, one writer at a
time) and stored data is verified (sizes, hashes, counts)."""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import model_zoo
import weightspace.instantiate as inst
from model_zoo import ArchConfigError, UntrustedTargetError, ZooFormatError, ZooLockedError, ZooWriteError
from model_zoo.lock import ZooLock

# ------------------------------------------------------------------------------------- helpers


def _copy(zoo, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(zoo.path, dst)
    return dst


def _reseal(dst: Path, name: str) -> None:
    """Update manifest.json for a rewritten file, as someone preparing a malicious zoo would."""
    m = json.loads((dst / "manifest.json").read_text())
    data = (dst / name).read_bytes()
    m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (dst / "manifest.json").write_text(json.dumps(m))


def _edit_info(dst: Path, edit) -> None:
    info = json.loads((dst / "zoo.json").read_text())
    edit(info)
    (dst / "zoo.json").write_text(json.dumps(info))
    _reseal(dst, "zoo.json")


def _sentinel_target(path: Path) -> dict:
    """A ``_target_`` that, if ever called, creates ``path``."""
    return {"_target_": "subprocess.getoutput", "cmd": f"touch {path}"}


TINY = {
    "name": "tiny", "size": 4, "seed": 0, "chunk_size": 2,
    "data": {"name": "digits", "flatten": True},
    "arch": {"_target_": "model_zoo.archs.MLP", "in_features": 64, "num_outputs": 10, "depth": 1, "width": 8},
    "space": {"lr": {"log_uniform": [1e-3, 1e-2]}, "batch_size": 128},
    "trainer": {"epochs": 1, "checkpoints": [0, 1]},
}


# ------------------------------------------------------------------- 1. no code from JSON files


def test_code_target_in_zoo_json_never_runs(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    sentinel = tmp_path / "pwned"
    _edit_info(dst, lambda info: info["archs"].update({k: _sentinel_target(sentinel) for k in info["archs"]}))
    zoo = model_zoo.load(dst)  # the metrics stay readable
    assert len(zoo) == 12
    with pytest.raises(UntrustedTargetError, match=r"zoo.json: archs\['a0000'\]: _target_ 'subprocess.getoutput' "
                                                   r"is not an allowed architecture.*register_arch"):
        zoo.build_model(0)
    with pytest.raises(UntrustedTargetError, match="zoo.json"):
        zoo.graph(0)
    with pytest.raises(UntrustedTargetError, match="subprocess.getoutput"):
        model_zoo.instantiate(zoo.arch_config(0))
    assert not sentinel.exists()
    # sensitivity: the same file with trust_code=True does run the command
    with pytest.raises(AttributeError):  # the command's output is a str, not a module
        model_zoo.load(dst, trust_code=True).build_model(0)
    assert sentinel.exists()


def test_probe_config_cannot_run_code(tmp_path):
    from weightspace.nn.probe import ProbeNet

    sentinel = tmp_path / "pwned"
    with pytest.raises(UntrustedTargetError, match="subprocess.getoutput"):
        ProbeNet([_sentinel_target(sentinel)], (64,), num_probes=2)
    assert not sentinel.exists()


def test_project_and_torch_classes_are_allowed_but_not_their_functions():
    assert isinstance(model_zoo.instantiate({"_target_": "torch.nn.Linear", "in_features": 3, "out_features": 2}),
                      nn.Linear)
    assert isinstance(model_zoo.instantiate({"_target_": "weightspace.archs.MLP", "width": [8, 4]}), model_zoo.MLP)
    from weightspace.examples import ResNet

    assert isinstance(model_zoo.instantiate({"_target_": "weightspace.examples.ResNet", "widths": [4, 8]}), ResNet)
    for target in ("model_zoo.archs.resolve_target", "weightspace.examples.build_example", "torch.nn.functional.relu",
                   "os.system", "builtins.eval"):
        with pytest.raises(UntrustedTargetError, match=target.replace(".", r"\.")):
            model_zoo.instantiate({"_target_": target})


class _UserNet(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(2, width)


class _EntryNet(nn.Module):
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(2, width)


def test_register_arch_and_trust_code(monkeypatch):
    monkeypatch.setattr(inst, "_registry", {})
    target = f"{__name__}._UserNet"
    with pytest.raises(UntrustedTargetError, match="register_arch"):
        model_zoo.instantiate({"_target_": target})
    assert isinstance(model_zoo.instantiate({"_target_": target}, trust_code=True), _UserNet)
    assert model_zoo.register_arch(_UserNet) is _UserNet
    assert model_zoo.instantiate({"_target_": target, "width": 5}).fc.out_features == 5

    @model_zoo.register_arch(name="mine.Net")
    class Net(nn.Module):
        def __init__(self, k: int = 1) -> None:
            super().__init__()

    assert isinstance(model_zoo.instantiate({"_target_": "mine.Net", "k": 2}), Net)
    with pytest.raises(ArchConfigError, match="'k'"):
        model_zoo.instantiate({"_target_": "mine.Net", "k": "2"})


def test_entry_point_group_allows_a_class(monkeypatch):
    ep = importlib.metadata.EntryPoint(name="entrynet", value=f"{__name__}:_EntryNet", group=inst.ENTRY_POINT_GROUP)
    calls = []

    def fake_entry_points(group=None, **kw):
        calls.append(group)
        return [ep] if group == inst.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(inst, "_entry_points", None)
    monkeypatch.setattr(inst, "_registry", {})
    assert isinstance(model_zoo.instantiate({"_target_": f"{__name__}._EntryNet"}), _EntryNet)
    assert calls == [inst.ENTRY_POINT_GROUP]
    with pytest.raises(UntrustedTargetError):
        model_zoo.instantiate({"_target_": f"{__name__}._UserNet"})


@pytest.mark.parametrize("config,key", [
    ({"_target_": "model_zoo.archs.MLP", "width": "32"}, "width"),
    ({"_target_": "model_zoo.archs.MLP", "width": [8, "4"]}, "width"),
    ({"_target_": "model_zoo.archs.MLP", "depth": 2.5}, "depth"),
    ({"_target_": "model_zoo.archs.MLP", "depth": True}, "depth"),
    ({"_target_": "model_zoo.archs.MLP", "activation": 3}, "activation"),
    ({"_target_": "model_zoo.archs.SmallResNet", "blocks": "11"}, "blocks"),
    ({"_target_": "model_zoo.archs.MLP", "widht": 3}, "widht"),
    ({"_target_": "torch.nn.Linear", "in_features": "3", "out_features": 2}, "in_features"),
    ({"_target_": "torch.nn.Linear", "in_features": 3}, "out_features"),
])
def test_arguments_are_type_checked(config, key):
    with pytest.raises(ArchConfigError, match=f"'{key}'"):
        model_zoo.instantiate(config)


def test_string_width_in_zoo_json_is_refused(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    _edit_info(dst, lambda info: info["archs"]["a0000"].update(width="32"))
    with pytest.raises(ZooFormatError, match=r"zoo.json: archs\['a0000'\]: .*argument 'width' = '32'"):
        model_zoo.load(dst)


# -------------------------------------------------------------------------- 2. one writer per zoo


@pytest.fixture
def foreign_process():
    """A live process that is not this one (to own a lock)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield p
    p.kill()
    p.wait()


def _lock_record(pid: int, **extra) -> str:
    return json.dumps({"pid": pid, "host": socket.gethostname(), "started": time.time(), "purpose": "generating",
                       "token": "x", **extra})


def test_second_writer_fails_fast_naming_the_holder(tmp_path, foreign_process, monkeypatch):
    out = tmp_path / "z"
    out.mkdir()
    (out / ".lock").write_text(_lock_record(foreign_process.pid))
    monkeypatch.setattr("model_zoo.generator.load_data", lambda *a, **k: pytest.fail("must fail before any work"))
    with pytest.raises(ZooLockedError, match=rf"pid {foreign_process.pid} on host .*\.lock"):
        model_zoo.generate(TINY, out, progress=False)
    assert not (out / "zoo.json").exists()
    with pytest.raises(ZooLockedError):  # a shard of a sharded run is refused as well
        model_zoo.generate(TINY, out, shard=0, num_shards=2, progress=False)


def test_stale_lock_is_taken_over(tmp_path, caplog):
    out = tmp_path / "z"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(_lock_record(dead.pid))
    with caplog.at_level(logging.WARNING, logger="model_zoo.lock"):
        zoo = model_zoo.generate(TINY, out, progress=False)
    assert len(zoo) == 4
    assert any("stale lock" in r.getMessage() and str(dead.pid) in r.getMessage() for r in caplog.records)
    assert not (out / ".lock").exists()  # released at the end


def test_lock_in_process_is_exclusive(tmp_path):
    with ZooLock(tmp_path / ".lock"):
        with pytest.raises(ZooLockedError, match="this process already writes this zoo"):
            model_zoo.generate(TINY, tmp_path, progress=False)
    assert not (tmp_path / ".lock").exists()


def test_shards_cooperate_but_other_writers_are_refused(tmp_path, foreign_process):
    out = tmp_path / "z"
    out.mkdir()
    (out / ".lock-shard0").write_text(_lock_record(foreign_process.pid, num_shards=2))
    # shard 1 of the same run works beside the live shard 0
    assert model_zoo.generate(TINY, out, shard=1, num_shards=2, progress=False) is None
    assert {p.name for p in (out / "chunks").glob("*.csv")} == {"chunk-00001.csv"}
    with pytest.raises(ZooLockedError, match=rf"pid {foreign_process.pid}"):
        model_zoo.generate(TINY, out, shard=0, num_shards=2, progress=False)  # the same shard again
    with pytest.raises(ZooLockedError, match="num_shards=2"):
        model_zoo.generate(TINY, out, shard=0, num_shards=3, progress=False)
    with pytest.raises(ZooLockedError, match="shards of a sharded run"):
        model_zoo.generate(TINY, out, progress=False)


WRITER = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    import model_zoo
    model_zoo.generate(json.loads(sys.argv[1]), sys.argv[2], progress=False)
""")


def test_two_writers_with_different_seeds(tmp_path):
    out = tmp_path / "z"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, json.dumps({**TINY, "seed": s}), str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for s in (1, 2)]
    errs = [p.communicate(timeout=300)[1].decode() for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], errs
    loser = errs[codes.index(1)]
    assert "ZooLockedError" in loser or "ZooExistsError" in loser, loser[-2000:]
    zoo = model_zoo.load(out, verify=True)
    assert zoo.info["generator"]["seed"] == (1, 2)[codes.index(0)]


# ----------------------------------------------------------------------- 3. stored data is verified


def test_resume_regenerates_truncated_or_flipped_chunks(tmp_path, caplog):
    out = tmp_path / "z"
    model_zoo.generate(TINY, out, progress=False)
    good = {p.name: {k: t.clone() for k, t in load_file(str(p)).items()}  # clone: load_file maps the file
            for p in (out / "chunks").glob("*.safetensors")}
    (out / "metrics.csv").unlink()  # an interrupted zoo
    c0, c1 = out / "chunks" / "chunk-00000.safetensors", out / "chunks" / "chunk-00001.safetensors"
    c0.write_bytes(c0.read_bytes()[:300])
    data = bytearray(c1.read_bytes())
    data[-5] ^= 0xFF
    c1.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="model_zoo.generator"):
        zoo = model_zoo.generate(TINY, out, progress=False)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("chunk-00000.safetensors" in m and "truncated" in m for m in msgs), msgs
    assert any("chunk-00001.safetensors" in m and "sha256" in m for m in msgs), msgs
    for name, tensors in good.items():  # trained again to the same weights
        again = load_file(str(out / "chunks" / name))
        assert again.keys() == tensors.keys() and all(torch.equal(again[k], t) for k, t in tensors.items())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["chunks/chunk-00000.safetensors"]["bytes"] == c0.stat().st_size > 300
    assert len(model_zoo.load(out, verify=True)) == len(zoo) == 4


def test_flipped_byte_is_found_with_verify(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    shard = dst / "chunks" / "chunk-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0x01
    shard.write_bytes(bytes(data))
    model_zoo.load(dst)  # the default compares sizes only
    with pytest.raises(ZooFormatError, match=r"chunk-00001.safetensors: sha256 differs from manifest.json"):
        model_zoo.load(dst, verify=True)


def test_truncated_file_is_found_by_default(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    shard = dst / "chunks" / "chunk-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ZooFormatError, match=r"chunk-00002.safetensors: \d+ bytes, manifest.json records \d+"):
        model_zoo.load(dst)


def test_metrics_missing_the_last_run(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    lines = (dst / "metrics.csv").read_text().splitlines(keepends=True)
    (dst / "metrics.csv").write_text("".join(ln for ln in lines if not ln.startswith("11,")))
    with pytest.raises(ZooFormatError, match=r"metrics.csv: \d+ bytes, manifest.json records"):
        model_zoo.load(dst)
    _reseal(dst, "metrics.csv")
    with pytest.raises(ZooFormatError, match=r"metrics.csv: holds rows of 11 runs, zoo.json records size 12"):
        model_zoo.load(dst)


def test_shard_missing_a_run(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    shard = dst / "chunks" / "chunk-00000.safetensors"
    tensors = load_file(str(shard))
    first = sorted({k.split("/")[0] for k in tensors})[0]
    save_file({k: v for k, v in tensors.items() if not k.startswith(first + "/")}, str(shard))
    _reseal(dst, "chunks/chunk-00000.safetensors")
    with pytest.raises(ZooFormatError, match=r"chunk-00000.safetensors: holds checkpoints of 3 runs, zoo.json "
                                             r"\(chunks\[0\]\) assigns 4"):
        model_zoo.load(dst)


def test_manifest_is_required_unless_verify_is_off(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    (dst / "manifest.json").unlink()
    with pytest.raises(ZooFormatError, match="manifest.json: file not found"):
        model_zoo.load(dst)
    assert len(model_zoo.load(dst, verify=False)) == 12
    with pytest.raises(ValueError, match="verify must be"):
        model_zoo.load(dst, verify="hash")


# ------------------------------------------------------------------ 4. paths stay inside the zoo


def test_chunk_file_outside_the_zoo(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    _edit_info(dst, lambda info: info["chunks"][0].update(file="../../x.safetensors"))
    with pytest.raises(ZooFormatError, match=r"zoo.json \(chunks\[0\].file\): path '../../x.safetensors' leads outside"):
        model_zoo.load(dst)
    _edit_info(dst, lambda info: info["chunks"][0].update(file="/etc/passwd"))
    with pytest.raises(ZooFormatError, match=r"zoo.json \(chunks\[0\].file\): path '/etc/passwd' is absolute"):
        model_zoo.load(dst)


def test_absolute_split_file(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    outside = tmp_path / "split.json"
    outside.write_text('{"train_index": [1], "test_index": [2]}')
    _edit_info(dst, lambda info: info.update(split_file=str(outside)))
    with pytest.raises(ZooFormatError, match=r"zoo.json \(split_file\): path .* is absolute"):
        _ = model_zoo.load(dst).split


def test_symlink_leaving_the_zoo(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    elsewhere = tmp_path / "elsewhere.safetensors"
    shutil.copy(dst / "chunks" / "chunk-00000.safetensors", elsewhere)
    (dst / "chunks" / "chunk-00000.safetensors").unlink()
    (dst / "chunks" / "chunk-00000.safetensors").symlink_to(elsewhere)
    with pytest.raises(ZooFormatError, match=r"zoo.json \(chunks\[0\].file\): .* leads outside .*symbolic link"):
        model_zoo.load(dst)


def test_manifest_path_outside_the_zoo(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    m = json.loads((dst / "manifest.json").read_text())
    m["files"]["../secret"] = {"sha256": "0", "bytes": 1}
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ZooFormatError, match=r"manifest.json \(files\): path '../secret' leads outside"):
        model_zoo.load(dst)


def test_importer_file_column_outside_the_source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    torch.save(model_zoo.MLP(in_features=4, num_outputs=3, depth=1, width=5).state_dict(), tmp_path / "x.pt")
    (src / "metrics.csv").write_text("file,step\n../x.pt,0\n")
    arch = {"_target_": "model_zoo.archs.MLP", "in_features": 4, "num_outputs": 3, "depth": 1, "width": 5}
    with pytest.raises(ZooFormatError, match=r"metrics.csv row 1 \(column 'file'\): path '../x.pt' leads outside"):
        model_zoo.import_state_dicts(src, tmp_path / "dst", arch)
    assert not (tmp_path / "dst").exists()


# ---------------------------------------------------------------------- 5. malformed zoo.json


@pytest.mark.parametrize("edit,field", [
    (lambda i: i.update(chunks={"0": i["chunks"][0]}), "chunks"),
    (lambda i: i.update(run_arch=i["run_arch"][:-1]), "run_arch"),
    (lambda i: i.update(run_arch=["zzz"] * len(i["run_arch"])), "run_arch"),
    (lambda i: i["archs"].update(a0000={"width": 3}), "archs.a0000"),
    (lambda i: i["chunks"][1].update(runs=i["chunks"][0]["runs"]), r"chunks\[1\].runs"),
    (lambda i: i["chunks"][0].update(runs=["0"]), r"chunks\[0\].runs"),
    (lambda i: i["chunks"].pop(), "chunks"),
    (lambda i: i.update(size="12"), "size"),
])
def test_malformed_zoo_json(small_zoo, tmp_path, edit, field):
    dst = _copy(small_zoo, tmp_path)
    _edit_info(dst, edit)
    with pytest.raises(ZooFormatError, match=rf"zoo.json: field '{field}'"):
        model_zoo.load(dst)


def test_zoo_json_top_level_list(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    (dst / "zoo.json").write_text("[1, 2]")
    with pytest.raises(ZooFormatError, match="zoo.json: the top level must be a JSON object, got list"):
        model_zoo.load(dst)


# ------------------------------------------------------------------ 6. write errors name the file


def test_full_disk_names_the_file(tmp_path, monkeypatch):
    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("model_zoo.store.save_file", no_space)
    out = tmp_path / "z"
    with pytest.raises(ZooWriteError, match=r"cannot write .*chunk-00000.safetensors: No space left on device "
                                            r"\(free disk space") as e:
        model_zoo.generate(TINY, out, progress=False)
    assert e.value.errno == errno.ENOSPC and isinstance(e.value, OSError)
    assert not list(out.glob("**/.*.tmp"))
    monkeypatch.setattr("model_zoo.store.os.replace", no_space)
    with pytest.raises(ZooWriteError, match=r"cannot write .*split.json: No space left"):
        model_zoo.generate(TINY, tmp_path / "y", progress=False)


def test_safetensors_error_without_path_gets_one(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    def rust_error(*a, **k):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              "message: \"No space left on device\" })")

    monkeypatch.setattr("model_zoo.store.save_file", rust_error)
    from model_zoo.store import atomic_save_safetensors

    with pytest.raises(ZooWriteError, match=r"cannot write .*w.safetensors: No space left"):
        atomic_save_safetensors({"w": torch.ones(2)}, tmp_path / "w.safetensors")


def test_json_that_is_not_text(tmp_path):
    from model_zoo.store import read_json

    (tmp_path / "zoo.json").write_bytes(b'{"a": "\xa0"}')
    with pytest.raises(ZooFormatError, match=r"zoo.json: not valid JSON \(not UTF-8 text at byte 7\)"):
        read_json(tmp_path / "zoo.json")


def test_architecture_that_does_not_fit_its_weights(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    _edit_info(dst, lambda info: info["archs"]["a0000"].update(width=10**11))  # would need 25 GB if built
    zoo = model_zoo.load(dst)
    with pytest.raises(ZooFormatError, match=r"zoo.json: archs\['a0000'\] builds tensors that differ from the "
                                             r"weights of run \d+ in .*chunk-0000\d.safetensors"):
        zoo.build_model(0)
    _edit_info(dst, lambda info: info["archs"]["a0000"].update(width=16, activation="swishy"))
    with pytest.raises(ZooFormatError, match=r"zoo.json: archs\['a0000'\]: unknown activation 'swishy'"):
        model_zoo.load(dst).build_model(0)


def test_shard_does_not_seal_another_shards_corrupt_chunk(tmp_path, caplog):
    out = tmp_path / "z"
    assert model_zoo.generate(TINY, out, shard=0, num_shards=2, progress=False) is None
    c0 = out / "chunks" / "chunk-00000.safetensors"
    c0.write_bytes(c0.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="model_zoo.store"):
        assert model_zoo.generate(TINY, out, shard=1, num_shards=2, progress=False) is None
    assert any("chunk-00000.safetensors: 100 bytes" in r.getMessage() for r in caplog.records)
    assert not (out / "manifest.json").exists()
    zoo = model_zoo.generate(TINY, out, shard=0, num_shards=2, progress=False)  # shard 0 trains it again
    assert zoo is not None and len(model_zoo.load(out, verify=True)) == 4


def test_input_shape_from_file_is_bounded(small_zoo, tmp_path):
    dst = _copy(small_zoo, tmp_path)
    _edit_info(dst, lambda info: info["dataset"].update(input_shape=[100000, 100000]))
    with pytest.raises(ZooFormatError, match=r"zoo.json: field 'dataset.input_shape' must be a list of positive"):
        model_zoo.load(dst).example_input()
