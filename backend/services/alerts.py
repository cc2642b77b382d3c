"""Alerts: what a user must know, kept as rows of the Alert table and delivered by e-mail/webhook.

Four kinds evaluated here, each with one open alert per subject at most, resolved automatically when the condition
clears:

* ``missed_backup`` (subject ``config:{id}``): a config with a schedule has no completed backup
  within its schedule interval plus ``options.alertGraceMinutes`` (default 60). The interval is the
  schedule's gap at that moment, in the zone of the machine that runs the config (the agent's
  reported zone, or ``BACKAPP_TIMEZONE`` for server-side configs and agents that reported none).
* ``agent_offline`` (subject ``agent:{id}``): an active agent with no heartbeat for
  ``BACKAPP_ALERT_OFFLINE_MINUTES`` (never seen: counted from its registration).
* ``backup_failed`` (subject ``backup:{id}``): a backup failed and no retry follows (its attempt is
  the last allowed). Resolved by a later completed backup of the same config. Only failures of the
  last ``FAILED_LOOKBACK`` are considered, so an old history does not flood a new installation.
* ``drill_overdue`` (subject ``config:{id}``): a config's restore drill has not run for its
  period and grace (``services/drill_alerts.py``). ``repo_checks.py`` opens and resolves
  ``data_check`` and ``drill_failed`` from the agents' reports, ``backapp check`` does
  ``storage_check``: this round leaves those alone.

Delivery (:meth:`AlertService.notify`) sends each open, not yet notified alert to its user's e-mail
and to the webhook, records ``notified_at``, or ``notify_error`` and tries again next round. Delivery
is at least once: when one channel fails, the next round sends on both again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

import msgspec
from piccolo.columns.combination import WhereRaw

from backend.agents.tables import Agent
from backend.backups.tables import Alert, BackupConfig
from backend.schemas import AlertOut
from backend.services.accounts import CurrentUser
from backend.services.clock import aware, iso, utcnow
from backend.services.drill_alerts import (
    DRILL_OVERDUE_ALERT,
    FAILED_LOOKBACK,
    config_options,
    final_failures,
    overdue_drills,
)
from backend.services.last_backup import pause, store_config_times, sweep_severity
from backend.services.notify import Notifier, NotifyError
from backend.services.presence import ONESHOT, PlanMemo, SchedulePlan, expected_back
from backend.services.round_budget import Cursor, RoundBudget, due_configs
from backend.settings import Settings
from desktop_agent.engine.schedule import Schedule, ScheduleError, resolve_timezone

__all__ = [
    "FAILED_LOOKBACK",
    "AlertReport",
    "AlertService",
    "alert_grace",
    "config_options",
    "config_schedule",
    "oneshot_expected_by",
]

log = logging.getLogger("backapp.alerts")

BATCH = 500
"""Rows per statement where a round reads or writes many (ids in an ``IN`` list)."""
DEFAULT_GRACE_MINUTES = 60
CONFIGS_PER_BATCH = 200
"""Due configs the round reads and works out before it checks its budget again."""
ROUND_CONFIGS = 5000
"""The most configs one round evaluates, whatever its time budget."""
_CONFIG_COLUMNS = (
    BackupConfig.id,
    BackupConfig.user,
    BackupConfig.name,
    BackupConfig.agent,
    BackupConfig.options,
    BackupConfig.created_at,
    BackupConfig.updated_at,
    BackupConfig.execution_mode,
    BackupConfig.last_ok_at,
    BackupConfig.revision,
    BackupConfig.agent.timezone.as_alias("agent_timezone"),
)


def config_schedule(options: Any) -> Schedule | None:
    """The schedule in a config's options, or None (none, or one that cannot be understood).

    Stored schedules are normalised (``Schedule.to_json``: a preset also carries its ``cron``).
    ``Schedule.parse`` reads that form, but refuses it when the two disagree (a row edited by
    hand); the preset is what the user chose, so it alone is read and the ``cron`` beside it is
    dropped."""
    value = config_options(options).get("schedule")
    if isinstance(value, dict) and "preset" in value:
        value = {k: v for k, v in value.items() if k != "cron"}
    try:
        return Schedule.parse(value)
    except ScheduleError:
        return None


def alert_grace(options: dict[str, Any]) -> timedelta:
    """``options.alertGraceMinutes`` (default 60) as a duration; a bad value counts as the
    default."""
    value = options.get("alertGraceMinutes", DEFAULT_GRACE_MINUTES)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        value = DEFAULT_GRACE_MINUTES
    return timedelta(minutes=value)


def oneshot_expected_by(
    last_seen: datetime,
    zone: str | None,
    configs: list[dict[str, Any]],
    settings: Settings,
    memo: PlanMemo | None = None,
) -> datetime:
    """When a one-shot agent last heard from at ``last_seen`` is expected back (see
    :mod:`backend.services.presence`): the next run of its scheduled ``configs`` (rows with
    ``options``) in its zone (else ``BACKAPP_TIMEZONE``), plus that config's grace; without a
    schedule, ``BACKAPP_ALERT_OFFLINE_MINUTES`` after it was last heard from. ``memo``: shared by
    the agents of one list."""
    tz = resolve_timezone(zone or settings.timezone)
    plans = []
    for config in configs:
        raw = config["options"]
        known = memo.options.get(raw) if memo is not None and isinstance(raw, str) else None
        if known is None:
            options = config_options(raw)
            if memo is None:
                known = (config_schedule(options), alert_grace(options))
            else:  # configs whose options differ elsewhere often share their schedule
                key = msgspec.json.encode(options.get("schedule"))
                if key not in memo.schedules:
                    memo.schedules[key] = config_schedule(options)
                known = (memo.schedules[key], alert_grace(options))
                if isinstance(raw, str):
                    memo.options[raw] = known
        if known[0] is not None:
            plans.append(SchedulePlan(known[0], tz, known[1]))
    fallback = timedelta(minutes=settings.alert_offline_minutes)
    return expected_back(last_seen, plans, fallback, memo.next_after if memo else None)


def _ago(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} minutes"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} hours"
    return f"{hours // 24} days"


NO_SCHEDULE_RECHECK = timedelta(days=3650)
"""When a config without a schedule is looked at again (an edit looks at it at once)."""
DUE_GAPS = 64
"""Schedule gaps :func:`_due_at` walks before it settles for "look again then"."""


class _Gaps:
    """The gaps between a schedule's fire times in a zone, from the one holding ``now`` on,
    worked out once per round for every config that shares that schedule and zone."""

    def __init__(self, schedule: Schedule, tz: tzinfo, now: datetime) -> None:
        self.schedule = schedule
        self.tz = tz
        self.items: list[tuple[datetime, datetime]] = []
        self._next = schedule.last_at_or_before(now, tz)

    def __getitem__(self, k: int) -> tuple[datetime, datetime]:
        while len(self.items) <= k:
            t1 = self.schedule.next_after(self._next, self.tz)
            self.items.append((self._next, t1))
            self._next = t1
        return self.items[k]


def _due_at(gaps: _Gaps, since: datetime, grace: timedelta, now: datetime) -> datetime:
    """The earliest moment after ``now`` at which "no completed backup since ``since``" can
    exceed the schedule's gap at that moment plus ``grace``, if nothing happens meanwhile.

    Within a gap ``[t0, t1)`` between two fire times the allowance is ``t1 - t0 + grace``, so the
    alert can hold from ``max(t0, since + (t1 - t0) + grace)`` on, if that is before ``t1``.
    A lower bound is all that is needed: the round checks the rule itself again then."""
    for k in range(DUE_GAPS):
        t0, t1 = gaps[k]
        candidate = max(t0, since + (t1 - t0) + grace)
        if candidate < t1:
            return max(candidate, now)
    return gaps[DUE_GAPS - 1][1]


def _clear_at(gaps: _Gaps, since: datetime, grace: timedelta) -> datetime:
    """For a config whose alert holds now: the earliest moment it can stop holding if nothing
    happens (no backup completes, no edit): the start of the first later gap long enough to
    cover ``since`` (a weekday schedule's weekend gap, say). Within a gap the time since
    ``since`` only grows against a fixed allowance, so only a new gap can clear it."""
    for k in range(1, DUE_GAPS):
        t0, t1 = gaps[k]
        if t0 - since <= (t1 - t0) + grace:
            return t0
    return gaps[DUE_GAPS - 1][1]


@dataclass
class AlertReport:
    opened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    notified: list[str] = field(default_factory=list)
    notify_failed: list[str] = field(default_factory=list)
    more: bool = False
    """The round stopped on its budget: configs may still be due (the next round goes on)."""


@dataclass(frozen=True)
class _Wanted:
    user: uuid.UUID
    kind: str
    subject: str
    message: str


def _since(last: datetime | None, otherwise: str) -> str:
    """Since when a message says something has been missing: the last good time, or (never
    happened) ``otherwise``, which names the row's creation."""
    return f"since {iso(last)}" if last else otherwise


class AlertService:
    def __init__(self, settings: Settings, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier(settings)

    # --- evaluation ---------------------------------------------------------------------------

    async def evaluate(self, now: datetime | None = None) -> AlertReport:
        """Open the alerts whose condition holds and resolve those whose condition cleared.

        O(changes): the configs read are those whose ``alert_due_at`` is unset (a backup of it
        started or ended, it was edited, a drill was reported) or has come, at most a budget of
        them (``BACKAPP_ROUND_BUDGET_SECONDS``, :data:`ROUND_CONFIGS`: the next round goes on).
        Their missed backups, overdue drills and final failures are evaluated, and only their open
        alerts of those kinds are read; each gets the earliest moment one of them can open or
        clear by time alone. Agents are evaluated every round (``_offline_agents``)."""
        now = now or utcnow()
        report = AlertReport()
        # Configs whose verified backup just turned a day old rank lower on the dashboard.
        await sweep_severity(now)
        wanted: dict[tuple[str, str], _Wanted] = {}
        missed, configs, dues = await self._missed_backups(now, report)
        for item in missed:
            wanted[(item.kind, item.subject)] = item
        for item in await self._offline_agents(now):
            wanted[(item.kind, item.subject)] = item
        examined = [c["id"] for c in configs]
        failed, still_failing, failed_open = await self._failed_backups(now, examined)
        for item in failed:
            wanted[(item.kind, item.subject)] = item
        late_drills, drill_dues = await overdue_drills(now, configs)
        for late in late_drills:
            wanted[(DRILL_OVERDUE_ALERT, late.subject)] = _Wanted(
                late.user, DRILL_OVERDUE_ALERT, late.subject, late.message
            )
        for config_id, when in drill_dues.items():
            if config_id in dues and when < dues[config_id][1]:
                dues[config_id] = (dues[config_id][0], when)

        open_rows = await self._open_alerts([f"config:{c}" for c in examined]) + failed_open
        open_keys = {(r["kind"], r["subject"]) for r in open_rows}
        cleared = [
            row["id"]
            for row in open_rows
            if (row["kind"], row["subject"]) not in wanted
            and not (row["kind"] == "backup_failed" and row["subject"] in still_failing)
        ]
        for start in range(0, len(cleared), BATCH):
            chunk = cleared[start : start + BATCH]
            await Alert.update({Alert.resolved_at: now}).where(
                Alert.id.is_in(chunk) & Alert.resolved_at.is_null()
            )
        report.resolved.extend(str(i) for i in cleared)
        new = [item for key, item in wanted.items() if key not in open_keys]
        # A failure reported (and resolved) before is not reported again: one query for them all.
        failed_subjects = [i.subject for i in new if i.kind == "backup_failed"]
        reported: set[str] = set()
        for start in range(0, len(failed_subjects), BATCH):
            chunk = failed_subjects[start : start + BATCH]
            rows = await Alert.select(Alert.subject).where(
                (Alert.kind == "backup_failed") & Alert.subject.is_in(chunk)
            )
            reported.update(r["subject"] for r in rows)
        fresh = [
            Alert(
                id=uuid.uuid4(),
                user=item.user,
                kind=item.kind,
                subject=item.subject,
                message=item.message,
                created_at=now,
            )
            for item in new
            if not (item.kind == "backup_failed" and item.subject in reported)
        ]
        for start in range(0, len(fresh), BATCH):
            await Alert.insert(*fresh[start : start + BATCH])
        for alert in fresh:
            log.info("alert opened: %s %s: %s", alert.kind, alert.subject, alert.message)
            report.opened.append(str(alert.id))
        # Last: a round that dies before this point is evaluated again by the next.
        await store_config_times("alert_due_at", [(c, r, at) for c, (r, at) in dues.items()])
        return report

    async def _open_alerts(self, examined: list[str]) -> list[dict[str, Any]]:
        """The open alerts of the configs and agents this round may resolve: ``agent_offline``
        (agents are evaluated every round), ``missed_backup`` and ``drill_overdue`` of the configs
        this round looked at, or of configs that are gone. The others hold until their config's
        ``alert_due_at``; ``storage_check`` (``backapp check``), ``data_check`` and
        ``drill_failed`` (the agents' reports) are not this round's to resolve."""
        columns = (Alert.id, Alert.kind, Alert.subject)
        unresolved = Alert.resolved_at.is_null()
        rows = await Alert.select(*columns).where(unresolved & (Alert.kind == "agent_offline"))
        of_config = unresolved & Alert.kind.is_in(["missed_backup", DRILL_OVERDUE_ALERT])
        for start in range(0, len(examined), BATCH):
            chunk = examined[start : start + BATCH]
            rows += await Alert.select(*columns).where(of_config & Alert.subject.is_in(chunk))
        postgres = getattr(Alert._meta.db, "engine_type", "") == "postgres"
        config_id = "SUBSTR(backapp_alert.subject, 8)"  # after "config:"
        if postgres:
            config_id = f"CAST({config_id} AS UUID)"
        rows += await Alert.select(*columns).where(
            of_config
            & WhereRaw(
                f"NOT EXISTS (SELECT 1 FROM backapp_backup_config c WHERE c.id = {config_id})"
            )
        )
        return rows

    async def _missed_backups(
        self, now: datetime, report: AlertReport
    ) -> tuple[list[_Wanted], list[dict[str, Any]], dict[Any, tuple[int, datetime]]]:
        """Configs with a schedule and no completed backup within its gap plus grace; the rows
        of every config looked at; and each one's (revision read, next due time).

        O(changes), not O(configs): only configs whose ``alert_due_at`` is unset or has come are
        read, by keyset and within the round's budget. One that is fine now gets the earliest
        moment the alert could hold (:func:`_due_at`), one that is overdue the earliest moment it
        could clear (:func:`_clear_at`), and neither is read again before then: a fleet of late
        configs costs nothing per round."""
        # A quarter of the round's time: the rest of the round (their failures and open alerts,
        # the alerts opened, the due times stored) costs about three times this loop per config
        # (5,000 configs, PostgreSQL: a 1 s loop made 5 s rounds).
        budget = RoundBudget(self.settings.round_budget_seconds / 4, ROUND_CONFIGS)
        configs: list[dict[str, Any]] = []
        seen: set[Any] = set()
        cursor: Cursor | None = None
        # Thousands of configs share a few schedules: each is parsed, and its gaps worked out in
        # each zone, once per round.
        schedules: dict[bytes, Schedule | None] = {}
        gaps_of: dict[tuple[str, str], _Gaps] = {}
        out: list[_Wanted] = []
        dues: dict[Any, tuple[int, datetime]] = {}
        while True:
            if budget.used and budget.spent:  # at least one batch a round, however short
                report.more = True
                break
            batch, cursor = await due_configs(
                BackupConfig.alert_due_at,
                _CONFIG_COLUMNS,
                now,
                cursor,
                min(CONFIGS_PER_BATCH, budget.left),
            )
            budget.take(len(batch))
            for index, config in enumerate(batch):
                if index and budget.out_of_time:
                    # The configs not looked at keep their due time: the next round reads them.
                    report.more = True
                    cursor = None
                    break
                await pause(index)
                if config["id"] in seen:
                    continue
                seen.add(config["id"])
                configs.append(config)
                options = config_options(config["options"])
                spec = msgspec.json.encode(options.get("schedule"))
                if spec not in schedules:
                    schedules[spec] = config_schedule(options)
                schedule = schedules[spec]
                if schedule is None:
                    dues[config["id"]] = (config["revision"], now + NO_SCHEDULE_RECHECK)
                    continue
                zone = config["agent_timezone"] if config["agent"] else None
                zone_name = zone or self.settings.timezone
                key = (schedule.cron, zone_name)
                if key not in gaps_of:
                    gaps_of[key] = _Gaps(schedule, resolve_timezone(zone_name), now)
                gaps = gaps_of[key]
                last_ok = aware(config["last_ok_at"])
                since = last_ok or aware(config["created_at"])
                if since is None:
                    continue
                grace = alert_grace(options)
                t0, t1 = gaps[0]
                interval = t1 - t0  # the schedule's gap at ``now``
                if now - since <= interval + grace:
                    dues[config["id"]] = (config["revision"], _due_at(gaps, since, grace, now))
                    continue
                dues[config["id"]] = (config["revision"], _clear_at(gaps, since, grace))
                message = (
                    f"No successful backup of '{config['name']}' "
                    f"{_since(last_ok, 'since it was created')} ({_ago(now - since)}); its "
                    f"schedule ({schedule.describe()}) expects one every {_ago(interval)}."
                )
                out.append(
                    _Wanted(config["user"], "missed_backup", f"config:{config['id']}", message)
                )
            if cursor is None:
                break
        return out, configs, dues

    async def _offline_agents(self, now: datetime) -> list[_Wanted]:
        """Active agents silent for ``BACKAPP_ALERT_OFFLINE_MINUTES``; a one-shot agent (cron) only
        once it has also missed its next scheduled run and grace (it is silent between runs by
        design)."""
        limit = timedelta(minutes=self.settings.alert_offline_minutes)
        # Only the silent ones are read (the comparison is exact again below).
        quiet = now - limit
        agents = await Agent.select(
            Agent.id,
            Agent.user,
            Agent.name,
            Agent.last_seen,
            Agent.created_at,
            Agent.mode,
            Agent.timezone,
        ).where(
            (Agent.active == True)  # noqa: E712 (a SQL comparison)
            & ((Agent.last_seen < quiet) | (Agent.last_seen.is_null() & (Agent.created_at < quiet)))
        )
        oneshot = [a["id"] for a in agents if a["mode"] == ONESHOT and a["last_seen"] is not None]
        configs: dict[uuid.UUID, list[dict[str, Any]]] = {a: [] for a in oneshot}
        if oneshot:
            for row in await BackupConfig.select(
                BackupConfig.id, BackupConfig.agent, BackupConfig.options
            ).where(BackupConfig.agent.is_in(oneshot)):
                configs[row["agent"]].append(row)
        out: list[_Wanted] = []
        for agent in agents:
            seen = aware(agent["last_seen"])
            since = seen or aware(agent["created_at"])
            if since is None or now - since <= limit:
                continue
            if seen is not None and agent["id"] in configs:
                back = oneshot_expected_by(
                    seen, agent["timezone"], configs[agent["id"]], self.settings
                )
                if now <= back:
                    continue
            message = (
                f"Agent '{agent['name']}' has not been in touch "
                f"{_since(seen, 'since it was registered')} ({_ago(now - since)})."
            )
            out.append(_Wanted(agent["user"], "agent_offline", f"agent:{agent['id']}", message))
        return out

    async def _failed_backups(
        self, now: datetime, examined: list[Any]
    ) -> tuple[list[_Wanted], set[str], list[dict[str, Any]]]:
        """Final failures without a later success, of the configs this round looked at (a backup
        that fails or completes makes its config looked at) and of deleted configs; the subjects
        of open alerts that still hold (an old failure whose alert is open, outside the look-back
        window); and the open ``backup_failed`` alerts this round may resolve."""
        rows, open_failed = await final_failures(now, examined)
        out: list[_Wanted] = []
        still: set[str] = set()
        for row in rows:
            subject = f"backup:{row['id']}"
            still.add(subject)
            attempts = int(row["max_attempts"] or 1)
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            out.append(
                _Wanted(
                    user=row["user"],
                    kind="backup_failed",
                    subject=subject,
                    message=(
                        f"Backup of '{row['config_name']}' failed{tries}: "
                        f"{row['error'] or 'no reason given'}"
                    ),
                )
            )
        return out, still, open_failed

    # --- delivery -----------------------------------------------------------------------------

    async def notify(self, now: datetime | None = None) -> AlertReport:
        """Send every open alert not delivered yet; failures are recorded and retried next round."""
        now = now or utcnow()
        report = AlertReport()
        if not (self.notifier.email_enabled or self.notifier.webhook_enabled):
            return report
        rows = await Alert.select(
            Alert.id,
            Alert.kind,
            Alert.subject,
            Alert.message,
            Alert.created_at,
            Alert.user.email.as_alias("email"),
            Alert.user,
        ).where(Alert.resolved_at.is_null() & Alert.notified_at.is_null())
        for row in rows:
            errors: list[str] = []
            subject = f"BackApp: {row['message'][:120]}"
            if self.notifier.email_enabled and row["email"]:
                try:
                    await self.notifier.send_email(row["email"], subject, self._email_body(row))
                except NotifyError as exc:
                    errors.append(str(exc))
            if self.notifier.webhook_enabled:
                try:
                    await self.notifier.post_webhook(self._payload(row))
                except NotifyError as exc:
                    errors.append(str(exc))
            if errors:
                reason = "; ".join(errors)
                log.warning(
                    "alert %s: delivery failed (retrying next round): %s", row["id"], reason
                )
                await Alert.update({Alert.notify_error: reason[:4000]}).where(Alert.id == row["id"])
                report.notify_failed.append(str(row["id"]))
            else:
                await Alert.update({Alert.notified_at: now, Alert.notify_error: None}).where(
                    Alert.id == row["id"]
                )
                report.notified.append(str(row["id"]))
        return report

    @staticmethod
    def _payload(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "alert",
            "alert": {
                "id": str(row["id"]),
                "kind": row["kind"],
                "subject": row["subject"],
                "message": row["message"],
                "userId": str(row["user"]),
                "userEmail": row["email"],
                "createdAt": iso(row["created_at"]),
            },
        }

    def _email_body(self, row: dict[str, Any]) -> str:
        return (
            f"{row['message']}\n\n"
            f"Kind: {row['kind']}\nSince: {iso(row['created_at'])}\n\n"
            f"See the dashboard: {self.settings.base_url}/\n"
        )

    # --- reading -------------------------------------------------------------------------------

    async def open_alerts(self, user: CurrentUser, limit: int | None = None) -> list[AlertOut]:
        """This user's open alerts, newest first (at most ``limit``)."""
        query = (
            Alert.select()
            .where((Alert.user == user.id) & Alert.resolved_at.is_null())
            .order_by(Alert.created_at, Alert.id, ascending=False)
        )
        if limit is not None:
            query = query.limit(limit)
        rows = await query
        return [
            AlertOut(
                id=str(r["id"]),
                kind=r["kind"],
                subject=r["subject"],
                message=r["message"],
                created_at=iso(r["created_at"]) or "",
                notified_at=iso(r["notified_at"]),
                notify_error=r["notify_error"],
            )
            for r in rows
        ]
