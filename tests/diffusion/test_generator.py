"""WeightDiffusion (weightspace.diffusion.generator) on a CI-sized digits MLP zoo: sampling, encode/decode,
evaluation, bad input, save_pretrained/from_pretrained."""

import json
import re

import pytest
import torch

from model_zoo.archs import instantiate
from weightspace.diffusion import UnknownArchitectureError, WeightDiffusion, evaluate_flat

from .tiny import GRAPH, PDIFF, A, B


def test_pdiff_encode_decode_and_samples_load(pdiff):
    net = instantiate(A)
    z = pdiff.encode(net)
    assert z.dim() == 1 and z.numel() == pdiff.model.ae.latent_dim
    back = pdiff.decode(z)
    assert type(back) is type(net) and list(back.state_dict()) == list(net.state_dict())
    states = pdiff.sample(3, seed=0)
    assert len(states) == 3
    for s in states:
        fresh = instantiate(A)
        fresh.load_state_dict(s)  # strict: every key of the target module
        assert torch.isfinite(fresh(torch.rand(2, 64))).all()
    rt = pdiff.encode_decode_loss()
    assert rt["networks"] >= 1 and 0 <= rt["test_accuracy_after"] <= 1
    assert rt["accuracy_loss"] == pytest.approx(rt["test_accuracy_before"] - rt["test_accuracy_after"])


def test_sampling_is_deterministic_under_seed(pdiff, graph):
    for gen, arch in ((pdiff, None), (graph, A)):
        a, b, c = (gen.sample_flat(4, arch, seed=s) for s in (0, 0, 1))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_training_is_deterministic_under_seed(zoo, pdiff):
    again = WeightDiffusion.fit(zoo, "pdiff", arch=A, config=PDIFF, progress=False)
    assert torch.equal(again.sample_flat(2, seed=0), pdiff.sample_flat(2, seed=0))


def test_graph_generator_fills_seen_and_unseen_architectures(graph):
    assert len(graph.archs) == 2
    unseen = {**A, "depth": 2, "width": 12}
    for arch in (A, B, unseen):
        states = graph.sample(2, arch, seed=0)
        net = instantiate(arch)
        net.load_state_dict(states[0])
        assert torch.isfinite(net(torch.rand(3, 64))).all()
    prompted = graph.sample_flat(2, A, seed=0, accuracy=0.9)
    assert prompted.shape[0] == 2 and not torch.equal(prompted, graph.sample_flat(2, A, seed=0))
    z = graph.encode(instantiate(B), B)
    assert z.shape == (GRAPH["latent_dim"],)
    assert list(graph.decode(z, B).state_dict()) == list(instantiate(B).state_dict())
    ev = graph.evaluate(graph.sample_flat(3, unseen, seed=0), unseen)
    assert ev["references"] is None and ev["generated"]["test_accuracy"]["n"] == 3


def test_evaluate_flat_scores_copies_as_not_novel(graph):
    pop = graph.population.find(A)
    ev = evaluate_flat(pop, graph.population.data, {"copies": pop.flat["train"][:3]})
    assert ev["copies"]["nearest_tv"]["best"] == pytest.approx(0.0, abs=1e-6)
    assert ev["copies"]["max_agreement"]["worst"] == pytest.approx(1.0)
    assert set(ev) >= {"training", "heldout", "copies"} or len(pop.flat["test"]) == 0


def test_bad_input_errors(zoo, pdiff, graph):
    with pytest.raises(ValueError, match="mixes 2 architectures"):
        WeightDiffusion.fit(zoo, "pdiff", config=PDIFF, progress=False)
    with pytest.raises(UnknownArchitectureError, match="'width': 99"):
        WeightDiffusion.fit(zoo, "pdiff", arch={**A, "width": 99}, config=PDIFF, progress=False)
    with pytest.raises(ValueError, match="unknown generator kind 'gan'"):
        WeightDiffusion.fit(zoo, "gan")
    with pytest.raises(ValueError, match=r"unknown pdiff generator option\(s\) \['depth'\]"):
        WeightDiffusion.fit(zoo, "pdiff", arch=A, config={"depth": 3})
    with pytest.raises(UnknownArchitectureError, match="fixed to"):
        pdiff.sample_flat(1, B)
    with pytest.raises(ValueError, match="unconditional"):
        pdiff.sample_flat(1, accuracy=0.9)
    with pytest.raises(UnknownArchitectureError, match="holds 2 architectures"):
        graph.sample_flat(1)
    with pytest.raises(UnknownArchitectureError, match="cannot build architecture"):
        graph.sample_flat(1, {**A, "activation": "nope"})


def _same_states(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert list(x) == list(y) and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("name, arch", [("pdiff", None), ("graph", A), ("graph", B), ("graph_probe", A)])
def test_save_and_reload_sample_the_same_networks(request, tmp_path, name, arch):
    """save_pretrained -> from_pretrained: the reloaded generator (without its zoo) samples, encodes and
    decodes exactly as the trained one did."""
    gen = request.getfixturevalue(name)
    before = gen.sample(3, arch, seed=7)
    d = gen.save_pretrained(tmp_path / "gen")
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    again = WeightDiffusion.from_pretrained(d)
    assert again.kind == gen.kind and again.population is None and again.archs == gen.archs
    assert again.zoo_path == gen.population.zoo_path and again.seed == gen.seed
    _same_states(again.sample(3, arch, seed=7), before)
    net = instantiate(A if arch is None else arch)
    torch.testing.assert_close(again.encode(net, arch), gen.encode(net, arch), atol=0, rtol=0)
    if name != "pdiff":
        assert again.model.calibration == gen.model.calibration and float(again.model.scale) == float(gen.model.scale)
        assert again.model.val_history == gen.model.val_history
        unseen = {**A, "depth": 2, "width": 12}
        torch.testing.assert_close(again.sample_flat(2, unseen, seed=1), gen.sample_flat(2, unseen, seed=1), atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="loaded without"):
        again.evaluate(gen.sample_flat(1, arch, seed=0), arch)


def test_reload_with_zoo_reattaches_the_same_population(pdiff, zoo, tmp_path):
    again = WeightDiffusion.from_pretrained(pdiff.save_pretrained(tmp_path / "gen"), zoo=zoo)
    a, b = again.population.find(A), pdiff.population.find(A)
    assert a.runs == b.runs and torch.equal(a.flat["train"], b.flat["train"])
    assert again.encode_decode_loss() == pdiff.encode_decode_loss()


def test_aligned_pdiff_round_trip(zoo, tmp_path):
    """``align=True`` keeps its alignment reference and inputs in the checkpoint: encode() is unchanged."""
    gen = WeightDiffusion.fit(zoo, "pdiff", arch=A, config={**PDIFF, "align": True}, progress=False)
    again = WeightDiffusion.from_pretrained(gen.save_pretrained(tmp_path / "aligned"))
    assert again.model.align_reference is not None
    src = gen.population.find(A).flat["train"][:3]
    torch.testing.assert_close(again.model.encode(src), gen.model.encode(src), atol=0, rtol=0)
    _same_states(again.sample(2, seed=3), gen.sample(2, seed=3))


def test_damaged_checkpoint_names_the_file(pdiff, graph, tmp_path):
    from weightspace.diffusion import GraphLatentDiffusion, PDiff
    from weightspace.pretrained import CheckpointError

    for gen, cls in ((pdiff, PDiff), (graph, GraphLatentDiffusion)):
        d = gen.save_pretrained(tmp_path / gen.kind)
        w, c = d / "model.safetensors", d / "config.json"
        good_w, good_c = w.read_bytes(), c.read_text()
        w.write_bytes(good_w[: len(good_w) // 2])
        with pytest.raises(CheckpointError, match=re.escape(str(w)) + ": cannot read"):
            WeightDiffusion.from_pretrained(d)
        w.unlink()
        with pytest.raises(CheckpointError, match=re.escape(str(w)) + ": missing"):
            WeightDiffusion.from_pretrained(d)
        w.write_bytes(good_w)
        c.write_text("{not json")
        with pytest.raises(CheckpointError, match=re.escape(str(c)) + ": not valid JSON"):
            WeightDiffusion.from_pretrained(d)
        c.unlink()
        with pytest.raises(CheckpointError, match=re.escape(str(c)) + ": missing"):
            WeightDiffusion.from_pretrained(d)
        doc = json.loads(good_c)  # a config edited away from its weights
        key = "latent_channels" if cls is PDiff else "latent_dim"
        doc["config"][key] += 1
        c.write_text(json.dumps(doc))
        with pytest.raises(CheckpointError, match=re.escape(str(w))):
            WeightDiffusion.from_pretrained(d)
        c.write_text(good_c)
        other = GraphLatentDiffusion if cls is PDiff else PDiff
        with pytest.raises(CheckpointError, match=re.escape(str(c)) + ": holds format 'weightspace.diffusion"):
            other.from_pretrained(d)
        assert isinstance(cls.from_pretrained(d), cls)
    hyper = tmp_path / "not_a_generator"
    hyper.mkdir()
    (hyper / "config.json").write_text(json.dumps({"format": "weightspace.hypernet", "version": 1, "config": {}}))
    with pytest.raises(CheckpointError, match="not a weight generator"):
        WeightDiffusion.from_pretrained(hyper)
