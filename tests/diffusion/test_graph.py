"""Graph latent diffusion (weightspace.diffusion.graph): the latent reaches the weights, latent
standardization, latent temperature, the probe encoder."""


import pytest
import torch

import weightspace as ws
from model_zoo.archs import instantiate
from weightspace.diffusion import WeightDiffusion

from .tiny import GRAPH, A, B


def test_graph_decoder_uses_the_latent(zoo, tmp_path):
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

    # the decoder that started from the shipped hypernetwork is saved with the generator: a reload samples the same
    again = WeightDiffusion.from_pretrained(gen.save_pretrained(tmp_path / "gen"))
    assert again.model.config.decoder_init == "hypernet"
    torch.testing.assert_close(again.sample_flat(4, seed=3), gen.sample_flat(4, seed=3), atol=0, rtol=0)


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
