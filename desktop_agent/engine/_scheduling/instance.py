"""This process's identity in the server's run leases, and which of the agent's processes are dead.

Every process that runs backups has an instance id (random), sent with each lease it takes
(``POST /api/agent/lease`` ``instance``). It registers in the agent's config folder as a lock file,
``instances/<id>.lock``, on which it holds an exclusive lock for as long as it lives; the operating
system drops that lock when the process ends, however it ends (``kill -9`` and power cuts
included). A lock file that nobody holds is therefore a dead process of this agent.

A lease still held by a dead process would keep its config busy until the lease lapses (minutes).
So with each lease it asks for, the runner names those dead processes (``takeOver``), and its own
id when this process is not running that config (a lease it could not release, e.g. while the
server was down): the server hands such a lease over at once, and marks the run it guarded
``interrupted``. A lease held by a live process (a ``backapp-agent run`` from cron next to the
daemon) is never named, so two processes never run the same config at once.

Without a writable config folder the instance still has an id, but no dead process can be named.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, ClassVar

__all__ = ["MAX_TAKE_OVER", "AgentInstance"]

log = logging.getLogger("desktop_agent.engine.scheduler")

MAX_TAKE_OVER = 20
"""Dead processes named with one lease request, newest first (the server takes up to 32)."""
FORGET_AFTER = 2 * 3600.0
"""A dead process's file is removed this long after it was last seen alive: any lease it held
(an hour at most) has lapsed by then."""
SUFFIX = ".lock"


def _try_lock(handle: IO[bytes]) -> bool:
    """Lock the file exclusively without waiting; False when another process holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlock(handle: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class AgentInstance:
    """One process's instance (see the module docstring). ``for_process`` gives the process's
    own; thread-safe."""

    _by_dir: ClassVar[dict[tuple[int, str], AgentInstance]] = {}
    _class_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, directory: Path | None) -> None:
        self.id = secrets.token_hex(8)
        self.directory = directory
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        self._handle: IO[bytes] | None = None
        if directory is not None:
            self._register(directory)

    @classmethod
    def for_process(cls, directory: Path | None) -> AgentInstance:
        """This process's instance registered in ``directory`` (the agent's ``instances``
        folder); one per process and folder. ``None``: an instance that registers nowhere."""
        if directory is None:
            return cls(None)
        key = (os.getpid(), str(directory))
        with cls._class_lock:
            instance = cls._by_dir.get(key)
            if instance is None:
                instance = cls._by_dir[key] = cls(directory)
            return instance

    @property
    def registered(self) -> bool:
        """Whether this process holds its lock file (so that a later process can name it)."""
        return self._handle is not None

    def _register(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            handle = open(directory / f"{self.id}{SUFFIX}", "a+b")  # noqa: SIM115 - held for life
        except OSError as exc:
            log.debug("cannot register this process in %s: %s", directory, exc)
            return
        if not _try_lock(handle):  # cannot happen with a fresh random name; stay unregistered
            handle.close()
            return
        handle.write(f"{os.getpid()}\n".encode())
        handle.flush()
        self._handle = handle

    def touch(self) -> None:
        """Mark this process as seen alive now (the file's time; see ``FORGET_AFTER``)."""
        if self._handle is None or self.directory is None:
            return
        with contextlib.suppress(OSError):
            os.utime(self.directory / f"{self.id}{SUFFIX}")

    def dead_peers(self) -> list[str]:
        """Ids of this agent's dead processes (their lock files are free), newest first, at most
        ``MAX_TAKE_OVER``; files of processes dead for long are removed on the way."""
        if self.directory is None:
            return []
        try:
            files = [p for p in self.directory.iterdir() if p.name.endswith(SUFFIX)]
        except OSError:
            return []
        found: list[tuple[float, str]] = []
        now = time.time()
        for path in files:
            peer = path.name[: -len(SUFFIX)]
            if peer == self.id:
                continue
            try:
                with open(path, "rb") as handle:
                    if not _try_lock(handle):
                        continue  # alive
                    try:
                        seen = os.fstat(handle.fileno()).st_mtime
                        if now - seen > FORGET_AFTER:
                            path.unlink()
                            continue
                    finally:
                        _unlock(handle)
            except OSError:
                continue
            found.append((seen, peer))
        found.sort(reverse=True)
        return [peer for _, peer in found[:MAX_TAKE_OVER]]

    @contextlib.contextmanager
    def running(self, config_id: str) -> Iterator[list[str]]:
        """While this process runs ``config_id``: yields the instances whose lease on it may be
        taken over (the dead processes, and this one unless it already ran the config when the
        block began: then it is another thread's live run)."""
        with self._lock:
            mine = self._running.get(config_id, 0) == 0
            self._running[config_id] = self._running.get(config_id, 0) + 1
        try:
            yield [*self.dead_peers(), *([self.id] if mine else [])]
        finally:
            with self._lock:
                left = self._running[config_id] - 1
                if left:
                    self._running[config_id] = left
                else:
                    del self._running[config_id]
