"""Each config's newest backup, kept on the config row (``last_backup_id``, ``last_status``,
``last_ok_at``) so that the dashboard and the alert round read one config row, not its history.

:func:`refresh_last_backups` is the one place that maintains them: every service that starts a
backup (once its log is the config's newest), ends it or changes its status calls it for the
configs it touched; retention needs not (it never removes a config's newest completed backup). It
recomputes the columns from the history itself (a correlated ``LIMIT 1`` per config over the
``(config, started_at, id)`` and ``(config, status, started_at)`` indexes), so it is idempotent,
needs no read before the write, and two processes refreshing the same config at once both leave
the committed truth. It also clears ``alert_due_at`` and ``retention_due_at``: the alert and
retention rounds evaluate the config again (and only then; see :func:`store_config_times`).
The migration that added the columns back-fills them with the same statement.

It also keeps ``severity``: the config's rank on the dashboard as far as its own row and its
agent's ``active`` and ``offline_since`` tell (:data:`SEVERITY_SQL`; the presence round stores
"offline" on agents and recomputes their configs, a heartbeat clears it: ``services/offline.py``).
One part of it moves with time alone (a verified backup older than :data:`OVERDUE_AFTER`): the
alert round moves those configs down with :func:`sweep_severity`, one indexed statement per
round.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

from backend.backups.tables import BackupConfig
from backend.services.clock import utcnow

__all__ = [
    "FAILING",
    "FINE",
    "OFFLINE",
    "OVERDUE_AFTER",
    "REFRESH_SQL",
    "RUNNING",
    "SEVERITY_SQL",
    "STALE",
    "YIELD_EVERY",
    "pause",
    "refresh_last_backups",
    "refresh_severity",
    "store_config_times",
    "sweep_severity",
]

OVERDUE_AFTER = timedelta(hours=24)
"""As ``backend/web/_health.py``: no verified backup for this long is overdue."""
FAILING, BLOCKED, STALE, OFFLINE, RUNNING, FINE = range(6)
"""The severities, worst first (those of ``backend/web/_health.py``)."""

SEVERITY_SQL = (
    "CASE"
    f" WHEN last_status = 'failed' THEN {FAILING}"
    " WHEN execution_mode = 'agent' AND (agent IS NULL OR NOT EXISTS (SELECT 1 FROM backapp_agent"
    f" a WHERE a.id = backapp_backup_config.agent AND a.active = {{}})) THEN {BLOCKED}"
    f" WHEN last_ok_at IS NULL OR last_ok_at < {{}} THEN {STALE}"
    " WHEN execution_mode = 'agent' AND EXISTS (SELECT 1 FROM backapp_agent a"
    f" WHERE a.id = backapp_backup_config.agent AND a.offline_since IS NOT NULL) THEN {OFFLINE}"
    f" WHEN last_status = 'running' THEN {RUNNING}"
    f" ELSE {FINE} END"
)
"""A config row's stored severity; its placeholders take ``True`` and the overdue cutoff."""

BATCH = 500
"""Configs per statement (ids in an ``IN`` list)."""
YIELD_EVERY = 200
"""Configs a periodic round works out in Python before it lets the event loop serve requests."""

_NEWEST = (
    "(SELECT b.{column} FROM backapp_backup_log b WHERE b.config = backapp_backup_config.id{only}"
    " ORDER BY b.started_at DESC, b.id DESC LIMIT 1)"
)

REFRESH_SQL = (
    "UPDATE backapp_backup_config SET"
    f" last_backup_id = {_NEWEST.format(column='id', only='')},"
    f" last_status = {_NEWEST.format(column='status', only='')},"
    " last_ok_at = "
    + _NEWEST.format(column="completed_at", only=" AND b.status = 'completed'").replace(
        "b.completed_at", "COALESCE(b.completed_at, b.started_at)", 1
    )
    + ", alert_due_at = NULL, retention_due_at = NULL, revision = revision + 1"
)
"""Recompute the newest-backup columns (append a ``WHERE`` to restrict it)."""


async def refresh_last_backups(config_ids: Iterable[uuid.UUID | str | None]) -> None:
    """Recompute the newest-backup columns of ``config_ids`` (None entries, configs that were
    deleted, are skipped). One statement per :data:`BATCH` configs."""
    ids: list[Any] = sorted(
        {uuid.UUID(str(c)) for c in config_ids if c is not None}, key=lambda u: u.int
    )
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        placeholders = ", ".join("{}" for _ in chunk)
        await BackupConfig.raw(f"{REFRESH_SQL} WHERE id IN ({placeholders})", *chunk)
        # A second statement: the first one's new values are not visible inside its own SET.
        await refresh_severity(f"id IN ({placeholders})", *chunk)


async def refresh_severity(where: str, *args: Any, now: datetime | None = None) -> None:
    """Recompute the stored severity of the configs ``where`` (SQL over the config row, with
    ``{}`` placeholders for ``args``): after their newest backup, their agent or its ``active``
    changed."""
    cutoff = (now or utcnow()) - OVERDUE_AFTER
    await BackupConfig.raw(
        f"UPDATE backapp_backup_config SET severity = {SEVERITY_SQL} WHERE {where}",
        True,
        cutoff,
        *args,
    )


async def sweep_severity(now: datetime) -> None:
    """Move the configs whose verified backup just became older than :data:`OVERDUE_AFTER` from
    offline, running or fine to stale: the only change of severity that time alone makes. One statement
    over the ``(severity, last_ok_at)`` index, so it reads only the configs that cross."""
    await BackupConfig.raw(
        "UPDATE backapp_backup_config SET severity = {}"
        " WHERE severity IN ({}, {}, {}) AND last_ok_at < {}",
        STALE,
        OFFLINE,
        RUNNING,
        FINE,
        now - OVERDUE_AFTER,
    )


async def store_config_times(
    column: Literal["alert_due_at", "retention_due_at"],
    times: list[tuple[uuid.UUID, int, datetime]],
) -> None:
    """Set ``column`` of many configs from (config id, revision read, time): one ``UPDATE … CASE``
    per :data:`BATCH` configs, whatever the number of distinct times.

    A config whose ``revision`` moved since the round read it (a backup ended, it was edited,
    meanwhile) keeps its value (null: "look again"): the round decided on what is now stale."""
    postgres = getattr(BackupConfig._meta.db, "engine_type", "") == "postgres"
    # PostgreSQL cannot infer a CASE branch's type from a bare parameter; SQLite has no such type.
    value = "CAST({} AS TIMESTAMPTZ)" if postgres else "{}"
    for start in range(0, len(times), BATCH):
        chunk = times[start : start + BATCH]
        cases = " ".join(f"WHEN id = {{}} AND revision = {{}} THEN {value}" for _ in chunk)
        ids = ", ".join("{}" for _ in chunk)
        args: list[Any] = [item for triple in chunk for item in triple]
        await BackupConfig.raw(
            f"UPDATE backapp_backup_config SET {column} = CASE {cases} ELSE {column} END"
            f" WHERE id IN ({ids})",
            *args,
            *[config_id for config_id, _, _ in chunk],
        )


async def pause(index: int) -> None:
    """Let the event loop run other work every :data:`YIELD_EVERY` items of a long loop: the
    periodic rounds share the loop with requests, and a first round over a large fleet (after an
    upgrade, or a restart with every config to look at) must not hold it for seconds."""
    if index % YIELD_EVERY == YIELD_EVERY - 1:
        await asyncio.sleep(0)
