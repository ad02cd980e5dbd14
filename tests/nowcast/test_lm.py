"""weightspace.nowcast.lm: offline corpora, the two LM families, recipes and cached trajectories."""

from __future__ import annotations

import pytest
import torch

from weightspace.graph import GraphSpec
from weightspace.nowcast.lm import (
    MHALM,
    LMRecipe,
    TinyGPT,
    dependency_closure,
    example_input,
    lm_batch,
    lm_trajectories,
    sample_recipes,
    text_corpus,
    train_lm,
)


@pytest.mark.parametrize("name", ["docs", "code"])
def test_corpus_is_deterministic_and_split(name):
    a, b = text_corpus(name, max_bytes=30_000), text_corpus(name, max_bytes=30_000)
    assert a.sha256 == b.sha256 and torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert a.train.numel() + a.val.numel() == 30_000 and a.val.numel() == 3_000 and a.train.dtype == torch.uint8


def test_the_two_corpora_differ_and_bad_names_are_refused():
    assert text_corpus("docs", max_bytes=20_000).sha256 != text_corpus("code", max_bytes=20_000).sha256
    with pytest.raises(ValueError, match="unknown corpus 'wiki'"):
        text_corpus("wiki")


def test_dependency_closure_follows_core_requirements_only():
    closure = dependency_closure("weightspace")
    assert {"torch", "numpy", "safetensors", "tqdm"} <= set(closure)  # direct and transitive (torch -> filelock)
    assert "filelock" in closure and "weightspace" not in closure
    assert "mkdocs" not in closure and "pytest" not in closure  # the dev extra is not followed
    assert "weightspace" in dependency_closure("weightspace", include_root=True)
    with pytest.raises(ValueError, match="'no-such-dist' is not installed"):
        dependency_closure("no-such-dist")


def test_corpus_restricted_to_named_distributions():
    one = text_corpus("docs", distributions=["numpy", "networkx"])
    again = text_corpus("docs", distributions=("NumPy", "NetworkX"))  # names are normalized
    two = text_corpus("docs", distributions=["numpy", "networkx", "safetensors"])
    assert one.sha256 == again.sha256 and one.files == 2
    assert two.sha256 != one.sha256 and two.files == 3  # sensitivity: another distribution changes the text
    with pytest.raises(ValueError, match=r"\['no-such-dist'\] are not installed"):
        text_corpus("docs", distributions=["numpy", "no_such_dist"])


def test_lm_batch_targets_are_the_next_bytes():
    data = torch.arange(200, dtype=torch.uint8)
    x, y = lm_batch(data, 3, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (3, 8) and torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y - x, torch.ones_like(x))


@pytest.mark.parametrize("make,seq", [(lambda: TinyGPT(dim=16, heads=2, depth=1, seq=8), 8),
                                      (lambda: MHALM(dim=16, heads=2, depth=1, seq=8), 8)])
def test_families_convert_and_are_causal(make, seq):
    torch.manual_seed(0)
    m = make().eval()
    spec = GraphSpec.from_module(m, example_input(seq))
    assert spec.num_params == sum(p.numel() for p in m.parameters())
    x = torch.randint(0, 256, (2, seq))
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1) % 256  # changing the last byte changes no earlier prediction ...
    with torch.no_grad():
        a, b = m(x), m(x2)
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-5)
    assert not torch.allclose(a[:, -1], b[:, -1], atol=1e-5)  # ... but its own


def test_mhalm_head_is_tied_to_the_embedding():
    m = MHALM(dim=16, heads=2, depth=1, seq=8)
    spec = GraphSpec.from_module(m, example_input(8))
    assert spec.num_params == sum(p.numel() for p in m.parameters())  # the head adds no parameters


def test_recipes_vary_optimizers_and_schedules():
    rs = sample_recipes(24, seed=0)
    assert rs == sample_recipes(24, seed=0) and rs != sample_recipes(24, seed=1)
    assert {r.optimizer for r in rs} == {"adam", "adamw", "sgd"} and len({r.schedule for r in rs}) == 3
    r = LMRecipe(schedule="warmup_cosine", warmup=10, steps=110)
    assert r.lr_factor(0) == pytest.approx(0.1) and r.lr_factor(9) == 1.0 and r.lr_factor(110) == pytest.approx(0.1)


def test_training_lowers_the_loss_and_records_snapshots():
    corpus = text_corpus("code", max_bytes=40_000)
    rec = LMRecipe(dim=16, heads=2, depth=1, seq=16, batch=8, lr=1e-2, steps=60)
    model, flat = train_lm(rec, corpus, seed=0, every=10)
    assert flat.shape == (7, sum(p.numel() for p in model.parameters()))  # steps 0, 10, ..., 60
    x, y = lm_batch(corpus.val, 32, 16, torch.Generator().manual_seed(0))
    fresh = rec.make()
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(fresh(x).reshape(-1, 256), y.reshape(-1))
        after = torch.nn.functional.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))
    assert after < before - 0.5


def test_trajectories_are_cached_and_retrained_when_the_recipe_changes(tmp_path):
    kw = dict(runs=2, steps=8, every=2, max_bytes=20_000, progress=False)
    a = lm_trajectories(tmp_path, **kw)
    stamp = [p.stat().st_mtime_ns for p in sorted(tmp_path.iterdir())]
    b = lm_trajectories(tmp_path, **kw)
    assert [p.stat().st_mtime_ns for p in sorted(tmp_path.iterdir())] == stamp  # read back, not retrained
    assert all(torch.equal(x.flat, y.flat) for x, y in zip(a, b)) and a[0].flat.shape[0] == 5
    c = lm_trajectories(tmp_path, **{**kw, "steps": 10})  # another recipe: retrained
    assert c[0].flat.shape[0] == 6
    assert lm_trajectories(tmp_path, **{**kw, "runs": 0}) == []
