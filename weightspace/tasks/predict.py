"""Generalization prediction from weights: train a metanetwork on a zoo, evaluate, save, reload.

``train_predictor`` fits a :class:`Predictor` (a metanetwork from :mod:`weightspace.nn` plus the
target scaling and feature encoders it needs) on a zoo's train split, selects the epoch with the
best validation Kendall tau and ``run_predict`` reports test metrics. The saved predictor
(``predictor.safetensors`` + ``predictor.json``, never pickle) answers for networks it has never
seen::

    pred = weightspace.tasks.predict.load_predictor("runs/predict")
    acc = pred(model)                       # predicted accuracy of an nn.Module
    z = pred.encode([ws.to_graph(model)])   # graph-level embedding [1, D]

Multi-process training: launched by ``torchrun``, the train split is sharded over ranks and the
model wrapped in ``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from tqdm.auto import tqdm

from weightspace.graph import ParameterGraph
from weightspace.graph.param_graph import resize_kernel_grid
from weightspace.nn import GraphMetaNet, HParamNet, ProbeNet, StatGBM, StatNN, tensor_statistics

log = logging.getLogger(__name__)

__all__ = ["PredictConfig", "HParamEncoder", "Predictor", "load_zoo_graphs", "train_predictor", "evaluate",
           "regression_metrics", "label_noise_ceiling", "run_predict", "load_predictor", "METANETS"]

METANETS = ("gmn", "probe", "statnn", "statnn_gbm", "hparams")


# ----------------------------------------------------------------------------- configuration
@dataclass
class PredictConfig:
    """Everything ``run_predict`` needs besides the zoo.

    Args:
        metanet: ``gmn``, ``probe`` (:class:`~weightspace.nn.ProbeNet`), ``statnn`` (MLP),
            ``statnn_gbm`` (gradient boosting) or ``hparams``.
        model: keyword arguments of the metanetwork (``hidden``, ``num_layers``, ...).
        target: the metrics column to predict.
        fractions, split_seed: run-level split (see :func:`model_zoo.split_runs`).
        epochs, batch_size, lr, weight_decay: optimization (AdamW, cosine schedule).
        seed: initialization and batch order.
        trained_threshold: a run "trained" when its target is at least this (``None``: twice chance).
        device: ``cpu``, ``cuda`` or ``auto``.
        progress: tqdm bars.
        max_runs: use only the first runs of the zoo (``None``: all).
        train_checkpoints: which checkpoints of the *train* runs to learn from: ``"final"``, ``"all"``
            (every checkpoint with its own target, as in the Small CNN Zoo protocol) or a list of
            epochs. Validation and test always use each run's final checkpoint.
        rank_weight: weight of a pairwise ranking term added to the MSE for trained metanetworks
            (RankNet, Burges et al. 2005: ``softplus(-(s_i - s_j) / 0.1)`` over the batch's pairs with
            ``y_i > y_j``, targets standardized), since Kendall's tau only scores the order; 0 = MSE only.

    For ``gmn`` and ``probe``, ``model.stats=True`` fuses StatNN's invariant per-tensor statistics
    into the embedding (``stat_tensors=...``). ``probe`` runs every network on learned inputs, so it
    needs the zoo's architecture configs (read by :func:`load_zoo_graphs`).
    """

    metanet: str = "gmn"
    model: dict[str, Any] = field(default_factory=dict)
    target: str = "test_accuracy"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    trained_threshold: float | None = None
    device: str = "auto"
    progress: bool = True
    max_runs: int | None = None
    train_checkpoints: str | list[float] = "final"
    rank_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.metanet not in METANETS:
            raise ValueError(f"unknown metanet {self.metanet!r}; choose one of {METANETS}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if isinstance(self.train_checkpoints, str) and self.train_checkpoints not in ("final", "all"):
            raise ValueError(f"train_checkpoints must be 'final', 'all' or a list of epochs, "
                             f"got {self.train_checkpoints!r}")


# ----------------------------------------------------------------------------- hyperparameters
@dataclass
class HParamEncoder:
    """Encodes a run's ``config.*`` values as a vector: numbers (log10 when positive and spanning
    more than a decade), strings one-hot over the values seen in training. Seeds are skipped."""

    numeric: dict[str, bool] = field(default_factory=dict)  # name -> log scale
    categorical: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, rows: Sequence[Mapping[str, Any]]) -> HParamEncoder:
        enc = cls()
        keys = sorted({k for r in rows for k in r if "seed" not in k})
        for k in keys:
            vals = [r.get(k) for r in rows]
            nums = [v for v in vals if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)]
            if len(nums) == len(vals):
                arr = np.asarray(nums, dtype=np.float64)
                if np.all(np.isfinite(arr)) and arr.min() != arr.max():
                    enc.numeric[k] = bool(arr.min() > 0 and arr.max() / arr.min() > 10)
            else:
                cats = sorted({str(v) for v in vals})
                if len(cats) > 1:
                    enc.categorical[k] = cats
        return enc

    @property
    def dim(self) -> int:
        return len(self.numeric) + sum(len(c) for c in self.categorical.values())

    def __call__(self, row: Mapping[str, Any]) -> Tensor:
        out = []
        for k, logscale in self.numeric.items():
            if k not in row:
                raise KeyError(f"hyperparameter {k!r} is missing; the predictor was trained with {sorted(self.numeric)}")
            v = float(row[k])
            out.append(math.log10(max(v, 1e-30)) if logscale else v)
        for k, cats in self.categorical.items():
            v = str(row.get(k))
            out.extend(1.0 if v == c else 0.0 for c in cats)
        return torch.tensor(out, dtype=torch.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HParamEncoder:
        return cls(numeric=dict(d.get("numeric", {})), categorical={k: list(v) for k, v in d.get("categorical", {}).items()})


# ----------------------------------------------------------------------------- predictor
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Predictor:
    """A trained metanetwork with the scaling and encoders around it.

    Call it on an ``nn.Module`` (or a :class:`~weightspace.ParameterGraph`) to get the predicted
    target (accuracy); :meth:`predict` and :meth:`encode` take lists of graphs.

    Args:
        kind: one of :data:`METANETS`.
        model: the metanetwork (``None`` for ``statnn_gbm``).
        y_mean, y_std: target standardization fitted on the train split.
        meta: JSON-serializable extras (``max_tensors``, ``kernel_grid``, ``hparams`` encoder, ...).
        gbm: the fitted boosting model for ``statnn_gbm``.
    """

    def __init__(self, kind: str, model: nn.Module | None, y_mean: float, y_std: float,
                 meta: dict[str, Any] | None = None, gbm: StatGBM | None = None) -> None:
        self.kind, self.model, self.gbm = kind, model, gbm
        self.y_mean, self.y_std = float(y_mean), float(y_std)
        self.meta = dict(meta or {})
        self.hparam_encoder = HParamEncoder.from_dict(self.meta["hparams"]) if "hparams" in self.meta else None
        self.device = torch.device("cpu")

    # -------------------------------------------------------------- inputs
    def prepare(self, graph: ParameterGraph, hparams: Mapping[str, Any] | None = None) -> Data:
        """What the metanetwork reads: for ``gmn`` a copy of ``graph`` with kernels in its grid; for
        the baselines a ``Data`` holding only the StatNN statistics or the encoded hyperparameters."""
        g = copy.copy(graph)
        for key in ("y", "run", "step"):
            if key in g:
                del g[key]
        if self.kind == "gmn":
            grid = tuple(self.meta["kernel_grid"])
            if g.grid != grid:
                if g.grid[0] > grid[0] or g.grid[1] > grid[1]:
                    kmax = g.edge_kernel.max(0).values.tolist() if g.num_edges else [1, 1]
                    if kmax[0] > grid[0] or kmax[1] > grid[1]:
                        raise ValueError(f"the network has {kmax[0]}x{kmax[1]} kernels but the predictor was built "
                                         f"for a {grid[0]}x{grid[1]} kernel grid")
                g.edge_attr = resize_kernel_grid(g.edge_attr, g.edge_kernel, g.grid, grid)
                g.kernel_shape = torch.tensor([list(grid)])
            if "max_tensors" in self.meta:
                g.stat_feats = tensor_statistics(graph, int(self.meta["max_tensors"]))[None]
        elif self.kind == "probe":  # flat parameters + architecture index (+ statistics)
            g = self.model.prepare(graph)
        elif self.kind in ("statnn", "statnn_gbm"):  # a feature vector is all these models read
            g = Data(stat_feats=tensor_statistics(g, int(self.meta["max_tensors"]))[None], num_nodes=1)
        elif self.kind == "hparams":
            if hparams is None:
                raise ValueError("the hparams predictor needs the network's training hyperparameters (hparams=...)")
            g = Data(hparams=self.hparam_encoder(hparams)[None], num_nodes=1)
        return g

    def to(self, device: str | torch.device) -> Predictor:
        self.device = torch.device(device)
        if self.model is not None:
            self.model.to(self.device)
        return self

    # -------------------------------------------------------------- outputs
    @torch.no_grad()
    def predict(self, graphs: Sequence[ParameterGraph], batch_size: int = 64, prepared: bool = False) -> np.ndarray:
        """Predicted targets ``[len(graphs)]``."""
        graphs = list(graphs) if prepared else [self.prepare(g) for g in graphs]
        if self.kind == "statnn_gbm":
            feats = torch.cat([g.stat_feats for g in graphs]).numpy()
            return self.gbm.predict(feats) * self.y_std + self.y_mean
        self.model.eval()
        out = []
        for i in range(0, len(graphs), batch_size):
            b = Batch.from_data_list(graphs[i : i + batch_size]).to(self.device)
            out.append(self.model(b)[:, 0].float().cpu())
        y = torch.cat(out).numpy() if out else np.zeros(0)
        return y * self.y_std + self.y_mean

    @torch.no_grad()
    def encode(self, graphs: Sequence[ParameterGraph], batch_size: int = 64, prepared: bool = False) -> Tensor:
        """Graph-level embeddings ``[len(graphs), D]``."""
        if self.model is None:
            raise RuntimeError(f"a {self.kind} predictor has no learned embedding")
        graphs = list(graphs) if prepared else [self.prepare(g) for g in graphs]
        self.model.eval()
        out = [self.model.encode(Batch.from_data_list(graphs[i : i + batch_size]).to(self.device)).cpu()
               for i in range(0, len(graphs), batch_size)]
        return torch.cat(out)

    def __call__(self, network: nn.Module | ParameterGraph, hparams: Mapping[str, Any] | None = None,
                 example_input: Any = None) -> float:
        """Predicted target (accuracy) of one network."""
        if isinstance(network, nn.Module):
            import weightspace as ws

            graph = ws.to_graph(network, example_input)
        else:
            graph = network
        return float(self.predict([self.prepare(graph, hparams)], prepared=True)[0])

    # -------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``predictor.safetensors`` and ``predictor.json`` into the folder ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.kind == "statnn_gbm":
            tensors = self.gbm.to_tensors()
            model_cfg: dict[str, Any] = dict(self.gbm.kwargs)
        else:
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            model_cfg = dict(self.model.hparams)
        save_file(tensors, str(path / "predictor.safetensors"))
        cfg = {"format": "weightspace.predictor", "version": 1, "kind": self.kind, "model": model_cfg,
               "y_mean": self.y_mean, "y_std": self.y_std, "meta": self.meta}
        (path / "predictor.json").write_text(json.dumps(cfg, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Predictor:
        from safetensors.torch import load_file

        path = Path(path)
        if path.is_dir():
            cfg_path = path / "predictor.json"
        elif path.name == "predictor.safetensors":  # the weights file of a saved predictor
            cfg_path = path.with_name("predictor.json")
        else:
            cfg_path = path
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path}: no predictor.json (save a predictor with Predictor.save)")
        try:
            cfg = json.loads(cfg_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{cfg_path}: not a weightspace predictor (not a JSON file: {e})") from None
        if not isinstance(cfg, dict) or cfg.get("format") != "weightspace.predictor":
            raise ValueError(f"{cfg_path}: not a weightspace predictor")
        weights = cfg_path.parent / "predictor.safetensors"
        try:
            tensors = load_file(str(weights))
        except FileNotFoundError:
            raise FileNotFoundError(f"{weights}: missing; a saved predictor is predictor.json + predictor.safetensors") from None
        except Exception as e:  # safetensors raises its own error type for corrupt or truncated files
            raise ValueError(f"{weights}: cannot read the predictor's weights ({e})") from None
        kind = cfg["kind"]
        if kind == "statnn_gbm":
            return cls(kind, None, cfg["y_mean"], cfg["y_std"], cfg["meta"], StatGBM.from_tensors(tensors, **cfg["model"]))
        model = build_metanet(kind, cfg["model"])
        try:
            model.load_state_dict(tensors)
        except RuntimeError as e:
            raise ValueError(f"{weights}: the weights do not fit the {kind} described in {cfg_path.name}: {e}") from None
        return cls(kind, model.eval(), cfg["y_mean"], cfg["y_std"], cfg["meta"])

    def __repr__(self) -> str:
        return f"Predictor(kind={self.kind!r}, model={self.model!r})"


def load_predictor(path: str | os.PathLike) -> Predictor:
    """Load a predictor saved by :meth:`Predictor.save` (a folder or its ``predictor.json``)."""
    return Predictor.load(path)


def build_metanet(kind: str, kwargs: Mapping[str, Any]) -> nn.Module:
    kwargs = dict(kwargs)
    if kind == "gmn":
        return GraphMetaNet(**kwargs)
    if kind == "probe":
        return ProbeNet(**kwargs)
    if kind == "statnn":
        return StatNN(**kwargs)
    if kind == "hparams":
        return HParamNet(**kwargs)
    raise ValueError(f"unknown metanet {kind!r}; choose one of {METANETS}")


# ----------------------------------------------------------------------------- data
@dataclass
class ZooGraphs:
    """Final-checkpoint graphs of a zoo's runs with targets and hyperparameters, split by run, and
    what a probing predictor needs to run them: the zoo's architecture configs and input shape."""

    graphs: dict[str, list[ParameterGraph]]
    hparams: dict[str, list[dict[str, Any]]]
    chance: float
    archs: list[dict[str, Any]] = field(default_factory=list)
    input_shape: list[int] | None = None


def load_zoo_graphs(zoo: Any, target: str = "test_accuracy", fractions: Sequence[float] = (0.8, 0.1, 0.1),
                    seed: int = 0, max_runs: int | None = None, progress: bool = False,
                    train_checkpoints: str | Sequence[float] = "final") -> ZooGraphs:
    """Read a zoo (a path or a :class:`model_zoo.Zoo`) into train/val/test lists of graphs.

    Uses the zoo's own run-level split (:meth:`model_zoo.Zoo.graph_dataset`); diverged runs (non-finite
    weights or target) are dropped there. ``max_runs`` keeps the first runs of each split in
    proportion (for CI-sized runs). ``train_checkpoints`` picks the train runs' checkpoints
    (``"final"``, ``"all"`` or epochs); validation and test hold each run's final checkpoint.
    """
    import model_zoo

    if isinstance(zoo, (str, os.PathLike)):
        zoo = model_zoo.load(zoo)
    graphs: dict[str, list[ParameterGraph]] = {}
    hps: dict[str, list[dict[str, Any]]] = {}
    for split in ("train", "val", "test"):
        ckpt = train_checkpoints if split == "train" else "final"
        ds = zoo.graph_dataset(target=target, split=split, fractions=tuple(fractions), seed=seed, checkpoints=ckpt)
        idx = range(len(ds))
        if max_runs is not None:
            runs = sorted({r for r, _, _ in ds.items})
            keep = set(runs[: max(1, int(round(max_runs * len(runs) / max(len(zoo), 1))))])
            idx = [i for i, (r, _, _) in enumerate(ds.items) if r in keep]
        items = [ds[i] for i in tqdm(idx, desc=f"load {split}", disable=not progress)]
        graphs[split] = items
        hps[split] = [zoo.hparams(int(g.run)) for g in items]
        if ds.dropped:
            log.info("%s: dropped %d non-finite checkpoints", split, ds.dropped)
    classes = zoo.info.get("dataset", {}).get("num_outputs") or zoo.info.get("dataset", {}).get("num_classes")
    chance = 1.0 / float(classes) if classes else 0.0
    archs = [dict(zoo.info["archs"][a]) for a in sorted(zoo.info.get("archs", {}))]
    shape = zoo.info.get("dataset", {}).get("input_shape")
    return ZooGraphs(graphs, hps, chance, archs, [int(d) for d in shape] if shape else None)


# ----------------------------------------------------------------------------- metrics
def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Kendall tau-b, R^2 and MAE (NaN when fewer than two points)."""
    from scipy.stats import kendalltau
    from sklearn.metrics import r2_score

    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y_true.size < 2:
        return {"tau": float("nan"), "r2": float("nan"), "mae": float("nan"), "n": int(y_true.size)}
    tau = kendalltau(y_true, y_pred).statistic if np.ptp(y_pred) > 0 else float("nan")
    return {"tau": float(tau), "r2": float(r2_score(y_true, y_pred)), "mae": float(np.abs(y_true - y_pred).mean()),
            "n": int(y_true.size)}


def label_noise_ceiling(correct: np.ndarray, draws: int = 200, seed: int = 0) -> dict[str, float]:
    """Kendall tau-b that a perfect predictor reaches against accuracies measured on a finite test set.

    A zoo's targets are accuracies on ``n`` test samples. Even an oracle that knows every network's
    accuracy on the whole input distribution does not rank the measured values perfectly: networks
    of near-equal accuracy swap places by sampling noise. This bootstrap resamples the test set
    (one resample shared by all networks, so correlated mistakes and networks that output the same
    constant class stay tied) and scores the measured accuracies against the resampled ones.

    Args:
        correct: ``[networks, n]`` booleans, whether each network classifies each test sample correctly.

    Returns:
        ``{"tau": mean, "tau_std": std over draws, "n_eval": n}``.
    """
    from scipy.stats import kendalltau

    c = np.asarray(correct, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] < 1:
        raise ValueError(f"correct must be a [networks, test samples] matrix, got shape {c.shape}")
    n = c.shape[1]
    if c.shape[0] < 2:
        return {"tau": float("nan"), "tau_std": float("nan"), "n_eval": n}
    acc = c.mean(1)
    rng = np.random.default_rng(seed)
    taus = [kendalltau(acc, c[:, rng.integers(0, n, n)].mean(1)).statistic for _ in range(draws)]
    return {"tau": float(np.nanmean(taus)), "tau_std": float(np.nanstd(taus)), "n_eval": n}


def evaluate(predictor: Predictor, graphs: Sequence[ParameterGraph], threshold: float, prefix: str,
             prepared: bool = True) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Metrics on all graphs and on the runs that trained (target >= ``threshold``), namespaced
    ``{prefix}/tau``, ``{prefix}_trained/tau``, ...; returns ``(metrics, y_true, y_pred)``."""
    y = np.array([float(g.y.reshape(-1)[0]) for g in graphs])
    p = predictor.predict(graphs, prepared=prepared)
    out = {f"{prefix}/{k}": v for k, v in regression_metrics(y, p).items()}
    keep = y >= threshold
    out.update({f"{prefix}_trained/{k}": v for k, v in regression_metrics(y[keep], p[keep]).items()})
    return out, y, p


# ----------------------------------------------------------------------------- training
def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def maybe_init_distributed(device: torch.device) -> bool:
    """Initialize the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        return True
    return False


def train_predictor(data: ZooGraphs, cfg: PredictConfig) -> tuple[Predictor, dict[str, Any]]:
    """Fit a predictor on ``data.graphs['train']`` selecting on validation tau.

    Returns the predictor (best validation epoch) and a history with ``train/time_s``,
    ``train/graphs_per_s`` and per-epoch ``train/loss`` / ``val/tau``.
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = _device(cfg.device)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    train_g, val_g = data.graphs["train"], data.graphs["val"]
    if not train_g:
        raise ValueError("the zoo's train split is empty")
    y_train = np.array([float(g.y.reshape(-1)[0]) for g in train_g])
    y_mean, y_std = float(y_train.mean()), float(max(y_train.std(), 1e-6))
    threshold = cfg.trained_threshold if cfg.trained_threshold is not None else 2 * data.chance
    meta: dict[str, Any] = {"target": cfg.target, "trained_threshold": threshold}
    kwargs = dict(cfg.model)
    kind = cfg.metanet
    if kind in ("gmn", "probe") and kwargs.pop("stats", False):  # fuse StatNN's statistics
        meta["max_tensors"] = int(max(int(tensor_statistics(g)[-1]) for g in train_g))
        kwargs["stat_tensors"] = meta["max_tensors"]
    if kind == "gmn":
        kh = max(max(g.edge_kernel[:, 0].max().item(), 1) for g in train_g)
        kw = max(max(g.edge_kernel[:, 1].max().item(), 1) for g in train_g)
        grid = kwargs.pop("kernel_grid", None) or [kh, kw]
        kwargs["kernel_grid"] = [int(grid[0]), int(grid[1])]
        meta["kernel_grid"] = kwargs["kernel_grid"]
    elif kind == "probe":
        if not data.archs or not data.input_shape:
            raise ValueError("the probe predictor runs the zoo's networks: it needs the zoo's architecture "
                             "configs and input shape (zoo.json 'archs' and 'dataset.input_shape')")
        kwargs["archs"], kwargs["input_shape"] = data.archs, data.input_shape
    elif kind in ("statnn", "statnn_gbm"):
        meta["max_tensors"] = int(kwargs.pop("max_tensors", None) or max(int(tensor_statistics(g)[-1]) for g in train_g))
        if kind == "statnn":
            kwargs["max_tensors"] = meta["max_tensors"]
    elif kind == "hparams":
        enc = HParamEncoder.fit(data.hparams["train"])
        if enc.dim == 0:
            raise ValueError("the zoo records no varying hyperparameters; the hparams baseline cannot be trained")
        meta["hparams"] = enc.to_dict()
        kwargs["in_dim"] = enc.dim

    model = None if kind == "statnn_gbm" else build_metanet(kind, kwargs)
    pred = Predictor(kind, model, y_mean, y_std, meta, StatGBM(**kwargs) if kind == "statnn_gbm" else None)
    tr = [pred.prepare(g, h) for g, h in zip(train_g, data.hparams["train"])]
    va = [pred.prepare(g, h) for g, h in zip(val_g, data.hparams["val"])]
    for g, src in zip(tr, train_g):
        g.y = src.y.reshape(-1)[:1]
    for g, src in zip(va, val_g):
        g.y = src.y.reshape(-1)[:1]
    hist: dict[str, Any] = {"train/loss": [], "val/tau": [], "train/n": len(tr), "val/n": len(va)}
    t0 = time.perf_counter()
    if kind == "statnn_gbm":
        feats = torch.cat([g.stat_feats for g in tr]).numpy()
        pred.gbm.fit(feats, (y_train - y_mean) / y_std)
        hist["train/time_s"] = time.perf_counter() - t0
        hist["train/graphs_per_s"] = len(tr) / max(hist["train/time_s"], 1e-9)
        return pred, hist

    if kind in ("statnn", "hparams") or (kind in ("gmn", "probe") and "max_tensors" in meta):
        model.fit_normalizer(torch.cat([g.hparams if kind == "hparams" else g.stat_feats for g in tr]))
    rank, world = _dist()
    model.to(device)
    pred.device = device
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(tr) / world / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, cfg.epochs * steps_per_epoch),
                                                pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    best = (-float("inf"), copy.deepcopy(model.state_dict()), -1)
    seen, train_time = 0, 0.0
    bar = tqdm(range(cfg.epochs), desc=f"train {kind}", disable=not cfg.progress or rank != 0)
    for epoch in bar:
        net.train()
        t_ep = time.perf_counter()
        perm = torch.randperm(len(tr), generator=gen)
        mine = perm[rank::world]
        mine = mine[: steps_per_epoch * cfg.batch_size] if world > 1 else mine
        losses = []
        for s in range(steps_per_epoch):
            idx = mine[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            if idx.numel() == 0:
                idx = mine[:1] if mine.numel() else perm[:1]
            b = Batch.from_data_list([tr[int(i)] for i in idx]).to(device)
            target = (b.y.reshape(-1).float() - y_mean) / y_std
            out = net(b)[:, 0]
            loss = nn.functional.mse_loss(out, target)
            if cfg.rank_weight:
                loss = loss + cfg.rank_weight * pairwise_rank_loss(out, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            seen += int(idx.numel())
        train_time += time.perf_counter() - t_ep
        val_tau = regression_metrics([float(g.y[0]) for g in va], pred.predict(va, prepared=True))["tau"] if va else float("nan")
        hist["train/loss"].append(float(np.mean(losses)))
        hist["val/tau"].append(val_tau)
        score = val_tau if np.isfinite(val_tau) else -hist["train/loss"][-1]
        if score > best[0] or best[2] < 0:
            best = (score, copy.deepcopy(model.state_dict()), epoch)
        bar.set_postfix(loss=f"{hist['train/loss'][-1]:.4f}", val_tau=f"{val_tau:.3f}")
        log.debug("epoch %d loss %.4f val/tau %.4f", epoch, hist["train/loss"][-1], val_tau)
    model.load_state_dict(best[1])
    model.eval()
    hist["train/time_s"] = train_time
    hist["train/graphs_per_s"] = seen * world / max(train_time, 1e-9)
    hist["best_epoch"] = best[2]
    return pred, hist


def pairwise_rank_loss(score: Tensor, target: Tensor, temperature: float = 0.1) -> Tensor:
    """RankNet's logistic loss over all ordered pairs of a batch: ``mean softplus(-(s_i - s_j) / T)``
    over pairs with ``target_i > target_j`` (0 when the batch has no such pair)."""
    higher = target[:, None] > target[None, :]
    if not bool(higher.any()):
        return score.sum() * 0.0
    diff = (score[:, None] - score[None, :])[higher]
    return nn.functional.softplus(-diff / temperature).mean()


def run_predict(zoo: Any, cfg: PredictConfig, out_dir: str | os.PathLike | None = None,
                data: ZooGraphs | None = None) -> tuple[Predictor, dict[str, Any]]:
    """Train on the zoo's train split, select on val, report on test; optionally save the predictor
    and ``metrics.json`` into ``out_dir`` (rank 0 only).

    Returns ``(predictor, metrics)`` with ``test/tau``, ``test/r2``, ``test/mae``, the same for
    ``val`` and for the runs that trained (``test_trained/*``), timings and sizes.
    """
    device = _device(cfg.device)
    maybe_init_distributed(device)
    if data is None:
        data = load_zoo_graphs(zoo, cfg.target, cfg.fractions, cfg.split_seed, cfg.max_runs, cfg.progress,
                               cfg.train_checkpoints)
    pred, hist = train_predictor(data, cfg)
    pred.to("cpu")
    threshold = pred.meta["trained_threshold"]
    metrics: dict[str, Any] = {"metanet": cfg.metanet, "seed": cfg.seed}
    test_prep = [pred.prepare(g, h) for g, h in zip(data.graphs["test"], data.hparams["test"])]
    val_prep = [pred.prepare(g, h) for g, h in zip(data.graphs["val"], data.hparams["val"])]
    for g, src in zip(test_prep + val_prep, data.graphs["test"] + data.graphs["val"]):
        g.y = src.y.reshape(-1)[:1]
    m_val, _, _ = evaluate(pred, val_prep, threshold, "val")
    t0 = time.perf_counter()
    m_test, y, p = evaluate(pred, test_prep, threshold, "test")
    infer = time.perf_counter() - t0
    metrics.update(m_val)
    metrics.update(m_test)
    metrics.update({k: v for k, v in hist.items() if not isinstance(v, list)})
    metrics["test/graphs_per_s_inference"] = len(test_prep) / max(infer, 1e-9)
    metrics["history"] = {k: v for k, v in hist.items() if isinstance(v, list)}
    metrics["test/y_true"] = y.tolist()
    metrics["test/y_pred"] = p.tolist()
    rank, _ = _dist()
    if out_dir is not None and rank == 0:
        out = Path(out_dir)
        pred.save(out / "predictor")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        log.info("test/tau %.4f test/r2 %.4f test/mae %.4f -> %s", metrics["test/tau"], metrics["test/r2"],
                 metrics["test/mae"], out)
    return pred, metrics
