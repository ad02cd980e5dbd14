"""StatNN features, StatNN/StatGBM/HParamNet models: invariance, sensitivity, export, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from weightspace.graph import batch_graphs
from weightspace.nn import NUM_STATS, HParamNet, LayerWeightNorm, StatGBM, StatNN, tensor_statistics

from ..perm_cases import CASES, broken_pair, permuted_pair


@pytest.mark.parametrize("name", CASES)
def test_statistics_invariant_to_hidden_permutations(name):
    g0, g1, _ = permuted_pair(name, 0)
    assert torch.allclose(tensor_statistics(g0), tensor_statistics(g1), atol=1e-6)


@pytest.mark.parametrize("name", ["mlp", "resnet"])
def test_statistics_sensitive_to_weight_changes(name):
    g0, _, _ = permuted_pair(name, 0)
    g1 = g0.clone()
    g1.edge_attr = g1.edge_attr * 1.5
    assert not torch.allclose(tensor_statistics(g0), tensor_statistics(g1))


def test_statistics_layout():
    g, _, _ = permuted_pair("mlp", 0)  # Linear(64,32) ReLU Linear(32,32) ReLU Linear(32,10)
    f = tensor_statistics(g)
    n = int(f[-1])
    assert n == 3 * 1 + 3 * 3  # 3 weight tensors + (bias, scale, shift) of 3 layers
    assert f.shape == (NUM_STATS * n + 1,)
    w0 = g.edge_attr[g.node_layer[g.edge_index[1]] == 1].reshape(-1)
    assert torch.allclose(f[:2], torch.stack([w0.mean(), w0.var(unbiased=False)]), atol=1e-6)
    padded = tensor_statistics(g, max_tensors=20)
    assert padded.shape == (NUM_STATS * 20 + 1,) and torch.equal(padded[: NUM_STATS * n], f[:-1])


def test_statnn_batches_heterogeneous_architectures():
    graphs = [permuted_pair(n, 0)[0] for n in CASES]
    torch.manual_seed(0)
    net = StatNN(max_tensors=80, hidden=(32, 32)).eval()
    with torch.no_grad():
        out = net(batch_graphs(graphs))
        single = torch.cat([net(g) for g in graphs])
    assert out.shape == (4, 1) and torch.allclose(out, single, atol=1e-5)
    assert "StatNN(max_tensors=80" in repr(net)


def test_statistics_blind_to_broken_coupling():
    # StatNN is invariant to *every* permutation inside a tensor, symmetry or not: this is its
    # known blind spot; it still sees scaled weights
    g0, g1 = broken_pair("mlp", 0)
    assert torch.allclose(tensor_statistics(g0), tensor_statistics(g1), atol=1e-6)


def test_gbm_export_matches_sklearn():
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(80, 5)), rng.normal(size=80)
    ours = StatGBM(n_estimators=20, max_depth=2, subsample=1.0, random_state=0).fit(X, y)
    ref = GradientBoostingRegressor(n_estimators=20, max_depth=2, learning_rate=0.05, subsample=1.0,
                                    random_state=0).fit(X, y)
    assert np.allclose(ours.predict(X), ref.predict(X))
    again = StatGBM.from_tensors(ours.to_tensors())
    assert np.allclose(again.predict(X), ours.predict(X))
    with pytest.raises(RuntimeError, match="not fitted"):
        StatGBM().predict(X)


def test_hparam_net_needs_hparams():
    g, _, _ = permuted_pair("mlp", 0)
    net = HParamNet(in_dim=3, hidden=(8,))
    with pytest.raises(ValueError, match="needs the training hyperparameters"):
        net(Batch.from_data_list([g]))
    g.hparams = torch.zeros(1, 3)
    assert net(Batch.from_data_list([g, g])).shape == (2, 1)


def test_layer_weight_norm_scale_feature():
    g, _, _ = permuted_pair("mlp", 0)
    norm = LayerWeightNorm()
    b = torch.zeros(g.num_nodes, dtype=torch.long)
    out = norm(g.edge_attr, g.edge_index, g.edge_type, g.node_layer, b)
    out2 = norm(3 * g.edge_attr, g.edge_index, g.edge_type, g.node_layer, b)
    assert torch.allclose(out[:, :-1], out2[:, :-1], atol=1e-5)  # scale-free weights
    assert torch.allclose(out2[:, -1] - out[:, -1], torch.full_like(out[:, -1], float(np.log(3))), atol=1e-5)


def test_statistics_skip_structural_edges_of_tied_weights():
    """A layer reusing an embedding table gets weightless TIED edges: they are not a tensor."""
    import torch.nn.functional as F

    from weightspace import to_graph
    from weightspace.graph.vocab import STRUCTURAL_EDGE_TYPES, EdgeType

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.lin = torch.nn.Embedding(11, 6), torch.nn.Linear(6, 6)

        def forward(self, x):
            return F.linear(torch.tanh(self.lin(self.emb(x))), self.emb.weight)

    torch.manual_seed(0)
    g = to_graph(Tied(), torch.randint(0, 11, (2, 5)))
    assert EdgeType.TIED in STRUCTURAL_EDGE_TYPES and bool((g.edge_type == EdgeType.TIED).any())
    stats = tensor_statistics(g)[:-1].reshape(-1, 7)
    constant_one = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert not any(torch.allclose(row, constant_one) for row in stats)
    # sensitivity: counting TIED edges as a tensor would add exactly that constant row
    g.edge_type[g.edge_type == EdgeType.TIED] = EdgeType.LINEAR
    assert int(tensor_statistics(g)[-1]) > int(stats.shape[0])


def test_mlp_layers_names_and_slices():
    import torch
    from torch import nn

    from weightspace.nn import MLP

    m = MLP([4, 8, 8, 2], dropout=0.1)
    assert [type(x).__name__ for x in m] == ["Linear", "SiLU", "Dropout", "Linear", "SiLU", "Dropout", "Linear"]
    assert sorted(m.state_dict()) == ["0.bias", "0.weight", "3.bias", "3.weight", "6.bias", "6.weight"]
    body = m[:-1]
    assert type(body) is nn.Sequential and len(body) == 6 and body[0] is m[0]
    m.eval()
    x = torch.randn(3, 4)
    assert torch.equal(m[-1](body(x)), m(x))


def test_mlp_initializes_like_the_plain_sequential_it_replaced():
    """Seeded models keep their initialization: an MLP draws exactly what nn.Sequential of the same
    layers draws, also under a recursive reset (metanetworks reset every submodule)."""
    import torch
    from torch import nn

    from weightspace.nn import MLP

    def plain():
        return nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 2))

    def recursive_reset(module):
        for m in module.modules():
            if m is not module and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    for reset in (False, True):
        torch.manual_seed(0)
        a = MLP([4, 8, 2])
        if reset:
            recursive_reset(a)
        torch.manual_seed(0)
        b = plain()
        if reset:
            recursive_reset(b)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
