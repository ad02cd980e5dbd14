"""Hugging Face `transformers` models through the one traced converter (torch.export), no
per-model code: round trips (BERT, GPT-2 tied and untied, Llama with grouped-query attention and
rotary embeddings, ViT); permutations of heads and feed-forward units that keep the outputs and only
permute the graph's nodes (BERT, GPT-2 with its fused ``c_attn`` and tied table, Llama, ViT), each
with a sensitivity test beside it (a query permuted without its keys); the predictor's ``encode``
and the nowcasting hook on a transformers model."""

from __future__ import annotations

from collections import defaultdict

import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import weightspace as ws
from weightspace.graph import NODE_FEATURES, EdgeType, NodeType

from ..helpers import (
    assert_graphs_permuted,
    assert_state_equal,
    head_permutation,
    node_permutation,
    permute_params,
    qk_pairing_signature,
)

transformers = pytest.importorskip("transformers")

D, H, FF = 16, 2, 32
V = 30
LH, LKV = 4, 2  # Llama: query heads, key/value heads (grouped-query attention, 2 query heads per group)
LD = D // LH  # units per Llama head


def bert(layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=V, hidden_size=D, num_hidden_layers=layers, num_attention_heads=H,
                                  intermediate_size=FF, max_position_embeddings=12, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0, initializer_range=0.5)
    return transformers.BertModel(cfg).eval()


def gpt2(tied: bool = True, seed: int = 0, init: float = 0.02):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=V, n_embd=D, n_layer=2, n_head=H, n_positions=12,
                                  tie_word_embeddings=tied, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0, initializer_range=init)
    return transformers.GPT2LMHeadModel(cfg).eval()


def llama(layers: int = 2, seed: int = 0, tied: bool = False):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=FF, num_hidden_layers=layers,
                                   num_attention_heads=LH, num_key_value_heads=LKV, max_position_embeddings=12,
                                   initializer_range=0.3, tie_word_embeddings=tied, bos_token_id=0,
                                   eos_token_id=0, pad_token_id=None)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # RMSNorm scales start at 1: make them distinct so that permutations show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def vit(seed: int = 0, init: float = 0.02):
    torch.manual_seed(seed)
    cfg = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=D, num_hidden_layers=2,
                                 num_attention_heads=H, intermediate_size=FF, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0, initializer_range=init)
    return transformers.ViTModel(cfg).eval()


IDS = torch.tensor([[3, 7, 1, 29, 4, 4]])
PIXELS = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _outputs(model, inputs=IDS):
    with torch.no_grad():
        out = model(inputs)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits


MODELS = {
    "bert": (bert, IDS),
    "gpt2_untied": (lambda seed=0: gpt2(False, seed), IDS),
    "gpt2_tied": (lambda seed=0: gpt2(True, seed), IDS),
    "llama_gqa": (lambda seed=0: llama(seed=seed), IDS),
    "llama_gqa_tied": (lambda seed=0: llama(seed=seed, tied=True), IDS),
    "vit": (vit, PIXELS),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_round_trip_is_exact_and_reproduces_outputs(name):
    make, inputs = MODELS[name]
    model = make()
    spec = ws.GraphSpec.from_module(model, inputs)
    g = spec.to_graph(model.state_dict())
    assert_state_equal(spec.to_state_dict(g), model.state_dict())
    other = make(seed=1)
    assert not torch.equal(_outputs(other, inputs), _outputs(model, inputs))
    ws.from_graph(g, other, spec=spec)
    assert torch.equal(_outputs(other, inputs), _outputs(model, inputs))


def test_bert_graph_types_attention_per_head():
    model = bert(layers=1)
    g = ws.to_graph(model, IDS)
    counts = {t: int((g.node_type == t).sum()) for t in (NodeType.ATTN_Q, NodeType.ATTN_K, NodeType.ATTN_V)}
    assert counts == {NodeType.ATTN_Q: D, NodeType.ATTN_K: D, NodeType.ATTN_V: D}
    assert int((g.edge_type == EdgeType.ATTN_HEAD).sum()) == H * (D // H) ** 2
    assert int((g.edge_type == EdgeType.ATTN_OUT).sum()) == D * D
    assert int((g.node_type == NodeType.VOCAB).sum()) == V  # token ids
    assert int((g.node_type == NodeType.POSITION).sum()) == 12 + 2  # position and segment tables


def test_fused_qkv_projection_is_typed_edge_by_edge():
    g = ws.to_graph(gpt2(False), IDS)
    for t in (EdgeType.ATTN_Q, EdgeType.ATTN_K, EdgeType.ATTN_V):
        assert int((g.edge_type == t).sum()) == 2 * D * D  # 2 layers of a D x D projection each


# ----------------------------------------------------------------------------- tied embeddings
def test_tied_embeddings_are_stored_once_and_restored_to_both_keys():
    model = gpt2(tied=True)
    assert model.lm_head.weight is model.transformer.wte.weight
    spec = ws.GraphSpec.from_module(model, IDS)
    assert spec.aliases == {"lm_head.weight": "transformer.wte.weight"}
    unique = sum(t.numel() for t in {id(t): t for t in model.state_dict(keep_vars=True).values()}.values()
                 if t.is_floating_point())
    assert spec.num_params == unique  # the shared table once
    g = spec.to_graph(model.state_dict())
    # the table's V*D entries are embedding edges; the output layer reuses them through V + D TIED edges
    assert int((g.edge_type == EdgeType.EMBEDDING).sum()) == V * D + 12 * D
    tied = g.edge_type == EdgeType.TIED
    assert int(tied.sum()) == V + D
    src, dst = g.edge_index[:, tied].long()
    assert set(g.node_type[src].tolist()) == {NodeType.VOCAB, NodeType.HIDDEN}
    rows = g.node_type[src] == NodeType.VOCAB
    assert torch.equal(g.node_pos[src[rows]], g.node_pos[dst[rows]])  # row v scores output v
    assert set(g.node_type[dst[rows]].tolist()) == {NodeType.OUTPUT}
    state = spec.to_state_dict(g)
    assert state["lm_head.weight"] is state["transformer.wte.weight"]


def test_tied_table_scaled_changes_the_graph_once():
    """Sensitivity: the shared table appears in the graph's weights (scaled table -> scaled edges)."""
    model = gpt2(tied=True)
    spec = ws.GraphSpec.from_module(model, IDS)
    g0 = spec.to_graph(model.state_dict())
    with torch.no_grad():
        model.transformer.wte.weight.mul_(2.0)
    g1 = spec.to_graph(model.state_dict())
    changed = (g0.edge_attr != g1.edge_attr).any(1)
    assert set(g0.edge_type[changed].tolist()) == {EdgeType.EMBEDDING}
    assert int(changed.sum()) == V * D


# ----------------------------------------------------------------------------- Llama
def test_llama_graph_types_rmsnorm_rotary_and_grouped_query_attention():
    model = llama(layers=1)
    g = ws.to_graph(model, IDS)
    n = lambda t: int((g.node_type == t).sum())  # noqa: E731
    e = lambda t: int((g.edge_type == t).sum())  # noqa: E731
    assert (n(NodeType.ROTARY_Q), n(NodeType.ROTARY_K), n(NodeType.ATTN_V)) == (LH * LD, LKV * LD, LKV * LD)
    assert n(NodeType.ATTN_Q) == n(NodeType.ATTN_K) == 0
    assert n(NodeType.ATTN_OUT) == LH * LD  # one result per query head
    assert e(EdgeType.ATTN_QK) == LH * LD  # query unit i of head h -> key unit i of head h // 2
    assert e(EdgeType.ATTN_GROUP) == LH * LD
    assert e(EdgeType.ROTARY) == (LH + LKV) * LD // 2  # unit i + d/2 -> unit i: the pairs RoPE mixes
    assert nx.is_directed_acyclic_graph(ws.to_networkx(g))
    assert e(EdgeType.ATTN_OUT) == D * D
    rot = (g.node_type == NodeType.ROTARY_Q) | (g.node_type == NodeType.ROTARY_K)
    assert sorted(g.node_pos[rot].tolist()) == sorted(list(range(LD)) * (LH + LKV))  # index inside the head
    # RMSNorm written as pow/mean/rsqrt/mul: its scale is a node feature, like nn.RMSNorm's
    scales = g.x[:, NODE_FEATURES.index("weight")]
    for name in ("model.layers.0.input_layernorm.weight", "model.norm.weight"):
        w = model.state_dict()[name]
        assert any(torch.equal(scales[nodes], w) for nodes in ws.GraphSpec.from_module(model, IDS).node_groups.values()
                   if nodes.numel() == D)
    assert e(EdgeType.PRODUCT) == 2 * FF  # gated MLP: SiLU(gate) * up


def test_llama_with_one_key_value_head_multi_query_attention():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=FF, num_hidden_layers=1,
                                   num_attention_heads=LH, num_key_value_heads=1, max_position_embeddings=12)
    model = transformers.LlamaForCausalLM(cfg).eval()
    spec = ws.GraphSpec.from_module(model, IDS)
    g = spec.to_graph(model.state_dict())
    assert_state_equal(spec.to_state_dict(g), model.state_dict())
    n = lambda t: int((g.node_type == t).sum())  # noqa: E731
    assert (n(NodeType.ROTARY_Q), n(NodeType.ROTARY_K), n(NodeType.ATTN_V), n(NodeType.ATTN_OUT)) == (D, LD, LD, D)
    assert int((g.edge_type == EdgeType.ATTN_K).sum()) == D * LD and n(NodeType.SUM) == 2 * D


def _llama_symmetry(gen: torch.Generator, layers: int):
    """Parameter rules and node-group permutations for: key/value groups permuted, query heads
    permuted inside their group, value units permuted inside their head, feed-forward units
    permuted. Query/key units inside a head stay (rotary embedding)."""
    r = LH // LKV
    rules, groups = [], {}
    for i in range(layers):
        p = f"model.layers.{i}"
        sigma = torch.randperm(LKV, generator=gen)
        taus = [torch.randperm(r, generator=gen) for _ in range(LKV)]
        rhos = [torch.randperm(LD, generator=gen) for _ in range(LKV)]
        old_q = [int(sigma[h // r]) * r + int(taus[h // r][h % r]) for h in range(LH)]
        units = torch.arange(LD)
        q = torch.cat([old_q[h] * LD + units for h in range(LH)])
        k = torch.cat([int(sigma[g]) * LD + units for g in range(LKV)])
        v = torch.cat([int(sigma[g]) * LD + rhos[int(sigma[g])] for g in range(LKV)])
        o = torch.cat([old_q[h] * LD + rhos[int(sigma[h // r])] for h in range(LH)])
        ff = torch.randperm(FF, generator=gen)
        a = f"{p}.self_attn"
        rules += [(f"{a}.q_proj.weight", 0, q), (f"{a}.k_proj.weight", 0, k), (f"{a}.v_proj.weight", 0, v),
                  (f"{a}.o_proj.weight", 1, o), (f"{p}.mlp.gate_proj.weight", 0, ff),
                  (f"{p}.mlp.up_proj.weight", 0, ff), (f"{p}.mlp.down_proj.weight", 1, ff)]
        groups.update({f"{a}.q_proj": q, f"{a}.k_proj": k, f"{a}.v_proj": v, f"{a}:heads": o,
                       f"{p}.mlp.gate_proj": ff, f"{p}.mlp.up_proj": ff, f"{p}.mlp": ff})
    return rules, groups


@settings(max_examples=2, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_llama_head_group_and_feedforward_permutations_permute_nodes_only(seed):
    model = llama()
    spec = ws.GraphSpec.from_module(model, IDS)
    g0 = spec.to_graph(model.state_dict())
    y0 = _outputs(model)
    rules, groups = _llama_symmetry(torch.Generator().manual_seed(seed), 2)
    permute_params(model, rules)
    assert torch.allclose(_outputs(model), y0, atol=1e-5)
    g1 = spec.to_graph(model.state_dict())
    assert_graphs_permuted(g0, g1, node_permutation(spec.num_nodes, spec.node_groups, groups))


def _rotary_signature(g) -> list:
    """Invariant to permutations of whole heads; sensitive to which weights sit at which index
    inside a rotary head: for every rotary unit, (type, index in head, its incoming weights)."""
    incoming: dict[int, list] = defaultdict(list)
    for d, a in zip(g.edge_index[1].tolist(), g.edge_attr.tolist()):
        incoming[d].append(tuple(round(v, 6) for v in a))
    rot = ((g.node_type == NodeType.ROTARY_Q) | (g.node_type == NodeType.ROTARY_K)).nonzero().squeeze(1)
    return sorted((int(g.node_type[i]), int(g.node_pos[i]), tuple(sorted(incoming[int(i)]))) for i in rot.tolist())


def test_llama_units_inside_a_rotary_head_are_not_a_symmetry_and_are_visible():
    """Permuting whole query/key heads (with their group) keeps the rotary signature; swapping two
    units inside a head, even consistently in q and k, changes the function and the graph."""
    base = llama(layers=1)
    g0 = ws.to_graph(base, IDS)
    y0 = _outputs(base)
    heads = llama(layers=1)
    rules, _ = _llama_symmetry(torch.Generator().manual_seed(3), 1)
    permute_params(heads, rules)
    assert torch.allclose(_outputs(heads), y0, atol=1e-5)
    assert _rotary_signature(ws.to_graph(heads, IDS)) == _rotary_signature(g0)
    swap = torch.arange(D)
    swap[[0, 1]] = swap[[1, 0]]  # units 0 and 1 of query head 0; the same for key head 0
    inside = llama(layers=1)
    permute_params(inside, [("model.layers.0.self_attn.q_proj.weight", 0, swap),
                            ("model.layers.0.self_attn.k_proj.weight", 0, swap[: LKV * LD])])
    assert not torch.allclose(_outputs(inside), y0, atol=1e-4)
    assert _rotary_signature(ws.to_graph(inside, IDS)) != _rotary_signature(g0)


def test_llama_query_head_moved_without_its_keys_is_visible():
    base = llama(layers=1)
    g0 = ws.to_graph(base, IDS)
    moved = torch.cat([torch.arange(2 * LD, 3 * LD), torch.arange(LD, 2 * LD), torch.arange(0, LD),
                       torch.arange(3 * LD, D)])  # query heads 0 and 2 (different key/value groups) swapped
    broken = llama(layers=1)
    permute_params(broken, [("model.layers.0.self_attn.q_proj.weight", 0, moved),
                            ("model.layers.0.self_attn.o_proj.weight", 1, moved)])
    assert not torch.allclose(_outputs(broken), _outputs(base), atol=1e-4)
    assert qk_pairing_signature(ws.to_graph(broken, IDS)) != qk_pairing_signature(g0)


# ----------------------------------------------------------------------------- BERT
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_bert_head_and_feedforward_permutations_permute_nodes_only(seed):
    model = bert()
    spec = ws.GraphSpec.from_module(model, IDS)
    g0 = spec.to_graph(model.state_dict())
    y0 = _outputs(model)
    gen = torch.Generator().manual_seed(seed)
    rules, groups = [], {}
    for i in range(2):
        p = f"encoder.layer.{i}"
        qk, v = head_permutation(H, D // H, gen)
        ff = torch.randperm(FF, generator=gen)
        rules += [(f"{p}.attention.self.query.weight", 0, qk), (f"{p}.attention.self.query.bias", 0, qk),
                  (f"{p}.attention.self.key.weight", 0, qk), (f"{p}.attention.self.key.bias", 0, qk),
                  (f"{p}.attention.self.value.weight", 0, v), (f"{p}.attention.self.value.bias", 0, v),
                  (f"{p}.attention.output.dense.weight", 1, v), (f"{p}.intermediate.dense.weight", 0, ff),
                  (f"{p}.intermediate.dense.bias", 0, ff), (f"{p}.output.dense.weight", 1, ff)]
        groups.update({f"{p}.attention.self.query": qk, f"{p}.attention.self.key": qk,
                       f"{p}.attention.self.value": v, f"{p}.intermediate.dense": ff})
    permute_params(model, rules)
    assert torch.allclose(_outputs(model), y0, atol=1e-5)
    g1 = spec.to_graph(model.state_dict())
    assert_graphs_permuted(g0, g1, node_permutation(spec.num_nodes, spec.node_groups, groups))


def _assert_query_without_keys_is_visible(make, inputs, query: str, key: str) -> None:
    """Swapping two units of head 0's query (``query.weight``/``.bias`` rows) changes the outputs and
    the graph's query-key pairing; swapping the same units of the key too changes neither."""
    base = make()
    g0 = ws.to_graph(base, inputs)
    y0 = _outputs(base, inputs)
    within = torch.tensor([1, 0] + list(range(2, D)))  # swap two query units of head 0 only
    broken, coupled = make(), make()
    permute_params(broken, [(f"{query}.{k}", 0, within) for k in ("weight", "bias")])
    permute_params(coupled, [(f"{n}.{k}", 0, within) for n in (query, key) for k in ("weight", "bias")])
    assert not torch.allclose(_outputs(broken, inputs), y0, atol=1e-4)
    assert torch.allclose(_outputs(coupled, inputs), y0, atol=1e-5)
    assert qk_pairing_signature(ws.to_graph(coupled, inputs)) == qk_pairing_signature(g0)
    assert qk_pairing_signature(ws.to_graph(broken, inputs)) != qk_pairing_signature(g0)


def test_bert_query_permuted_without_its_keys_is_visible():
    _assert_query_without_keys_is_visible(lambda: bert(layers=1), IDS, "encoder.layer.0.attention.self.query",
                                          "encoder.layer.0.attention.self.key")


# ----------------------------------------------------------------------------- GPT-2 (fused c_attn, tied table)
GFF = 4 * D  # GPT-2's feed-forward width (n_inner defaults to 4 * n_embd)


def _gpt2_symmetry(gen: torch.Generator, layers: int = 2):
    """Parameter rules and node-group permutations for GPT-2: heads (and units inside them) permuted
    consistently in the q, k and v thirds of the fused ``c_attn`` (a Conv1D, weight ``[in, 3*D]``),
    value units the same way in ``c_proj``'s rows; feed-forward units in ``c_fc``'s columns and
    ``mlp.c_proj``'s rows."""
    rules, groups = [], {}
    for i in range(layers):
        p = f"transformer.h.{i}"
        qk, v = head_permutation(H, D // H, gen)
        qkv = torch.cat([qk, D + qk, 2 * D + v])
        ff = torch.randperm(GFF, generator=gen)
        rules += [(f"{p}.attn.c_attn.weight", 1, qkv), (f"{p}.attn.c_attn.bias", 0, qkv),
                  (f"{p}.attn.c_proj.weight", 0, v), (f"{p}.mlp.c_fc.weight", 1, ff),
                  (f"{p}.mlp.c_fc.bias", 0, ff), (f"{p}.mlp.c_proj.weight", 0, ff)]
        groups.update({f"{p}.attn.c_attn": qkv, f"{p}.mlp.c_fc": ff})
    return rules, groups


def _embedding_edges(g) -> Tensor:
    keep = (g.edge_type == EdgeType.EMBEDDING) | (g.edge_type == EdgeType.TIED)
    return torch.cat([g.edge_index[:, keep].T.float(), g.edge_attr[keep]], 1)


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_gpt2_tied_head_and_feedforward_permutations_permute_nodes_only(seed):
    model = gpt2(tied=True, init=0.3)
    spec = ws.GraphSpec.from_module(model, IDS)
    assert spec.aliases == {"lm_head.weight": "transformer.wte.weight"}
    table = model.transformer.wte.weight.detach().clone()
    g0 = spec.to_graph(model.state_dict())
    y0 = _outputs(model)
    rules, groups = _gpt2_symmetry(torch.Generator().manual_seed(seed))
    assert all(not torch.equal(perm, torch.arange(perm.numel())) for perm in groups.values())
    permute_params(model, rules)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert torch.equal(model.transformer.wte.weight, table)
    assert torch.allclose(_outputs(model), y0, atol=1e-5)
    g1 = spec.to_graph(model.state_dict())
    assert_graphs_permuted(g0, g1, node_permutation(spec.num_nodes, spec.node_groups, groups))
    assert torch.equal(_embedding_edges(g1), _embedding_edges(g0))  # the shared table, untouched, once
    state = spec.to_state_dict(g1)
    assert state["lm_head.weight"] is state["transformer.wte.weight"]
    assert torch.equal(state["transformer.wte.weight"], table)
    assert_state_equal(state, model.state_dict())


def test_gpt2_query_permuted_without_its_keys_is_visible():
    """Inside the fused ``c_attn``: two query units of head 0 swapped alone change the function and
    the query/key pairing in the graph; swapped in the key third too, neither changes."""
    base = gpt2(tied=True, init=0.3)
    g0 = ws.to_graph(base, IDS)
    y0 = _outputs(base)
    within = torch.arange(3 * D)
    within[[0, 1]] = within[[1, 0]]  # query units 0 and 1 of head 0
    broken = gpt2(tied=True, init=0.3)
    permute_params(broken, [("transformer.h.0.attn.c_attn.weight", 1, within),
                            ("transformer.h.0.attn.c_attn.bias", 0, within)])
    coupled_perm = within.clone()
    coupled_perm[[D, D + 1]] = coupled_perm[[D + 1, D]]  # the same two units of key head 0
    coupled = gpt2(tied=True, init=0.3)
    permute_params(coupled, [("transformer.h.0.attn.c_attn.weight", 1, coupled_perm),
                             ("transformer.h.0.attn.c_attn.bias", 0, coupled_perm)])
    assert not torch.allclose(_outputs(broken), y0, atol=1e-4)
    assert torch.allclose(_outputs(coupled), y0, atol=1e-5)
    assert qk_pairing_signature(ws.to_graph(coupled, IDS)) == qk_pairing_signature(g0)
    assert qk_pairing_signature(ws.to_graph(broken, IDS)) != qk_pairing_signature(g0)


# ----------------------------------------------------------------------------- ViT
VFF = FF  # ViT's intermediate_size


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_vit_head_and_feedforward_permutations_permute_nodes_only(seed):
    model = vit(init=0.3)
    spec = ws.GraphSpec.from_module(model, PIXELS)
    g0 = spec.to_graph(model.state_dict())
    y0 = _outputs(model, PIXELS)
    gen = torch.Generator().manual_seed(seed)
    rules, groups = [], {}
    for i in range(2):
        a, m = f"layers.{i}.attention", f"layers.{i}.mlp"
        qk, v = head_permutation(H, D // H, gen)
        ff = torch.randperm(VFF, generator=gen)
        rules += [(f"{a}.{n}.{k}", 0, perm) for n, perm in (("q_proj", qk), ("k_proj", qk), ("v_proj", v))
                  for k in ("weight", "bias")]
        rules += [(f"{a}.o_proj.weight", 1, v), (f"{m}.fc1.weight", 0, ff), (f"{m}.fc1.bias", 0, ff),
                  (f"{m}.fc2.weight", 1, ff)]
        groups.update({f"{a}.q_proj": qk, f"{a}.k_proj": qk, f"{a}.v_proj": v, f"{m}.fc1": ff})
    assert all(not torch.equal(perm, torch.arange(perm.numel())) for perm in groups.values())
    permute_params(model, rules)
    assert torch.allclose(_outputs(model, PIXELS), y0, atol=1e-5)
    g1 = spec.to_graph(model.state_dict())
    assert_graphs_permuted(g0, g1, node_permutation(spec.num_nodes, spec.node_groups, groups))


def test_vit_query_permuted_without_its_keys_is_visible():
    _assert_query_without_keys_is_visible(lambda: vit(init=0.3), PIXELS, "layers.0.attention.q_proj",
                                          "layers.0.attention.k_proj")


# ----------------------------------------------------------------------------- memory
def _storage_bytes(g) -> int:
    seen = {}
    for _, v in g:
        if torch.is_tensor(v):
            seen[v.untyped_storage().data_ptr()] = v.untyped_storage().nbytes()
    return sum(seen.values())


def test_embedding_table_is_all_rows_with_compact_edge_structure():
    """Every row of the table is a VOCAB node and every entry an edge; the structure costs 9 bytes
    per edge (int32 edge_index, int8 edge_type, edge_kernel a broadcast view)."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=2000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=16)
    model = transformers.BertModel(cfg).eval()
    g = ws.to_graph(model, IDS)
    assert int((g.node_type == NodeType.VOCAB).sum()) == 2000
    assert int((g.edge_type == EdgeType.EMBEDDING).sum()) == (2000 + 16 + 2) * 32
    assert g.edge_index.dtype == torch.int32 and g.edge_type.dtype == torch.int8
    assert g.edge_kernel.shape == (g.num_edges, 2) and g.edge_kernel.stride(0) == 0
    param_bytes = sum(p.numel() * 4 for p in model.parameters())
    structure = sum(_storage_bytes_of(t) for t in (g.edge_index, g.edge_type, g.edge_kernel))
    assert structure <= 9 * g.num_edges + 64
    assert _storage_bytes(g) <= 4 * param_bytes


def _storage_bytes_of(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


def test_sampled_rows_keep_the_rest_of_the_graph():
    model = bert(layers=1)
    g = ws.to_graph(model, IDS)
    s = ws.graph.sample_rows(g, 7, generator=torch.Generator().manual_seed(0))
    vocab = g.node_type == NodeType.VOCAB
    assert int((s.node_type == NodeType.VOCAB).sum()) == 7
    assert s.num_nodes == g.num_nodes - V + 7
    assert s.num_edges == g.num_edges - (V - 7) * D  # each dropped row takes its D table entries
    kept_rows = s.sampled_nodes[s.node_type == NodeType.VOCAB]
    assert bool(vocab[kept_rows].all())
    assert torch.equal(s.node_pos[s.node_type == NodeType.VOCAB], g.node_pos[kept_rows])  # token ids kept
    everything = ws.graph.sample_rows(g, rows=vocab.nonzero().squeeze(1))
    assert torch.equal(everything.edge_index, g.edge_index) and torch.equal(everything.edge_attr, g.edge_attr)
    with pytest.raises(ws.ArchitectureMismatchError, match="number of nodes"):
        ws.from_graph(s, bert(layers=1), example_input=IDS)


# ----------------------------------------------------------------------------- metanetworks and the hook
def test_predictor_encode_on_a_transformers_model_is_head_permutation_invariant():
    from weightspace.nn import GraphMetaNet
    from weightspace.predict import Predictor

    torch.manual_seed(0)
    net = GraphMetaNet(hidden=16, num_layers=2, embed_dim=8, kernel_grid=(1, 1))
    pred = Predictor("gmn", net, 0.0, 1.0, meta={"kernel_grid": [1, 1]})
    model = llama(layers=1)
    z0 = pred.encode([ws.to_graph(model, IDS)])
    assert z0.shape == (1, 8) and bool(torch.isfinite(z0).all())
    rules, _ = _llama_symmetry(torch.Generator().manual_seed(1), 1)
    permute_params(model, rules)
    assert torch.allclose(pred.encode([ws.to_graph(model, IDS)]), z0, atol=1e-4)
    other = llama(layers=1, seed=5)
    assert not torch.allclose(pred.encode([ws.to_graph(other, IDS)]), z0, atol=1e-4)
    sampled = ws.graph.sample_rows(ws.to_graph(model, IDS), 8, generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(pred.encode([sampled])).all())  # a metanetwork reads a row sample too


def _perturbed_gmn(**kw):
    from weightspace.nn import GraphMetaNet

    torch.manual_seed(0)
    net = GraphMetaNet(hidden=16, num_layers=2, embed_dim=8, kernel_grid=(1, 1), **kw).eval()
    with torch.no_grad():  # non-trivial FiLM and node updates (they start at zero)
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("layer_bins,stats", [(0, False), (3, False), (2, True)], ids=["plain", "bins", "hybrid"])
def test_message_passing_in_edge_chunks_gives_the_same_embedding(monkeypatch, layer_bins, stats):
    """Without gradients a big graph is embedded in edge chunks (edge encoder, message passing,
    readout pools, edge states in one buffer): the embedding equals the ordinary path's (with
    gradients), with depth bins and with the statistics hybrid."""
    from weightspace.nn import GMNConv, tensor_statistics

    g = ws.to_graph(bert(layers=1), IDS)
    net = _perturbed_gmn(layer_bins=layer_bins, stat_tensors=int(tensor_statistics(g)[-1]) if stats else 0)
    whole = net.encode(g)  # gradients on: the ordinary path
    monkeypatch.setattr(GMNConv, "chunk_edges", 500)  # a few chunks, the last one shorter
    assert g.num_edges > 4 * 500 and g.num_edges % 500
    with torch.no_grad():
        assert net._streamed(g)
        chunked = net.encode(g)
    assert torch.allclose(whole, chunked, atol=1e-5), (whole - chunked).abs().max()


def test_edge_chunks_on_a_batch_with_sampled_rows(monkeypatch):
    """The streamed path on a batch of two language-model graphs (with sampled embedding rows):
    per-graph pools and depth bins, node and edge outputs kept in the edge-state buffer."""
    from weightspace.nn import GMNConv

    gen = torch.Generator().manual_seed(0)
    graphs = [ws.graph.sample_rows(ws.to_graph(m, IDS), 7, generator=gen) for m in (bert(layers=1), gpt2())]
    b = ws.graph.batch_graphs(graphs)
    net = _perturbed_gmn(layer_bins=2, node_out=2, edge_out=1)
    ref = net.encode(b), net.node_outputs(b), net.edge_outputs(b)
    monkeypatch.setattr(GMNConv, "chunk_edges", 500)
    with torch.no_grad():
        assert net._streamed(b)
        got = net.encode(b), net.node_outputs(b), net.edge_outputs(b)
    for r, x in zip(ref, got):
        assert torch.allclose(r, x, rtol=1e-5, atol=1e-5), (r - x).abs().max()


@pytest.mark.parametrize("make", [lambda: gpt2(tied=True), lambda: llama(layers=1)], ids=["gpt2_tied", "llama"])
def test_nowcast_hook_jumps_on_a_transformers_model(make):
    from weightspace.nowcast import Nowcaster

    torch.manual_seed(0)
    nowcaster = Nowcaster(kind="graph", hidden=8, layers=1)  # an untrained graph nowcaster: the full path
    model = make().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    period = 2 * nowcaster.context
    hook = nowcaster.attach(model, opt, period=period, horizon=2, example_input=IDS)
    tied_before = getattr(model, "transformer", None) is not None
    for _ in range(2 * period):
        opt.zero_grad()
        loss = model(IDS, labels=IDS).loss
        loss.backward()
        opt.step()
    assert hook.jumps == 2 and hook.skipped == 0
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    if tied_before:
        assert model.lm_head.weight is model.transformer.wte.weight


def test_t5_relative_attention_bias_is_a_per_head_score_bias():
    def t5(seed):
        torch.manual_seed(seed)
        cfg = transformers.T5Config(vocab_size=V, d_model=D, d_kv=8, d_ff=FF, num_layers=2, num_heads=2)
        return transformers.T5EncoderModel(cfg).eval()

    model = t5(0)
    spec = ws.GraphSpec.from_module(model, IDS)
    g = spec.to_graph(model.state_dict())
    assert_state_equal(spec.to_state_dict(g), model.state_dict())
    # one bias unit per head, joined to the 8 query units of its head in each of the 2 layers
    assert int((g.node_type == NodeType.ATTN_BIAS).sum()) == 2
    assert int((g.edge_type == EdgeType.ATTN_BIAS).sum()) == 2 * 2 * 8
    fresh = t5(1)
    ws.from_graph(g, fresh, example_input=IDS)
    assert torch.equal(_outputs(fresh), _outputs(model))


def test_a_table_looked_up_twice_is_stored_once():
    class TwoLookups(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(V, D)

        def forward(self, ids, other_ids):
            return self.emb(ids) + self.emb(other_ids)

    g = ws.to_graph(TwoLookups(), (IDS, IDS))
    assert int((g.edge_type == EdgeType.EMBEDDING).sum()) == V * D  # the table once
    assert int((g.edge_type == EdgeType.TIED).sum()) == D  # the second lookup's units, tied to the first's


MORE = {
    "bert_mlm": lambda: transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=V, hidden_size=D, num_hidden_layers=1, num_attention_heads=H, intermediate_size=FF,
        max_position_embeddings=12)),  # decoder tied to the word embeddings, with its own bias
    "distilbert": lambda: transformers.DistilBertModel(transformers.DistilBertConfig(
        vocab_size=V, dim=D, n_layers=1, n_heads=H, hidden_dim=FF, max_position_embeddings=12)),
    "roberta": lambda: transformers.RobertaModel(transformers.RobertaConfig(
        vocab_size=V, hidden_size=D, num_hidden_layers=1, num_attention_heads=H, intermediate_size=FF,
        max_position_embeddings=20)),  # position ids computed from the token ids
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(
        vocab_size=V, hidden_size=D, intermediate_size=FF, num_hidden_layers=1, num_attention_heads=LH,
        num_key_value_heads=LKV, max_position_embeddings=12)),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=V, hidden_size=D, intermediate_size=FF, num_hidden_layers=1, num_attention_heads=LH,
        num_key_value_heads=LKV, max_position_embeddings=12)),  # q/k/v biases
    "gpt_neox": lambda: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        vocab_size=V, hidden_size=D, intermediate_size=FF, num_hidden_layers=1, num_attention_heads=H,
        max_position_embeddings=12)),  # fused QKV split per head, partial rotary embedding
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MORE))
def test_more_architectures_round_trip_exactly(name):
    torch.manual_seed(0)
    model = MORE[name]().eval()
    spec = ws.GraphSpec.from_module(model, IDS)
    assert_state_equal(spec.to_state_dict(spec.to_graph(model.state_dict())), model.state_dict())
    if name == "gpt_neox":  # rotary_pct 0.25: a quarter of each query head's units are rotary
        g = spec.to_graph(model.state_dict())
        assert int((g.node_type == NodeType.ROTARY_Q).sum()) * 3 == int((g.node_type == NodeType.ATTN_Q).sum())
