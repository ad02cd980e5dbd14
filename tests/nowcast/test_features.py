"""Window features and Linefit: exact on straight lines, scale-free, finite, zero for still parameters."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import weightspace as ws
from weightspace.nowcast import (
    Nowcaster,
    NowcastLayout,
    window_features,
)

from .helpers import adam_trajectory as _adam_trajectory
from .helpers import randomize as _randomize
from .helpers import small_mlp as _mlp

SEEDS = st.integers(0, 2**31 - 1)


@settings(max_examples=10, deadline=None)
@given(seed=SEEDS, c=st.integers(2, 7))
def test_linefit_is_exact_on_straight_lines(seed, c):
    g = torch.Generator().manual_seed(seed)
    P = 11
    a, b = torch.randn(P, generator=g), torch.randn(P, generator=g) * 0.1
    window = a + b * torch.arange(c, dtype=torch.float32)[:, None]  # [c, P]
    lay = NowcastLayout(P, 1, 0, torch.zeros(P, dtype=torch.bool), torch.zeros(P, dtype=torch.long),
                        torch.zeros(P, dtype=torch.long), torch.arange(P) % 3, 3, torch.zeros(2, 0, dtype=torch.long),
                        torch.zeros(0, dtype=torch.long), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    nc = Nowcaster(kind="linefit", context=c, horizons=4)
    d = nc.predict(lay, window)
    expect = b * torch.arange(1, 5, dtype=torch.float32)[:, None]
    assert torch.allclose(d, expect, atol=1e-5, rtol=1e-4)


def test_features_are_scale_free():
    """Scaling a tensor's trajectory scales the predicted delta by the same factor (normalization undone)."""
    model = _mlp()
    traj = _adam_trajectory(model, steps=8)[-5:]
    spec = ws.GraphSpec.from_module(model)
    nc = _randomize(Nowcaster(kind="graph", horizons=3, hidden=16, layers=2))
    d1 = nc.predict(spec, traj)
    d2 = nc.predict(spec, traj * 7.0)
    assert torch.allclose(d2, 7.0 * d1, rtol=1e-3, atol=1e-6)



def test_window_features_shapes_and_finiteness():
    w = torch.randn(2, 5, 10)
    w[:, :, :4] = 1.0  # a tensor that does not move
    feats, s, line = window_features(w, torch.tensor([0] * 4 + [1] * 6), 2)
    assert feats.shape == (2, 10, 7) and s.shape == (2, 10) and line.shape == (2, 10, 2)
    assert torch.isfinite(feats).all() and torch.isfinite(s).all() and (s > 0).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_parameter_that_did_not_move_has_zero_slope_and_differences(threads):
    """A still parameter's window features are exactly 0 (no rounding residue divided by the floor of its
    group's step scale), whatever the thread count; a parameter that moves, even slightly, is not."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        w = (torch.randn(1, 1, 300, generator=g) * 0.1).repeat(1, 5, 1)  # values of a trained layer, still
        w[:, :, 200:] += torch.arange(5.0)[None, :, None] * 1e-3  # a second group that moves
        tid = torch.tensor([0] * 200 + [1] * 100)
        feats, s, line = window_features(w, tid, 2)
        # features: last, the c-1 differences, logscale, slope
        assert (feats[0, :200, 1:5] == 0).all() and (feats[0, :200, -1] == 0).all() and (line[0, :200, 1] == 0).all()
        assert (feats[0, 200:, -1] > 0.5).all()  # sensitivity: the moving group's slope is seen
    finally:
        torch.set_num_threads(prev)
