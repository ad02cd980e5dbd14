import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import model_zoo
from model_zoo.generator import normalize_config
from weightspace.cli.main import config_dir
from weightspace.cli.zoo import contention_warning, positional_overrides, zoo_config

ZOOS = sorted(p.stem for p in (config_dir() / "zoo").glob("*.yaml"))


def test_positional_overrides():
    assert positional_overrides(["digits_cnn", "size=10", "out=x"]) == ["zoo=digits_cnn", "size=10", "out=x"]
    assert positional_overrides(["size=10", "--multirun"]) == ["size=10", "--multirun"]
    assert positional_overrides(["a", "b"]) == ["zoo=a", "b"]


def test_builtin_zoos_exist():
    assert {"digits_mlp", "digits_cnn", "digits_hetero", "mnist1d_cnn"} <= set(ZOOS)


@pytest.mark.parametrize("name", ZOOS)
def test_every_zoo_config_composes_and_builds(name):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("zoo", overrides=[f"zoo={name}", "size=3"])
    z = normalize_config(zoo_config(cfg))
    assert z["name"] == name and z["size"] == 3
    runs = model_zoo.sample_runs(z["space"], z["arch"], 3, z["seed"])
    data = model_zoo.load_dataset(z["data"]["name"], **{k: v for k, v in z["data"].items() if k != "name"})
    for r in runs:
        model = model_zoo.instantiate(r.arch)
        out = model(data.x_train[:2])
        assert out.shape == (2, data.num_outputs)


def test_slurm_launcher_config():
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("zoo", overrides=["hydra/launcher=zoo_slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.timeout_min > 0 and launcher.tasks_per_node == 1
    assert launcher.submitit_folder.endswith("/.submitit/%j")


def test_slurm_launcher_instantiates():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")  # the optional [slurm] extra
    from hydra.utils import instantiate

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("zoo", overrides=["hydra/launcher=zoo_slurm"], return_hydra_config=True)
    assert type(instantiate(cfg.hydra.launcher)).__name__ == "SlurmLauncher"


def _cli(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "weightspace.cli.main", "zoo", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_cli_generates_reports_and_resumes(tmp_path):
    out = tmp_path / "z"
    _cli("digits_mlp_demo", "size=8", f"out={out}", "progress=false", "zoo.trainer.epochs=2",
         "zoo.trainer.checkpoints=[0,2]", cwd=tmp_path)
    zoo = model_zoo.load(out)
    assert len(zoo) == 8 and (out / "summary.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == 8 and summary["metric"] == "test_accuracy"
    before = (out / "metrics.csv").read_bytes()
    proc = _cli("digits_mlp_demo", "size=8", f"out={out}", "progress=false", "zoo.trainer.epochs=2",
                "zoo.trainer.checkpoints=[0,2]", cwd=tmp_path)
    assert "trains 0 runs (8 already stored)" in proc.stdout + proc.stderr
    assert (out / "metrics.csv").read_bytes() == before


def test_joblib_multirun_shards_merge(tmp_path):
    out, ref = tmp_path / "sharded", tmp_path / "ref"
    common = ["synthetic_mlp", "size=6", "zoo.chunk_size=2", "progress=false"]
    _cli(*common, f"out={out}", "num_shards=2", "shard=0,1", "hydra/launcher=zoo_joblib", "--multirun", cwd=tmp_path)
    _cli(*common, f"out={ref}", cwd=tmp_path)
    assert len(model_zoo.load(out)) == 6
    assert (out / "metrics.csv").read_bytes() == (ref / "metrics.csv").read_bytes()
    assert sorted(p.name for p in (out / ".hydra" / "multirun").iterdir()) == ["multirun.yaml", "shard0", "shard1"]


def test_unknown_zoo_name_fails(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "weightspace.cli.main", "zoo", "imagenet_giant", f"out={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "imagenet_giant" in proc.stderr


def test_contention_warning():
    assert "threads=1" in contention_warning(threads=2, load=2.3, cores=2)
    assert contention_warning(threads=2, load=0.4, cores=2) is None  # a quiet machine
    assert contention_warning(threads=1, load=8.0, cores=2) is None  # one thread cannot contend with itself


def test_paths():
    assert Path(config_dir() / "zoo.yaml").is_file()


def test_zoo_on_cifar10_files_from_the_command_line(tmp_path):
    """`weightspace zoo digits_cnn data@zoo.data=cifar10 zoo.data.name=cifar10:DIR ...` (in process)."""
    from weightspace.cli.zoo import run

    from ..model_zoo.data_formats import write_cifar10

    want = write_cifar10(tmp_path / "cifar", per_batch=2)
    overrides = ["zoo=digits_cnn", "data@zoo.data=cifar10", f"zoo.data.name=cifar10:{tmp_path / 'cifar'}",
                 "zoo.data.limit_train=6", "zoo.arch.in_channels=3", "zoo.arch.channels=2", "size=2",
                 "zoo.trainer.epochs=1", "zoo.trainer.checkpoints=[0,1]", f"out={tmp_path / 'zoo'}", "progress=false",
                 "report=false", "threads=1"]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        run(compose("zoo", overrides=overrides))
    ds = model_zoo.load(tmp_path / "zoo").dataset()
    assert ds.x_train.shape == (6, 3, 32, 32) and ds.y_test.tolist() == want["y_test"].tolist()
