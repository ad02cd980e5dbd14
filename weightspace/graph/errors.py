"""Errors raised by the converter. Each names the culprit (module path, parameter, file)."""

from __future__ import annotations


class UnsupportedModuleError(ValueError):
    """The converter cannot represent a module, an operation, or a use of a parameter.

    Args:
        message: what is unsupported and why.
        path: dotted module path (or parameter name) of the culprit, if known.
        kind: the module's type name or the operation, if known.
    """

    def __init__(self, message: str, path: str | None = None, kind: str | None = None):
        self.path = path
        self.kind = kind
        where = ""
        if path is not None:
            where = f" [at {path!r}" + (f" ({kind})" if kind else "") + "]"
        super().__init__(message + where)


class ArchitectureMismatchError(ValueError):
    """A parameter graph does not fit the model it is written into (names the first mismatch)."""


class NonFiniteWeightsError(ValueError):
    """A parameter holds NaN or inf values and non-finite values were not allowed."""
