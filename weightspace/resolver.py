"""String -> class resolution for the ``kind=`` options (metanetworks, nowcasters, generators).

A :class:`Registry` maps names to classes (or factories); :meth:`Registry.register` is a decorator
and :meth:`Registry.resolve` turns a name into the registered object, with an error that lists the
valid names. Hydra configs and saved checkpoints store the name, never an import path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects of one family (``Registry("metanet")``).

    Example::

        METANETS = Registry("metanet")

        @METANETS.register("gmn")
        class GraphMetaNet(nn.Module): ...

        METANETS.resolve("gmn")            # -> GraphMetaNet
        METANETS.build("gmn", hidden=64)   # -> GraphMetaNet(hidden=64)

    Args:
        what: the family's name, used in error messages.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Any:
        """Register ``obj`` as ``name``; without ``obj``, return a decorator that does."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} name must be a non-empty string, got {name!r}")

        def add(o: T) -> T:
            if name in self._items and self._items[name] is not o:
                raise ValueError(f"{self.what} {name!r} is already registered ({self._items[name]!r})")
            self._items[name] = o
            return o

        return add(obj) if obj is not None else add

    def resolve(self, name: str) -> T:
        """The object registered as ``name`` (case-insensitive, ``-`` and ``_`` alike).

        Raises:
            ValueError: no such name; the message lists the registered ones.
        """
        if isinstance(name, str):
            if name in self._items:
                return self._items[name]
            key = name.lower().replace("-", "_")
            for k, v in self._items.items():
                if k.lower().replace("-", "_") == key:
                    return v
        raise ValueError(f"unknown {self.what} {name!r}; choose one of {self.names()}")

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``resolve(name)(*args, **kwargs)``."""
        factory: Callable[..., Any] = self.resolve(name)  # type: ignore[assignment]
        return factory(*args, **kwargs)

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self._items)})"
