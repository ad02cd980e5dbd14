"""The built wheel works without the checkout: built, installed into a fresh venv, used from another folder."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*cmd, cwd, env, timeout=300):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


# runs on every submission: about 15-35 s (build, install, a 2-run zoo, two checkpoint loads)
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WEIGHTSPACE_CONFIGS", "PYTHONHOME")}
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
    ws = venv / "bin" / "weightspace"
    assert "verbs:" in _run(ws, "--help", cwd=work, env=env)
    assert "digits_mlp_demo" in _run(ws, "zoo", "--help", cwd=work, env=env)
    _run(ws, "zoo", "digits_mlp_demo", f"out={work / 'zoo'}", "size=2", "trainer.epochs=1", "trainer.checkpoints=[0,1]",
         "progress=false", "report=false", "threads=1", cwd=work, env=env)
    assert (work / "zoo" / "zoo.json").is_file() and (work / "zoo" / "manifest.json").is_file()
    out = _run(py, "-c", "import weightspace as ws, model_zoo; from weightspace.cli.main import config_dir; "
               "ws.Nowcaster.from_pretrained('nowcaster'); ws.GraphHyperNetwork.from_pretrained('hypernet'); "
               "print(ws.__file__, model_zoo.__file__, config_dir(), sep='\\n')", cwd=work, env=env).split()
    # the package, its configs and its checkpoints came from the wheel, not from the checkout
    assert len(out) == 3 and all(Path(w).resolve().is_relative_to(venv.resolve()) for w in out), out
