"""The README's Python examples run as written (those that need no zoo or trained predictor on disk)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"expected one README python block containing {marker!r}, found {len(found)}"
    return found[0]


def test_converter_example_runs():
    env: dict = {}
    exec(_block("from weightspace.examples import ResNet"), env)
    for k, v in env["model"].state_dict().items():  # the [T, ...] stack decodes bit for bit
        assert torch.equal(env["state"][k][3], v), k
    assert env["nxg"].number_of_nodes() == env["g"].num_nodes


def test_hypernetwork_example_runs():
    env: dict = {}
    exec(_block("ws.load_hypernetwork()"), env)
    assert all(torch.isfinite(p).all() for p in env["cnn"].parameters())


def test_nowcasting_example_runs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    loader = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)] * 15  # 60 steps: jumps at 20, 40, 60
    env = {"model": model, "optimizer": torch.optim.Adam(model.parameters(), 1e-2), "loader": loader, "F": F}
    exec("import weightspace as ws\n" + _block("ws.Nowcaster.pretrained()"), env)
    assert env["handle"].jumps == 3  # jumps at steps 20, 40 and 60 inside the unchanged loop
    assert all(torch.isfinite(p).all() for p in model.parameters())
