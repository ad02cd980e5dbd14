"""The structural signature: every non-tensor argument of a traced computation that changes the
function besides the weights.

Two models with the same parameter shapes and the same wiring may still compute different
functions: another convolution stride, padding or dilation, another pooling, another
normalization ``eps``, another activation parameter (LeakyReLU slope, ELU alpha, Softplus beta,
GELU approximation, ...), another constant in ``forward`` (``x * 3``), another non-persistent
buffer (a rotary embedding's ``inv_freq``). The signature records them, operation by operation in
traced order, as a tuple of entries

.. code-block:: text

    (path, op, ((field, value), ...))

``path`` is the module that runs the operation, ``op`` the module type's or function's name and the
fields its arguments, normalised to plain Python values (``int``, ``float``, ``bool``, ``str``,
``None`` and tuples of them), so that a signature survives ``json`` and
``torch.load(path, weights_only=True)``. Its first entry names the tracer (``fx`` or ``export``):
signatures are compared between traces made the same way.

Not recorded, because they do not change the function of a model in evaluation mode: dropout
(its probability only acts in training), BatchNorm ``momentum`` (only updates running statistics
in training), ``inplace`` flags, and sizes taken from the example input under ``torch.export``
(``view``/``expand``/``slice`` sizes).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["plain", "tensor_digest", "first_difference", "signature_to_json", "signature_from_json"]

Entry = tuple[str, str, tuple[tuple[str, Any], ...]]

#: Fields never recorded: they do not change a model's function in evaluation mode.
IGNORED_FIELDS = frozenset({"momentum", "inplace", "cudnn_enable", "cudnn_enabled", "training", "train",
                            "half_to_float", "memory_format", "layout", "device", "pin_memory", "non_blocking",
                            "copy", "dropout_p", "return_indices"})


class _Skip:
    """Marks a value that is not a plain constant (a tensor, an activation)."""


SKIP = _Skip()


def plain(v: Any) -> Any:
    """``v`` as a plain, JSON-able value, or :data:`SKIP` if it holds tensors or traced values.

    Tuples, lists and ``torch.Size`` become tuples; ``slice`` becomes ``("slice", start, stop,
    step)``; dtypes, enums and devices their names; ``...`` ``"..."``.
    """
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v
    if isinstance(v, (tuple, list, torch.Size)):
        out = tuple(plain(x) for x in v)
        return SKIP if any(x is SKIP for x in out) else out
    if isinstance(v, slice):
        return plain(("slice", v.start, v.stop, v.step))
    if v is Ellipsis:
        return "..."
    if isinstance(v, (torch.dtype, torch.device, torch.memory_format, torch.layout)):
        return str(v)
    if isinstance(v, enum.Enum):
        return v.name
    return SKIP


def fields(pairs: Sequence[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """The plain ``(name, value)`` pairs of ``pairs``, ignored names and non-plain values left out."""
    out = []
    for name, value in pairs:
        if name in IGNORED_FIELDS:
            continue
        p = plain(value)
        if p is not SKIP:
            out.append((name, p))
    return tuple(out)


def tensor_digest(t: torch.Tensor) -> str:
    """A short content hash of a tensor (shape, dtype and bytes)."""
    t = t.detach().cpu().contiguous().reshape(-1)
    data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
    h = hashlib.sha1(data)
    h.update(repr((tuple(t.shape), str(t.dtype))).encode())
    return h.hexdigest()[:16]


def _canon(v: Any) -> Any:
    """Lists (from JSON) back to tuples, recursively."""
    if isinstance(v, (list, tuple)):
        return tuple(_canon(x) for x in v)
    return v


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):  # True == 1 in Python; a flag is not a number
        return type(a) is type(b) and a == b
    return a == b


def first_difference(graph: Sequence[Entry], model: Sequence[Entry]) -> str | None:
    """A sentence naming the first difference between two signatures (``graph``: where the weights
    came from, ``model``: where they are written), or None if they are equal."""
    graph, model = _canon(graph), _canon(model)
    for i, (g, m) in enumerate(zip(graph, model)):
        if _same(g, m):
            continue
        (gp, go, gf), (mp, mo, mf) = g, m
        if (gp, go) != (mp, mo):
            return (f"operation #{i} is {go} at {gp!r} in the graph but {mo} at {mp!r} in the model: "
                    "another computation")
        gd, md = dict(gf), dict(mf)
        for name in list(gd) + [n for n in md if n not in gd]:
            a, b = gd.get(name, "<unset>"), md.get(name, "<unset>")
            if not _same(a, b):
                hint = ""
                if go == "tracer":
                    hint = ("; build the spec with the tracer the graph was made with "
                            f"(GraphSpec.from_module(model, example_input, tracer={a!r}))")
                return f"at {gp!r} ({go}): {name} is {a!r} in the graph but {b!r} in the model{hint}"
        return f"at {gp!r} ({go}): the arguments differ ({gf!r} in the graph, {mf!r} in the model)"
    if len(graph) != len(model):
        longer, which = (graph, "graph") if len(graph) > len(model) else (model, "model")
        p, o, _ = longer[min(len(graph), len(model))]
        return f"the {which} has an extra operation {o} at {p!r}: another computation"
    return None


def signature_to_json(sig: Sequence[Entry]) -> str:
    """The signature as a JSON string (tuples become lists)."""
    return json.dumps(sig)


def signature_from_json(text: str) -> tuple[Entry, ...]:
    """Inverse of :func:`signature_to_json`."""
    return _canon(json.loads(text))
