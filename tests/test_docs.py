"""The documentation: every Python block of the guide pages runs as printed, and the site builds strictly.

Blocks of one page run in order in one namespace (as a reader pastes them into one session), in an
empty temporary folder. A block preceded by ``<!-- docs-test: skip (reason) -->`` is not run (it
needs files a test machine does not have, e.g. CIFAR-10); a block preceded by
``<!-- docs-test: requires MODULE -->`` runs only when ``MODULE`` is installed (an optional extra).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted([DOCS / "getting-started.md", *(DOCS / "guides").glob("*.md")])
#: pages whose blocks take more than ~20 s on one CPU thread
SLOW_PAGES = {"generate.md"}

_BLOCK = re.compile(r"(?:<!-- docs-test: (skip|requires (\S+))[^>]*-->\s*\n)?```python\n(.*?)```", flags=re.S)


def python_blocks(page: Path | str) -> list[str]:
    """The page's Python blocks that are meant to run here, in order."""
    text = page if isinstance(page, str) else page.read_text()
    out = []
    for marker, module, code in _BLOCK.findall(text):
        if marker == "skip" or (module and importlib.util.find_spec(module) is None):
            continue
        out.append(code)
    return out


def test_every_guide_has_a_runnable_block():
    """A guide without a tested snippet would make 'each snippet runs as printed' vacuous."""
    exempt = {"cli.md", "cluster.md"}  # command-line pages: bash only
    empty = [p.name for p in PAGES if p.name not in exempt and not python_blocks(p)]
    assert not empty, f"docs pages without a runnable python block: {empty}"


def test_skip_marker_is_recognised():
    """Sensitivity check of the extractor: a skip marker drops exactly the block after it."""
    page = ("a\n```python\nx = 1\n```\n<!-- docs-test: skip (needs files) -->\n```python\nraise SystemExit\n```\n"
            "<!-- docs-test: requires no_such_module_xyz -->\n```python\nimport no_such_module_xyz\n```\n"
            "<!-- docs-test: requires json -->\n```python\nimport json\n```\n")
    assert python_blocks(page) == ["x = 1\n", "import json\n"]


@pytest.mark.parametrize(
    "page",
    [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in SLOW_PAGES else []) for p in PAGES],
)
def test_page_blocks_run(page: Path, tmp_path, monkeypatch):
    import torch

    blocks = python_blocks(page)
    if not blocks:
        pytest.skip(f"{page.name} has no python blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    env: dict = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page.relative_to(ROOT)}:block{i}", "exec"), env)
        except Exception as e:  # name the page and block, then the original error
            raise AssertionError(f"{page.relative_to(ROOT)}: python block {i} failed: {e!r}\n{code}") from e


def test_mkdocs_build_strict(tmp_path):
    """``mkdocs build --strict``: broken links, missing pages or references and docstring errors fail."""
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    # the generated pages exist: one per results file and per shipped checkpoint
    results_dir = ROOT / "benchmarks" / "results"
    for results in results_dir.rglob("*.json"):
        page = site / "benchmarks" / results.relative_to(results_dir).with_suffix("") / "index.html"
        assert page.exists(), f"no generated page for {results}"
    for ckpt in (ROOT / "weightspace" / "checkpoints").iterdir():
        if (ckpt / "config.json").exists():
            assert (site / "model-cards" / ckpt.name / "index.html").exists(), ckpt.name
    shutil.rmtree(site)
