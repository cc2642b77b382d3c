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

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec

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


class RetentionService:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def run(self, now: datetime | None = None) -> RetentionReport:
        """One pass over every config with a retention period; ``now`` for a controllable clock."""
        now = now or utcnow()
        report = RetentionReport()
        configs = await BackupConfig.select(BackupConfig.id, BackupConfig.options)
        for config in configs:
            days = retention_days(config["options"])
            if days is None:
                continue
            await self._config(config["id"], now - timedelta(days=days), now, report)
        return report

    async def _config(
        self, config_id: uuid.UUID, cutoff: datetime, now: datetime, report: RetentionReport
    ) -> None:
        newest = (
            await BackupLog.select(BackupLog.id)
            .where((BackupLog.config == config_id) & (BackupLog.status == "completed"))
            .order_by(BackupLog.started_at, ascending=False)
            .first()
        )
        if newest is None:
            return
        old = await BackupLog.select(
            BackupLog.id, BackupLog.s3_path, BackupLog.completed_at, BackupLog.started_at
        ).where(
            (BackupLog.config == config_id)
            & (BackupLog.status == "completed")
            & (BackupLog.id != newest["id"])
            & (BackupLog.started_at < cutoff)
        )
        for row in old:
            finished = aware(row["completed_at"]) or aware(row["started_at"])
            if finished is None or finished >= cutoff:
                continue
            await self._expire(row, now, report)

    async def _expire(self, row: dict[str, Any], now: datetime, report: RetentionReport) -> None:
        backup_id = str(row["id"])
        try:
            await self.storage.delete(row["s3_path"])
        except ObjectStoreError as exc:
            log.warning(
                "retention: could not delete %s (backup %s): %s", row["s3_path"], backup_id, exc
            )
            report.failed.append((backup_id, str(exc)))
            return
        await BackupLog.update({BackupLog.status: "expired", BackupLog.deleted_at: now}).where(
            (BackupLog.id == row["id"]) & (BackupLog.status == "completed")
        )
        log.info("retention: deleted %s (backup %s)", row["s3_path"], backup_id)
        report.expired.append(backup_id)
