"""Equivariance: a function-preserving permutation of hidden neurons permutes the graph's nodes and
nothing else. Sensitivity: permuting input/output neurons, or breaking a coupled permutation, is
visible."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weightspace as ws
from weightspace.examples import build_example

from ..helpers import assert_graphs_permuted, fingerprint, isomorphic, permute_params
from ..perm_cases import CASES, permuted_pair

SEEDS = st.integers(0, 2**31 - 1)


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
@pytest.mark.parametrize("name", CASES)
def test_hidden_permutation_permutes_graph_nodes_only(name, seed):
    """MLP; CNN with BatchNorm, depthwise conv and Flatten; ResNet with residual stream and a
    downsample branch; ViT with class token, positional table, heads and feed-forward units."""
    g0, g1, pi = permuted_pair(name, seed)  # checks that the network's outputs are unchanged
    assert not torch.equal(pi, torch.arange(g0.num_nodes))
    assert_graphs_permuted(g0, g1, pi)
    assert fingerprint(g0) == fingerprint(g1)


# --------------------------------------------------------------------------- sensitivity


@pytest.mark.parametrize("which", ["input", "output"])
def test_permuting_input_or_output_neurons_is_visible(which):
    model, x = build_example("mlp")
    g0 = ws.to_graph(model)
    p = torch.randperm(64 if which == "input" else 10, generator=torch.Generator().manual_seed(0))
    rules = [("0.weight", 1, p)] if which == "input" else [("4.weight", 0, p), ("4.bias", 0, p)]
    permute_params(model, rules)
    assert fingerprint(ws.to_graph(model)) != fingerprint(g0)


def _tiny_attention() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.MultiheadAttention(4, 2, batch_first=True).eval()
    return model, torch.randn(1, 3, 4)


def test_attention_query_key_coupling_is_visible():
    model, x = _tiny_attention()
    g0 = ws.to_graph(model, (x, x, x))
    within = torch.tensor([1, 0, 2, 3])  # swaps two query units of head 0
    q_only = torch.cat([within, torch.arange(4, 12)])
    q_and_k = torch.cat([within, 4 + within, torch.arange(8, 12)])
    with torch.no_grad():
        y0 = model(x, x, x)[0]
    coupled, _ = _tiny_attention()
    permute_params(coupled, [("in_proj_weight", 0, q_and_k), ("in_proj_bias", 0, q_and_k)])
    broken, _ = _tiny_attention()
    permute_params(broken, [("in_proj_weight", 0, q_only), ("in_proj_bias", 0, q_only)])
    with torch.no_grad():
        assert torch.allclose(coupled(x, x, x)[0], y0, atol=1e-6)
        assert not torch.allclose(broken(x, x, x)[0], y0, atol=1e-4)
    assert isomorphic(g0, ws.to_graph(coupled, (x, x, x)))
    assert not isomorphic(g0, ws.to_graph(broken, (x, x, x)))
