"""weightspace.hyper.prepare_for_finetuning: scale-invariant rescaling and relative noise."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from weightspace.hyper import GHN, CellSpace, build_arch, prepare_for_finetuning


def _blown_up(model: nn.Module, factor: float = 8.0) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(factor)
                if m.bias is not None:
                    m.bias.mul_(factor)
    return model


def _rms(t: torch.Tensor) -> float:
    return float(t.pow(2).mean().sqrt())


def test_layers_before_a_norm_are_rescaled_and_outputs_kept():
    torch.manual_seed(0)
    model = _blown_up(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(1, 8), nn.ReLU(),
                                    nn.Flatten(), nn.Linear(8 * 64, 10)))
    x = torch.randn(32, 1, 8, 8)
    ref = model.train()(x)
    prep = prepare_for_finetuning(model, x, noise=0.0)
    assert prep.rescaled == ("0", "3") and prep.kept == ("7",)
    assert torch.allclose(model(x), ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    assert _rms(model[0].weight) == pytest.approx(1 / math.sqrt(3 * 9), rel=1e-4)
    assert _rms(model[3].weight) == pytest.approx(1 / math.sqrt(3 * 72), rel=1e-4)
    # sensitivity: the head has no normalization after it; its scale is the function, so it stays
    assert _rms(model[7].weight) > 5 / math.sqrt(3 * 512)


def test_no_normalization_means_no_rescaling():
    torch.manual_seed(0)
    model = _blown_up(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
    before = [p.clone() for p in model.parameters()]
    prep = prepare_for_finetuning(model, torch.randn(16, 64), noise=0.0)
    assert prep.rescaled == () and len(prep.kept) == 2
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_noise_is_relative_seeded_and_keeps_norm_parameters():
    def filled():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(64, 256), nn.LayerNorm(256), nn.Linear(256, 10))

    x = torch.randn(16, 64)
    a, b, c = filled(), filled(), filled()
    base = filled()
    prepare_for_finetuning(base, x, noise=0.0)
    prepare_for_finetuning(a, x, noise=0.5, seed=3)
    prepare_for_finetuning(b, x, noise=0.5, seed=3)
    prepare_for_finetuning(c, x, noise=0.5, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[0].weight, c[0].weight)
    rel = _rms(a[0].weight - base[0].weight) / _rms(base[0].weight)
    assert rel == pytest.approx(0.5, rel=0.05)
    assert torch.equal(a[1].weight, base[1].weight) and torch.equal(a[1].bias, base[1].bias)
    with pytest.raises(ValueError, match="non-negative"):
        prepare_for_finetuning(a, x, noise=-0.1)


def test_on_ghn_filled_cell_network_the_function_is_kept():
    ghn = GHN.from_pretrained("hypernet-digits")
    space = CellSpace("digits")
    config = next(c for c in space.split("test", 20, seed=0) if c.get("norm") in ("bn", "ln") and c["kind"] == "cnn")
    torch.manual_seed(0)
    model = ghn(build_arch(config))
    x = torch.rand(64, 1, 8, 8)
    ref = model.train()(x)
    big = max(_rms(m.weight) * math.sqrt(3 * m.weight[0].numel()) for m in model.modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)))
    prep = prepare_for_finetuning(model, x, noise=0.0)
    assert big > 2 and len(prep.rescaled) >= 1  # predicted layers are larger than a default init, and shrink
    out = model(x)
    assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-3
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() == 1.0


def test_on_a_transformers_resnet():
    transformers = pytest.importorskip("transformers")
    config = transformers.ResNetConfig(num_channels=1, num_labels=10, embedding_size=8, hidden_sizes=[8, 16],
                                       depths=[1, 1], layer_type="basic")
    torch.manual_seed(0)
    model = _blown_up(transformers.ResNetForImageClassification(config))
    x = torch.rand(16, 1, 8, 8)
    ref = model.train()(pixel_values=x).logits

    class Logits(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(pixel_values=x).logits

    prep = prepare_for_finetuning(Logits(model), x, noise=0.0)
    assert len(prep.rescaled) >= 4 and any("classifier" in k for k in prep.kept)
    out = model(pixel_values=x).logits
    assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-3


def test_by_default_the_function_is_kept_and_noise_is_opt_in():
    """The default adds no noise: a GHN-filled network computes the same outputs after preparation
    (sensitivity: ``noise=0.5`` changes them)."""
    ghn = GHN.from_pretrained("hypernet-digits")
    config = next(c for c in CellSpace("digits").split("test", 20, seed=0) if c.get("norm") == "bn")
    x = torch.rand(64, 1, 8, 8)
    outs = []
    for kwargs in ({}, {"noise": 0.5}):
        torch.manual_seed(0)
        model = ghn(build_arch(config))
        ref = model.train()(x)
        prep = prepare_for_finetuning(model, x, **kwargs)
        outs.append((prep, float((model(x) - ref).abs().max() / ref.abs().max())))
    (default, kept), (noisy, changed) = outs
    assert default.noise == 0.0 and kept <= 1e-3
    assert noisy.noise == 0.5 and changed > 0.05
