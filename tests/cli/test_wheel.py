"""The built wheel works without the checkout: built, installed into a fresh venv, used from another folder."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*cmd, cwd, env, timeout=300):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """The wheel built from the checkout, installed into a fresh venv: ``(python, weightspace, env)``."""
    root = tmp_path_factory.mktemp("wheel")
    dist, venv, work = root / "dist", root / "venv", root / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WEIGHTSPACE_CONFIGS", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, ROOT,
         cwd=work, env=env)
    (wheel,) = dist.glob("weightspace-*.whl")
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work, env=env)
    py = venv / "bin" / "python"
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work, env=env).strip())
    # this environment's packages (torch, hydra, pip, ...) as plain path entries: a .pth line is not a site
    # directory, so the editable install's finder (a .pth hook there) is not run and the checkout stays invisible
    base = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_base_env.pth").write_text("".join(f"{p}\n" for p in base))
    _run(py, "-m", "pip", "install", "--no-deps", "-q", wheel, cwd=work, env=env)
    return py, venv / "bin" / "weightspace", env


# runs on every submission: about 15-35 s (build, install, a 2-run zoo, two checkpoint loads)
def test_wheel_installs_and_runs_outside_the_checkout(wheel_venv, tmp_path):
    py, ws, env = wheel_venv
    venv, work = py.parent.parent, tmp_path
    assert "verbs:" in _run(ws, "--help", cwd=work, env=env)
    assert "digits_mlp_demo" in _run(ws, "zoo", "--help", cwd=work, env=env)
    _run(ws, "zoo", "digits_mlp_demo", f"out={work / 'zoo'}", "size=2", "trainer.epochs=1", "trainer.checkpoints=[0,1]",
         "progress=false", "report=false", "threads=1", cwd=work, env=env)
    assert (work / "zoo" / "zoo.json").is_file() and (work / "zoo" / "manifest.json").is_file()
    out = _run(py, "-c", "import weightspace as ws, model_zoo; from weightspace.cli.main import config_dir; "
               "ws.Nowcaster.from_pretrained('nowcaster'); ws.GraphHyperNetwork.from_pretrained('hypernet'); "
               "ws.GHN.from_pretrained('hypernet-digits'); ws.GHN.from_pretrained('hypernet-mnist1d'); "
               "print(ws.__file__, model_zoo.__file__, config_dir(), sep='\\n')", cwd=work, env=env).split()
    # the package, its configs and its checkpoints came from the wheel, not from the checkout
    assert len(out) == 3 and all(Path(w).resolve().is_relative_to(venv.resolve()) for w in out), out


# the "done when", from the wheel alone: a zoo of the user's own MLP on their .npz file and one on a
# CIFAR-10-format folder, a predictor trained on the first, weights generated for it (about 1-2 min)
def test_wheel_user_flow_on_own_data(wheel_venv, tmp_path):
    import numpy as np

    from ..model_zoo.data_formats import write_cifar10

    py, ws, env = wheel_venv
    work = tmp_path
    common = ["trainer.epochs=1", "trainer.checkpoints=[0,1]", "progress=false", "report=false", "threads=1"]

    rng = np.random.default_rng(0)  # the user's own data: 12 features, 3 classes, learnable from feature 0
    x = rng.normal(size=(160, 12)).astype(np.float32)
    y = np.digitize(x[:, 0], [-0.4, 0.4]).astype(np.int64)
    np.savez(work / "own.npz", x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])
    _run(ws, "zoo", "digits_mlp_demo", "data=file:own.npz", "arch.in_features=12", "arch.num_outputs=3",
         "arch.width=8", "size=10", f"out={work / 'zoo_npz'}", *common, cwd=work, env=env)
    write_cifar10(work / "cifar", per_batch=2)
    _run(ws, "zoo", "digits_cnn", "data=cifar10:cifar", "arch.in_channels=3", "arch.channels=2",
         "data.limit_train=6", "size=2", f"out={work / 'zoo_cifar'}", *common, cwd=work, env=env)
    check = ("import model_zoo, sys; a, b = model_zoo.load(sys.argv[1]), model_zoo.load(sys.argv[2]); "
             "print(a.dataset().x_train.shape[1], len(a), b.dataset().x_train.shape[1], len(b))")
    assert _run(py, "-c", check, work / "zoo_npz", work / "zoo_cifar", cwd=work, env=env).split() == ["12", "10", "3", "2"]

    _run(ws, "predict", f"zoo={work / 'zoo_npz'}", "metanet.epochs=1", "metanet.batch_size=4",
         "metanet.model.num_probes=4", "metanet.model.hidden=[8]", "progress=false", "threads=1",
         "fractions=[0.6,0.2,0.2]", f"hydra.run.dir={work / 'pred'}", cwd=work, env=env)
    metrics = json.loads((work / "pred" / "metrics.json").read_text())
    assert metrics["metanet"] == "probe" and "test/tau" in metrics
    assert (work / "pred" / "predictor" / "model.safetensors").is_file()

    graph = {"latent_dim": 4, "enc_hidden": 8, "enc_layers": 1, "dec_hidden": 8, "dec_layers": 1, "ae_steps": 2,
             "batch_size": 2, "eval_every": 1, "ddpm_steps": 2, "ddpm_hidden": 16, "ddpm_blocks": 1, "timesteps": 10}
    _run(ws, "generate", f"zoo={work / 'zoo_npz'}", "n=2", f"out={work / 'gen'}", "progress=false",
         *[f"graph.{k}={v}" for k, v in graph.items()], cwd=work, env=env)
    report = json.loads((work / "gen" / "report.json").read_text())
    assert report["n"] == 2 and all(0 <= s["test_accuracy"] <= 1 for s in report["samples"])
    assert (work / "gen" / "report.png").is_file()
