"""Latent weight diffusion (weightspace.diffusion) on a CI-sized digits MLP zoo."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file

import weightspace as ws
from model_zoo.archs import instantiate
from weightspace.diffusion import UnknownArchitectureError, WeightDiffusion, evaluate_flat

from ..tiny_zoo import tiny_zoo

A = {"_target_": "model_zoo.archs.MLP", "in_features": 64, "num_outputs": 10, "depth": 1, "width": 8,
     "activation": "relu"}
B = {**A, "width": 6}
TINY = {"name": "diffusion_tiny", "size": 20, "seed": 3, "chunk_size": 20,
        "data": {"name": "digits", "flatten": True},
        "arch": A,
        "space": {"lr": {"log_uniform": [3e-3, 1e-2]}, "optimizer": "adam", "batch_size": 64,
                  "arch": {"choice": [A, B]}},
        "trainer": {"epochs": 1}}
PDIFF = {"channels": [4, 4], "latent_channels": 2, "ae_steps": 2, "eval_every": 1, "ddpm_steps": 2,
         "ddpm_hidden": 16, "ddpm_blocks": 1, "timesteps": 10, "batch_size": 4}
GRAPH = {"latent_dim": 4, "encoder": "graph", "enc_hidden": 8, "enc_layers": 1, "decoder_init": "scratch", "dec_hidden": 8,
         "dec_layers": 1, "ae_steps": 2, "batch_size": 2, "inputs_per_step": 32, "eval_every": 1, "ddpm_steps": 2,
         "ddpm_hidden": 16, "ddpm_blocks": 1, "timesteps": 10}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return tiny_zoo(tmp_path_factory, TINY, "diffusion_tiny_zoo")


@pytest.fixture(scope="module")
def pdiff(zoo):
    torch.set_num_threads(1)
    return WeightDiffusion.fit(zoo, "pdiff", arch=A, config=PDIFF, progress=False)


@pytest.fixture(scope="module")
def graph(zoo):
    torch.set_num_threads(1)
    return WeightDiffusion.fit(zoo, "graph", config=GRAPH, progress=False)


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


def _cli(*args):
    """``weightspace generate ARGS`` in this process (a subprocess would pay the imports again)."""
    from weightspace.cli.main import main

    main(["generate", *args])


def test_cli_end_to_end(zoo, tmp_path):
    out = tmp_path / "gen"
    opts = [f"graph.{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in GRAPH.items()]
    _cli(f"zoo={zoo}", "n=4", f"out={out}", "progress=false", *opts)
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 4 and len(report["samples"]) == 4 and report["throughput_nets_per_s"] > 0
    assert {s["arch"]["width"] for s in report["samples"]} == {6, 8}  # a mixed zoo's architectures share n
    for s in report["samples"]:
        net = instantiate(s["arch"])
        net.load_state_dict(load_file(str(out / s["file"])))
        assert 0 <= s["test_accuracy"] <= 1
    assert {"generated", "training", "encode_decode"} <= set(report["results"][0])
    kept = [r for r in report["latent_scale_calibration"] if r["kept"]]
    assert len(kept) == 1 and report["latent_scale"] == kept[0]["scale"]
    # the run saved its generator into OUT: generator=OUT samples the same networks without training
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    again = tmp_path / "again"
    _cli(f"generator={out}", "n=4", f"out={again}", "progress=false")
    report2 = json.loads((again / "report.json").read_text())
    assert not (again / "config.json").exists()  # nothing trained, nothing saved
    assert [s["test_accuracy"] for s in report2["samples"]] == [s["test_accuracy"] for s in report["samples"]]
    assert report2["latent_scale"] == report["latent_scale"] and report2["zoo"] == report["zoo"]
    for s in report["samples"]:
        a, b = load_file(str(out / s["file"])), load_file(str(again / s["file"]))
        assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SystemExit, match="generator=.*nowhere: no such directory"):
        _cli(f"generator={tmp_path / 'nowhere'}", "n=1", f"out={tmp_path / 'x'}", "progress=false")


def test_cli_bad_input(zoo, tmp_path):
    from omegaconf import OmegaConf

    from weightspace.cli.generate import positional_overrides, run

    assert positional_overrides(["zoo=D", "arch={a:1}", "n=3", "graph.ae_steps=2"]) == [
        "zoo_dir=D", "target_arch={a:1}", "n=3", "++graph.ae_steps=2"]
    base = {"zoo_dir": str(zoo), "n": 1, "out": str(tmp_path / "o"), "target_arch": None, "kind": "graph",
            "accuracy": None, "seed": 0, "threads": 1, "progress": False}
    cases = [({"target_arch": {"_target_": "model_zoo.archs.MLP", "depht": 2}}, "has no argument(s) ['depht']"),
             ({"target_arch": {"_target_": "model_zoo.archs.Nope"}}, "unknown architecture"),
             ({"target_arch": {"depth": 2}}, "must be a _target_ config"),
             ({"zoo_dir": str(tmp_path / "nowhere")}, "does not exist"),
             ({"zoo_dir": None}, "pass zoo=DIR"),
             ({"n": 0}, "n must be at least 1")]
    for override, message in cases:
        with pytest.raises(SystemExit, match=re.escape(message)):
            run(OmegaConf.create({**base, **override}))


def test_graph_decoder_uses_the_latent(zoo):
    """The decoder must not ignore the latent: after training, different latents decode to different
    functions (a collapsed autoencoder writes one function for every latent).

    A CI-sized run cannot train the autoencoder long enough to reproduce the tiny zoo's very different
    one-epoch runs (60 steps: sample spread about 1.6% of the runs' spread; see benchmarks/generate.md
    for the full-size figures), so this only guards against a latent that does not reach the weights.
    """
    from weightspace.diffusion.data import predictions

    torch.set_num_threads(1)
    cfg = {"latent_dim": 8, "ae_steps": 60, "batch_size": 4, "inputs_per_step": 64, "eval_every": 60,
           "ddpm_steps": 200, "ddpm_hidden": 32, "ddpm_blocks": 1, "timesteps": 100}
    gen = WeightDiffusion.fit(zoo, "graph", arch=A, config=cfg, progress=False)
    pop, data = gen.population.find(A), gen.population.data

    def spread(flat):  # mean pairwise total-variation distance of predicted class distributions
        _, prob = predictions(pop.build(), pop.spec, flat, data.x_test)
        d = 0.5 * (prob[:, None] - prob[None]).abs().sum(-1).mean(-1)
        return float(d.sum() / (len(flat) * (len(flat) - 1)))

    train = spread(pop.flat["train"])
    samples = spread(gen.sample_flat(8, seed=0))
    recon = spread(gen.model.decode(A, gen.model.encode(A, pop.flat["train"])))
    zero = spread(gen.model.decode(A, torch.zeros(4, cfg["latent_dim"])))
    assert zero < 1e-6  # one latent: one function
    assert samples > 1e-3 * train and recon > 1e-3 * train, (samples, recon, train)


def test_graph_latent_standardization_is_deterministic_and_matches_training(graph):
    """In eval mode the latents are standardized with statistics fitted on each architecture's training
    runs, so encoding them reproduces the batch standardization used in training (a BatchNorm's running
    statistics, averaged over architectures and lagging the encoder, did not), and the validation KL that
    picked the checkpoint is reproduced by the returned model (checkpoint selection scores what it keeps)."""
    m = graph.model
    assert not m.training
    archs = [a for a in graph.population.archs if len(a.runs["train"])]
    assert len(archs) == 2
    for a in archs:
        with torch.no_grad():
            e = m._embed(a.config, a.flat["train"])
            m.train()
            try:
                batch = m._embed(a.config, a.flat["train"])
            finally:
                m.eval()
        torch.testing.assert_close(e, batch, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(e.mean(0), torch.zeros(e.shape[1]), atol=1e-4, rtol=0)
        assert (e.std(0, unbiased=False) <= 1 + 1e-4).all()  # 1 unless a dimension's variance is ~ eps
        # encode() is deterministic: one network alone gets the same latent as within the population
        torch.testing.assert_close(m.encode(a.config, a.flat["train"][:1]), m.encode(a.config, a.flat["train"])[:1],
                                   atol=1e-3, rtol=1e-3)
    steps = [s for s, _ in m.val_history]
    assert steps == list(range(1, GRAPH["ae_steps"] + 1))
    best = min(v for _, v in m.val_history)
    assert m._val_kl(archs, graph.population.data) == pytest.approx(best, rel=1e-5)
    assert not m.training


def _own_source_rank(prob_rec: torch.Tensor, prob_src: torch.Tensor) -> float:
    """Mean normalized rank (0: nearest, 1: farthest; ties share the mean rank, so chance is 0.5) of each
    reconstruction's own source among all sources, by total-variation distance of predicted distributions."""
    d = 0.5 * (prob_rec[:, None] - prob_src[None]).abs().sum(-1).mean(-1)  # [recon, source]
    own = d.diagonal()[:, None]
    n = d.shape[1]
    rank = ((d < own).sum(1) + 0.5 * ((d == own).sum(1) - 1)).float() / (n - 1)
    return float(rank.mean())


def test_graph_reconstructions_are_specific_to_their_source(zoo):
    """The decoder must use the latent *specifically*: trained with the contrastive term, each training
    run's reconstruction is nearer (in function space) to its own source than to most other runs. A
    decoder that ignores the latent writes one function for every run and ranks its own source at
    chance (0.5); the sensitivity check feeds every run the same latent and must score exactly that.
    (Measured at this size: 0.11 with the contrastive term, 0.49 without it, contrast_weight=0.)"""
    from weightspace.diffusion.data import predictions

    torch.set_num_threads(1)
    cfg = {"latent_dim": 8, "ae_steps": 60, "batch_size": 4, "inputs_per_step": 64, "eval_every": 60,
           "ddpm_steps": 2, "ddpm_hidden": 16, "ddpm_blocks": 1, "timesteps": 10, "contrast_weight": 1.0}
    gen = WeightDiffusion.fit(zoo, "graph", arch=A, config=cfg, progress=False)
    pop, data, m = gen.population.find(A), gen.population.data, gen.model
    src = pop.flat["train"]
    assert len(src) >= 4
    prob = lambda flat: predictions(pop.build(), pop.spec, flat, data.x_test)[1]  # noqa: E731
    z = m.encode(A, src)
    rank = _own_source_rank(prob(m.decode(A, z)), prob(src))
    collapsed = _own_source_rank(prob(m.decode(A, z.mean(0, keepdim=True).expand_as(z))), prob(src))
    assert collapsed == pytest.approx(0.5)
    assert rank < 0.25, rank


def test_graph_latent_temperature_is_calibrated_on_validation_only(graph):
    """The latent temperature is chosen on the validation split: the largest scale reached through the grid
    while the decoded samples' validation accuracy stays at least the training runs' mean, and ``sample``
    applies it. Invariance: replacing the test inputs, test labels and test runs changes nothing; sensitivity:
    replacing the validation inputs changes the figures."""
    import dataclasses

    m, data = graph.model, graph.population.data
    rows = m.calibration
    assert [r["scale"] for r in rows] == list(m.config.scale_grid)
    assert sum(r["kept"] for r in rows) == 1
    kept = next(r for r in rows if r["kept"])
    assert float(m.scale) == kept["scale"]
    ref = rows[0]["training_val_accuracy"]
    i = rows.index(kept)
    assert all(r["val_accuracy"] >= ref for r in rows[:i])  # every smaller scale held the accuracy
    if i:
        assert kept["val_accuracy"] >= ref
    # the candidates: the prefix of the grid that holds the accuracy (the first scale if it already fails)
    n = next((j for j, r in enumerate(rows) if r["val_accuracy"] < ref), len(rows))
    allowed = rows[: max(n, 1)]
    assert m.config.novelty_target is None and kept is allowed[-1]
    assert all(0 <= r["farther_probability"] <= 1 and 0 <= r["pairwise_iou"] <= 1 for r in rows)
    # sample() decodes scale * (DDPM sample)
    z = m.ddpm.sample(3, m.cond(A, 3, None), torch.Generator().manual_seed(5))
    torch.testing.assert_close(m.sample(A, 3, torch.Generator().manual_seed(5)), m.decode(A, z * m.scale))
    archs = [a for a in graph.population.archs if len(a.runs["train"])]
    saved = (m.scale.clone(), list(rows))
    g = torch.Generator()
    try:
        base = m.calibrate_scale(archs, data, g.manual_seed(0)), m.calibration
        noise = torch.Generator().manual_seed(1)
        no_test = dataclasses.replace(data, x_test=torch.randn(data.x_test.shape, generator=noise),
                                      y_test=torch.randint(0, 10, data.y_test.shape, generator=noise))
        archs_no_test = [dataclasses.replace(a, flat={**a.flat, "test": torch.randn(a.flat["test"].shape, generator=noise)})
                         for a in archs]
        assert (m.calibrate_scale(archs_no_test, no_test, g.manual_seed(0)), m.calibration) == base
        other_val = dataclasses.replace(data, x_val=torch.rand(data.x_val.shape, generator=noise))
        m.calibrate_scale(archs, other_val, g.manual_seed(0))
        assert [r["val_accuracy"] for r in m.calibration] != [r["val_accuracy"] for r in base[1]]
    finally:
        m.scale.copy_(saved[0])
        m.calibration = saved[1]


def test_pick_scale_rule():
    """Among the scales reached while the accuracy holds: the largest (default), or the one nearest a
    novelty target."""
    from weightspace.diffusion.graph import pick_scale

    def rows(acc, far):
        return [{"scale": 1 + 0.5 * i, "val_accuracy": a, "farther_probability": f} for i, (a, f) in enumerate(zip(acc, far))]

    # default: the last scale before the accuracy falls short, whatever the novelty
    assert pick_scale(rows([0.97, 0.96, 0.95, 0.93], [0.3, 0.45, 0.6, 0.7]), 0.94)["scale"] == 2.0
    assert pick_scale(rows([0.97, 0.96, 0.95, 0.94], [0.3, 0.45, 0.6, 0.7]), 0.94)["scale"] == 2.5
    assert pick_scale(rows([0.97, 0.93, 0.96], [0.1, 0.3, 0.5]), 0.94)["scale"] == 1.0
    assert pick_scale(rows([0.90, 0.95], [0.5, 0.6]), 0.94)["scale"] == 1.0

    # the target is met inside the accuracy-holding prefix
    assert pick_scale(rows([0.97, 0.96, 0.95, 0.94], [0.3, 0.45, 0.6, 0.7]), 0.94, 0.5)["scale"] == 1.5
    # the accuracy stops the scale before the target: the last scale that holds it
    assert pick_scale(rows([0.97, 0.96, 0.93, 0.95], [0.2, 0.3, 0.5, 0.5]), 0.94, 0.5)["scale"] == 1.5
    # a later scale that holds the accuracy again is not reached
    assert pick_scale(rows([0.97, 0.93, 0.96], [0.1, 0.3, 0.5]), 0.94, 0.5)["scale"] == 1.0
    # the first scale already falls short: it is kept
    assert pick_scale(rows([0.90, 0.89], [0.5, 0.6]), 0.94, 0.5)["scale"] == 1.0
    # samples already farther than runs at scale 1: no scaling up; another target moves the choice
    assert pick_scale(rows([0.97, 0.96], [0.6, 0.7]), 0.9, 0.5)["scale"] == 1.0
    assert pick_scale(rows([0.97, 0.96], [0.6, 0.7]), 0.9, novelty_target=0.7)["scale"] == 1.5
    # ties go to the smaller scale; order of the rows does not matter
    assert pick_scale(rows([0.97, 0.96, 0.95], [0.25, 0.75, 0.8])[::-1], 0.9, 0.5)["scale"] == 1.0
    with pytest.raises(ValueError, match="no candidate"):
        pick_scale([], 0.9)


def test_graph_fixed_latent_temperature_skips_calibration(zoo):
    torch.set_num_threads(1)
    gen = WeightDiffusion.fit(zoo, "graph", arch=A, config={**GRAPH, "sample_scale": 1.5}, progress=False)
    assert float(gen.model.scale) == 1.5 and gen.model.calibration == []


PROBE_GRAPH = {**GRAPH, "encoder": "probe", "probes": 6, "probe_hidden": 8, "latent_map_hidden": 8}


@pytest.fixture(scope="module")
def graph_probe(zoo):
    torch.set_num_threads(1)
    return WeightDiffusion.fit(zoo, "graph", config=PROBE_GRAPH, progress=False)


def test_probe_encoder_latent_is_permutation_invariant_and_sensitive(graph_probe):
    """The probe encoder reads what a network computes, so permuting its hidden units leaves the latent
    exactly as it was, while another network (one weight changed) gets another latent."""
    from tests.helpers import permute_params

    m = graph_probe.model
    assert type(m.encoder).__name__ == "_ProbeEncoder" and m.encoder.probes.shape == (6, 64)
    net = instantiate(A)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    twin = instantiate(A)
    twin.load_state_dict(net.state_dict())
    permute_params(twin, [("net.1.weight", 0, perm), ("net.1.bias", 0, perm), ("net.3.weight", 1, perm)])
    assert not torch.equal(twin.state_dict()["net.1.weight"], net.state_dict()["net.1.weight"])
    z, z_perm = graph_probe.encode(net, A), graph_probe.encode(twin, A)
    torch.testing.assert_close(z_perm, z, atol=1e-5, rtol=1e-5)
    other = instantiate(A)
    other.load_state_dict(net.state_dict())
    with torch.no_grad():
        other.net[1].weight.mul_(3.0)
    assert (graph_probe.encode(other, A) - z).abs().max() > 1e-4
    with torch.no_grad():
        other.net[3].bias[0] = float("nan")
    with pytest.raises(ws.NonFiniteWeightsError, match="net.3.bias"):
        graph_probe.encode(other, A)


def test_probe_encoder_generator_fills_seen_and_unseen_architectures(graph_probe):
    unseen = {**A, "width": 7}
    for arch in (A, B, unseen):
        states = graph_probe.sample(2, arch, seed=0)
        fresh = instantiate(arch)
        fresh.load_state_dict(states[0])
        assert torch.isfinite(fresh(torch.rand(2, 64))).all()
    twin = graph_probe.decode(graph_probe.encode(instantiate(B), B), B)
    assert list(twin.state_dict()) == list(instantiate(B).state_dict())


def test_unknown_encoder_is_refused(zoo):
    with pytest.raises(ValueError, match="encoder must be 'graph' or 'probe', got 'pixels'"):
        WeightDiffusion.fit(zoo, "graph", config={**GRAPH, "encoder": "pixels"}, progress=False)


# ----------------------------------------------------------------------------- persistence
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
        with pytest.raises(CheckpointError, match=re.escape(str(c)) + ": not a JSON object"):
            WeightDiffusion.from_pretrained(d)
        c.unlink()
        with pytest.raises(CheckpointError, match=re.escape(str(c)) + ": missing"):
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
