"""The backup history as its owner reads it: lists, one backup, totals, the newest per config."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from piccolo.columns.combination import WhereRaw
from piccolo.custom_types import Combinable

from backend.backups.tables import BackupConfig, BackupLog
from backend.db import as_uuid
from backend.errors import InvalidInput
from backend.schemas import BackupOut, BackupTotals, ConfigLastBackups
from backend.services.accounts import CurrentUser
from backend.services.agents import filter_uuid, users_row
from backend.services.clock import iso
from backend.services.cursors import Cursor, keyset_page

__all__ = ["BackupFilter", "BackupHistory", "backup_out", "user_log"]


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
    return await users_row(BackupLog, user, backup_id, "backup")


_NEWEST = (
    "SELECT (SELECT b.id FROM backapp_backup_log b WHERE b.config = c.id{status}"
    " ORDER BY b.started_at DESC, b.id DESC LIMIT 1)"
    ' FROM backapp_backup_config c WHERE c."user" = {{}}{only}'
)


def _newest_where(user: CurrentUser, config_ids: Sequence[uuid.UUID] | None) -> WhereRaw:
    """Rows that are the newest backup, or the newest completed backup, of a config of the user.

    One statement whatever the number of configs: a correlated ``LIMIT 1`` per config, each an
    index seek on ``(config, started_at, id)`` / ``(config, status, started_at)`` (the same SQL on
    SQLite and PostgreSQL), instead of one round trip per config."""
    only = ""
    values: list[Any] = [user.id]
    if config_ids is not None:
        only = " AND c.id IN (" + ", ".join("{}" for _ in config_ids) + ")"
        values += list(config_ids)
    newest = _NEWEST.format(status="", only=only)
    completed = _NEWEST.format(status=" AND b.status = 'completed'", only=only)
    # One IN over a UNION, not two INs joined by OR: PostgreSQL turns the OR into a filter run
    # on every backup of the user, the single IN into an index lookup per id.
    return WhereRaw(f"id IN ({newest} UNION {completed})", *values, *values)


@dataclass(frozen=True)
class BackupFilter:
    """Which of a user's backups a history query reads; a field left None does not filter."""

    config_id: str | None = None
    agent_id: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def narrows_rows(self) -> bool:
        """Whether anything beyond the status filters (the kept totals count only per status)."""
        return bool(self.config_id or self.agent_id or self.since or self.until)

    def where(self, user: CurrentUser) -> Combinable:
        """The WHERE clause: this user's backups that pass every given filter."""
        where: Combinable = BackupLog.user == user.id
        if self.config_id:
            where = where & (BackupLog.config == filter_uuid(self.config_id, "configId"))
        if self.agent_id:
            where = where & (BackupLog.agent == filter_uuid(self.agent_id, "agentId"))
        if self.status:
            where = where & (BackupLog.status == self.status)
        if self.since:
            where = where & (BackupLog.started_at >= self.since)
        if self.until:
            where = where & (BackupLog.started_at < self.until)
        return where


_ALL = BackupFilter()


class BackupHistory:
    """Read-only queries over one user's backup logs; every query is scoped by the user."""

    async def list_backups(
        self,
        user: CurrentUser,
        filters: BackupFilter = _ALL,
        *,
        limit: int = 50,
        offset: int = 0,
        window: int | None = None,
    ) -> tuple[list[BackupOut], int]:
        """One page of this user's backups, newest first, and how many match in all (without
        filters, or with only a status, from the totals the database keeps: a few rows instead
        of a count over the whole history).

        With a ``window``, a page more than that many rows from both the newest and the oldest
        match is refused (:class:`InvalidInput`): such an offset would cost every row it skips."""
        where = filters.where(user)
        if filters.narrows_rows():
            total = await BackupLog.count().where(where)
        else:
            total = await self._kept_count(user, filters.status)
        if window is not None and min(offset, total - min(total, offset + limit)) > window:
            raise InvalidInput(
                f"offset: {offset:,} is more than {window:,} backups from both the newest and the"
                " oldest; page deeper with after= (the nextAfter of the page before)",
                field="offset",
            )
        return [backup_out(r) for r in await self._offset_rows(where, total, limit, offset)], total

    @staticmethod
    async def _offset_rows(
        where: Combinable, total: int, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        """Rows ``offset`` to ``offset + limit`` of the history newest first, of ``total`` in all.

        An OFFSET costs the rows it skips, so a page in the older half is read from the oldest
        end (the last page of a million costs what the first does), and only the ids are skipped,
        over the ``("user", started_at, id)`` index alone; the page's rows are then read by id."""
        end = min(total, offset + limit)
        if end <= offset:
            return []
        newest_first = offset <= total - end
        ids = (
            await BackupLog.select(BackupLog.id)
            .where(where)
            .order_by(BackupLog.started_at, BackupLog.id, ascending=not newest_first)
            .limit(end - offset)
            .offset(offset if newest_first else total - end)
        )
        if not ids:
            return []
        return list(
            await BackupLog.select()
            .where(BackupLog.id.is_in([r["id"] for r in ids]))
            .order_by(BackupLog.started_at, BackupLog.id, ascending=False)
        )

    @staticmethod
    async def _kept_count(user: CurrentUser, status: str | None) -> int:
        """How many backups this user has (in ``status``), from ``backapp_backup_totals``."""
        sql = 'SELECT COALESCE(SUM(n), 0) AS n FROM backapp_backup_totals WHERE "user" = {}'
        args: list[Any] = [user.id]
        if status:
            sql += " AND status = {}"
            args.append(status)
        rows = await BackupLog.raw(sql, *args)
        return int(rows[0]["n"] or 0) if rows else 0

    async def page_backups(
        self,
        user: CurrentUser,
        filters: BackupFilter = _ALL,
        *,
        after: Cursor | None = None,
        limit: int = 50,
    ) -> tuple[list[BackupOut], Cursor | None]:
        """One page of this user's backups, newest first, after ``after`` (keyset pagination);
        and the cursor of the next page, None on the last one. Its cost does not grow with depth."""
        rows, next_cursor = await keyset_page(
            BackupLog, filters.where(user), BackupLog.started_at, after, limit, newest_first=True
        )
        return [backup_out(r) for r in rows], next_cursor

    async def count_backups(
        self, user: CurrentUser, filters: BackupFilter, *, cap: int
    ) -> tuple[int, bool]:
        """How many backups match, counted up to ``cap``: (count, whether there are more).

        Counting stops at ``cap`` rows, so "10,000+" costs the same in a history of millions."""
        rows = await BackupLog.select(BackupLog.id).where(filters.where(user)).limit(cap + 1)
        return min(len(rows), cap), len(rows) > cap

    async def last_backups(
        self, user: CurrentUser, config_ids: Sequence[str] | None = None
    ) -> dict[str, ConfigLastBackups]:
        """Per config of this user (or of ``config_ids`` among them): its newest backup and its
        newest completed backup. One statement, whatever the number of configs."""
        ids = None if config_ids is None else [as_uuid(c) for c in config_ids]
        if ids == []:
            return {}
        if ids is None:
            configs = await BackupConfig.select(BackupConfig.id).where(BackupConfig.user == user.id)
            keys = [str(c["id"]) for c in configs]
        else:
            keys = [str(c) for c in ids]
        rows = (
            await BackupLog.select()
            .where(BackupLog.user == user.id)
            .where(_newest_where(user, ids))
            .order_by(BackupLog.started_at, BackupLog.id, ascending=False)
        )
        newest: dict[str, BackupOut] = {}
        completed: dict[str, BackupOut] = {}
        for row in rows:  # newest first: the first row of a config is its newest
            if row["config"] is None:
                continue
            key = str(row["config"])
            out = backup_out(row)
            newest.setdefault(key, out)
            if row["status"] == "completed":
                completed.setdefault(key, out)
        return {
            key: ConfigLastBackups(
                config_id=key, last=newest.get(key), last_completed=completed.get(key)
            )
            for key in keys
        }

    async def totals(self, user: CurrentUser) -> BackupTotals:
        """Verified bytes in storage (completed backups) and how many backups are in each state.

        Read from ``backapp_backup_totals``, which the database keeps per (user, status) in the
        same transaction as every write to the history (triggers: see the migration
        ``backups_2026_12_02t14_05_00``), so it costs a few rows however long the history is."""
        rows = await BackupLog.raw(
            'SELECT status, n, bytes FROM backapp_backup_totals WHERE "user" = {}', user.id
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
