"""A trained generalization predictor: a metanetwork plus the target scaling and encoders around it.

Usage::

    from weightspace.predict import Predictor
    pred = Predictor.from_pretrained("runs/predict/predictor")   # written by ``weightspace predict``
    acc = pred(model)                       # predicted accuracy of an nn.Module
    z = pred.encode([ws.to_graph(model)])   # graph-level embedding [1, D]

A saved predictor is a directory with ``config.json`` (:class:`PredictorConfig`) and
``model.safetensors``; nothing is unpickled.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from weightspace.graph import ParameterGraph, to_graph
from weightspace.nn import StatGBM, tensor_statistics
from weightspace.pretrained import (
    CONFIG_NAME,
    CheckpointError,
    PretrainedMixin,
    config_from_dict,
    read_weights,
)

from .encoders import HParamEncoder
from .metanets import KINDS, build_metanet

__all__ = ["Predictor", "PredictorConfig", "load_predictor", "LEGACY_CONFIG", "LEGACY_WEIGHTS"]

#: Files of the layout written before ``save_pretrained`` (read by :func:`load_predictor` for one release).
LEGACY_CONFIG = "predictor.json"
LEGACY_WEIGHTS = "predictor.safetensors"


@dataclass(frozen=True)
class PredictorConfig:
    """Everything that rebuilds a :class:`Predictor` but its weights (``config.json``).

    Attributes:
        kind: one of :data:`~weightspace.predict.KINDS`.
        metanet: keyword arguments of the metanetwork (``model.hparams``), or of
            :class:`~weightspace.nn.StatGBM` for ``statnn_gbm``.
        y_mean, y_std: target standardization fitted on the train split.
        meta: ``target``, ``trained_threshold``, ``max_tensors``, ``kernel_grid``, the ``hparams`` encoder.
    """

    kind: str
    metanet: dict[str, Any]
    y_mean: float
    y_std: float
    meta: dict[str, Any]


class Predictor(PretrainedMixin):
    """A trained metanetwork with the scaling and encoders around it.

    Call it on an ``nn.Module`` (or a :class:`~weightspace.ParameterGraph`) to get the predicted
    target (accuracy); :meth:`predict` and :meth:`encode` take lists of graphs.

    Persistence follows :class:`~weightspace.pretrained.PretrainedMixin`: :meth:`save_pretrained`
    writes ``config.json`` (a :class:`PredictorConfig`) and ``model.safetensors`` (the metanetwork's
    state dict, or the boosting model's trees), :meth:`from_pretrained` reads them back.

    Args:
        kind: one of :data:`~weightspace.predict.KINDS`.
        model: the metanetwork (``None`` for ``statnn_gbm``).
        y_mean, y_std: target standardization fitted on the train split.
        meta: JSON-serializable extras (``max_tensors``, ``kernel_grid``, ``hparams`` encoder, ...).
        gbm: the fitted boosting model for ``statnn_gbm``.
    """

    config_class = PredictorConfig
    checkpoint_format = "weightspace.predictor"

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
                g = g.with_kernel_grid(*grid)
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

    def __call__(self, network: nn.Module | ParameterGraph | Sequence[nn.Module | ParameterGraph],
                 hparams: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
                 example_input: Any = None) -> float | np.ndarray:
        """Predicted target (accuracy) of one network, or ``[N]`` predictions for a list of networks.

        Args:
            network: a model, a :class:`ParameterGraph`, or a list/tuple of either (batched through
                :meth:`predict`).
            hparams: the run's hyperparameters, for predictors trained with them: one mapping for every
                network, or one per network.
            example_input: forwarded to :func:`weightspace.to_graph` for models that need one.
        """
        if isinstance(network, (list, tuple)):
            hps = list(hparams) if isinstance(hparams, (list, tuple)) else [hparams] * len(network)
            if len(hps) != len(network):
                raise ValueError(f"got {len(network)} networks and {len(hps)} hparams mappings; give one per "
                                 "network or a single mapping")
            graphs = [self.prepare(n if isinstance(n, ParameterGraph) else to_graph(n, example_input), h)
                      for n, h in zip(network, hps)]
            return self.predict(graphs, prepared=True)
        graph = to_graph(network, example_input) if isinstance(network, nn.Module) else network
        return float(self.predict([self.prepare(graph, hparams)], prepared=True)[0])

    # -------------------------------------------------------------- persistence
    @property
    def config(self) -> PredictorConfig:
        """What rebuilds this predictor (the weights aside): stored in ``config.json``."""
        metanet = dict(self.gbm.kwargs) if self.kind == "statnn_gbm" else dict(self.model.hparams)
        return PredictorConfig(kind=self.kind, metanet=metanet, y_mean=self.y_mean, y_std=self.y_std,
                               meta=dict(self.meta))

    @classmethod
    def from_config(cls, config: PredictorConfig) -> Predictor:
        """An untrained predictor of ``config`` (weights come from :meth:`load_pretrained_tensors`)."""
        if config.kind == "statnn_gbm":
            return cls(config.kind, None, config.y_mean, config.y_std, config.meta, StatGBM(**config.metanet))
        if config.kind not in KINDS:
            raise ValueError(f"unknown predictor kind {config.kind!r}; choose one of {KINDS}")
        return cls(config.kind, build_metanet(config.kind, config.metanet), config.y_mean, config.y_std, config.meta)

    def pretrained_tensors(self) -> dict[str, Tensor]:
        if self.kind == "statnn_gbm":
            return dict(self.gbm.to_tensors())
        return {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}

    def load_pretrained_tensors(self, tensors: dict[str, Tensor]) -> None:
        if self.kind == "statnn_gbm":
            self.gbm = StatGBM.from_tensors(tensors, **self.gbm.kwargs)
        else:
            self.model.load_state_dict(tensors)
            self.model.eval()

    def pretrained_extras(self) -> dict[str, Any]:
        return {}  # everything a predictor needs is in its config

    def set_pretrained_extras(self, extras: dict[str, Any]) -> None:
        pass

    def save(self, path: str | os.PathLike) -> Path:
        """Alias of :meth:`save_pretrained`."""
        return self.save_pretrained(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Predictor:
        """Alias of :func:`load_predictor` (also reads the old ``predictor.json`` layout)."""
        return load_predictor(path)

    def __repr__(self) -> str:
        return f"Predictor(kind={self.kind!r}, model={self.model!r})"


def _load_legacy(cfg_path: Path) -> Predictor:
    """A predictor of the old layout ``predictor.json`` + ``predictor.safetensors`` (read for one release)."""
    try:
        doc = json.loads(cfg_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: not a weightspace predictor (not a JSON file: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != "weightspace.predictor":
        raise CheckpointError(f"{cfg_path}: not a weightspace predictor")
    try:
        config = config_from_dict(PredictorConfig, {"kind": doc.get("kind"), "metanet": doc.get("model"),
                                                    "y_mean": doc.get("y_mean"), "y_std": doc.get("y_std"),
                                                    "meta": doc.get("meta", {})})
        pred = Predictor.from_config(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: {e}") from None
    weights = cfg_path.parent / LEGACY_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing; a saved predictor is {LEGACY_CONFIG} + {LEGACY_WEIGHTS}")
    tensors = read_weights(weights)
    try:
        pred.load_pretrained_tensors(tensors)
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{weights}: the weights do not fit the {pred.kind} described in "
                              f"{cfg_path.name}: {e}") from None
    return pred


def load_predictor(path: str | os.PathLike) -> Predictor:
    """Load a predictor saved by :meth:`Predictor.save_pretrained`.

    Alias of :meth:`Predictor.from_pretrained` that also reads, for one release, the old layout
    (``predictor.json`` + ``predictor.safetensors``).

    Args:
        path: the directory, or one of its files.

    Raises:
        CheckpointError: a file is missing, corrupt or not a predictor (the message names it).
    """
    p = Path(path)
    if p.is_file() and p.name in (LEGACY_CONFIG, LEGACY_WEIGHTS):
        return _load_legacy(p.with_name(LEGACY_CONFIG))
    if p.is_dir() and not (p / CONFIG_NAME).is_file() and (p / LEGACY_CONFIG).is_file():
        return _load_legacy(p / LEGACY_CONFIG)
    return Predictor.from_pretrained(p)
