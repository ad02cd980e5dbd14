"""weightspace.hyper.standardize_units: norm-free networks get standardized pre-activations; others are left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from weightspace.hyper import (
    GHN,
    CellSpace,
    build_arch,
    has_normalization,
    recalibrate_batchnorm,
    standardize_units,
)


def _skewed(model: nn.Module, seed: int) -> nn.Module:
    """Layers with unit-dependent scales and offsets, as predicted weights have (not a default init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                scale = torch.exp(2 * torch.rand(m.weight.shape[0], generator=g) - 1) * 3
                m.weight.mul_(scale.view(-1, *([1] * (m.weight.dim() - 1))))
                if m.bias is not None:
                    m.bias.add_(torch.randn(m.bias.shape, generator=g) * 2)
    return model


def _unit_stats(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-unit mean and std of every Linear/Conv output at its first call."""
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name):
        def fn(m, _i, out):
            if name in stats:
                return
            axis = out.dim() - 1 if isinstance(m, nn.Linear) else 1
            dims = [d for d in range(out.dim()) if d != axis]
            stats[name] = (out.mean(dims), out.std(dims))
        return fn

    hs = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
          if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return stats


def _norm_free(data: str, n: int) -> list[dict]:
    return CellSpace(data).split("no-norm", n, seed=5)


@pytest.mark.parametrize("data,seed", [("digits", 0), ("digits", 1), ("mnist1d", 2), ("mnist1d", 3)])
def test_every_layer_but_the_output_has_standardized_units(data, seed):
    shape = (1, 8, 8) if data == "digits" else (1, 40)
    x = torch.randn(256, *shape, generator=torch.Generator().manual_seed(seed))
    for c in _norm_free(data, 3):
        torch.manual_seed(seed)
        model = _skewed(build_arch(c), seed)
        before = _unit_stats(model, x)
        res = standardize_units(model, x)
        after = _unit_stats(model, x)
        assert res.skipped is None and res.output_layer == "head"
        assert set(res.standardized) == set(after) - {"head"}
        for name in res.standardized:
            mu, sd = after[name]
            live = before[name][1] > 1e-6
            assert torch.allclose(mu, torch.zeros_like(mu), atol=1e-3), name
            assert torch.allclose(sd[live], torch.ones_like(sd[live]), atol=1e-3), name
        # sensitivity: the skewed network was far from standardized, so the check above can fail
        assert any((before[n][1] - 1).abs().max() > 0.5 for n in res.standardized)


def test_output_layer_and_dead_units_keep_their_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    with torch.no_grad():
        model[0].weight[2].zero_()  # unit 2 is constant on any input: its scale stays
    head = model[4].weight.clone()
    w2 = model[0].weight[2].clone()
    res = standardize_units(model, torch.randn(128, 6))
    assert res.standardized == ("0", "2") and res.output_layer == "4"
    assert torch.equal(model[4].weight, head)
    assert torch.equal(model[0].weight[2], w2)
    assert torch.isfinite(model[0].weight).all() and abs(float(model[0].bias.detach()[2])) < 1e-6


def test_networks_with_normalization_are_left_unchanged():
    torch.manual_seed(0)
    x = torch.randn(64, 1, 8, 8)
    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
    state = {k: v.clone() for k, v in bn.state_dict().items()}
    res = standardize_units(bn, x)
    assert res.standardized == () and "normalization" in res.skipped
    assert all(torch.equal(v, bn.state_dict()[k]) for k, v in state.items())
    # sensitivity: the same network without its BatchNorm is changed
    free = nn.Sequential(bn[0], nn.ReLU(), nn.Flatten(), bn[4])
    assert standardize_units(free, x).standardized == ("0",)
    assert not torch.equal(free[0].weight, state["0.weight"])


def test_has_normalization_sees_third_party_norms_and_not_empty_wrappers():
    transformers = pytest.importorskip("transformers")

    class RMSNorm(nn.Module):  # the usual third-party idiom: its own class, a weight, no torch base
        def __init__(self, d):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x):
            return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    cfg = transformers.ConvNextConfig(num_channels=1, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1],
                                      num_labels=10, patch_size=2)
    assert has_normalization(transformers.ConvNextForImageClassification(cfg))
    assert has_normalization(nn.Sequential(nn.Linear(4, 4), RMSNorm(4)))
    no_norm = build_arch(_norm_free("digits", 1)[0])  # CellNet wraps "no norm" in a parameter-free module
    assert not has_normalization(no_norm)
    assert has_normalization(build_arch(CellSpace("digits").split("test", 1)[0]))


def test_real_idioms_stem_grouped_conv_shared_layer_no_bias():
    """A 7x7 strided stem, a depthwise conv without bias and a layer applied twice (weight sharing)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 7, stride=2, padding=3)
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
            self.shared = nn.Conv2d(8, 8, 1)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            h = torch.relu(self.stem(x))
            h = torch.relu(self.dw(h))
            h = torch.relu(self.shared(torch.relu(self.shared(h))))
            return self.fc(h.mean((2, 3)))

    torch.manual_seed(0)
    model = _skewed(Net(), 0)
    x = torch.randn(32, 3, 16, 16)
    res = standardize_units(model, x)
    assert res.standardized == ("stem", "dw", "shared") and res.output_layer == "fc"
    stats = _unit_stats(model, x)
    assert torch.allclose(stats["dw"][1], torch.ones(8), atol=1e-3)  # scaled ...
    assert stats["dw"][0].abs().max() > 1e-2  # ... but, without a bias, not centred
    assert torch.allclose(stats["shared"][0], torch.zeros(8), atol=1e-3)  # its first call
    assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("data", ["digits", "mnist1d"])
def test_shipped_checkpoint_on_norm_free_architectures_gains_from_standardization(data, digits):
    """The reason for the function: held-out norm-free networks filled by the shipped GHN are more
    accurate after standardization (no labels used)."""
    from model_zoo import load_dataset

    ds = digits if data == "digits" else load_dataset(data, seed=0)
    ghn = GHN.from_pretrained(f"hypernet-{data}")
    raw, std = [], []
    for i, c in enumerate(CellSpace(data).split("no-norm", 6, seed=11)):
        torch.manual_seed(i)
        model = ghn(build_arch(c)).eval()
        recalibrate_batchnorm(model, ds.x_train)
        with torch.no_grad():
            raw.append(float((model(ds.x_test).argmax(-1) == ds.y_test).float().mean()))
            standardize_units(model, ds.x_train[:512])
            std.append(float((model(ds.x_test).argmax(-1) == ds.y_test).float().mean()))
    assert np.mean(std) > np.mean(raw) + 0.1, (raw, std)


def test_rescale_only_and_forced_options():
    torch.manual_seed(0)
    x = torch.randn(128, 6)
    model = _skewed(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)), 0)
    res = standardize_units(model, x, center=False)
    mu, sd = _unit_stats(model, x)["0"]
    assert res.standardized == ("0",) and torch.allclose(sd, torch.ones(5), atol=1e-3)
    assert mu.abs().max() > 0.1  # not centred (sensitivity: the default centres, tested above)
    ln = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3))
    assert standardize_units(ln, x).standardized == ()
    assert standardize_units(ln, x, force=True).standardized == ("0",)


def test_filling_a_norm_free_network_warns_and_names_the_remedy(caplog):
    torch.manual_seed(0)
    ghn = GHN(hidden=16, layers=1, data="digits").eval()
    free = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    with caplog.at_level("WARNING", logger="weightspace.hyper.ghn"):
        ghn(free)
    assert any("standardize_units" in r.getMessage() and "Sequential" in r.getMessage() for r in caplog.records)
    caplog.clear()
    normed = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    with caplog.at_level("WARNING", logger="weightspace.hyper.ghn"):
        ghn(normed)
    assert not any("standardize_units" in r.getMessage() for r in caplog.records)  # sensitivity
