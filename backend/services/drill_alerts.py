"""The alerts of restore drills and agent checks that the periodic alert round needs, apart from
``repo_checks`` (which records the agents' reports) so that ``alerts`` can import them.

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

from backend.backups.tables import BackupConfig, BackupLog
from backend.repos.tables import ConfigCheck
from backend.services.clock import aware, iso, utcnow

__all__ = [
    "DATA_CHECK_ALERT",
    "DRILL_FAILED_ALERT",
    "DRILL_OVERDUE_ALERT",
    "DRILL_PERIODS",
    "REPORTED_ALERTS",
    "Overdue",
    "config_options",
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


async def overdue_drills(now: datetime | None = None) -> list[Overdue]:
    """Configs with ``options.drill`` and a completed snapshot whose latest drill (or, before
    the first, the config's last change) is older than the drill's period plus the config's
    ``alertGraceMinutes``. A few queries for the whole fleet."""
    now = now or utcnow()
    configs = await BackupConfig.select(
        BackupConfig.id,
        BackupConfig.user,
        BackupConfig.name,
        BackupConfig.options,
        BackupConfig.updated_at,
    ).where(
        (BackupConfig.execution_mode == "agent")
        # Only configs whose options name a drill (checked exactly below): the round reads the
        # configs that have drills, not every config of the fleet.
        & WhereRaw("CAST(options AS TEXT) LIKE {}", '%"drill"%')
    )
    drilled: list[tuple[dict[str, Any], timedelta, str]] = []
    for config in configs:
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
    if not drilled:
        return []
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
        if since is None or now - since <= allowed:
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
    return out
