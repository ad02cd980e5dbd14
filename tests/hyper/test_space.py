"""weightspace.hyper.space: seeded determinism, split disjointness, every sampled network converts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightspace.graph import GraphSpec
from weightspace.hyper.space import SPLITS, CellSpace, build_arch, config_key, in_distribution, is_held_out

INPUTS = {"digits": (1, 8, 8), "mnist1d": (1, 40)}


@pytest.mark.parametrize("data", ["digits", "mnist1d"])
def test_sampling_is_seeded(data):
    space = CellSpace(data)
    a = [space.sample_train(np.random.default_rng(7)) for _ in range(3)]
    b = [space.sample_train(np.random.default_rng(7)) for _ in range(3)]
    assert [config_key(c) for c in a] == [config_key(c) for c in b]
    assert space.split("wide", 5, seed=1) == space.split("wide", 5, seed=1)
    # sensitivity: another seed gives other configurations
    assert space.split("wide", 5, seed=1) != space.split("wide", 5, seed=2)


@pytest.mark.parametrize("data", ["digits", "mnist1d"])
def test_splits_are_disjoint_and_outside_training(data):
    space = CellSpace(data)
    pool = {config_key(c) for c in space.train_pool(60)}
    seen: set[str] = set()
    for split in SPLITS:
        keys = {config_key(c) for c in space.split(split, 12)}
        assert len(keys) == 12
        assert not keys & pool, split
        assert not keys & seen, split
        seen |= keys
        for c in space.split(split, 12):
            if split == "test":
                assert in_distribution(c) and is_held_out(c)
            else:
                assert not in_distribution(c), (split, c)
    assert all(in_distribution(c) and not is_held_out(c) for c in space.train_pool(60))


def test_split_specific_ranges():
    space = CellSpace("digits")
    assert all(c["norm"] == "none" for c in space.split("no-norm", 10))
    assert all(len(cell["ops"]) >= 6 for c in space.split("dense", 10) for cell in c["cells"])
    with pytest.raises(ValueError, match="unknown split"):
        space.split("huge", 1)
    with pytest.raises(ValueError, match="unknown dataset"):
        CellSpace("cifar")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), data=st.sampled_from(["digits", "mnist1d"]),
       split=st.sampled_from(("train", *SPLITS)))
def test_every_sampled_network_runs_converts_and_round_trips(seed, data, split):
    space = CellSpace(data)
    rng = np.random.default_rng(seed)
    config = space.sample_train(rng) if split == "train" else space.split(split, 1, seed=seed)[0]
    torch.manual_seed(seed)
    model = build_arch(config)
    x = torch.randn(3, *INPUTS[data])
    model.eval()
    y = model(x)
    assert y.shape == (3, 10)
    spec = GraphSpec.from_module(model, x[:1])
    state = model.state_dict()
    back = spec.to_state_dict(spec.to_graph(state))
    assert all(torch.equal(back[k], state[k]) for k in spec.names)


@pytest.mark.parametrize("dims,size,patch", [(2, 8, 2), (2, 8, 4), (1, 40, 5)])
def test_linear_embedding_computes_the_tinyvit_function(dims, size, patch):
    """A post-norm, mean-pooled ``embed="linear"`` ViT with TinyViT's weights computes TinyViT's
    outputs (the patch cut is the same reshape); with a conv embedding of the same weights it does
    not (sensitivity: the two embeddings read patch positions differently unless cut alike)."""
    from weightspace.archs import TinyViT

    torch.manual_seed(0)
    ref = TinyViT(1, 10, image_size=size, patch=patch, dim=8, heads=2, depth=2, dims=dims).eval()
    config = {"kind": "vit", "dims": dims, "in_channels": 1, "size": size, "num_classes": 10, "norm": "ln",
              "act": "gelu", "dim": 8, "heads": 2, "depth": 2, "mlp_ratio": 2, "patch": patch, "cls": False,
              "norm_first": False, "pool": "mean", "embed": "linear"}
    model = build_arch(config).eval()
    state = {}
    for k, v in ref.state_dict().items():
        k = k.replace("embed.", "patch.").replace("encoder.layers.", "blocks.")
        state[k] = v[None] if k == "pos" else v
    model.load_state_dict(state)
    x = torch.randn(4, 1, *([size] * dims))
    torch.testing.assert_close(model(x), ref(x))
    # sensitivity: a channel-first patch cut (the transpose of the right one) changes the outputs
    if dims == 2:
        model._patches = lambda t: t.reshape(4, 1, size // patch, patch, size // patch, patch).permute(
            0, 2, 4, 1, 5, 3).reshape(4, -1, patch * patch)
        assert not torch.allclose(model(x), ref(x))


@pytest.mark.parametrize("data", ["digits", "mnist1d"])
def test_train_pool_adds_linear_embedding_twins_without_moving_its_draws(data):
    """``train_pool(linear_embed=s)`` keeps the ``n`` draws and their order, appends the ``Linear``
    twins of about a share ``s`` of the ViTs, never the held-out TinyViT form (post-norm, no class
    token), and every twin runs and converts."""
    from weightspace.hyper.space import linear_embed_twin

    space = CellSpace(data)
    base = space.train_pool(300)
    full, half = space.train_pool(300, linear_embed=1.0), space.train_pool(300, linear_embed=0.5)
    assert full[:300] == base and half[:300] == base and space.train_pool(300, linear_embed=0.0) == base
    vits = [c for c in base if c["kind"] == "vit"]
    twins = full[300:]
    assert len(twins) == sum(linear_embed_twin(c) is not None for c in vits) > 0
    assert all(t["embed"] == "linear" and (t["norm_first"] or t["cls"]) for t in twins)
    assert 0 < len(half) - 300 < len(twins)  # sensitivity: a smaller share adds fewer twins
    assert {config_key(t) for t in half[300:]} <= {config_key(t) for t in twins}
    assert linear_embed_twin(next(c for c in base if c["kind"] == "cnn")) is None
    assert linear_embed_twin({**vits[0], "norm_first": False, "cls": False}) is None
    x = torch.randn(2, *INPUTS[data])
    for t in twins[:3]:
        model = build_arch(t).eval()
        assert model(x).shape == (2, 10)
        spec = GraphSpec.from_module(model, x[:1])
        assert "patch.weight" in spec.names
    with pytest.raises(ValueError, match="share"):
        space.train_pool(10, linear_embed=1.5)
