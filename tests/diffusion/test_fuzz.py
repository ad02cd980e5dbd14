"""Random corruptions of saved generators (p-diff and graph latent diffusion): loading either succeeds
or raises :class:`~weightspace.pretrained.CheckpointError` naming the folder; it never runs code the
file names (architectures resolve through the allowlist) and never raises a foreign error."""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightspace.diffusion import WeightDiffusion
from weightspace.instantiate import trusted_code
from weightspace.pretrained import CheckpointError

from ..strategies import JSON_VALUES


@pytest.fixture(scope="module")
def saved(pdiff, graph, tmp_path_factory):
    root = tmp_path_factory.mktemp("gens")
    return {"pdiff": pdiff.save_pretrained(root / "pdiff"), "graph": graph.save_pretrained(root / "graph")}


def _paths(node, prefix=()):
    """Every ``(path, value)`` of a JSON document."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _load(d):
    try:
        WeightDiffusion.from_pretrained(d)
    except CheckpointError as e:
        assert str(d) in str(e), f"the error does not name the folder: {e}"


@pytest.mark.parametrize("kind", ["pdiff", "graph"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupt_config_values(kind, saved, tmp_path_factory, data):
    d = tmp_path_factory.mktemp("c") / kind
    shutil.copytree(saved[kind], d)
    doc = json.loads((d / "config.json").read_text())
    paths = [p for p, _ in _paths(doc) if p]
    path = data.draw(st.sampled_from(paths))
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = data.draw(JSON_VALUES)
    (d / "config.json").write_text(json.dumps(doc))
    _load(d)


def test_architecture_naming_code_is_refused(saved, tmp_path):
    """A p-diff generator builds its architecture while loading: one naming a command is refused (the
    graph generator looks its architectures up among those it was trained on before building any)."""
    kind = "pdiff"
    d = tmp_path / kind
    shutil.copytree(saved[kind], d)
    sentinel = tmp_path / "pwned"
    doc = json.loads((d / "config.json").read_text())
    target = {"_target_": "subprocess.getoutput", "cmd": f"touch {sentinel}"}
    hits = [p for p, v in _paths(doc) if isinstance(v, dict) and "_target_" in v]
    assert hits, "the saved generator records no architecture to tamper with"
    for p in hits:
        node = doc
        for k in p[:-1]:
            node = node[k]
        node[p[-1]] = dict(target)
    (d / "config.json").write_text(json.dumps(doc))

    def load_and_sample():
        try:
            WeightDiffusion.from_pretrained(d).sample(1, seed=0)
        except Exception:  # noqa: BLE001 - any refusal is fine; what matters is whether the command ran
            pass

    load_and_sample()
    assert not sentinel.exists()
    with trusted_code():  # sensitivity: trusted, the same file does run the command
        load_and_sample()
    assert sentinel.exists()
