"""Regression: the shipped nowcaster and a fixed per-parameter nowcaster give the predictions recorded
with the code before the move to ``weightspace.nowcast`` (tensors, ``weightspace.nn.MLP`` blocks and
the ``save_pretrained`` layout must not change what a checkpoint computes)."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

import weightspace as ws
from weightspace.nowcast import Nowcaster

from .helpers import randomized_nowcaster

#: the shipped checkpoint's deltas at horizons 1 and 7 on the fixed window of _window()
H1 = [0.00366947, 0.00158632, 0.00090826, -0.00815392, 0.01040101, 0.00524268, -0.01019375, 0.00832267,
      -0.01240705, -0.00259602, -0.01915257, 0.0177733, 0.00161603, -0.00078764, 0.02480339, -0.01179161,
      0.01458981, 0.0203189, -0.01276641, 0.00708965, -0.00109683, 0.00982683, 0.00508698, -0.00783656,
      -0.02324913, 0.00207641]
H7 = [0.0316438, 0.01679409, -0.00251096, -0.04757456, 0.06355505, 0.0236014, -0.04746985, 0.05364178,
      -0.07502872, -0.01079044, -0.10686261, 0.09709896, -0.00487614, 0.01198331, 0.11716978, 0.01174107,
      0.09380235, 0.13556589, -0.08382693, 0.05548213, -0.00812041, 0.06186321, 0.02428108, -0.05739903,
      -0.11021249, 0.00730173]
#: sha256 of the shipped tensors, concatenated in sorted-name order
WEIGHTS_SHA256 = "d5f226b4eae6a26a181c600caa723837401871cc3b2ed53e4d1c8d41b472c8ed"
#: a randomized mlp-kind nowcaster (helpers.randomized_nowcaster("mlp", 0, 6)): deltas at horizon 3
MLP_H3 = [0.0264619, 0.0176373, -0.0006977, -0.0157118, 0.02448, 0.0136653, -0.0172725, 0.035688, -0.0380414,
          0.0088486, -0.0503221, 0.0764314, -0.0124231, 0.0038848, 0.0540721, 0.0693126, 0.0599216, 0.0728516,
          -0.030121, 0.038946, 0.0024291, 0.0342586, 0.0181324, -0.0249907, -0.0682676, 0.0003447]


def _window() -> tuple[ws.GraphSpec, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    spec = ws.GraphSpec.from_module(model)
    g = torch.Generator().manual_seed(0)
    P = spec.num_params
    base = torch.randn(P, generator=g)
    steps = torch.randn(P, generator=g) * 0.01
    return spec, torch.stack([base + k * steps + 0.001 * torch.randn(P, generator=g) for k in range(5)])


def test_shipped_nowcaster_predicts_as_recorded():
    nc = Nowcaster.from_pretrained("nowcaster")
    assert nc.config.horizons == 32 and nc.config.param_hidden == 16 and nc.info["steps"] == 8000
    sd = nc.state_dict()
    assert hashlib.sha256(b"".join(sd[k].numpy().tobytes() for k in sorted(sd))).hexdigest() == WEIGHTS_SHA256
    spec, window = _window()
    out = nc.predict(spec, window)
    assert out.shape == (32, spec.num_params)
    torch.testing.assert_close(out[0], torch.tensor(H1), atol=2e-7, rtol=1e-5)
    torch.testing.assert_close(out[6], torch.tensor(H7), atol=2e-7, rtol=1e-5)
    # the alias loads the same
    torch.testing.assert_close(Nowcaster.pretrained().predict(spec, window), out, atol=0, rtol=0)


def test_mlp_kind_with_shared_mlp_blocks_predicts_as_recorded():
    nc = randomized_nowcaster("mlp", seed=0, horizons=6)
    spec, window = _window()
    torch.testing.assert_close(nc.predict(spec, window)[2], torch.tensor(MLP_H3), atol=2e-7, rtol=1e-5)
