"""The database engine: SQLite (embedded default) or PostgreSQL, chosen by ``DATABASE_URL``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import msgspec
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine

from backend.private_files import touch_private_file

__all__ = [
    "APP_MODULES",
    "LoopPoolPostgresEngine",
    "all_tables",
    "as_uuid",
    "bind_tables",
    "json_value",
    "make_engine",
    "run_on_database",
    "sqlite_path",
]

APP_MODULES = [
    "backend.accounts.piccolo_app",
    "backend.agents.piccolo_app",
    "backend.backups.piccolo_app",
    "backend.repos.piccolo_app",
    "backend.recovery.piccolo_app",
]


def json_value(value: Any) -> Any:
    """A JSON column's value: SQLite hands it back as text, PostgreSQL already decoded."""
    return msgspec.json.decode(value) if isinstance(value, str) else value


def as_uuid(value: Any) -> uuid.UUID:
    """A UUID column's value: a ``uuid.UUID`` from PostgreSQL, text from SQLite."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def sqlite_path(database_url: str) -> Path:
    """``sqlite:///relative.db`` / ``sqlite:////abs/path.db`` (SQLAlchemy's convention) → a path."""
    for prefix in ("sqlite:///", "sqlite://", "sqlite:"):
        if database_url.startswith(prefix):
            return Path(unquote(database_url[len(prefix) :])).expanduser()
    raise ValueError(f"not a sqlite URL: {database_url!r}")


class LoopPoolPostgresEngine(PostgresEngine):
    """A PostgreSQL engine with one connection pool per event loop.

    asyncpg's pools belong to the loop that made them. The periodic rounds run on a thread of
    their own (so a long round never delays a request); with this engine that thread starts its
    own small pool and the tables, bound to one engine, use whichever pool belongs to the loop
    that runs the query. A loop without a pool opens a connection per query, as Piccolo does.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pools: dict[asyncio.AbstractEventLoop, Any] = {}
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def pool(self) -> Any:
        try:
            return self._pools.get(asyncio.get_running_loop())
        except RuntimeError:  # no running loop: no pool
            return None

    @pool.setter
    def pool(self, value: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the base class's __init__ sets None outside any loop
            return
        if value is None:
            self._pools.pop(loop, None)
        else:
            self._pools[loop] = value


def make_engine(database_url: str) -> Engine:  # type: ignore[type-arg]
    if database_url.startswith("sqlite:"):
        path = sqlite_path(database_url)
        touch_private_file(path)
        # timeout: several processes may write; wait for the lock instead of failing at once.
        return SQLiteEngine(path=str(path), timeout=30)
    dsn = database_url.replace("postgres://", "postgresql://", 1)
    return LoopPoolPostgresEngine(config={"dsn": dsn})


def all_tables() -> list[type]:
    from backend.accounts.tables import LoginThrottle, User, UserSession
    from backend.agents.tables import (
        Agent,
        AgentInheritance,
        AgentLog,
        AgentRelease,
        AgentUpdatePolicy,
        KeyRevocations,
        PairingCode,
    )
    from backend.backups.tables import (
        Alert,
        BackupConfig,
        BackupLog,
        Lease,
        RestoreJob,
        RunRequest,
    )
    from backend.recovery.tables import (
        OrganisationKey,
        OrganisationWrappedKey,
        RecoveryKey,
        WrappedKey,
    )
    from backend.repos.tables import Compaction, ConfigCheck, RepoObject, Repository, Snapshot

    return [
        User,
        UserSession,
        LoginThrottle,
        Agent,
        AgentLog,
        AgentInheritance,
        PairingCode,
        KeyRevocations,
        AgentRelease,
        AgentUpdatePolicy,
        BackupConfig,
        BackupLog,
        Lease,
        RunRequest,
        RestoreJob,
        Alert,
        Repository,
        RepoObject,
        Snapshot,
        ConfigCheck,
        Compaction,
        RecoveryKey,
        WrappedKey,
        OrganisationKey,
        OrganisationWrappedKey,
    ]


def bind_tables(engine: Engine) -> None:  # type: ignore[type-arg]
    """Point every table at ``engine`` (tests and several apps in one process use this)."""
    for table in all_tables():
        table._meta.db = engine  # type: ignore[attr-defined]


_T = TypeVar("_T")


def run_on_database(database_url: str, work: Callable[[], Awaitable[_T]]) -> _T:
    """Run ``work`` in a new event loop with every table bound to ``database_url``, then close a
    PostgreSQL pool (the one-shot commands of the server's CLI: nothing else uses the loop)."""

    async def go() -> _T:
        engine = make_engine(database_url)
        bind_tables(engine)
        try:
            return await work()
        finally:
            if isinstance(engine, PostgresEngine) and engine.pool is not None:
                await engine.close_connection_pool()

    return asyncio.run(go())
