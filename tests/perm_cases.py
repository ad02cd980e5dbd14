"""Function-preserving hidden-neuron permutations of the example networks (MLP, CNN, ResNet, ViT),
and a non-symmetry change of each: shared by the converter's and the metanetworks' tests."""

from __future__ import annotations

import torch
from torch import Tensor

import weightspace as ws
from weightspace.examples import build_example
from weightspace.instantiate import register_arch

from .helpers import head_permutation, node_permutation, permute_params

CASES = ("mlp", "cnn_flatten_bn", "resnet", "vit")


def _randperm(n: int, gen: torch.Generator) -> Tensor:
    """A random permutation of ``n`` that is never the identity (so every drawn case moves neurons;
    ``randperm(6)`` alone is the identity once in 720 draws, which made a test fail at random)."""
    p = torch.randperm(n, generator=gen)
    return p.roll(1) if torch.equal(p, torch.arange(n)) else p


def _bn_rules(prefix: str, p: Tensor) -> list:
    return [(f"{prefix}.{k}", 0, p) for k in ("weight", "bias", "running_mean", "running_var")]


def _rules(name: str, gen: torch.Generator) -> tuple[list, dict]:
    if name == "mlp":
        p1, p2 = _randperm(32, gen), _randperm(32, gen)
        rules = [("0.weight", 0, p1), ("0.bias", 0, p1), ("2.weight", 1, p1), ("2.weight", 0, p2), ("2.bias", 0, p2),
                 ("4.weight", 1, p2)]
        return rules, {"0": p1, "2": p2}
    if name == "cnn_flatten_bn":
        p = _randperm(6, gen)
        cols = (p[:, None] * 9 + torch.arange(9)).reshape(-1)
        rules = [("0.weight", 0, p), ("0.bias", 0, p)]
        rules += [(f"1.{k}", 0, p) for k in ("weight", "bias", "running_mean", "running_var")]
        rules += [("4.weight", 0, p), ("4.bias", 0, p), ("7.weight", 1, cols)]
        return rules, {"0": p, "4": p}
    if name == "resnet":
        ps, p1 = _randperm(8, gen), _randperm(8, gen)
        p2, p3 = _randperm(16, gen), _randperm(16, gen)
        rules = [("stem.0.weight", 0, ps), *_bn_rules("stem.1", ps),
                 ("layers.0.conv1.weight", 0, p1), ("layers.0.conv1.weight", 1, ps), *_bn_rules("layers.0.bn1", p1),
                 ("layers.0.conv2.weight", 0, ps), ("layers.0.conv2.weight", 1, p1), *_bn_rules("layers.0.bn2", ps),
                 ("layers.1.conv1.weight", 0, p2), ("layers.1.conv1.weight", 1, ps), *_bn_rules("layers.1.bn1", p2),
                 ("layers.1.conv2.weight", 0, p3), ("layers.1.conv2.weight", 1, p2), *_bn_rules("layers.1.bn2", p3),
                 ("layers.1.shortcut.0.weight", 0, p3), ("layers.1.shortcut.0.weight", 1, ps),
                 *_bn_rules("layers.1.shortcut.1", p3), ("fc.weight", 1, p3)]
        groups = {"stem.0": ps, "layers.0.conv1": p1, "layers.0.conv2": ps, "add": ps, "layers.1.conv1": p2,
                  "layers.1.conv2": p3, "layers.1.shortcut.0": p3, "add_1": p3}
        return rules, groups
    if name == "vit":
        D, H, dh = 16, 2, 8
        pd = _randperm(D, gen)
        rules = [("cls_token", 2, pd), ("pos_embed", 2, pd), ("patch.weight", 0, pd), ("patch.bias", 0, pd),
                 ("norm.weight", 0, pd), ("norm.bias", 0, pd), ("head.weight", 1, pd)]
        groups = {"patch": pd}
        for b in range(2):
            pre = f"blocks.{b}"
            qk, v = head_permutation(H, dh, gen)
            pff = _randperm(2 * D, gen)
            rows = torch.cat([qk, D + qk, 2 * D + v])
            rules += [(f"{pre}.self_attn.in_proj_weight", 0, rows), (f"{pre}.self_attn.in_proj_weight", 1, pd),
                      (f"{pre}.self_attn.in_proj_bias", 0, rows),
                      (f"{pre}.self_attn.out_proj.weight", 1, v), (f"{pre}.self_attn.out_proj.weight", 0, pd),
                      (f"{pre}.self_attn.out_proj.bias", 0, pd),
                      (f"{pre}.linear1.weight", 0, pff), (f"{pre}.linear1.weight", 1, pd),
                      (f"{pre}.linear1.bias", 0, pff),
                      (f"{pre}.linear2.weight", 0, pd), (f"{pre}.linear2.weight", 1, pff),
                      (f"{pre}.linear2.bias", 0, pd)]
            rules += [(f"{pre}.norm{i}.{k}", 0, pd) for i in (1, 2) for k in ("weight", "bias")]
            groups.update({f"{pre}.self_attn.q": qk, f"{pre}.self_attn.k": qk, f"{pre}.self_attn.v": v,
                           f"{pre}.self_attn.out_proj": pd, f"{pre}.add1": pd, f"{pre}.linear1": pff,
                           f"{pre}.linear2": pd, f"{pre}.add2": pd})
        return rules, groups
    raise KeyError(name)


#: a parameter whose rows, permuted alone, break the coupling with the next layer (not a symmetry)
BREAK = {"mlp": ("0.weight", 32), "cnn_flatten_bn": ("0.weight", 6), "resnet": ("layers.0.conv1.weight", 8),
         "vit": ("blocks.0.linear1.weight", 32)}


@register_arch
def example_module(name: str) -> torch.nn.Module:
    """The example network ``name`` as a ``_target_`` factory (``{"_target_": "tests.perm_cases.example_module",
    "name": ...}``) for metanetworks that run the networks they read."""
    return build_example(name)[0]


def permuted_pair(name: str, seed: int) -> tuple[ws.ParameterGraph, ws.ParameterGraph, Tensor]:
    """``(g0, g1, pi)``: the example's graph, the graph after a function-preserving hidden
    permutation (checked on the network's outputs), and the node map old id -> new id."""
    model, x = build_example(name)
    spec = ws.GraphSpec.from_module(model, x)
    g0 = spec.to_graph(model.state_dict())
    rules, groups = _rules(name, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y0 = model(x)
        permute_params(model, rules)
        assert torch.allclose(model(x), y0, atol=1e-5), "the permutation is not function-preserving"
    g1 = spec.to_graph(model.state_dict())
    return g0, g1, node_permutation(spec.num_nodes, spec.node_groups, groups)


def broken_pair(name: str, seed: int) -> tuple[ws.ParameterGraph, ws.ParameterGraph]:
    """The example's graph and the graph after permuting one layer's output rows *without* the
    matching inputs of the next layer: the network's function changes."""
    model, x = build_example(name)
    spec = ws.GraphSpec.from_module(model, x)
    g0 = spec.to_graph(model.state_dict())
    key, n = BREAK[name]
    perm = torch.roll(torch.arange(n), 1)  # a fixed-point-free cycle
    with torch.no_grad():
        y0 = model(x)
        permute_params(model, [(key, 0, perm)])
        assert not torch.allclose(model(x), y0, atol=1e-4)
    return g0, spec.to_graph(model.state_dict())


def max_grid(*graphs: ws.ParameterGraph) -> tuple[int, int]:
    return max(g.grid[0] for g in graphs), max(g.grid[1] for g in graphs)
