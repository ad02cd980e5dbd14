"""ProbeNet: invariance to function-preserving permutations, sensitivity, architecture lookup, batching."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

import weightspace as ws
from model_zoo import instantiate
from weightspace.examples import build_example
from weightspace.graph import ArchitectureMismatchError
from weightspace.nn import ProbeNet

from ..perm_cases import CASES, broken_pair, permuted_pair


def _probe_net(name: str, **kw) -> ProbeNet:
    _, x = build_example(name)
    torch.manual_seed(0)
    return ProbeNet([{"_target_": "tests.perm_cases.example_module", "name": name}], x.shape[1:], num_probes=6,
                    latent_dim=4, gen_hidden=8, hidden=(16,), **kw).eval()


def _out(net: ProbeNet, *graphs) -> torch.Tensor:
    with torch.no_grad():
        return net(Batch.from_data_list([net.prepare(g) for g in graphs]))


@pytest.mark.parametrize("name", CASES)
def test_invariant_to_hidden_permutations(name):
    g0, g1, _ = permuted_pair(name, 0)
    net = _probe_net(name)
    a, b = _out(net, g0), _out(net, g1)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_sensitive_to_changes_that_are_not_symmetries(name):
    g0, g1 = broken_pair(name, 0)
    net = _probe_net(name)
    assert not torch.allclose(_out(net, g0), _out(net, g1), atol=1e-5)


def test_with_statistics_invariant_and_sensitive():
    g0, g1, _ = permuted_pair("resnet", 1)
    n = int(ws.nn.tensor_statistics(g0)[-1])
    net = _probe_net("resnet", stat_tensors=n)
    net.fit_normalizer(torch.stack([ws.nn.tensor_statistics(g, n) for g in (g0, g1)]) + torch.randn(2, 7 * n + 1))
    assert torch.allclose(_out(net, g0), _out(net, g1), atol=1e-5)
    g2 = g0.clone()
    g2.edge_attr = g2.edge_attr * 1.5
    assert not torch.allclose(_out(net, g0), _out(net, g2), atol=1e-5)


def test_runs_the_network_it_reads():
    model, x = build_example("cnn_flatten_bn")
    net = _probe_net("cnn_flatten_bn")
    b = Batch.from_data_list([net.prepare(ws.to_graph(model, x))])
    with torch.no_grad():
        assert torch.allclose(net.responses(b)[0], model(net.probes()), atol=1e-5)


MLP = {"_target_": "model_zoo.archs.MLP", "in_features": 64, "num_outputs": 10, "depth": 1, "width": 8}
CNN = {"_target_": "model_zoo.archs.SmallCNN", "in_channels": 1, "num_classes": 10, "channels": 4, "layers": 2,
       "kernel_size": 3, "strides": 2}


def test_heterogeneous_batch_matches_one_by_one_and_activations_are_architecture():
    archs = [MLP, dict(MLP, activation="tanh"), CNN]
    torch.manual_seed(0)
    net = ProbeNet(archs, (1, 8, 8), num_probes=5, latent_dim=4, gen_hidden=8, hidden=(16,)).eval()
    graphs = []
    for i, a in enumerate(archs):
        torch.manual_seed(i)
        m = instantiate(a)
        graphs.append(ws.to_graph(m, torch.zeros(1, 1, 8, 8)))
        assert net.prepare(graphs[-1]).arch.item() == i  # relu and tanh MLPs are told apart
    both = _out(net, *graphs)
    one = torch.cat([_out(net, g) for g in graphs])
    assert torch.allclose(both, one, atol=1e-6)
    with pytest.raises(ArchitectureMismatchError, match="none of the architectures.*MLP.*SmallCNN"):
        net.prepare(ws.to_graph(instantiate(dict(CNN, channels=5)), torch.zeros(1, 1, 8, 8)))


def test_probes_learn_and_bad_configs():
    net = _probe_net("mlp")
    assert net.probes().shape == (6, 64)
    g0, _, _ = permuted_pair("mlp", 0)
    net(Batch.from_data_list([net.prepare(g0)])).sum().backward()
    assert net.latent.grad is not None and net.latent.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="different numbers of outputs"):
        ProbeNet([MLP, dict(MLP, num_outputs=3)], (64,))
    with pytest.raises(ValueError, match="at least one architecture"):
        ProbeNet([], (64,))
