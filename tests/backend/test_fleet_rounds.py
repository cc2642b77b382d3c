"""Periodic rounds are bounded and O(changes) (issue 17): a backlog larger than one round's budget
drains over several rounds to the end state one unbounded round reaches, and a steady alert round
reads nothing of configs that did not change (failures, drills, open alerts), also after a
restart (the due times are in the database, not in the process).

Real app, real SQLite and PostgreSQL (``client``'s ``db_url`` runs each test on both)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backend.backups.tables import Alert, BackupConfig, BackupLog
from backend.services import Services, alerts, retention
from backend.services.last_backup import refresh_last_backups
from backend.services.tasks import PeriodicTasks
from tests.support.api import ApiClient, signed_in_user
from tests.support.fleet import DAILY, Fleet, seed_fleet
from tests.support.queries import count_queries


async def _backlog(client: ApiClient, services: Services, now: datetime) -> tuple[Fleet, set[Any]]:
    """12 new configs whose every backup is 60 days old: each misses its daily schedule, and
    retention (30 days) removes all but the newest of each. The ids retention must remove."""
    await client.signup()
    me = await signed_in_user(client, services)
    await services.tasks.started()
    fleet = await seed_fleet(
        me.id, now=now, configs=12, backups_per_config=3, retention_days=30, schedule=DAILY
    )
    for config in fleet.config_ids:
        rows = await BackupLog.select(BackupLog.id, BackupLog.started_at).where(
            BackupLog.config == config
        )
        for row in rows:
            old = row["started_at"] - timedelta(days=60)
            await BackupLog.update({BackupLog.started_at: old, BackupLog.completed_at: old}).where(
                BackupLog.id == row["id"]
            )
    await refresh_last_backups(fleet.config_ids)
    newest = {
        r["last_backup_id"]
        for r in await BackupConfig.select(BackupConfig.last_backup_id).where(
            BackupConfig.id.is_in(fleet.config_ids)
        )
    }
    return fleet, set(fleet.backup_ids) - newest


async def _expired() -> set[Any]:
    return {
        r["id"] for r in await BackupLog.select(BackupLog.id).where(BackupLog.status == "expired")
    }


async def test_a_backlog_drains_over_rounds_of_a_few_configs_each(
    client: ApiClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    fleet, removable = await _backlog(client, services, now)
    for module in (retention, alerts):
        monkeypatch.setattr(module, "CONFIGS_PER_BATCH", 2)
        monkeypatch.setattr(module, "ROUND_CONFIGS", 5)

    reports = [await services.tasks.retention.run(now) for _ in range(4)]
    assert [len(r.expired) for r in reports] == [10, 10, 4, 0]
    assert [r.more for r in reports] == [True, True, False, False]
    assert await _expired() == removable and len(removable) == 24

    opened = []
    for _ in range(4):
        report = await services.alerts.evaluate(now)
        opened.append((len(report.opened), len(report.resolved), report.more))
    assert opened == [(5, 0, True), (5, 0, True), (2, 0, False), (0, 0, False)]
    open_alerts = await Alert.select(Alert.subject).where(Alert.resolved_at.is_null())
    assert sorted(a["subject"] for a in open_alerts) == sorted(
        f"config:{c}" for c in fleet.config_ids
    )


async def test_a_round_out_of_time_leaves_the_rest_to_the_next(
    client: ApiClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no time at all, a round still does one batch and deletes one archive of it; the
    configs whose archives it left are looked at again, so the backlog drains all the same."""
    now = datetime.now(UTC)
    _, removable = await _backlog(client, services, now)
    monkeypatch.setattr(retention, "CONFIGS_PER_BATCH", 2)
    monkeypatch.setattr(services.tasks.retention, "budget_seconds", 1e-9)
    rounds = []
    for _ in range(100):
        report = await services.tasks.retention.run(now)
        rounds.append(len(report.expired))
        if not report.more:
            break
    assert not report.more and rounds == [1] * 24  # one archive a round
    assert await _expired() == removable
    assert (await services.tasks.retention.run(now)).expired == []
    # The alert round: one config a round, each late one's alert opened when its turn comes.
    fast = dataclasses.replace(services.alerts.settings, round_budget_seconds=1e-9)
    monkeypatch.setattr(services.alerts, "settings", fast)
    opened = []
    for _ in range(13):
        report = await services.alerts.evaluate(now)
        opened.append((len(report.opened), report.more))
    assert opened == [(1, True)] * 11 + [(1, False), (0, False)]


async def _fail_newest(configs: list[uuid.UUID], now: datetime) -> None:
    """The newest backup of these configs failed for good an hour ago."""
    for config in configs:
        newest = (
            await BackupLog.select(BackupLog.id)
            .where(BackupLog.config == config)
            .order_by(BackupLog.started_at, ascending=False)
            .first()
        )
        assert newest is not None
        await BackupLog.update(
            {BackupLog.status: "failed", BackupLog.error: "disk full", BackupLog.attempt: 1}
        ).where(BackupLog.id == newest["id"])
    await refresh_last_backups(configs)


async def _drill(configs: list[uuid.UUID]) -> None:
    """These configs take snapshots and want a weekly restore drill (none is due yet)."""
    options = {"type": "incremental", "drill": {"every": "weekly"}, "schedule": DAILY}
    await BackupConfig.update({BackupConfig.options: options}).where(BackupConfig.id.is_in(configs))
    await BackupLog.update({BackupLog.backup_type: "incremental"}).where(
        BackupLog.config.is_in(configs)
    )
    await refresh_last_backups(configs)


async def test_a_steady_alert_round_reads_nothing_of_failures_drills_or_alerts_that_did_not_change(
    client: ApiClient, services: Services, settings: Any
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    await services.tasks.started()
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, configs=10, backups_per_config=2, schedule=DAILY)
    await _fail_newest(fleet.config_ids[:2], now)
    await _drill(fleet.config_ids[2:4])

    async def round_cost(tasks: PeriodicTasks = services.tasks) -> tuple[int, int]:
        with count_queries() as log:
            await tasks.run_alerts(now)
        return len(log), log.rows

    await round_cost()  # every config is new: its failure opens an alert
    steady_small = await round_cost()
    await seed_fleet(
        me.id,
        now=now,
        agents=20,
        configs=200,
        backups_per_config=2,
        schedule=DAILY,
        first=10,
        fleet=fleet,
    )
    await _fail_newest(fleet.config_ids[10:110], now)
    await _drill(fleet.config_ids[110:160])
    await round_cost()
    assert await round_cost() == steady_small
    failing = await Alert.select(Alert.subject).where(
        Alert.resolved_at.is_null() & (Alert.kind == "backup_failed")
    )
    assert len(failing) == 102
    assert await Alert.count().where(Alert.kind != "backup_failed") == 0
    # A restart (another process): the due times are in the database, nothing is read again.
    restarted = PeriodicTasks(settings, services.storage, holder="server restarted pid 2")
    assert await round_cost(restarted) == steady_small

    # A config whose backup then completes is read, and only its failure alert resolves.
    later = now - timedelta(minutes=10)
    await BackupLog.update(
        {BackupLog.status: "completed", BackupLog.started_at: later, BackupLog.completed_at: later}
    ).where((BackupLog.config == fleet.config_ids[50]) & (BackupLog.status != "failed"))
    await refresh_last_backups([fleet.config_ids[50]])
    report = await restarted.run_alerts(now)
    assert report is not None and len(report.resolved) == 1 and report.opened == []
    assert await Alert.count().where(Alert.resolved_at.is_null()) == 101
    assert await round_cost(restarted) == steady_small


async def test_a_maintenance_command_drains_the_whole_backlog_at_once(
    client: ApiClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``backapp maintenance run`` (``drain``) does everything due, not one round's budget."""
    now = datetime.now(UTC)
    _, removable = await _backlog(client, services, now)
    monkeypatch.setattr(retention, "CONFIGS_PER_BATCH", 2)
    monkeypatch.setattr(retention, "ROUND_CONFIGS", 5)
    monkeypatch.setattr(services.tasks, "drain", True)
    report = await services.tasks.maintain(now)
    assert set(report.retention.expired) == {str(b) for b in removable}
    assert not report.retention.more


async def test_housekeeping_finds_leftover_uploads_by_index_not_by_reading_every_backup(
    client: ApiClient, services: Services
) -> None:
    """SQLite picks an index by rule: without the upload-state index the look for uploads that
    finished runs left open reads every finished backup (the status index) each round."""
    if getattr(BackupLog._meta.db, "engine_type", "") != "sqlite":
        pytest.skip("PostgreSQL plans by its statistics; SQLite's plan is the one fixed by rule")
    with count_queries() as log:
        await services.tasks.sweeper.abort_leftover_uploads()
    [statement] = [s for s in log.statements if "upload_state" in s]
    plan = await BackupLog.raw(f"EXPLAIN QUERY PLAN {statement}")
    assert any("backapp_backup_log_upload_state" in str(row["detail"]) for row in plan), plan


async def test_a_backlog_of_silent_agents_is_marked_offline_over_bounded_rounds(
    client: ApiClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an upgrade or an outage every silent agent is due at once: the presence round marks
    a batch at a time within its budget and says ``more`` until all are marked, ending where one
    unbounded round ends (the same agents marked, their configs ranked offline)."""
    from backend.agents.tables import Agent
    from backend.services import offline
    from backend.services.last_backup import OFFLINE

    await client.signup()
    me = await signed_in_user(client, services)
    await services.tasks.started()
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, agents=7, configs=14, backups_per_config=1)
    silent = fleet.agent_ids[:5]
    await Agent.update({Agent.last_seen: now - timedelta(days=2)}).where(Agent.id.is_in(silent))
    monkeypatch.setattr(offline, "MARK_BATCH", 2)
    monkeypatch.setattr(offline, "ROUND_AGENTS", 2)
    reports = []
    while not reports or reports[-1].more:
        report = await services.tasks.run_presence(now)
        assert report is not None
        reports.append(report)
        assert len(reports) < 10, reports
    assert [(r.marked, r.more) for r in reports] == [(2, True), (2, True), (1, False)]
    marked = await Agent.select(Agent.id).where(Agent.offline_since.is_not_null())
    assert {r["id"] for r in marked} == set(silent)
    severity = await BackupConfig.select(BackupConfig.agent, BackupConfig.severity).where(
        BackupConfig.id.is_in(fleet.config_ids)
    )
    assert {r["agent"] for r in severity if r["severity"] == OFFLINE} == set(silent)
    assert all(r["severity"] != OFFLINE for r in severity if r["agent"] not in silent)
    # No time at all: each round still marks one batch, so the backlog drains.
    await Agent.update({Agent.offline_since: None}).where(Agent.id.is_in(silent))
    monkeypatch.setattr(offline, "ROUND_AGENTS", 1000)
    fast = dataclasses.replace(services.settings, round_budget_seconds=1e-9)
    first = await offline.mark_offline(now, fast)
    assert (len(first.agents), first.more) == (2, True)


async def test_housekeeping_finds_dead_runs_among_the_running_not_by_reading_every_backup(
    client: ApiClient, services: Services
) -> None:
    """The look for runs whose runner died reads the running backups in start order: without a
    ``(status, started_at)`` index SQLite walks the start-time index over every backup (16 s at
    a million backups) to find the few that run."""
    if getattr(BackupLog._meta.db, "engine_type", "") != "sqlite":
        pytest.skip("PostgreSQL plans by its statistics; SQLite's plan is the one fixed by rule")
    with count_queries() as log:
        await services.tasks.sweeper.interrupt_dead(datetime.now(UTC))
    [statement] = [s for s in log.statements if "lease_token" in s and "ORDER BY" in s]
    plan = await BackupLog.raw(f"EXPLAIN QUERY PLAN {statement}")
    assert any("backapp_backup_log_status_started" in str(row["detail"]) for row in plan), plan
