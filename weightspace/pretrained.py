"""One way to persist every trained model: ``save_pretrained(dir)`` / ``from_pretrained(dir_or_name)``.

A saved model is a directory with two files:

* ``config.json`` - ``{"format": ..., "version": ..., "config": {...}, "extras": {...}}``: the
  fields of the model's frozen config dataclass (its constructor arguments) and JSON extras
  (training provenance, fitted scalars);
* ``model.safetensors`` - the tensors (no pickle, so loading never executes code).

Both files are written atomically (a temporary file in the same directory, then ``os.replace``),
weights first, so an interrupted save never leaves a ``config.json`` that points at missing or
partial weights. Checkpoints shipped with the package live in ``weightspace/checkpoints/<name>/``
and load by name (``Nowcaster.from_pretrained("nowcaster")``); :func:`list_checkpoints` names them.

A class opts in by subclassing :class:`PretrainedMixin` and setting ``config_class`` (a frozen
dataclass) and ``checkpoint_format``; the hooks :meth:`~PretrainedMixin.pretrained_tensors`,
:meth:`~PretrainedMixin.load_pretrained_tensors`, :meth:`~PretrainedMixin.pretrained_extras` and
:meth:`~PretrainedMixin.from_config` have defaults that fit an ``nn.Module`` whose constructor takes
the config's fields as keyword arguments.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from .instantiate import UntrustedTargetError, trusted_code

__all__ = [
    "PretrainedMixin",
    "CheckpointError",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "list_checkpoints",
    "shipped_checkpoint",
    "config_to_dict",
    "config_from_dict",
    "write_json_atomic",
    "read_weights",
    "read_checkpoint_doc",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

T = TypeVar("T", bound="PretrainedMixin")


class CheckpointError(ValueError):
    """A saved model directory is missing a file, is corrupt, or holds another kind of model.

    The message names the file and says what is wrong with it.
    """


def _checkpoint_root() -> Path:
    return Path(str(resources.files("weightspace") / "checkpoints"))


def list_checkpoints() -> list[str]:
    """Names of the checkpoints shipped with the package (``from_pretrained(name)`` loads them)."""
    root = _checkpoint_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_NAME).is_file())


def shipped_checkpoint(name: str) -> Path:
    """Directory of the shipped checkpoint ``name``.

    Raises:
        CheckpointError: no shipped checkpoint has that name (the message lists those that exist).
    """
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise CheckpointError(f"{name!r} is not a checkpoint name; shipped checkpoints: {list_checkpoints()}")
    d = _checkpoint_root() / name
    if not (d / CONFIG_NAME).is_file():
        raise CheckpointError(f"{name!r} is neither a directory holding {CONFIG_NAME} nor the name of a shipped "
                              f"checkpoint; shipped checkpoints: {list_checkpoints()}")
    return d


def read_checkpoint_doc(name_or_path: str | os.PathLike, what: str = "model") -> tuple[Path, dict[str, Any]]:
    """``(directory, parsed config.json)`` of a saved model: a directory, its ``config.json`` or
    ``model.safetensors``, or the name of a shipped checkpoint.

    Raises:
        CheckpointError: no such checkpoint, or its ``config.json`` is missing or not a JSON object.
    """
    p = Path(name_or_path)
    if p.is_file() and p.name in (CONFIG_NAME, WEIGHTS_NAME):
        p = p.parent
    d = p if p.is_dir() else shipped_checkpoint(str(name_or_path))
    cfg_path = d / CONFIG_NAME
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: missing; a saved {what} is a directory with "
                              f"{CONFIG_NAME} and {WEIGHTS_NAME} (written by save_pretrained)")
    try:
        doc = json.loads(cfg_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(doc).__name__}")
    return d, doc


# ----------------------------------------------------------------------------- config <-> JSON
def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a config dataclass instance, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` coerced to the annotated type ``tp`` (lists -> tuples); raises ``TypeError``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in typing.get_args(tp):
            try:
                return _check_value(value, arm, where)
            except TypeError as e:
                errors.append(str(e))
        raise TypeError(f"{where}: {value!r} matches none of {tp}")
    if tp is type(None):
        if value is None:
            return None
        raise TypeError(f"{where}: expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
            return float(value)
        raise TypeError(f"{where}: expected a finite number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"{where}: expected a string, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise TypeError(f"{where}: expected {len(args)} entries, got {len(value)}")
            return tuple(_check_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        arm = args[0] if args else Any
        out = [_check_value(v, arm, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected an object, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return config_from_dict(tp, value, where)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise TypeError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def config_from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build the config dataclass ``cls`` from a JSON dict, checking every field against its type.

    Unknown keys, missing required keys and values of the wrong type raise ``TypeError`` naming the
    field; strings are never iterated into numbers. Fields absent from ``data`` take their defaults.
    """
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected an object of {cls.__name__} fields, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise TypeError(f"{where}: unknown field(s) {unknown} for {cls.__name__}; valid fields: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _check_value(v, hints.get(k, Any), f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where}: {e}") from None


def read_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of the safetensors file ``path`` (on CPU; no pickle).

    Raises:
        CheckpointError: the file is missing, corrupt or truncated (the message names it).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot read the weights, the file is corrupt or truncated ({e})") from None


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _save_tensors_atomic(path: Path, tensors: Mapping[str, Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot write the weights ({e})") from e
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the mixin
class PretrainedMixin:
    """Gives a model ``save_pretrained(dir)`` and ``from_pretrained(dir_or_name)``.

    Subclasses set:

    * ``config_class``: the frozen dataclass whose fields are the constructor arguments;
    * ``checkpoint_format``: a string stored in ``config.json`` and checked on load, so a
      nowcaster directory is never read as a predictor;
    * ``checkpoint_version`` (default 1): bump when the layout of the tensors changes.

    and, where the defaults do not fit, override :meth:`from_config`, :attr:`config`,
    :meth:`pretrained_tensors`, :meth:`load_pretrained_tensors`, :meth:`pretrained_extras` and
    :meth:`set_pretrained_extras`.
    """

    config_class: ClassVar[type]
    checkpoint_format: ClassVar[str]
    checkpoint_version: ClassVar[int] = 1

    # ------------------------------------------------------------------ hooks
    @classmethod
    def from_config(cls: type[T], config: Any) -> T:
        """A freshly initialized model of ``config`` (default: ``cls(**fields)``)."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init})

    def pretrained_tensors(self) -> dict[str, Tensor]:
        """The tensors to store (default: ``state_dict()``)."""
        return dict(self.state_dict())  # type: ignore[attr-defined]

    def load_pretrained_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Put stored tensors back (default: strict ``load_state_dict``); raise on a mismatch."""
        self.load_state_dict(tensors)  # type: ignore[attr-defined]

    def pretrained_extras(self) -> dict[str, Any]:
        """JSON extras saved beside the config (default: the ``info`` dict when the model has one)."""
        return dict(getattr(self, "info", None) or {})

    def set_pretrained_extras(self, extras: dict[str, Any]) -> None:
        """Restore what :meth:`pretrained_extras` saved (default: set ``info``)."""
        self.info = dict(extras)

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, directory: str | os.PathLike, extras: Mapping[str, Any] | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed).

        Args:
            directory: target folder; files already there with the same names are replaced atomically.
            extras: JSON-serializable information stored beside the config, merged over
                :meth:`pretrained_extras`.

        Returns:
            The directory.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        ex = {**self.pretrained_extras(), **dict(extras or {})}
        doc = {"format": self.checkpoint_format, "version": self.checkpoint_version,
               "config": config_to_dict(self.config), "extras": ex}
        try:
            json.dumps(doc)
        except TypeError as e:
            raise TypeError(f"the extras of a {type(self).__name__} must be JSON-serializable: {e}") from None
        _save_tensors_atomic(d / WEIGHTS_NAME, self.pretrained_tensors(),
                             {"format": self.checkpoint_format, "version": str(self.checkpoint_version)})
        write_json_atomic(d / CONFIG_NAME, doc)
        return d

    @classmethod
    def read_pretrained_config(cls, name_or_path: str | os.PathLike) -> tuple[Path, Any, dict[str, Any]]:
        """``(directory, config, extras)`` of a saved model, without reading its weights.

        Raises:
            CheckpointError: the directory has no valid ``config.json`` of this class.
        """
        d, doc = read_checkpoint_doc(name_or_path, cls.__name__)
        cfg_path = d / CONFIG_NAME
        fmt = doc.get("format")
        if fmt != cls.checkpoint_format:
            raise CheckpointError(f"{cfg_path}: holds format {fmt!r}, not a {cls.__name__} "
                                  f"(format {cls.checkpoint_format!r})")
        version = doc.get("version")
        if version != cls.checkpoint_version:
            raise CheckpointError(f"{cfg_path}: {cls.__name__} checkpoint version {version!r}; this version of "
                                  f"weightspace reads version {cls.checkpoint_version}")
        try:
            config = config_from_dict(cls.config_class, doc.get("config"), "config")
        except TypeError as e:
            raise CheckpointError(f"{cfg_path}: {e}") from None
        extras = doc.get("extras", {})
        if not isinstance(extras, dict):
            raise CheckpointError(f"{cfg_path}: 'extras' must be an object, got {type(extras).__name__}")
        return d, config, extras

    @classmethod
    def _check_shapes_before_building(cls, config: Any, weights: Path) -> None:
        """Compare the tensor shapes a model of ``config`` would have (built on the ``meta`` device,
        which allocates nothing) with those recorded in the header of ``weights``, so a config that
        does not describe the weights (e.g. an edited ``hidden``) fails with a message, not with an
        allocation of whatever size the config asks for."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights), framework="pt") as f:
                stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{weights}: cannot read the weights, the file is corrupt or truncated ({e})") from None
        try:
            with torch.device("meta"):
                probe = cls.from_config(config)
                wanted = {k: tuple(v.shape) for k, v in probe.pretrained_tensors().items()}
        except Exception:  # noqa: BLE001 - a model that cannot be built on `meta` is checked after loading
            return
        for k, shape in wanted.items():
            if k in stored and stored[k] != shape:
                raise CheckpointError(f"{weights}: tensor {k!r} has shape {list(stored[k])}, but the {cls.__name__} "
                                      f"described in {CONFIG_NAME} needs {list(shape)}; the two files do not belong "
                                      "together")

    @classmethod
    def from_pretrained(cls: type[T], name_or_path: str | os.PathLike,
                        map_location: str | torch.device = "cpu", *, trust_code: bool = False) -> T:
        """Load a model saved by :meth:`save_pretrained`, or a shipped checkpoint by name.

        Args:
            name_or_path: a directory (or its ``config.json``), or the name of a shipped checkpoint
                (:func:`list_checkpoints`).
            map_location: device of the loaded model.
            trust_code: let architectures named in the files (e.g. a probing predictor's networks)
                resolve outside the allowlist of :mod:`weightspace.instantiate`: this imports and runs
                code the file names, so only for files you trust.

        Returns:
            The model; ``nn.Module`` models are returned in eval mode.

        Raises:
            CheckpointError: a file is missing, corrupt or of another model kind (the message names it).
        """
        d, config, extras = cls.read_pretrained_config(name_or_path)
        w = d / WEIGHTS_NAME
        if not w.is_file():
            raise CheckpointError(f"{w}: missing; a saved {cls.__name__} is {CONFIG_NAME} + {WEIGHTS_NAME}")
        cfg_path = d / CONFIG_NAME

        def named(e: CheckpointError, path: Path) -> CheckpointError:
            """``e`` with the full path of the file in front, if it does not name it yet."""
            msg = str(e)
            if str(path.parent) in msg:
                return e
            return CheckpointError(f"{path}: {msg.removeprefix(path.name + ': ')}")

        with trusted_code(trust_code):  # architectures named by the files resolve inside this block only
            cls._check_shapes_before_building(config, w)
            try:
                model = cls.from_config(config)
            except CheckpointError as e:
                raise named(e, cfg_path) from None
            except UntrustedTargetError as e:
                raise CheckpointError(f"{cfg_path}: {e}") from None
            except Exception as e:  # noqa: BLE001 - whatever the constructor raises, the config file is the culprit
                raise CheckpointError(f"{cfg_path}: the config does not describe a valid {cls.__name__}: "
                                      f"{type(e).__name__}: {e}") from None
            tensors = read_weights(w)
            try:
                model.load_pretrained_tensors(tensors)
            except CheckpointError as e:
                raise named(e, w) from None
            except (RuntimeError, KeyError, ValueError, TypeError) as e:
                raise CheckpointError(f"{w}: the weights do not fit the {cls.__name__} described in "
                                      f"{CONFIG_NAME}: {e}") from None
            try:
                model.set_pretrained_extras(extras)
            except CheckpointError as e:
                raise named(e, cfg_path) from None
            except UntrustedTargetError as e:
                raise CheckpointError(f"{cfg_path}: {e}") from None
            except Exception as e:  # noqa: BLE001 - the extras come from the config file
                raise CheckpointError(f"{cfg_path}: the extras do not describe a valid {cls.__name__}: "
                                      f"{type(e).__name__}: {e}") from None
        if isinstance(model, torch.nn.Module):
            model = model.to(map_location).eval()
        elif hasattr(model, "to"):
            model = model.to(map_location)
        return model
