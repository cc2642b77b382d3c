"""Retention: the server removes the backups their config's policy no longer keeps.

The policy is ``options.retentionDays`` and the GFS rules of ``options.retention`` (what they keep
is in ``backend/services/gfs.py``), evaluated on every ``completed`` backup of the config, at the
time it finished (``completed_at``, else ``started_at``), in the time zone of the machine that runs
the config (the agent's reported zone; ``BACKAPP_TIMEZONE`` for server-side configs and agents that
reported none). A removed backup's history row becomes ``expired`` with ``deleted_at`` set; the row
stays, so the history still shows what existed.

* A full archive is deleted from storage, then its row is marked; a storage error leaves the row
  ``completed`` (the object may still be there) and the next round retries.
* A snapshot is only marked: its packs may be shared with other snapshots, and pruning
  (``backend/services/prune.py``) deletes those no live snapshot needs.

Two rules protect the user: the newest completed backup of a config is never removed, however old
it is (a machine that has been off for months still has its last good copy); and a config with no
rule (``retentionDays: 0`` or absent, no GFS numbers) keeps every backup. Agents never delete
anything: only the server does, with its credentials.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

import msgspec

from backend.backups.tables import BackupConfig, BackupLog
from backend.services.clock import aware, utcnow
from backend.services.gfs import Candidate, Decision, Policy, decide, policy_of
from backend.services.last_backup import pause, store_config_times
from backend.services.prune import chunks
from backend.services.round_budget import RoundBudget, due_configs
from backend.storage import ObjectStoreError, Storage
from desktop_agent.engine.schedule import resolve_timezone

__all__ = ["RetentionReport", "RetentionService", "next_change", "retention_days"]

CONFIGS_PER_BATCH = 50
"""Due configs a round reads (with their completed backups) and settles before it checks its
budget again."""
ROUND_CONFIGS = 5000
"""The most configs one round evaluates, whatever its time budget."""

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
    """Ids of the backups removed (now ``expired``), archives and snapshots."""
    snapshots: list[str] = field(default_factory=list)
    """Which of them are snapshots (their packs are pruned afterwards)."""
    archive_bytes: int = 0
    """Bytes of the full archives deleted from storage."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(backup id, reason) of deletions that failed and will be retried."""
    more: bool = False
    """The round stopped on its budget: configs may still be due (the next round goes on)."""

    def merge(self, other: RetentionReport) -> None:
        """Add a following round's report to this one (its ``more`` replaces this one's)."""
        self.expired += other.expired
        self.snapshots += other.snapshots
        self.archive_bytes += other.archive_bytes
        self.failed += other.failed
        self.more = other.more


NO_CHANGE_RECHECK = timedelta(days=3650)
"""When a config whose decision cannot change by time alone is looked at again (a new backup or
an edit makes it look at once)."""


def next_change(
    decision: Decision, backups: list[dict[str, Any]], policy: Policy, now: datetime
) -> datetime:
    """When ``decision`` can next change with no new backup and no edit: the moment the first
    backup kept by ``retentionDays`` alone grows too old. The GFS counts keep the newest of the
    periods that have a backup, which only a new backup changes."""
    if policy.days <= 0:
        return now + NO_CHANGE_RECHECK
    age_only = [f"within {policy.days} days"]
    ends = []
    for row in backups:
        if decision.keep.get(str(row["id"])) == age_only:
            when = aware(row["completed_at"]) or aware(row["started_at"])
            if when is not None:
                ends.append(when + timedelta(days=policy.days))
    return min(ends, default=now + NO_CHANGE_RECHECK)


_COLUMNS = (
    BackupConfig.id,
    BackupConfig.options,
    BackupConfig.revision,
    BackupConfig.agent.timezone.as_alias("agent_timezone"),
)


def _options(raw: Any) -> Any:
    if isinstance(raw, str):  # SQLite hands JSON columns back as text
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return None
    return raw


class RetentionService:
    def __init__(
        self, storage: Storage, timezone: str = "UTC", budget_seconds: float = 0.0
    ) -> None:
        self.storage = storage
        self.timezone = timezone
        """The zone of configs whose machine reported none (server-side configs)."""
        self.budget_seconds = budget_seconds
        """How long a round may work through due configs (0: no limit; see ``round_budget``)."""

    def zone(self, agent_timezone: str | None) -> tzinfo:
        """The zone a config's periods are counted in."""
        return resolve_timezone(agent_timezone or self.timezone)

    async def run(self, now: datetime | None = None) -> RetentionReport:
        """One round; ``now`` for a controllable clock.

        O(changes), a handful of statements: only configs whose ``retention_due_at`` is unset (a
        backup of it ended, it was edited, its agent changed zone) or has come are read, by
        keyset, :data:`CONFIGS_PER_BATCH` at a time (the unset ones first, then by due time),
        with their completed backups in one statement per batch; the decision is made in Python
        (``gfs.decide``); archives are deleted from storage one by one (the storage's API), then
        every removed backup is marked ``expired``. Each config evaluated gets the moment its
        decision can change by time alone (:func:`next_change`: only ``retentionDays`` ages; the
        GFS counts change when a backup is added).

        Bounded: the round stops after the batch that used its budget (``budget_seconds``,
        :data:`ROUND_CONFIGS`), and stops deleting archives once its time is used; the configs
        it did not reach, or whose archives it did not delete, are still due, so the next round
        continues there (``report.more`` says the round stopped early).

        Interrupted anywhere, the next round does the rest: a config's new due time is stored
        last, a deleted object is deleted again without error, and a row is marked only while
        still ``completed``."""
        now = now or utcnow()
        report = RetentionReport()
        budget = RoundBudget(self.budget_seconds, ROUND_CONFIGS)
        seen: set[Any] = set()
        cursor: tuple[Any, ...] | None = None
        while True:
            if budget.used and budget.spent:  # at least one batch a round, however short
                report.more = True
                break
            size = min(CONFIGS_PER_BATCH, budget.left)
            configs, cursor = await due_configs(
                BackupConfig.retention_due_at, _COLUMNS, now, cursor, size
            )
            budget.take(len(configs))
            fresh = [c for c in configs if c["id"] not in seen]
            seen.update(c["id"] for c in fresh)
            if fresh:
                await self._batch(fresh, now, report, budget)
            if cursor is None:
                break
        return report

    async def _batch(
        self,
        configs: list[dict[str, Any]],
        now: datetime,
        report: RetentionReport,
        budget: RoundBudget,
    ) -> None:
        """Evaluate one batch of due configs, delete and mark what they no longer keep, and store
        each one's next due time."""
        policies: dict[Any, tuple[Policy, tzinfo]] = {}
        due: dict[Any, datetime] = {}
        revision = {config["id"]: config["revision"] for config in configs}
        for config in configs:
            policy = policy_of(_options(config["options"]))
            if policy.active:
                policies[config["id"]] = (policy, self.zone(config["agent_timezone"]))
            due[config["id"]] = now + NO_CHANGE_RECHECK
        rows: list[dict[str, Any]] = []
        for ids in chunks(list(policies)):
            rows += await BackupLog.select(
                BackupLog.id,
                BackupLog.config,
                BackupLog.s3_path,
                BackupLog.size,
                BackupLog.backup_type,
                BackupLog.started_at,
                BackupLog.completed_at,
            ).where(BackupLog.config.is_in(ids) & (BackupLog.status == "completed"))
        by_config: dict[Any, list[dict[str, Any]]] = {}
        for row in rows:
            by_config.setdefault(row["config"], []).append(row)
        archives: list[dict[str, Any]] = []
        snapshots: list[dict[str, Any]] = []
        for index, (config_id, backups) in enumerate(by_config.items()):
            if index and budget.out_of_time:
                # The configs not decided yet keep their due time: the next round decides them.
                for left in list(by_config)[index:]:
                    del due[left]
                report.more = True
                break
            await pause(index)
            policy, tz = policies[config_id]
            decision = self.decide(backups, policy, now, tz)
            due[config_id] = next_change(decision, backups, policy, now)
            removed = set(decision.remove)
            for row in backups:
                if str(row["id"]) in removed:
                    kind = row["backup_type"] or "full"
                    (snapshots if kind == "incremental" else archives).append(row)
        deleted: list[dict[str, Any]] = []
        for tried, row in enumerate(archives):
            if tried and budget.out_of_time:
                # Out of time: this config is looked at again next round, which deletes the rest.
                due[row["config"]] = now
                report.more = True
            elif await self._delete_archive(row, report):
                deleted.append(row)
            else:
                due[row["config"]] = now  # try again next round
        for chunk in chunks(deleted):
            done = await self._mark_expired(chunk, now)
            for r in chunk:
                if r["id"] in done:
                    log.info("retention: deleted %s (backup %s)", r["s3_path"], r["id"])
                    report.expired.append(str(r["id"]))
                    report.archive_bytes += int(r["size"] or 0)
        for chunk in chunks(snapshots):
            for backup_id in await self._mark_expired(chunk, now):
                log.info("retention: snapshot %s expired", backup_id)
                report.expired.append(str(backup_id))
                report.snapshots.append(str(backup_id))
        await store_config_times(
            "retention_due_at", [(c, revision[c], when) for c, when in due.items()]
        )

    @staticmethod
    async def _mark_expired(rows: list[dict[str, Any]], now: datetime) -> set[Any]:
        """Mark these backups ``expired`` (those still ``completed``); the ids it marked."""
        done = (
            await BackupLog.update({BackupLog.status: "expired", BackupLog.deleted_at: now})
            .where(BackupLog.id.is_in([r["id"] for r in rows]) & (BackupLog.status == "completed"))
            .returning(BackupLog.id)
        )
        return {r["id"] for r in done}

    async def preview(
        self, config_id: str, options: dict[str, Any], now: datetime | None = None
    ) -> tuple[str, list[dict[str, Any]], Decision]:
        """What ``options`` (``retentionDays``, ``retention``) would remove from the config's
        completed backups now: (zone name, the backup rows, the decision). Changes nothing."""
        now = now or utcnow()
        config = (
            await BackupConfig.select(BackupConfig.agent.timezone.as_alias("agent_timezone"))
            .where(BackupConfig.id == config_id)
            .first()
        )
        zone = (config or {}).get("agent_timezone") or self.timezone
        rows = list(
            await BackupLog.select(
                BackupLog.id,
                BackupLog.size,
                BackupLog.backup_type,
                BackupLog.started_at,
                BackupLog.completed_at,
            ).where((BackupLog.config == config_id) & (BackupLog.status == "completed"))
        )
        decision = self.decide(rows, policy_of(options), now, resolve_timezone(zone))
        return zone, rows, decision

    @staticmethod
    def decide(
        backups: list[dict[str, Any]], policy: Policy, now: datetime, tz: tzinfo
    ) -> Decision:
        """The policy's decision on one config's completed backup rows."""
        candidates = []
        for row in backups:
            when = aware(row["completed_at"]) or aware(row["started_at"])
            if when is not None:
                candidates.append(Candidate(str(row["id"]), when))
        newest = max(
            (r for r in backups if r["started_at"] is not None),
            key=lambda r: aware(r["started_at"]) or now,
            default=None,
        )
        return decide(
            candidates, policy, now, tz, newest=str(newest["id"]) if newest is not None else None
        )

    async def _delete_archive(self, row: dict[str, Any], report: RetentionReport) -> bool:
        """Delete a removed archive's object; False (and the reason in ``report``) on a storage
        error, when its row stays ``completed``, the object may still be there."""
        try:
            await self.storage.delete(row["s3_path"])
        except ObjectStoreError as exc:
            log.warning(
                "retention: could not delete %s (backup %s): %s", row["s3_path"], row["id"], exc
            )
            report.failed.append((str(row["id"]), str(exc)))
            return False
        return True
