"""Plots and the Markdown report of the CLI (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from weightspace.graph import EdgeType, NodeType, ParameterGraph  # noqa: E402

_NODE_COLORS = {
    NodeType.INPUT: "#4c72b0", NodeType.HIDDEN: "#8c8c8c", NodeType.OUTPUT: "#c44e52", NodeType.VOCAB: "#55a868",
    NodeType.POSITION: "#55a868", NodeType.SUM: "#dd8452", NodeType.PRODUCT: "#dd8452", NodeType.ATTN_Q: "#8172b3",
    NodeType.ATTN_K: "#937860", NodeType.ATTN_V: "#da8bc3",
}


def draw_parameter_graph(g: ParameterGraph, path: str | Path, title: str = "") -> Path:
    """Draw ``g`` layer by layer: x = neuron depth, nodes coloured by type, edges by weight
    (blue negative, red positive; structural edges dashed grey); saved as PNG."""
    layer = g.node_layer.tolist()
    by_layer: dict[int, list[int]] = {}
    for i, lay in enumerate(layer):
        by_layer.setdefault(lay, []).append(i)
    pos = {}
    for lay, nodes in by_layer.items():
        n = len(nodes)
        for k, i in enumerate(nodes):
            pos[i] = (lay, (k - (n - 1) / 2) / max(n, 1))
    ea = g.edge_attr
    # the weight shown per edge: the kernel entry of largest magnitude (the scalar for dense layers)
    strength = ea.gather(1, ea.abs().argmax(1, keepdim=True)).squeeze(1)
    scale = float(strength.abs().max().clamp_min(1e-12))
    fig, ax = plt.subplots(figsize=(10, 6), dpi=120)
    structural = {EdgeType.RESIDUAL, EdgeType.IDENTITY, EdgeType.ATTN_QK, EdgeType.ATTN_HEAD, EdgeType.PRODUCT}
    src, dst = g.edge_index.tolist()
    et = g.edge_type.tolist()
    for s, d, t, w in zip(src, dst, et, strength.tolist()):
        (x0, y0), (x1, y1) = pos[s], pos[d]
        if t in structural:
            ax.plot([x0, x1], [y0, y1], ls="--", lw=0.6, color="0.55", alpha=0.7, zorder=1)
        else:
            c = "#c44e52" if w > 0 else "#4c72b0"
            ax.plot([x0, x1], [y0, y1], lw=0.3 + 1.2 * abs(w) / scale, color=c, alpha=0.15 + 0.6 * abs(w) / scale,
                    zorder=1)
    nt = g.node_type.tolist()
    for t in sorted(set(nt)):
        idx = [i for i in range(len(nt)) if nt[i] == t]
        ax.scatter([pos[i][0] for i in idx], [pos[i][1] for i in idx], s=28, color=_NODE_COLORS[NodeType(t)],
                   edgecolors="k", linewidths=0.4, zorder=2, label=NodeType(t).name.lower())
    ax.set_xlabel("neuron depth (node_layer)")
    ax.set_yticks([])
    ax.legend(loc="upper left", fontsize=8, frameon=False, ncol=2)
    ax.set_title(title or f"parameter graph: {g.num_nodes} nodes, {g.edge_index.shape[1]} edges")
    return _save(fig, ax, path, hide=("top", "right", "left"))


def _save(fig, ax, path: str | Path, hide: tuple[str, ...] = ("top", "right")) -> Path:
    """Hide the given spines, lay out, write the PNG and close the figure."""
    for side in hide:
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]) for c in columns) + " |")
    return "\n".join(lines)


def stack_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bit-exact equality of two state dicts (same keys, dtypes and values)."""
    if a.keys() != b.keys():
        return False
    return all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def plot_curves(curves: dict[str, list[tuple[int, float]]], path: str | Path, ylabel: str, xlabel: str) -> Path:
    """Line plot of ``{label: [(x, y), ...]}`` saved as PNG."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for label, pts in curves.items():
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False)
    return _save(fig, ax, path)
