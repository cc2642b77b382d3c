"""Catalog copies: the server's database, sealed with a key derived from the server secret, kept in
the bucket under ``server/catalog/`` (the last ``BACKAPP_CATALOG_KEEP``), and restored from there.

A copy's key is ``server/catalog/{YYYYmmddTHHMMSSmmmZ}-{schema}-{random}.catalog``: names sort by
time, and ``schema`` (the fingerprint of the applied migrations) tells the periodic task that a
migration ran since the newest copy. The file format is :mod:`backend.services.catalog.sealed`;
the payload is a SQLite database (zstd-compressed) or a ``pg_dump`` custom-format archive.
"""

from __future__ import annotations

import logging
import re
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread
import zstandard

from backend.accounts.tables import User
from backend.agents.tables import Agent
from backend.backups.tables import BackupConfig, BackupLog
from backend.services.catalog import dump
from backend.services.catalog.metadata import MetadataReport, catch_up
from backend.services.catalog.sealed import (
    CatalogError,
    SealedHeader,
    open_sealed,
    read_header,
    seal,
)
from backend.services.clock import iso, utcnow
from backend.settings import Settings
from backend.storage import NoSuchKey, ObjectStoreError, Storage

__all__ = ["CATALOG_PREFIX", "CatalogCopy", "CatalogRound", "CatalogService", "RestoreReport"]

log = logging.getLogger("backapp.catalog")

CATALOG_PREFIX = "server/catalog/"
_NAME = re.compile(r"^(\d{8}T\d{6})(\d{3})Z-([0-9a-f]{12})-([0-9a-f]{4,16})\.catalog$")


@dataclass(frozen=True)
class CatalogCopy:
    """One catalog copy in the bucket."""

    key: str
    created: datetime
    schema: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "created": iso(self.created),
            "schema": self.schema,
            "size": self.size,
        }


@dataclass
class RestoreReport:
    """What ``catalog restore`` put back."""

    key: str
    created: str
    database: str
    users: int
    agents: int
    configs: int
    backups: int


@dataclass
class CatalogRound:
    """One periodic catalog round: the metadata it wrote, and the copy it made (if one was due)."""

    metadata: MetadataReport
    copy: CatalogCopy | None = None
    removed: list[str] = field(default_factory=list)


def parse_copy(key: str, size: int) -> CatalogCopy | None:
    """The copy a key names, or None for anything else under the prefix."""
    match = _NAME.match(key[len(CATALOG_PREFIX) :]) if key.startswith(CATALOG_PREFIX) else None
    if match is None:
        return None
    created = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    created += timedelta(milliseconds=int(match.group(2)))
    return CatalogCopy(key=key, created=created, schema=match.group(3), size=size)


async def count_rows() -> dict[str, int]:
    """Users, agents, configurations and backups the database holds."""
    return {
        "users": await User.count(),
        "agents": await Agent.count(),
        "configs": await BackupConfig.count(),
        "backups": await BackupLog.count(),
    }


class CatalogService:
    """Makes, lists, prunes and restores catalog copies (see the module docstring)."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.kind = dump.database_kind(settings.database_url)
        self._newest: CatalogCopy | None = None
        """The newest copy this process knows of (it lists the bucket only when one seems due)."""

    @contextmanager
    def _workdir(self) -> Iterator[Path]:
        # Beside the data, not in a small /tmp: a database can be large.
        base = self.settings.data_dir if self.settings.data_dir.is_dir() else None
        with tempfile.TemporaryDirectory(prefix=".catalog-", dir=base) as name:
            yield Path(name)

    async def schema(self) -> str:
        """The fingerprint of the migrations applied to the database."""
        try:
            rows = await BackupLog.raw("SELECT app_name, name FROM migration")
        except Exception:  # noqa: BLE001 - no migration table yet: nothing applied
            rows = []
        return dump.schema_fingerprint([(str(r["app_name"]), str(r["name"])) for r in rows])

    async def is_empty(self) -> bool:
        """Whether no table of :data:`dump.CATALOG_TABLES` has a row (or exists)."""
        for table in dump.CATALOG_TABLES:
            try:
                if await BackupLog.raw(f"SELECT 1 AS one FROM {table} LIMIT 1"):  # noqa: S608
                    return False
            except Exception:  # noqa: BLE001, S112 - no such table: nothing in it
                continue
        return True

    # -- copies ----------------------------------------------------------------------------------

    async def copies(self) -> list[CatalogCopy]:
        """The catalog copies in the bucket, oldest first."""
        listing = await self.storage.list_objects(CATALOG_PREFIX)
        found = [parse_copy(o.key, o.size) for o in listing.objects]
        return sorted((c for c in found if c is not None), key=lambda c: c.key)

    async def backup(self, now: datetime | None = None) -> CatalogCopy:
        """Copy the database into the bucket now, then keep only the newest copies."""
        moment = (now or utcnow()).astimezone(UTC)
        schema = await self.schema()
        stamp = f"{moment:%Y%m%dT%H%M%S}{moment.microsecond // 1000:03d}Z"
        key = f"{CATALOG_PREFIX}{stamp}-{schema}-{secrets.token_hex(2)}.catalog"
        with self._workdir() as work:
            payload, sealed = work / "payload", work / "sealed"
            if self.kind == "sqlite":
                await anyio.to_thread.run_sync(
                    dump.dump_sqlite, self.settings.database_url, payload
                )
            else:
                await anyio.to_thread.run_sync(
                    dump.dump_postgres, self.settings.database_url, payload
                )
            await anyio.to_thread.run_sync(self._seal, payload, sealed, schema, moment)
            info = await self.storage.put_file(key, sealed)
        copy = parse_copy(key, info.size)
        assert copy is not None
        self._newest = copy
        log.info("catalog copy %s written (%d bytes)", key, info.size)
        return copy

    def _seal(self, payload: Path, sealed: Path, schema: str, moment: datetime) -> None:
        # A pg_dump custom archive is compressed already; a SQLite file shrinks a lot.
        compression = "zstd" if self.kind == "sqlite" else "none"
        with payload.open("rb") as raw, sealed.open("wb") as out:
            source = (
                zstandard.ZstdCompressor(level=6).stream_reader(raw)
                if compression == "zstd"
                else raw
            )
            seal(
                self.settings.secret_key,
                source,
                out,
                database=self.kind,
                compression=compression,
                created=iso(moment) or "",
                schema=schema,
            )

    async def prune(self, keep: int | None = None) -> list[str]:
        """Delete all but the newest ``keep`` copies (``BACKAPP_CATALOG_KEEP``); their keys."""
        keep = self.settings.catalog_keep if keep is None else keep
        copies = await self.copies()
        doomed = copies[: max(0, len(copies) - max(1, keep))]
        for copy in doomed:
            await self.storage.delete(copy.key)
        return [c.key for c in doomed]

    async def due(self, now: datetime) -> bool:
        """Whether a copy is due: none yet, the newest is older than the interval, or a migration
        ran since it was made. Never for an empty database: a server started afresh after losing
        its database must not push the good copies out with empty ones."""
        hours = self.settings.catalog_interval_hours
        if hours <= 0 or await self.is_empty():
            return False
        schema = await self.schema()

        def stale(copy: CatalogCopy | None) -> bool:
            return (
                copy is None
                or copy.schema != schema
                or copy.created <= now - timedelta(hours=hours)
            )

        if not stale(self._newest):
            return False
        # Another process may have made one meanwhile: look before copying again.
        copies = await self.copies()
        self._newest = copies[-1] if copies else None
        return stale(self._newest)

    async def run_round(self, now: datetime | None = None) -> CatalogRound:
        """The periodic catalog round: missing metadata, then a copy when one is due. Storage
        errors leave the work for the next round."""
        moment = now or utcnow()
        report = CatalogRound(metadata=await catch_up(self.storage, self.settings.secret_key))
        if await self.due(moment):
            report.copy = await self.backup(moment)
            report.removed = await self.prune()
        return report

    # -- restoring -------------------------------------------------------------------------------

    async def resolve(self, key: str | None) -> str:
        """``key``, or the newest copy's when None (:class:`CatalogError` when there is none)."""
        if key is not None:
            return key
        copies = await self.copies()
        if not copies:
            raise CatalogError(
                f"there is no catalog copy under {CATALOG_PREFIX} in the {self.storage.kind} "
                f"storage (bucket {self.storage.bucket!r})"
            )
        return copies[-1].key

    async def restore(self, key: str | None, *, force: bool = False) -> RestoreReport:
        """Replace the database with a catalog copy (the newest when ``key`` is None).

        Nothing changes unless every check passes first: the database is empty (or ``force``),
        the object exists, is a catalog copy, opens with this server's secret, is whole, and was
        made from the same kind of database."""
        key = await self.resolve(key)
        if not force and not await self.is_empty():
            counts = await count_rows()
            raise CatalogError(
                "the database is not empty ("
                + ", ".join(f"{n} {what}" for what, n in counts.items())
                + "); a restore would replace all of it. Stop every server process and add "
                "--force to go ahead"
            )
        with self._workdir() as work:
            sealed, payload = work / "sealed", work / "payload"
            try:
                await self.storage.get_file(key, sealed)
            except NoSuchKey:
                raise CatalogError(f"there is no object at {key}") from None
            except ValueError as exc:
                raise CatalogError(f"{key!r} is not an object key: {exc}") from None
            except ObjectStoreError as exc:
                raise CatalogError(f"could not download {key}: {exc}") from None
            header = await anyio.to_thread.run_sync(self._open, key, sealed, payload)
            if header.database != self.kind:
                raise CatalogError(
                    f"{key} is a copy of a {header.database} database; DATABASE_URL names a "
                    f"{self.kind} one (restore it into the same kind of database)"
                )
            if self.kind == "sqlite":
                await anyio.to_thread.run_sync(
                    dump.restore_sqlite, payload, self.settings.database_url
                )
            else:
                await anyio.to_thread.run_sync(
                    dump.restore_postgres, payload, self.settings.database_url
                )
        counts = await count_rows()
        return RestoreReport(key=key, created=header.created, database=header.database, **counts)

    def _open(self, key: str, sealed: Path, payload: Path) -> SealedHeader:
        with sealed.open("rb") as source, payload.open("wb") as out:
            # The header says whether the payload is compressed; decrypt into a decompressor then.
            header, _ = read_header(source, key)
            source.seek(0)
            if header.compression == "zstd":
                with zstandard.ZstdDecompressor().stream_writer(out, closefd=False) as inflate:
                    try:
                        return open_sealed(self.settings.secret_key, source, inflate, key)
                    except zstandard.ZstdError as exc:
                        raise CatalogError(f"{key} holds a damaged payload ({exc})") from None
            return open_sealed(self.settings.secret_key, source, out, key)
