"""Where the periodic rounds run, and the lock that keeps one round of a task at a time.

:class:`RoundThread` runs the rounds on an event loop of a thread of its own: a round over a large
fleet (thousands of configs worked out in Python, object deletions, a catalog copy) then never holds
the loop that answers requests. With PostgreSQL the thread has its own small connection pool
(:class:`backend.db.LoopPoolPostgresEngine`); SQLite opens a connection per query anyway.

:func:`advisory_lock` is the PostgreSQL form of a task's lock: a session advisory lock on a
connection held for the round, released when the round ends or, if the process dies, when
PostgreSQL sees its connection close. Nothing to renew and no lifetime a long round could outlast.
SQLite has no such lock; there the task's lease is renewed while the round runs
(``PeriodicTasks._guarded``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

__all__ = ["POOL_SIZE", "RoundThread", "advisory_key", "advisory_lock", "rounds_can_leave_loop"]

log = logging.getLogger("backapp.tasks")

POOL_SIZE = 3
"""Connections of the rounds' own PostgreSQL pool (one round at a time, plus the lock's own)."""


def advisory_key(name: str) -> int:
    """The 64-bit advisory lock key of a lock name (stable across processes and versions)."""
    digest = hashlib.sha256(f"backapp:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.asynccontextmanager
async def advisory_lock(dsn: str, name: str) -> AsyncIterator[bool]:
    """Try PostgreSQL's session advisory lock ``name`` for the block, on a connection of its own;
    yields whether this process holds it (False at once when another session does)."""
    import asyncpg

    key = advisory_key(name)
    connection = await asyncpg.connect(dsn)
    try:
        held = bool(await connection.fetchval("SELECT pg_try_advisory_lock($1)", key))
        try:
            yield held
        finally:
            if held:
                with contextlib.suppress(Exception):  # closing the connection frees it as well
                    await connection.execute("SELECT pg_advisory_unlock($1)", key)
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


def _engine() -> Any:
    from backend.backups.tables import Lease

    return Lease._meta.db


def rounds_can_leave_loop() -> bool:
    """Whether the bound engine works from another event loop: SQLite (a connection per query),
    or PostgreSQL through :class:`~backend.db.LoopPoolPostgresEngine`. A plain Piccolo PostgreSQL
    engine's pool belongs to the loop that started it, so the rounds then stay on that loop."""
    from piccolo.engine.postgres import PostgresEngine

    from backend.db import LoopPoolPostgresEngine

    engine = _engine()
    return not isinstance(engine, PostgresEngine) or isinstance(engine, LoopPoolPostgresEngine)


class RoundThread:
    """Run ``round()`` at once and then every ``interval`` seconds, on a thread's own loop."""

    def __init__(
        self, round: Callable[[], Awaitable[None]], interval: float, name: str = "backapp-rounds"
    ) -> None:
        self._round = round
        self.interval = interval
        self.name = name
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.first_round = threading.Event()
        """Set once the first round ended (or the thread could not run one)."""
        self.rounds = 0

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
            self._thread.start()

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception:
            log.exception("the periodic rounds' thread stopped")
        finally:
            self._ready.set()
            self.first_round.set()

    async def _run(self) -> None:
        from backend.db import LoopPoolPostgresEngine

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        engine = _engine()
        own_pool = isinstance(engine, LoopPoolPostgresEngine)
        if own_pool:
            await engine.start_connection_pool(min_size=1, max_size=POOL_SIZE)
        try:
            while not self._stop.is_set():
                await self._round()
                self.rounds += 1
                self.first_round.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)
        finally:
            if own_pool:
                await engine.close_connection_pool()

    async def stop(self) -> None:
        """Let the round in progress finish, then end the thread."""
        thread = self._thread
        if thread is None:
            return
        await asyncio.to_thread(self._ready.wait)
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop has already ended
                loop.call_soon_threadsafe(stop.set)
        await asyncio.to_thread(thread.join)
        self._thread = None

    async def wait_first_round(self) -> None:
        """Return once the first round ended."""
        if self._thread is not None:
            await asyncio.to_thread(self.first_round.wait)
