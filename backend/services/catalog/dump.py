"""Copying the server's database to a file and back: SQLite through its online backup API,
PostgreSQL through ``pg_dump``/``pg_restore`` (custom format), found on ``PATH``.

The functions that touch files or run programs block; callers run them in a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from backend.db import sqlite_path
from backend.private_files import touch_private_file
from backend.services.catalog.sealed import CatalogError

__all__ = [
    "CATALOG_TABLES",
    "database_kind",
    "dump_postgres",
    "dump_sqlite",
    "pg_tool",
    "restore_postgres",
    "restore_sqlite",
    "schema_fingerprint",
]

CATALOG_TABLES = (
    "backapp_user",
    "backapp_agent",
    "backapp_backup_config",
    "backapp_backup_log",
)
"""A database with a row in any of these is not empty: restoring over it needs ``--force``."""

_PG_TIMEOUT = 6 * 3600


def database_kind(database_url: str) -> str:
    """``sqlite`` or ``postgresql``."""
    return "sqlite" if database_url.startswith("sqlite:") else "postgresql"


def schema_fingerprint(migrations: list[tuple[str, str]]) -> str:
    """12 hex digits naming the set of applied migrations ``(app, name)``: a new migration gives a
    new fingerprint, which is how the periodic task knows to copy the database again."""
    text = "\n".join(f"{app}:{name}" for app, name in sorted(migrations))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- SQLite ----------------------------------------------------------------------------------


def dump_sqlite(database_url: str, target: Path) -> None:
    """A consistent copy of the live SQLite database in ``target`` (other processes may go on
    writing meanwhile: the backup API copies a snapshot, page by page)."""
    path = sqlite_path(database_url)
    if not path.is_file():
        raise CatalogError(f"the SQLite database {path} does not exist")
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy, pages=4096)
        finally:
            copy.close()
    finally:
        source.close()


def restore_sqlite(payload: Path, database_url: str) -> None:
    """Replace the content of the SQLite database with the copy in ``payload`` (the backup API
    again, in the other direction: the file stays the same file, and a reader sees the old or the
    new database, never half of each)."""
    try:
        source = sqlite3.connect(f"file:{payload}?mode=ro", uri=True)
        try:
            if source.execute("PRAGMA quick_check").fetchone() != ("ok",):
                raise CatalogError("the catalog copy holds a damaged SQLite database")
        except sqlite3.DatabaseError as exc:
            source.close()
            raise CatalogError(f"the catalog copy holds no SQLite database ({exc})") from None
        path = sqlite_path(database_url)
        touch_private_file(path)  # a new file is the server's alone (0600), as make_engine makes it
        target = sqlite3.connect(path, timeout=30)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
    except sqlite3.OperationalError as exc:
        raise CatalogError(f"could not write the SQLite database: {exc}") from None


def sqlite_is_empty(database_url: str) -> bool:
    """Whether the SQLite database has no row in any of :data:`CATALOG_TABLES` (or is no file
    yet, or has no such table)."""
    path = sqlite_path(database_url)
    if not path.exists() or path.stat().st_size == 0:
        return True
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        for table in CATALOG_TABLES:
            try:
                if con.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:  # noqa: S608 - fixed names
                    return False
            except sqlite3.OperationalError:  # no such table
                continue
        return True
    finally:
        con.close()


# -- PostgreSQL ------------------------------------------------------------------------------


def pg_tool(name: str) -> str:
    """The path of ``pg_dump`` or ``pg_restore``, else :class:`CatalogError` saying how to get
    it."""
    found = shutil.which(name)
    if found is None:
        raise CatalogError(
            f"{name} is not on PATH: install the PostgreSQL client programs of the server's major "
            "version (Debian/Ubuntu: apt-get install postgresql-client) or add their folder to PATH"
        )
    return found


def _libpq(database_url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password (which goes into ``PGPASSWORD``, not onto a command line that
    ``ps`` shows) and the environment to run the tool with."""
    url = database_url.replace("postgres://", "postgresql://", 1)
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        netloc = parts.hostname or ""
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        url = urlunsplit(parts._replace(netloc=netloc))
    return url, env


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=_PG_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CatalogError(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise CatalogError(f"{what} failed (exit {done.returncode}): " + " / ".join(detail))


def dump_postgres(database_url: str, target: Path) -> None:
    """``pg_dump --format=custom`` of the database into ``target``."""
    url, env = _libpq(database_url)
    _run(
        [
            pg_tool("pg_dump"),
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            f"--file={target}",
            f"--dbname={url}",
        ],
        env,
        "pg_dump",
    )


def restore_postgres(payload: Path, database_url: str) -> None:
    """``pg_restore`` the copy into the database, dropping what is there first, in one
    transaction (a failure changes nothing)."""
    tool = pg_tool("pg_restore")
    url, env = _libpq(database_url)
    # Check the archive before touching anything: a payload that is not a dump fails here.
    _run([tool, "--list", str(payload)], env, "reading the PostgreSQL dump")
    _run(
        [
            tool,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={url}",
            str(payload),
        ],
        env,
        "pg_restore",
    )
