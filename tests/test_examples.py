"""Every script in ``examples/`` runs in its fast mode and reports what it promises.

The scripts run in-process (``runpy``, as ``__main__``, with ``--fast`` and an empty working folder),
so the package is imported once for all of them; one of them also runs as a separate
``python examples/<script>.py --fast`` process, the way a user starts it.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
#: script -> text its final report line must contain (checked, so a script that silently does less fails)
EXPECT = {
    "convert_model.py": "round trip exact=True",
    "zoo_own_data.py": "runs in",
    "predict_accuracy.py": "test tau",
    "nowcast_loop.py": "jumps",
    "nowcast_lr_schedule.py": "jumps",
    "nowcast_lightning.py": "jumps",
    "hypernetwork_fill.py": "zero-shot accuracy",
    "generate_weights.py": "networks sampled",
    "open_shared_zoo.py": "every tampered copy refused: True",
}
SLOW = {"generate_weights.py"}
NEEDS = {"nowcast_lightning.py": "pytorch_lightning"}


def test_every_example_is_tested():
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert scripts == set(EXPECT), f"examples/ and tests/test_examples.py disagree: {scripts ^ set(EXPECT)}"


@pytest.mark.parametrize(
    "script", [pytest.param(s, marks=[pytest.mark.slow] if s in SLOW else []) for s in sorted(EXPECT)]
)
def test_example_runs_fast(script, tmp_path, monkeypatch, capsys):
    if script in NEEDS and importlib.util.find_spec(NEEDS[script]) is None:
        pytest.skip(f"{script} needs {NEEDS[script]}")
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / script), "--fast"])
    torch.manual_seed(0)
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    out = capsys.readouterr().out
    assert EXPECT[script] in out, f"examples/{script}: expected {EXPECT[script]!r} in its report, got {out[-500:]!r}"


def test_example_runs_as_a_script(tmp_path):
    """``python examples/convert_model.py --fast`` from another folder, in a fresh process."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / "convert_model.py"), "--fast"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "round trip exact=True" in proc.stdout
    assert (tmp_path / "runs" / "examples" / "convert_model" / "graph.pt").exists()
