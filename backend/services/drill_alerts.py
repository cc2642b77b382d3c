"""The alerts of restore drills and agent checks that the periodic alert round needs, apart from
``repo_checks`` (which records the agents' reports) so that ``alerts`` can import them; and the
final failures the round reads (``final_failures``).

* ``data_check`` and ``drill_failed`` (subject ``config:{id}``) are opened and resolved by the
  agents' reports (``repo_checks``); the alert round leaves them alone (``REPORTED_ALERTS``).
* ``drill_overdue`` (``config:{id}``): a config with ``options.drill`` and a completed snapshot
  has had no drill for its period (a day, a week, a month) plus its ``alertGraceMinutes``
  (``overdue_drills``, evaluated by ``AlertService.evaluate``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from piccolo.columns.combination import WhereRaw

from backend.backups.tables import Alert, BackupLog
from backend.repos.tables import ConfigCheck
from backend.services.clock import aware, iso

__all__ = [
    "DATA_CHECK_ALERT",
    "DRILL_FAILED_ALERT",
    "DRILL_OVERDUE_ALERT",
    "DRILL_PERIODS",
    "REPORTED_ALERTS",
    "Overdue",
    "FAILED_LOOKBACK",
    "config_options",
    "final_failures",
    "overdue_drills",
]

DATA_CHECK_ALERT = "data_check"
DRILL_FAILED_ALERT = "drill_failed"
DRILL_OVERDUE_ALERT = "drill_overdue"
REPORTED_ALERTS = frozenset({DATA_CHECK_ALERT, DRILL_FAILED_ALERT})
"""Opened and resolved by the agents' reports, not by the periodic evaluation."""
DRILL_PERIODS = {
    "daily": timedelta(days=1),
    "weekly": timedelta(days=7),
    "monthly": timedelta(days=31),
}
_GRACE_MINUTES = 60
_BATCH = 500
FAILED_LOOKBACK = timedelta(days=7)
"""Only failures this recent open a ``backup_failed`` alert (an old history floods nothing)."""
_NO_LATER_SUCCESS = WhereRaw(
    "NOT EXISTS (SELECT 1 FROM backapp_backup_log later"
    " WHERE later.config = backapp_backup_log.config AND later.status = 'completed'"
    " AND later.started_at > backapp_backup_log.started_at)"
)
"""A failed backup that no completed backup of its config followed (in SQL, not per row)."""
_FAILURE_COLUMNS = (
    BackupLog.id,
    BackupLog.user,
    BackupLog.config,
    BackupLog.config_name,
    BackupLog.error,
    BackupLog.attempt,
    BackupLog.max_attempts,
    BackupLog.started_at,
)


def config_options(raw: Any) -> dict[str, Any]:
    """A config row's ``options`` as a dict (JSON text on SQLite); ``{}`` when unreadable."""
    if isinstance(raw, str):
        try:
            raw = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return {}
    return raw if isinstance(raw, dict) else {}


@dataclass(frozen=True)
class Overdue:
    user: uuid.UUID
    subject: str
    message: str


async def overdue_drills(
    now: datetime, configs: list[dict[str, Any]]
) -> tuple[list[Overdue], dict[Any, datetime]]:
    """Of ``configs`` (rows with ``id``, ``user``, ``name``, ``options``, ``updated_at`` and
    ``execution_mode``: those the alert round looks at), those with ``options.drill`` and a
    completed snapshot whose latest drill (or, before the first, the config's last change) is
    older than the drill's period plus the config's ``alertGraceMinutes``; and for every config
    with a drill, the earliest moment its answer can change by time alone (when it becomes
    overdue; an overdue one clears only by a drill, a snapshot or an edit, which make the round
    look at it again). A few queries per 500 configs with a drill."""
    drilled: list[tuple[dict[str, Any], timedelta, str]] = []
    for config in configs:
        if config["execution_mode"] != "agent":
            continue
        options = config_options(config["options"])
        drill = options.get("drill")
        if options.get("type") != "incremental" or not isinstance(drill, dict):
            continue
        every = str(drill.get("every"))
        period = DRILL_PERIODS.get(every)
        if period is None:
            continue
        grace = options.get("alertGraceMinutes", _GRACE_MINUTES)
        if isinstance(grace, bool) or not isinstance(grace, int) or grace < 0:
            grace = _GRACE_MINUTES
        drilled.append((config, period + timedelta(minutes=grace), every))
    dues: dict[Any, datetime] = {}
    if not drilled:
        return [], dues
    ids = [c["id"] for c, _, _ in drilled]
    last: dict[Any, datetime] = {}
    snapshotted: set[Any] = set()
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start : start + _BATCH]
        for row in await ConfigCheck.select(ConfigCheck.config, ConfigCheck.at).where(
            (ConfigCheck.kind == "drill") & ConfigCheck.config.is_in(chunk)
        ):
            at = aware(row["at"])
            if at is not None:
                last[row["config"]] = at
        for row in (
            await BackupLog.select(BackupLog.config)
            .distinct()
            .where(
                BackupLog.config.is_in(chunk)
                & (BackupLog.status == "completed")
                & (BackupLog.backup_type == "incremental")
            )
        ):
            snapshotted.add(row["config"])
    out: list[Overdue] = []
    for config, allowed, every in drilled:
        if config["id"] not in snapshotted:
            continue  # nothing to drill yet (``missed_backup`` says so when it matters)
        since = last.get(config["id"]) or aware(config["updated_at"])
        if since is None:
            continue
        if now - since <= allowed:
            dues[config["id"]] = since + allowed
            continue
        what = (
            f"since {iso(since)}"
            if config["id"] in last
            else f"since its drill was set up ({iso(since)})"
        )
        out.append(
            Overdue(
                user=config["user"],
                subject=f"config:{config['id']}",
                message=(
                    f"No restore drill of '{config['name']}' {what}; it should run {every}. "
                    "Is its agent running (backapp-agent daemon)?"
                ),
            )
        )
    return out, dues


async def final_failures(
    now: datetime, examined: list[Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What the alert round needs to judge ``backup_failed`` for the configs it looked at
    (``examined``): the final failures without a later success of those configs and of deleted
    ones within :data:`FAILED_LOOKBACK`, plus the backups of the open alerts it may resolve that
    still have no later success (an open alert outside the window); and those open alerts.

    O(changes): a backup that fails or completes clears its config's ``alert_due_at``, so the
    failures and alerts of other configs cannot have changed. Deleted configs' failures (their
    ``config`` is null) are read every round: a deletion does not tell the round."""
    final = (
        (BackupLog.status == "failed")
        & (BackupLog.attempt >= BackupLog.max_attempts)
        & (BackupLog.started_at >= now - FAILED_LOOKBACK)
        & _NO_LATER_SUCCESS
    )
    rows = await BackupLog.select(*_FAILURE_COLUMNS).where(final & BackupLog.config.is_null())
    for start in range(0, len(examined), _BATCH):
        chunk = examined[start : start + _BATCH]
        rows += await BackupLog.select(*_FAILURE_COLUMNS).where(
            final & BackupLog.config.is_in(chunk)
        )
    open_failed = await _open_failure_alerts(examined)
    known = {str(r["id"]) for r in rows}
    extra_ids = []
    for alert in open_failed:
        backup_id = alert["subject"].removeprefix("backup:")
        if backup_id in known:
            continue
        try:
            extra_ids.append(uuid.UUID(backup_id))
        except ValueError:
            continue
    for start in range(0, len(extra_ids), _BATCH):
        rows += await BackupLog.select(*_FAILURE_COLUMNS).where(
            BackupLog.id.is_in(extra_ids[start : start + _BATCH]) & _NO_LATER_SUCCESS
        )
    return rows, open_failed


async def _open_failure_alerts(examined: list[Any]) -> list[dict[str, Any]]:
    """The open ``backup_failed`` alerts of the backups of these configs, and those whose backup
    is gone or belongs to a deleted config (by primary key, one probe per open alert)."""
    columns = (Alert.id, Alert.kind, Alert.subject)
    unresolved = Alert.resolved_at.is_null() & (Alert.kind == "backup_failed")
    postgres = getattr(Alert._meta.db, "engine_type", "") == "postgres"
    subject = "'backup:' || CAST(b.id AS TEXT)" if postgres else "'backup:' || b.id"
    backup_id = "SUBSTR(backapp_alert.subject, 8)"  # after "backup:"
    if postgres:
        backup_id = f"CAST({backup_id} AS UUID)"
    rows: list[dict[str, Any]] = []
    for start in range(0, len(examined), _BATCH):
        chunk = examined[start : start + _BATCH]
        marks = ", ".join("{}" for _ in chunk)
        # The alert and its backup are matched both ways, so that whichever side the planner
        # puts outside, the inside is an index probe (the backup's primary key, the alert's
        # subject). Matched one way only (``subject IN (SELECT 'backup:' || b.id ...)``), a
        # planner that believed the alert table nearly empty (statistics from before the first
        # alerts) compared every open alert with every backup of a batch of 100-290 configs:
        # 1,400 alerts x 4,000-12,000 backups, 3-9 s a statement, 16-22 s alert rounds at
        # 25,000 configs on PostgreSQL.
        rows += await Alert.select(*columns).where(
            unresolved
            & WhereRaw(
                "EXISTS (SELECT 1 FROM backapp_backup_log b"
                f" WHERE b.id = {backup_id} AND backapp_alert.subject = {subject}"
                f" AND b.config IN ({marks}))",
                *chunk,
            )
        )
    rows += await Alert.select(*columns).where(
        unresolved
        & WhereRaw(
            "NOT EXISTS (SELECT 1 FROM backapp_backup_log b"
            f" WHERE b.id = {backup_id} AND b.config IS NOT NULL)"
        )
    )
    return rows
