"""The database engine: SQLite (embedded default) or PostgreSQL, chosen by ``DATABASE_URL``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine

from backend.private_files import touch_private_file

__all__ = ["APP_MODULES", "all_tables", "bind_tables", "make_engine", "sqlite_path"]

APP_MODULES = [
    "backend.accounts.piccolo_app",
    "backend.agents.piccolo_app",
    "backend.backups.piccolo_app",
    "backend.repos.piccolo_app",
    "backend.recovery.piccolo_app",
]


def sqlite_path(database_url: str) -> Path:
    """``sqlite:///relative.db`` / ``sqlite:////abs/path.db`` (SQLAlchemy's convention) → a path."""
    for prefix in ("sqlite:///", "sqlite://", "sqlite:"):
        if database_url.startswith(prefix):
            return Path(unquote(database_url[len(prefix) :])).expanduser()
    raise ValueError(f"not a sqlite URL: {database_url!r}")


def make_engine(database_url: str) -> Engine:  # type: ignore[type-arg]
    if database_url.startswith("sqlite:"):
        path = sqlite_path(database_url)
        touch_private_file(path)
        # timeout: several processes may write; wait for the lock instead of failing at once.
        return SQLiteEngine(path=str(path), timeout=30)
    dsn = database_url.replace("postgres://", "postgresql://", 1)
    return PostgresEngine(config={"dsn": dsn})


def all_tables() -> list[type]:
    from backend.accounts.tables import LoginThrottle, User, UserSession
    from backend.agents.tables import Agent, AgentInheritance, AgentLog, PairingCode
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
    from backend.repos.tables import ConfigCheck, RepoObject, Repository, Snapshot

    return [
        User,
        UserSession,
        LoginThrottle,
        Agent,
        AgentLog,
        AgentInheritance,
        PairingCode,
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
        RecoveryKey,
        WrappedKey,
        OrganisationKey,
        OrganisationWrappedKey,
    ]


def bind_tables(engine: Engine) -> None:  # type: ignore[type-arg]
    """Point every table at ``engine`` (tests and several apps in one process use this)."""
    for table in all_tables():
        table._meta.db = engine  # type: ignore[attr-defined]
