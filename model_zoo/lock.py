"""One writer per zoo: lock files in the zoo folder.

``<zoo>/.lock`` is the zoo lock. An unsharded :func:`model_zoo.generate` holds it for the whole
generation. Shards of one zoo (``shard``/``num_shards``) hold it only while they create or check
``zoo.json``, then each holds ``<zoo>/.lock-shard<k>`` for its own chunks, so shards of the same
configuration cooperate while a second writer of the same shard, or an unsharded writer, is refused.

A lock file is created atomically (written under a temporary name, then ``os.link``-ed into place,
which fails if the lock exists) and records the owner's pid, host name and start time. A lock whose
owner ran on this host and no longer runs is stale: it is taken over with a warning. A lock held by
a process on another host is never taken over; the error says which file to delete once that
process is gone.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["ZooLockedError", "ZooLock", "read_lock", "shard_lock_path", "describe_lock", "is_stale"]


class ZooLockedError(RuntimeError):
    """Another process is writing the zoo; the message names it (pid, host, start time) and the lock file."""


def shard_lock_path(root: Path, shard: int) -> Path:
    return root / f".lock-shard{shard}"


def read_lock(path: Path) -> dict[str, Any] | None:
    """The owner record of a lock file (``None`` when there is none or it cannot be read)."""
    try:
        rec = json.loads(path.read_text())
    except (FileNotFoundError, ValueError, OSError):
        return None
    return rec if isinstance(rec, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (OverflowError, ValueError):
        return False
    return True


def describe_lock(path: Path, rec: dict[str, Any] | None) -> str:
    """Who holds the lock file ``path`` (its record ``rec``), for error messages."""
    if rec is None:
        return f"{path} (owner unknown)"
    started = rec.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    what = rec.get("purpose", "writing")
    return f"pid {rec.get('pid')} on host {rec.get('host')!r} ({what}, since {when}; lock file {path})"


def is_stale(rec: dict[str, Any] | None, path: Path) -> bool:
    """Whether the lock ``path`` (record ``rec``) was left by a process that no longer runs on this host."""
    if rec is None:
        # created but never filled (cannot happen with os.link; a leftover of the O_EXCL fallback):
        # stale once it is old enough that its writer had time to fill it
        try:
            return time.time() - path.stat().st_mtime > 10
        except FileNotFoundError:
            return True
    pid = rec.get("pid")
    return rec.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)


class ZooLock:
    """An exclusive lock file; use as a context manager or with :meth:`acquire`/:meth:`release`.

    Args:
        path: the lock file.
        purpose: recorded in the lock ("generating", "creating zoo.json", ...), shown to other writers.
        wait: seconds to keep retrying while a live process holds the lock (0: fail at once).
        wait_if: only wait when the holder's ``purpose`` is one of these (others fail at once).
    """

    def __init__(self, path: str | os.PathLike, purpose: str = "generating", *, wait: float = 0.0,
                 wait_if: tuple[str, ...] = (), extra: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.purpose, self.wait, self.wait_if = purpose, float(wait), wait_if
        self.record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                       "purpose": purpose, "token": uuid.uuid4().hex, **(extra or {})}
        self.held = False

    def _try_create(self) -> bool:
        data = (json.dumps(self.record) + "\n").encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError as e:  # file systems without hard links: exclusive create, then write
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                return True
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self) -> ZooLock:
        """Take the lock.

        Raises:
            ZooLockedError: a live process holds it (after ``wait`` seconds when its purpose is in
                ``wait_if``), naming that process and the lock file.
        """
        deadline = time.monotonic() + self.wait
        while True:
            if self._try_create():
                self.held = True
                return self
            rec = read_lock(self.path)
            if is_stale(rec, self.path):
                self._remove_stale(rec)
                continue
            if rec is not None and rec.get("pid") == os.getpid() and rec.get("host") == socket.gethostname():
                raise ZooLockedError(f"{self.path.parent}: this process already writes this zoo "
                                     f"({describe_lock(self.path, rec)})")
            waiting = rec is None or rec.get("purpose") in self.wait_if
            if not waiting or time.monotonic() >= deadline:
                raise ZooLockedError(
                    f"{self.path.parent}: another process is writing this zoo: {describe_lock(self.path, rec)}. "
                    "Wait for it to finish (or stop it); if no such process runs any more, delete the lock file")
            time.sleep(0.05)

    def _remove_stale(self, rec: dict[str, Any] | None) -> None:
        """Move the stale lock aside atomically; if another process replaced it in the meantime (it
        took the stale lock over first), put that one back."""
        grave = self.path.with_name(f".{self.path.name}.{os.getpid()}.stale.tmp")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return
        moved = read_lock(grave)
        if (moved or {}).get("token") != (rec or {}).get("token"):
            try:
                os.link(grave, self.path)
            except FileExistsError:
                pass
        else:
            log.warning("taking over the stale lock %s: its owner %s no longer runs", self.path,
                        describe_lock(self.path, rec))
        grave.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock file if this object still owns it."""
        if not self.held:
            return
        self.held = False
        rec = read_lock(self.path)
        if rec is not None and rec.get("token") == self.record["token"]:
            self.path.unlink(missing_ok=True)
        else:
            log.warning("lock %s was taken over by %s while this process held it", self.path,
                        describe_lock(self.path, rec))

    def __enter__(self) -> ZooLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
