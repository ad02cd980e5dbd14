"""Hugging Face `transformers` models through the one traced converter (torch.export), no
per-model code: round trips, and permutations of heads and feed-forward units."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import weightspace as ws
from weightspace.graph import EdgeType, NodeType

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


def bert(layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=30, hidden_size=D, num_hidden_layers=layers, num_attention_heads=H,
                                  intermediate_size=FF, max_position_embeddings=12, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0, initializer_range=0.5)
    return transformers.BertModel(cfg).eval()


def gpt2(tied: bool, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=30, n_embd=D, n_layer=2, n_head=H, n_positions=12,
                                  tie_word_embeddings=tied, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg).eval()


IDS = torch.tensor([[3, 7, 1, 29, 4, 4]])


def _outputs(model):
    with torch.no_grad():
        out = model(IDS)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits


@pytest.mark.parametrize("make", [bert, lambda seed=0: gpt2(False, seed)], ids=["bert", "gpt2_untied"])
def test_round_trip_is_exact_and_reproduces_outputs(make):
    model = make()
    spec = ws.GraphSpec.from_module(model, IDS)
    g = spec.to_graph(model.state_dict())
    assert_state_equal(spec.to_state_dict(g), model.state_dict())
    other = make(seed=1)
    ws.from_graph(g, other, spec=spec)
    assert torch.equal(_outputs(other), _outputs(model))


def test_bert_graph_types_attention_per_head():
    model = bert(layers=1)
    g = ws.to_graph(model, IDS)
    counts = {t: int((g.node_type == t).sum()) for t in (NodeType.ATTN_Q, NodeType.ATTN_K, NodeType.ATTN_V)}
    assert counts == {NodeType.ATTN_Q: D, NodeType.ATTN_K: D, NodeType.ATTN_V: D}
    assert int((g.edge_type == EdgeType.ATTN_HEAD).sum()) == H * (D // H) ** 2
    assert int((g.edge_type == EdgeType.ATTN_OUT).sum()) == D * D
    assert int((g.node_type == NodeType.VOCAB).sum()) == 30  # token ids
    assert int((g.node_type == NodeType.POSITION).sum()) == 12 + 2  # position and segment tables


def test_fused_qkv_projection_is_typed_edge_by_edge():
    g = ws.to_graph(gpt2(False), IDS)
    for t in (EdgeType.ATTN_Q, EdgeType.ATTN_K, EdgeType.ATTN_V):
        assert int((g.edge_type == t).sum()) == 2 * D * D  # 2 layers of a D x D projection each


@settings(max_examples=5, deadline=None)
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


def test_bert_query_permuted_without_its_keys_is_visible():
    base = bert(layers=1)
    g0 = ws.to_graph(base, IDS)
    within = torch.tensor([1, 0] + list(range(2, D)))  # swap two query units of head 0 only
    broken = bert(layers=1)
    permute_params(broken, [("encoder.layer.0.attention.self.query.weight", 0, within),
                            ("encoder.layer.0.attention.self.query.bias", 0, within)])
    coupled = bert(layers=1)
    permute_params(coupled, [(f"encoder.layer.0.attention.self.{n}.{k}", 0, within) for n in ("query", "key")
                             for k in ("weight", "bias")])
    assert not torch.allclose(_outputs(broken), _outputs(base), atol=1e-4)
    assert torch.allclose(_outputs(coupled), _outputs(base), atol=1e-5)
    assert qk_pairing_signature(ws.to_graph(coupled, IDS)) == qk_pairing_signature(g0)
    assert qk_pairing_signature(ws.to_graph(broken, IDS)) != qk_pairing_signature(g0)


def test_unsupported_pieces_are_refused_naming_the_submodule():
    with pytest.raises(ws.UnsupportedModuleError, match=r"'transformer.wte.weight' is used by two operations.*lm_head"):
        ws.to_graph(gpt2(tied=True), IDS)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=30, hidden_size=D, intermediate_size=FF, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=12)
    with pytest.raises(ws.UnsupportedModuleError, match="input_layernorm"):
        ws.to_graph(transformers.LlamaForCausalLM(cfg).eval(), IDS)
