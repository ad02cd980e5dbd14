"""StatNN baseline (Unterthiner et al. 2020): per-tensor statistics of the weights -> MLP or boosting."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from weightspace.graph.param_graph import resize_kernel_grid
from weightspace.graph.vocab import STRUCTURAL_EDGE_TYPES, NodeType

from ._utils import batch_grid, reset_all
from .mlp import MLP, FeatureMLP, FeatureNormalizer

__all__ = ["StatNN", "StatGBM", "tensor_statistics", "NUM_STATS"]

#: mean, variance, 0/25/50/75/100 % quantiles
NUM_STATS = 7
_NODE_COLUMNS = (0, 1, 2)  # bias, norm weight, norm shift
_Q = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])


def _stats(v: Tensor) -> Tensor:
    v = v.double()
    return torch.cat([v.mean()[None], v.var(unbiased=False)[None], torch.quantile(v, _Q.double())]).float()


def _true_kernel_mask(edge_kernel: Tensor, grid: tuple[int, int]) -> Tensor:
    """``[E, KH*KW]`` bool: the slots of each edge's true kernel inside the grid."""
    mask = torch.zeros(edge_kernel.shape[0], grid[0] * grid[1], dtype=torch.bool)
    for kh, kw in torch.unique(edge_kernel, dim=0).tolist():
        rows = ((edge_kernel[:, 0] == kh) & (edge_kernel[:, 1] == kw)).nonzero().squeeze(1)
        ones = torch.ones(rows.numel(), kh * kw)
        mask[rows] = resize_kernel_grid(ones, edge_kernel[rows], (kh, kw), grid) > 0
    return mask


def tensor_statistics(graph, max_tensors: int | None = None) -> Tensor:
    r"""StatNN features of one :class:`~weightspace.ParameterGraph`: 7 statistics per parameter tensor.

    A *tensor* is read off the graph as one layer's weights (edges sharing the depth of their target
    neuron and a parametric edge type, true kernel entries only) or one layer's per-neuron vector
    (bias, normalization scale, normalization shift of the neurons at one depth). Tensors are
    ordered by depth, weights before vectors, so a fixed architecture gives a fixed layout - the
    layout StatNN relies on. Heterogeneous zoos get zero padding up to ``max_tensors`` and the
    number of tensors as a last feature.

    Shapes:
        - output: ``[max_tensors * 7 + 1]`` (``max_tensors`` defaults to the graph's own count)
    """
    x, ea, et = graph.x.detach().cpu(), graph.edge_attr.detach().cpu(), graph.edge_type.cpu()
    layer, dst = graph.node_layer.cpu(), graph.edge_index[1].cpu()
    if x.dim() != 2:
        raise ValueError("tensor_statistics takes one checkpoint per graph")
    mask = _true_kernel_mask(graph.edge_kernel.cpu(), batch_grid(graph))
    keyed: list[tuple[tuple[int, int, int], Tensor]] = []
    e_layer = layer[dst]
    for lt in torch.unique(torch.stack([e_layer, et], 1), dim=0).tolist():
        if lt[1] in STRUCTURAL_EDGE_TYPES:
            continue
        sel = (e_layer == lt[0]) & (et == lt[1])
        keyed.append(((lt[0], 0, lt[1]), ea[sel][mask[sel]]))
    nt = graph.node_type.cpu()
    for lay in torch.unique(layer).tolist():
        sel = (layer == lay) & (nt != NodeType.INPUT)
        if not bool(sel.any()):
            continue
        for c in _NODE_COLUMNS:
            keyed.append(((lay, 1, c), x[sel, c]))
    keyed.sort(key=lambda kv: kv[0])
    feats = [_stats(v) for _, v in keyed if v.numel()]
    n = len(feats)
    m = n if max_tensors is None else max_tensors
    out = torch.zeros(m, NUM_STATS)
    if n:
        out[: min(n, m)] = torch.stack(feats[:m])
    return torch.cat([out.reshape(-1), torch.tensor([float(n)])])


class StatNN(FeatureMLP):
    r"""StatNN (Unterthiner et al., "Predicting Neural Network Accuracy from Weights", 2020).

    For every weight and bias tensor: mean, variance and the 0/25/50/75/100 % quantiles
    (:func:`tensor_statistics`), standardized, then an MLP (two hidden layers of 1000 in the paper).
    The features are computed once per graph and cached on it as ``stat_feats`` by the task; a
    batch without them is featurized on the fly.

    Args:
        max_tensors: tensors per network (zero padded); the feature width is ``7 * max_tensors + 1``.
        hidden: widths of the MLP's hidden layers.
        out: outputs.
        dropout: dropout between hidden layers.

    Shapes:
        - input: a batch of ``B`` parameter graphs (or ``stat_feats [B, 7*max_tensors+1]``)
        - output: ``[B, out]``
    """

    def __init__(self, max_tensors: int, hidden: tuple[int, ...] = (1000, 1000), out: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.hparams: dict[str, Any] = dict(max_tensors=max_tensors, hidden=list(hidden), out=out, dropout=dropout)
        self.max_tensors = max_tensors
        self.in_dim = NUM_STATS * max_tensors + 1
        self.norm = FeatureNormalizer(self.in_dim)
        self.body = MLP([self.in_dim, *hidden], dropout=dropout)
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(hidden[-1], out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_all(self)

    def features(self, batch) -> Tensor:
        """``[B, 7*max_tensors+1]`` raw statistics (cached ``stat_feats`` when present)."""
        f = getattr(batch, "stat_feats", None)
        if f is not None:
            return f.reshape(-1, self.in_dim)
        graphs = batch.to_data_list() if hasattr(batch, "to_data_list") else [batch]
        return torch.stack([tensor_statistics(g, self.max_tensors) for g in graphs]).to(batch.x.device)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(max_tensors={self.max_tensors}, hidden={self.hparams['hidden']})"


class StatGBM:
    """StatNN's gradient-boosting variant: scikit-learn ``GradientBoostingRegressor`` on the same
    statistics, exportable to plain arrays (:meth:`to_tensors` / :meth:`from_tensors`) so it is saved
    with safetensors rather than pickle.

    Args:
        **kwargs: passed to ``sklearn.ensemble.GradientBoostingRegressor``.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = {"n_estimators": 300, "max_depth": 3, "learning_rate": 0.05, "subsample": 0.8, **kwargs}
        self._trees: dict[str, np.ndarray] | None = None

    def fit(self, feats: np.ndarray, y: np.ndarray) -> StatGBM:
        from sklearn.ensemble import GradientBoostingRegressor

        gbm = GradientBoostingRegressor(**self.kwargs).fit(feats, y)
        trees = [est.tree_ for est in gbm.estimators_[:, 0]]
        size = max(t.node_count for t in trees)

        def pad(arr: np.ndarray, fill: float) -> np.ndarray:
            return np.concatenate([arr, np.full(size - arr.shape[0], fill, dtype=arr.dtype)])

        self._trees = {
            "left": np.stack([pad(t.children_left.astype(np.int64), -1) for t in trees]),
            "right": np.stack([pad(t.children_right.astype(np.int64), -1) for t in trees]),
            "feature": np.stack([pad(t.feature.astype(np.int64), -2) for t in trees]),
            "threshold": np.stack([pad(t.threshold.astype(np.float64), 0.0) for t in trees]),
            "value": np.stack([pad(t.value.reshape(-1).astype(np.float64), 0.0) for t in trees]),
            "init": np.array([float(np.asarray(gbm.init_.constant_).reshape(-1)[0])]),
            "rate": np.array([float(gbm.learning_rate)]),
        }
        return self

    def predict(self, feats: np.ndarray) -> np.ndarray:
        if self._trees is None:
            raise RuntimeError("StatGBM is not fitted")
        t = self._trees
        feats = np.asarray(feats, dtype=np.float64)
        out = np.full(feats.shape[0], t["init"][0])
        rows = np.arange(feats.shape[0])
        for k in range(t["left"].shape[0]):
            node = np.zeros(feats.shape[0], dtype=np.int64)
            while True:
                leaf = t["left"][k, node] == -1
                if leaf.all():
                    break
                f = np.where(leaf, 0, t["feature"][k, node])
                go_left = feats[rows, f] <= t["threshold"][k, node]
                nxt = np.where(go_left, t["left"][k, node], t["right"][k, node])
                node = np.where(leaf, node, nxt)
            out += t["rate"][0] * t["value"][k, node]
        return out

    def to_tensors(self) -> dict[str, Tensor]:
        if self._trees is None:
            raise RuntimeError("StatGBM is not fitted")
        return {f"gbm.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in self._trees.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], **kwargs: Any) -> StatGBM:
        self = cls(**kwargs)
        self._trees = {k[4:]: v.numpy() for k, v in tensors.items() if k.startswith("gbm.")}
        return self

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.kwargs})"
