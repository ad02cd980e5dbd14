"""The README's front page: its Python tour runs as printed, and the CI markers and links hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 250, "README.md: keep the front page within 250 lines; move detail to docs/"
    for marker in ("<!-- ci:demo -->", "<!-- ci:test -->"):
        assert marker in text, f"README.md lost the {marker} marker that .ci/run and CI read"
    test_cmd = text.split("<!-- ci:test -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert "pytest" in test_cmd and "pip install -e '.[dev]'" in test_cmd
    demo_cmd = text.split("<!-- ci:demo -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert "weightspace demo" in demo_cmd


def test_readme_links_resolve():
    """Every relative link of the README names a file or folder of the checkout."""
    missing = []
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text()):
        if "://" in target:
            continue
        if not (ROOT / target).exists():
            missing.append(target)
    assert not missing, f"README.md links to paths that do not exist: {missing}"


def test_readme_tour_runs(tmp_path, monkeypatch):
    """The tour converts, builds a zoo, trains a predictor, fills an MLP and nowcasts, as printed."""
    blocks = _python_blocks()
    assert len(blocks) == 1, f"README.md: expected one python block (the tour), found {len(blocks)}"
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    env: dict = {"__name__": "readme_tour"}
    exec(compile(blocks[0], "README.md:tour", "exec"), env)
    assert env["g"].num_nodes > 0 and len(env["zoo"]) == 40
    assert 0.0 <= float(env["pred"](env["zoo"].build_model(1))) <= 1.5
    summary = env["handle"].summary()
    assert summary["steps"] == 200 and summary["jumps"] >= 1
    assert all(torch.isfinite(p).all() for p in env["net"].parameters())


def test_readme_tour_round_trip_is_exact():
    """The tour's claim 'bit for bit' holds for the model it converts."""
    import weightspace as ws
    from weightspace.examples import ResNet

    torch.manual_seed(1)
    src, dst = ResNet(), ResNet()
    ws.from_graph(ws.to_graph(src), dst)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


@pytest.mark.parametrize("page", ["docs/getting-started.md", "docs/index.md"])
def test_docs_entry_pages_exist(page):
    assert (ROOT / page).exists(), f"{page}: the README links to it"
