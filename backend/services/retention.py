"""Retention: the server deletes backups older than their config's ``retentionDays``.

For each config whose ``options.retentionDays`` is a positive number, every ``completed`` backup
that finished (``completed_at``, else ``started_at``) more than that many days ago is deleted from
storage and its history row becomes ``expired`` with ``deleted_at`` set. The row stays, so the history
still shows what existed. Two rules protect the user:

* the newest completed backup of a config is never deleted, however old it is (a machine that has
  been off for months still has its last good copy);
* ``retentionDays: 0`` (or absent) keeps every backup.

A storage error leaves the row ``completed`` (the object may still be there); the next round retries.
Agents never delete anything: only this server-side task does, with the server's credentials.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
from piccolo.engine.postgres import PostgresEngine

from backend.backups.tables import BackupConfig, BackupLog
from backend.services.clock import aware, utcnow
from backend.storage import ObjectStoreError, Storage

__all__ = ["RetentionReport", "RetentionService", "retention_days"]

log = logging.getLogger("backapp.retention")


def retention_days(options: Any) -> int | None:
    """A config's ``retentionDays`` when it asks for deletion (a positive whole number), else None."""
    if isinstance(options, str):
        try:
            options = msgspec.json.decode(options)
        except msgspec.DecodeError:
            return None
    if not isinstance(options, dict):
        return None
    days = options.get("retentionDays")
    if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
        return None
    return days


@dataclass
class RetentionReport:
    expired: list[str] = field(default_factory=list)
    """Ids of the backups deleted (now ``expired``)."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(backup id, reason) of deletions that failed and will be retried."""


BATCH = 500
"""Backups expired per statement; a round goes on batch after batch until nothing is due."""
DELETE_CONCURRENCY = 8
"""Objects deleted from storage at once (each is one request to the object store)."""


def _days_sql(engine: Any) -> tuple[str, str]:
    """SQL for a config's ``retentionDays`` when it is a JSON integer (as text on PostgreSQL),
    and the condition that it is one: the JSON functions differ between the two databases."""
    if isinstance(engine, PostgresEngine):
        return (
            "(c.options->>'retentionDays')",
            "json_typeof(c.options->'retentionDays') = 'number'",
        )
    return (
        "json_extract(c.options, '$.retentionDays')",
        "json_type(c.options, '$.retentionDays') = 'integer'",
    )


class RetentionService:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def run(self, now: datetime | None = None) -> RetentionReport:
        """One pass over every config with a retention period; ``now`` for a controllable clock.

        Set-based: one statement finds the retention periods in use, then per period one statement
        per batch of due backups (each config's newest completed backup excluded in SQL) and one
        UPDATE per batch. The number of statements grows with what is due, not with the fleet."""
        now = now or utcnow()
        report = RetentionReport()
        engine = BackupLog._meta.db
        days_sql, is_number = _days_sql(engine)
        periods = await BackupConfig.raw(
            f"SELECT DISTINCT {days_sql} AS days FROM backapp_backup_config c WHERE {is_number}"
        )
        for period in periods:
            days = retention_days({"retentionDays": _as_int(period["days"])})
            if days is not None:
                await self._period(days, days_sql, is_number, now, report)
        return report

    async def _period(
        self, days: int, days_sql: str, is_number: str, now: datetime, report: RetentionReport
    ) -> None:
        """Expire what is due in every config whose period is ``days``, batch after batch."""
        cutoff = now - timedelta(days=days)
        value: Any = str(days) if "->>" in days_sql else days
        position: tuple[datetime, uuid.UUID] | None = None
        while True:
            after = ""
            args: list[Any] = [cutoff, value]
            if position is not None:
                # Past the rows of the previous batch, failed deletions included: no row twice.
                after = " AND b.started_at >= {} AND (b.started_at > {} OR b.id > {})"
                args += [position[0], position[0], position[1]]
            rows = await BackupLog.raw(
                "SELECT b.id, b.s3_path, b.completed_at, b.started_at"
                " FROM backapp_backup_log b"
                " WHERE b.status = 'completed' AND b.started_at < {}"
                " AND b.config IN (SELECT c.id FROM backapp_backup_config c"
                f" WHERE {is_number} AND {days_sql} = {{}})"
                " AND b.id <> (SELECT n.id FROM backapp_backup_log n"
                " WHERE n.config = b.config AND n.status = 'completed'"
                " ORDER BY n.started_at DESC, n.id DESC LIMIT 1)"
                f"{after} ORDER BY b.started_at, b.id LIMIT {BATCH}",
                *args,
            )
            if not rows:
                return
            last = rows[-1]
            position = (_as_datetime(last["started_at"]), _as_uuid(last["id"]))
            due = []
            for row in rows:
                finished = _as_datetime(row["completed_at"] or row["started_at"])
                if finished < cutoff:
                    due.append(row)
            await self._expire(due, now, report)
            if len(rows) < BATCH:
                return

    async def _expire(
        self, rows: list[dict[str, Any]], now: datetime, report: RetentionReport
    ) -> None:
        """Delete the objects (a few at a time), then mark the deleted ones in one UPDATE."""
        if not rows:
            return
        limit = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def delete(row: dict[str, Any]) -> str | None:
            async with limit:
                try:
                    await self.storage.delete(row["s3_path"])
                except ObjectStoreError as exc:
                    log.warning(
                        "retention: could not delete %s (backup %s): %s",
                        row["s3_path"],
                        row["id"],
                        exc,
                    )
                    report.failed.append((str(row["id"]), str(exc)))
                    return None
                return str(row["id"])

        deleted = [d for d in await asyncio.gather(*(delete(r) for r in rows)) if d]
        if not deleted:
            return
        await BackupLog.update({BackupLog.status: "expired", BackupLog.deleted_at: now}).where(
            BackupLog.id.is_in([uuid.UUID(d) for d in deleted]) & (BackupLog.status == "completed")
        )
        log.info("retention: deleted %d backups", len(deleted))
        report.expired.extend(deleted)


def _as_int(value: Any) -> Any:
    """A retention period as read back (text on PostgreSQL): an int when it is one."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _as_datetime(value: Any) -> datetime:
    """A timestamp of a raw query: a datetime on PostgreSQL, its stored text on SQLite."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    result = aware(value)
    assert result is not None
    return result
