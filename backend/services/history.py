"""The backup history as its owner reads it: lists, one backup, totals, the newest per config."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from piccolo.custom_types import Combinable
from piccolo.query.functions.aggregate import Count, Sum

from backend.backups.tables import BackupConfig, BackupLog
from backend.errors import NotFound
from backend.schemas import BackupOut, BackupTotals, ConfigLastBackups
from backend.services.accounts import CurrentUser
from backend.services.agents import filter_uuid, parse_uuid
from backend.services.clock import iso

__all__ = ["BackupHistory", "backup_out", "user_log"]


def backup_out(row: dict[str, Any]) -> BackupOut:
    """A log row as the API shows it (size and SHA-256 only once verified)."""
    errors = row["errors"]
    if isinstance(errors, str):
        errors = msgspec.json.decode(errors)
    return BackupOut(
        id=str(row["id"]),
        config_id=str(row["config"]) if row["config"] else None,
        config_name=row["config_name"],
        agent_id=str(row["agent"]) if row["agent"] else None,
        status=row["status"],
        s3_path=row["s3_path"],
        filename=row["filename"],
        filesize=row["filesize_estimate"],
        size=row["size"] if row["status"] == "completed" else None,
        sha256=row["sha256"] if row["status"] == "completed" else None,
        files_processed=row["files_processed"],
        bytes_transferred=row["bytes_transferred"],
        duration=row["duration_ms"],
        errors=list(errors or []),
        error=row["error"],
        started_at=iso(row["started_at"]) or "",
        completed_at=iso(row["completed_at"]),
        deleted_at=iso(row.get("deleted_at")),
        trigger=row.get("trigger") or "manual",
        attempt=row.get("attempt") or 1,
        max_attempts=row.get("max_attempts") or 1,
        progress=_json_object(row.get("progress")) if row["status"] == "running" else None,
        type=row.get("backup_type") or "full",
        new_bytes=row.get("new_bytes"),
    )


def _json_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        try:
            value = msgspec.json.decode(value)
        except msgspec.DecodeError:
            return None
    return value if isinstance(value, dict) else None


async def user_log(user: CurrentUser, backup_id: str) -> dict[str, Any]:
    """The log row of backup ``backup_id`` when it is this user's, else :class:`NotFound`."""
    row: dict[str, Any] | None = (
        await BackupLog.select()
        .where((BackupLog.id == parse_uuid(backup_id, "backup")) & (BackupLog.user == user.id))
        .first()
    )
    if row is None:
        raise NotFound("backup not found")
    return row


class BackupHistory:
    """Read-only queries over one user's backup logs; every query is scoped by the user."""

    async def list_backups(
        self,
        user: CurrentUser,
        *,
        config_id: str | None = None,
        agent_id: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[BackupOut], int]:
        """One page of this user's backups, newest first, and how many match in all."""
        where: Combinable = BackupLog.user == user.id
        if config_id:
            where = where & (BackupLog.config == filter_uuid(config_id, "configId"))
        if agent_id:
            where = where & (BackupLog.agent == filter_uuid(agent_id, "agentId"))
        if status:
            where = where & (BackupLog.status == status)
        if since:
            where = where & (BackupLog.started_at >= since)
        if until:
            where = where & (BackupLog.started_at < until)
        total = await BackupLog.count().where(where)
        rows = (
            await BackupLog.select()
            .where(where)
            .order_by(BackupLog.started_at, ascending=False)
            .limit(limit)
            .offset(offset)
        )
        return [backup_out(r) for r in rows], total

    async def last_backups(self, user: CurrentUser) -> dict[str, ConfigLastBackups]:
        """Per config of this user: its newest backup and its newest completed backup.

        Two indexed lookups per config at most (one when the newest one completed); a user has
        tens of configs, not thousands."""
        configs = await BackupConfig.select(BackupConfig.id).where(BackupConfig.user == user.id)
        result: dict[str, ConfigLastBackups] = {}
        for config in configs:
            newest = await self._newest(user, config["id"], None)
            if newest is None or newest["status"] == "completed":
                completed = newest
            else:
                completed = await self._newest(user, config["id"], "completed")
            result[str(config["id"])] = ConfigLastBackups(
                config_id=str(config["id"]),
                last=backup_out(newest) if newest else None,
                last_completed=backup_out(completed) if completed else None,
            )
        return result

    @staticmethod
    async def _newest(
        user: CurrentUser, config_id: uuid.UUID, status: str | None
    ) -> dict[str, Any] | None:
        where: Combinable = (BackupLog.config == config_id) & (BackupLog.user == user.id)
        if status:
            where = where & (BackupLog.status == status)
        row: dict[str, Any] | None = (
            await BackupLog.select()
            .where(where)
            .order_by(BackupLog.started_at, ascending=False)
            .first()
        )
        return row

    async def totals(self, user: CurrentUser) -> BackupTotals:
        """Verified bytes in storage (completed backups) and how many backups are in each state."""
        rows = (
            await BackupLog.select(
                BackupLog.status,
                Count(BackupLog.id).as_alias("n"),
                Sum(BackupLog.size).as_alias("bytes"),
            )
            .where(BackupLog.user == user.id)
            .group_by(BackupLog.status)
        )
        by_status = {r["status"]: r for r in rows}

        def count(status: str) -> int:
            return int(by_status[status]["n"]) if status in by_status else 0

        completed = by_status.get("completed")
        return BackupTotals(
            stored_bytes=int(completed["bytes"] or 0) if completed else 0,
            completed=count("completed"),
            failed=count("failed"),
            running=count("running"),
        )

    async def get(self, user: CurrentUser, backup_id: str) -> BackupOut:
        """One backup of this user (:class:`NotFound` for anyone else's)."""
        return backup_out(await user_log(user, backup_id))
