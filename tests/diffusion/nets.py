"""Small random MLPs of one architecture, shared by the diffusion tests."""

import torch

from model_zoo.archs import MLP
from weightspace.graph import GraphSpec


def random_mlps(n: int, seed: int = 0):
    """``(model, spec, flats [n, P])``: ``n`` freshly initialized 6-5-5-3 MLPs as flat parameter vectors."""
    torch.manual_seed(seed)
    model = MLP(in_features=6, num_outputs=3, depth=2, width=5)
    spec = GraphSpec.from_module(model)
    flats = torch.stack([spec.flatten(MLP(in_features=6, num_outputs=3, depth=2, width=5).state_dict())
                         for _ in range(n)])
    return model, spec, flats
