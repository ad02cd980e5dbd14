"""weightspace.predict.encoders: the hyperparameter encoder."""

from __future__ import annotations

import pytest
import torch

from weightspace.predict import HParamEncoder


def test_hparam_encoder():
    rows = [{"lr": 1e-3, "optimizer": "adam", "seed": 1, "dropout": 0.1, "const": 3},
            {"lr": 1e-1, "optimizer": "sgd", "seed": 2, "dropout": 0.2, "const": 3}]
    enc = HParamEncoder.fit(rows)
    assert enc.numeric == {"dropout": False, "lr": True} and enc.categorical == {"optimizer": ["adam", "sgd"]}
    v = enc(rows[0])
    assert torch.allclose(v, torch.tensor([0.1, -3.0, 1.0, 0.0]))
    assert HParamEncoder.from_dict(enc.to_dict()) == enc
    with pytest.raises(KeyError, match="hyperparameter 'lr' is missing"):
        enc({"dropout": 0.1})
