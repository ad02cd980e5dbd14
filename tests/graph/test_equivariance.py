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

from ..helpers import (
    assert_graphs_permuted,
    fingerprint,
    head_permutation,
    isomorphic,
    node_permutation,
    permute_params,
)

SEEDS = st.integers(0, 2**31 - 1)


def _check(model: nn.Module, x: torch.Tensor, rules, group_perms) -> None:
    """Permute ``model`` by ``rules``; outputs must stay, the graph must move by ``group_perms``."""
    spec = ws.GraphSpec.from_module(model, x)
    g0 = spec.to_graph(model.state_dict())
    with torch.no_grad():
        y0 = model(x)
        permute_params(model, rules)
        assert torch.allclose(model(x), y0, atol=1e-5), "the permutation is not function-preserving"
    g1 = spec.to_graph(model.state_dict())
    pi = node_permutation(spec.num_nodes, spec.node_groups, group_perms)
    assert not torch.equal(pi, torch.arange(spec.num_nodes))
    assert_graphs_permuted(g0, g1, pi)
    assert fingerprint(g0) == fingerprint(g1)


@settings(max_examples=15, deadline=None)
@given(seed=SEEDS)
def test_mlp_hidden_permutation(seed):
    model, x = build_example("mlp")
    gen = torch.Generator().manual_seed(seed)
    p1, p2 = torch.randperm(32, generator=gen), torch.randperm(32, generator=gen)
    rules = [("0.weight", 0, p1), ("0.bias", 0, p1), ("2.weight", 1, p1), ("2.weight", 0, p2), ("2.bias", 0, p2),
             ("4.weight", 1, p2)]
    _check(model, x, rules, {"0": p1, "2": p2})


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_cnn_with_batchnorm_depthwise_and_flatten(seed):
    model, x = build_example("cnn_flatten_bn")
    p = torch.randperm(6, generator=torch.Generator().manual_seed(seed))
    cols = (p[:, None] * 9 + torch.arange(9)).reshape(-1)  # Flatten: 9 spatial positions per channel
    rules = [("0.weight", 0, p), ("0.bias", 0, p)]
    rules += [(f"1.{k}", 0, p) for k in ("weight", "bias", "running_mean", "running_var")]
    rules += [("4.weight", 0, p), ("4.bias", 0, p), ("7.weight", 1, cols)]
    _check(model, x, rules, {"0": p, "4": p})


def _bn_rules(prefix, p):
    return [(f"{prefix}.{k}", 0, p) for k in ("weight", "bias", "running_mean", "running_var")]


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_resnet_residual_stream_and_block_permutations(seed):
    model, x = build_example("resnet")
    gen = torch.Generator().manual_seed(seed)
    ps, p1 = torch.randperm(8, generator=gen), torch.randperm(8, generator=gen)
    p2, p3 = torch.randperm(16, generator=gen), torch.randperm(16, generator=gen)
    rules = [("stem.0.weight", 0, ps), *_bn_rules("stem.1", ps),
             ("layers.0.conv1.weight", 0, p1), ("layers.0.conv1.weight", 1, ps), *_bn_rules("layers.0.bn1", p1),
             ("layers.0.conv2.weight", 0, ps), ("layers.0.conv2.weight", 1, p1), *_bn_rules("layers.0.bn2", ps),
             ("layers.1.conv1.weight", 0, p2), ("layers.1.conv1.weight", 1, ps), *_bn_rules("layers.1.bn1", p2),
             ("layers.1.conv2.weight", 0, p3), ("layers.1.conv2.weight", 1, p2), *_bn_rules("layers.1.bn2", p3),
             ("layers.1.downsample.0.weight", 0, p3), ("layers.1.downsample.0.weight", 1, ps),
             *_bn_rules("layers.1.downsample.1", p3), ("fc.weight", 1, p3)]
    groups = {"stem.0": ps, "layers.0.conv1": p1, "layers.0.conv2": ps, "add": ps, "layers.1.conv1": p2,
              "layers.1.conv2": p3, "layers.1.downsample.0": p3, "add_1": p3}
    _check(model, x, rules, groups)


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS)
def test_vit_stream_heads_and_feedforward_permutations(seed):
    model, x = build_example("vit")  # dim 16, 2 heads, ffn 32, norm_first blocks
    D, H, dh = 16, 2, 8
    gen = torch.Generator().manual_seed(seed)
    pd = torch.randperm(D, generator=gen)
    rules = [("cls_token", 2, pd), ("pos_embed", 2, pd), ("patch.weight", 0, pd), ("patch.bias", 0, pd),
             ("norm.weight", 0, pd), ("norm.bias", 0, pd), ("head.weight", 1, pd)]
    groups = {"patch": pd}
    for b in range(2):
        pre = f"blocks.{b}"
        qk, v = head_permutation(H, dh, gen)
        pff = torch.randperm(2 * D, generator=gen)
        rows = torch.cat([qk, D + qk, 2 * D + v])
        rules += [(f"{pre}.self_attn.in_proj_weight", 0, rows), (f"{pre}.self_attn.in_proj_weight", 1, pd),
                  (f"{pre}.self_attn.in_proj_bias", 0, rows),
                  (f"{pre}.self_attn.out_proj.weight", 1, v), (f"{pre}.self_attn.out_proj.weight", 0, pd),
                  (f"{pre}.self_attn.out_proj.bias", 0, pd),
                  (f"{pre}.linear1.weight", 0, pff), (f"{pre}.linear1.weight", 1, pd), (f"{pre}.linear1.bias", 0, pff),
                  (f"{pre}.linear2.weight", 0, pd), (f"{pre}.linear2.weight", 1, pff), (f"{pre}.linear2.bias", 0, pd)]
        rules += [(f"{pre}.norm{i}.{k}", 0, pd) for i in (1, 2) for k in ("weight", "bias")]
        groups.update({f"{pre}.self_attn.q": qk, f"{pre}.self_attn.k": qk, f"{pre}.self_attn.v": v,
                       f"{pre}.self_attn.out_proj": pd, f"{pre}.add1": pd, f"{pre}.linear1": pff,
                       f"{pre}.linear2": pd, f"{pre}.add2": pd})
    _check(model, x, rules, groups)


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
