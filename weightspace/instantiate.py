"""Build objects from Hydra-style ``{"_target_": "pkg.mod.Name", **kwargs}`` dicts without importing Hydra.

Zoos record every network's architecture this way (``zoo.json``), so a model can be rebuilt from
the file alone. This is the one implementation; ``model_zoo.instantiate`` is the same function.

A ``_target_`` read from a file must never run arbitrary code, so targets resolve only through an
allowlist (see ``docs/trust-model.md``):

* the project's own architecture classes: ``weightspace.archs.*`` (re-exported as
  ``model_zoo.archs.*``) and ``weightspace.examples.*`` (``nn.Module`` subclasses only);
* ``torch.nn`` module classes, named ``torch.nn.<Name>``;
* classes (or factory functions) registered with :func:`register_arch`, or published by an installed
  package under the entry point group ``weightspace.architectures``.

Anything else raises :class:`UntrustedTargetError` unless the caller passes ``trust_code=True``.
The module of a target outside the allowlist is not even imported. Constructor arguments are checked
against the annotations of the target's signature before it is called (:class:`ArchConfigError`).
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import contextvars
import importlib
import inspect
import logging
import numbers
import threading
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

log = logging.getLogger(__name__)

__all__ = ["instantiate", "resolve_target", "register_arch", "check_config", "is_allowed_target", "trusted_code",
           "UntrustedTargetError", "ArchConfigError", "ENTRY_POINT_GROUP"]

#: entry point group through which installed packages publish architecture classes
ENTRY_POINT_GROUP = "weightspace.architectures"

#: modules whose ``nn.Module`` subclasses are allowed (the project's own architectures)
_PROJECT_MODULES = ("weightspace.archs", "model_zoo.archs", "weightspace.examples")

_registry: dict[str, Callable[..., Any]] = {}
_registry_lock = threading.Lock()
_entry_points: dict[str, Any] | None = None

T = TypeVar("T")

_TRUSTED: contextvars.ContextVar[bool] = contextvars.ContextVar("weightspace_trusted_code", default=False)


@contextlib.contextmanager
def trusted_code(trust: bool = True):
    """Within the block, every :func:`resolve_target` behaves as if called with ``trust_code=trust``.

    For loaders that build architectures several calls deep (a probing predictor, a generator):
    ``Predictor.from_pretrained(path, trust_code=True)`` enters this block. ``trust=False`` leaves
    the allowlist in force (an outer block still applies).
    """
    token = _TRUSTED.set(_TRUSTED.get() or bool(trust))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


class UntrustedTargetError(ValueError):
    """A ``_target_`` names something outside the allowlist of architectures; building it would run
    code chosen by whoever wrote the file."""


class ArchConfigError(ValueError):
    """An architecture config's arguments do not fit the target's signature (unknown key, wrong type)."""


def _key(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def register_arch(cls: T | None = None, *, name: str | None = None) -> Any:
    """Allow ``cls`` as a ``_target_`` in files (zoos, checkpoints), without ``trust_code=True``.

    Usable as a call (``register_arch(MyNet)``) or a decorator (``@register_arch`` or
    ``@register_arch(name="mypkg.MyNet")``). The class is allowed under its import path
    ``module.QualName`` and, if given, under ``name``. Registering means: files may construct this
    class with JSON arguments; only register classes whose constructor does nothing but build a model.

    Args:
        cls: an ``nn.Module`` subclass, or a function returning a module.
        name: an extra dotted name files may use for it.

    Returns:
        ``cls`` unchanged (or a decorator when ``cls`` is omitted).

    Raises:
        TypeError: ``cls`` is not callable.
    """
    if cls is None:
        return lambda c: register_arch(c, name=name)
    if not callable(cls):
        raise TypeError(f"register_arch needs a class or a function, got {cls!r}")
    with _registry_lock:
        _registry[_key(cls)] = cls
        if name:
            _registry[str(name)] = cls
    return cls


def _entry_point_map() -> dict[str, Any]:
    """``{dotted path or entry point name: EntryPoint}`` of the ``weightspace.architectures`` group
    (read once; loading an entry point imports only the package that published it)."""
    global _entry_points
    if _entry_points is None:
        from importlib.metadata import entry_points

        found: dict[str, Any] = {}
        try:
            eps = entry_points(group=ENTRY_POINT_GROUP)
        except Exception as e:  # a broken distribution's metadata must not stop model loading
            log.warning("cannot read entry points %r: %s", ENTRY_POINT_GROUP, e)
            eps = []
        for ep in eps:
            found[ep.name] = ep
            found[ep.value.replace(":", ".")] = ep
        _entry_points = found
    return _entry_points


def _is_module_class(obj: Any) -> bool:
    import torch.nn as nn

    return inspect.isclass(obj) and issubclass(obj, nn.Module)


def _allowlisted(path: str) -> Any | None:
    """The object ``path`` names if it is on the allowlist, else ``None`` (without importing anything
    outside the allowlist)."""
    if path in _registry:
        return _registry[path]
    module, _, name = path.rpartition(".")
    if module == "torch.nn" or module in _PROJECT_MODULES:
        if name.startswith("_"):
            return None
        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            return None
        return obj if _is_module_class(obj) else None
    ep = _entry_point_map().get(path)
    if ep is not None:
        obj = ep.load()
        register_arch(obj, name=path)
        return obj
    return None


def is_allowed_target(path: str) -> bool:
    """Whether ``path`` resolves without ``trust_code=True``."""
    return isinstance(path, str) and _allowlisted(path) is not None


def resolve_target(path: str, *, trust_code: bool = False) -> Any:
    """Return the object a ``_target_`` names.

    Args:
        path: ``package.module.Name``.
        trust_code: import any dotted path (runs that module's code): only for files you trust.

    Raises:
        UntrustedTargetError: ``path`` is not on the allowlist and ``trust_code`` is false.
        ValueError: ``path`` is not a dotted path or cannot be imported.
    """
    if not isinstance(path, str) or "." not in path:
        raise ValueError(f"_target_ must be a dotted path like 'model_zoo.archs.MLP', got {path!r}")
    trust_code = trust_code or _TRUSTED.get()
    obj = _allowlisted(path)
    if obj is not None:
        return obj
    module, _, name = path.rpartition(".")
    if module == "torch.nn" or module in _PROJECT_MODULES:
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot resolve _target_ {path!r}: {e}") from e
        if not trust_code:
            raise UntrustedTargetError(f"_target_ {path!r} is not an nn.Module class; only architecture classes "
                                       "of weightspace.archs, weightspace.examples and torch.nn are allowed")
    if not trust_code:
        raise UntrustedTargetError(
            f"_target_ {path!r} is not an allowed architecture: building it would import and run code named by "
            "the file. Allow it with model_zoo.register_arch(<the class>) (or the entry point group "
            f"{ENTRY_POINT_GROUP!r}), or pass trust_code=True if you trust whoever wrote the file")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot resolve _target_ {path!r}: {e}") from e


# ---------------------------------------------------------------------------------- type checks
def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is None and isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("collections.abc.", "")


def _matches(value: Any, tp: Any) -> bool:
    """Whether a JSON-like ``value`` fits annotation ``tp`` (unknown annotations accept anything)."""
    if tp is Any or tp is inspect.Parameter.empty or tp is object:
        return True
    if tp is None or tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return not args or all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if origin in (list, cabc.Sequence, cabc.MutableSequence, cabc.Iterable, cabc.Collection) or tp in (list,):
        if not isinstance(value, (list, tuple)):
            return False
        return not args or all(_matches(v, args[0]) for v in value)
    if origin in (dict, cabc.Mapping, cabc.MutableMapping) or tp is dict:
        return isinstance(value, Mapping)
    return True  # classes (nn.Module, torch.dtype, ...) and other annotations: not checked here


def _hints(target: Any) -> dict[str, Any]:
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: check names only
        return {}


def check_config(config: Mapping[str, Any], *, trust_code: bool = False, **overrides: Any) -> Any:
    """Resolve ``config["_target_"]`` and check its arguments against the signature, without building.

    Returns:
        The resolved target.

    Raises:
        UntrustedTargetError: the target is not on the allowlist (see :func:`resolve_target`).
        ArchConfigError: an argument the target does not take, or a value whose type does not match
            the annotation (``"width": "32"`` for an ``int``), naming the key.
        ValueError: no ``_target_`` key, or a target that cannot be imported.
    """
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise ValueError(f"an architecture config needs a '_target_' key, got {dict(config) if isinstance(config, Mapping) else config!r}")
    path = config["_target_"]
    target = resolve_target(path, trust_code=trust_code)
    kwargs = {k: v for k, v in config.items() if k != "_target_" and not str(k).startswith("_")}
    kwargs.update(overrides)
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return target
    params = sig.parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    hints = _hints(target)
    for k, v in kwargs.items():
        p = params.get(k)
        if p is None or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            if var_kw:
                continue
            raise ArchConfigError(f"{path}: unknown argument {k!r}; it takes {[n for n in params if n != 'self']}")
        tp = hints.get(k, inspect.Parameter.empty)
        if not _matches(v, tp):
            raise ArchConfigError(f"{path}: argument {k!r} = {v!r} is a {type(v).__name__}, but the constructor "
                                  f"expects {_type_name(tp)}; write it as that JSON type (e.g. 32, not \"32\"; [8, 16], not \"8,16\")")
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in kwargs
               and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    if missing:
        raise ArchConfigError(f"{path}: missing required argument(s) {missing}")
    return target


def instantiate(config: Mapping[str, Any], *, trust_code: bool = False, **overrides: Any) -> Any:
    """Build ``config["_target_"](**rest, **overrides)``; Hydra-compatible for flat configs.

    Args:
        config: ``{"_target_": "model_zoo.archs.MLP", "width": 32, ...}``; keys starting with ``_``
            other than ``_target_`` are ignored.
        trust_code: allow any importable target (see :func:`resolve_target`).
        overrides: extra keyword arguments (take precedence over ``config``).

    Raises:
        UntrustedTargetError: the target is outside the allowlist and ``trust_code`` is false.
        ArchConfigError: arguments that do not fit the target's signature.
        ValueError: no ``_target_`` key or an unresolvable target.
    """
    target = check_config(config, trust_code=trust_code, **overrides)
    kwargs = {k: v for k, v in config.items() if k != "_target_" and not str(k).startswith("_")}
    kwargs.update(overrides)
    return target(**kwargs)
