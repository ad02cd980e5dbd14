"""Convert your own PyTorch model to a parameter graph and back.

    python examples/convert_model.py            # a small CNN of your own
    python examples/convert_model.py --fast     # the same, smaller (CI)

Shows: ``ws.to_graph`` / ``ws.from_graph`` (bit-exact round trip), ``GraphSpec`` for many
checkpoints of one architecture, saving a graph safely, ``to_networkx``, and the error a module the
converter cannot represent raises.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch
from torch import nn

import weightspace as ws

log = logging.getLogger("examples.convert_model")


class MyCNN(nn.Module):
    """Any module torch.fx can trace: here a conv net with a residual connection."""

    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.block = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))

    def forward(self, x):
        h = self.stem(x)
        return self.head(h + self.block(h))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true", default=os.environ.get("WEIGHTSPACE_EXAMPLES_FAST") == "1")
    p.add_argument("--out", type=Path, default=Path("runs/examples/convert_model"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    width = 4 if args.fast else 32

    model = MyCNN(width)
    g = ws.to_graph(model)                                   # one node per neuron, one edge per weight
    log.info("graph: %d nodes, %d edges, node features %s, edge features %s",
             g.num_nodes, g.num_edges, tuple(g.x.shape), tuple(g.edge_attr.shape))

    copy = ws.from_graph(g, MyCNN(width))                    # all or nothing, checked first
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), copy.state_dict().values()))
    log.info("round trip bit-exact: %s", same)

    spec = ws.GraphSpec.from_module(model)                   # trace once per architecture ...
    checkpoints = [MyCNN(width).state_dict() for _ in range(3)]
    stack = {k: torch.stack([c[k] for c in checkpoints]) for k in checkpoints[0]}
    traj = spec.to_graph(stack)                              # ... then encode [T, ...] stacks in one gather
    back = spec.to_state_dict(traj)
    log.info("3 checkpoints encoded at once; decoded exactly: %s",
             all(torch.equal(back[k][1], checkpoints[1][k]) for k in checkpoints[1]))

    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(g, args.out / "graph.pt")
    again = torch.load(args.out / "graph.pt", weights_only=True)   # safe loading: no code runs
    log.info("saved and reloaded with weights_only=True: %d edges", again.num_edges)

    nxg = ws.to_networkx(g)
    log.info("networkx: %d nodes, %d edges", nxg.number_of_nodes(), nxg.number_of_edges())

    try:
        ws.to_graph(nn.LSTM(4, 8))
    except ws.UnsupportedModuleError as e:
        log.info("refused as expected: %s", str(e).splitlines()[0][:160])

    print(f"convert_model: {g.num_nodes} nodes, {g.num_edges} edges, round trip exact={same}")


if __name__ == "__main__":
    main()
