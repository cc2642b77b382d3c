"""Each owner's config counts per dashboard severity are kept by the database in the transaction
of every write (issue 17: the dashboard's counts read a few rows, not every config): a config
created, a backup that completes or fails, a deactivated agent, the presence round's offline
mark, a bulk insert, a config moved to another owner, a deleted config, agent or user. The
dashboard's figures equal those counted from every config row, also for configs whose verified
backup aged past a day since their severity was stored. The migration's back-fill counts what is
there.

Real app, real SQLite and PostgreSQL (``client``'s ``db_url`` runs each test on both)."""

from __future__ import annotations

import importlib
import uuid
from datetime import UTC, datetime, timedelta

from backend.accounts.tables import User
from backend.agents.tables import Agent
from backend.backups.tables import BackupConfig
from backend.services import Services
from backend.services.accounts import CurrentUser
from backend.services.last_backup import FAILING, OFFLINE, OVERDUE_AFTER, STALE
from backend.services.offline import mark_offline
from backend.services.overview import OverviewService
from tests.support.api import ApiClient, complete_one_backup, signed_in_user
from tests.support.fleet import seed_fleet
from tests.support.queries import count_queries

MIGRATION = "backend.backups.piccolo_migrations.backups_2026_12_02t17_40_00_000000"


async def _kept() -> dict[tuple[str, int], int]:
    """The stored counts, leaving out rows that went back to nothing."""
    rows = await BackupConfig.raw(
        'SELECT "user", severity, n FROM backapp_config_severity_counts WHERE n <> 0'
    )
    return {(str(r["user"]), int(r["severity"])): int(r["n"]) for r in rows}


async def _truth() -> dict[tuple[str, int], int]:
    rows = await BackupConfig.raw(
        'SELECT "user", severity, COUNT(*) AS n FROM backapp_backup_config GROUP BY "user", severity'
    )
    return {(str(r["user"]), int(r["severity"])): int(r["n"]) for r in rows}


async def _mine(me: CurrentUser) -> dict[int, int]:
    kept = await _kept()
    assert kept == await _truth()
    return {severity: n for (user, severity), n in kept.items() if user == str(me.id)}


async def test_the_counts_follow_every_change(client: ApiClient, services: Services) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    assert await _mine(me) == {}
    agent_id, key = await client.register_agent()
    config = (await client.create_config(agent_id))["id"]
    assert await _mine(me) == {STALE: 1}  # no verified backup yet
    await complete_one_backup(client, key, config)
    fine = await _mine(me)
    assert list(fine.values()) == [1] and STALE not in fine  # a verified backup now
    r = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": config, "filename": "b.tar.gz", "filesize": 3},
    )
    log_id = r.json()["logId"]
    await client.agent_post(
        key, "/api/agent/backup/complete", {"logId": log_id, "status": "failed", "error": "disk"}
    )
    assert await _mine(me) == {FAILING: 1}

    # A bulk insert (one statement), then their agent falls silent: the presence round.
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, agents=2, configs=6)
    assert sum((await _mine(me)).values()) == 7
    await Agent.update({Agent.last_seen: now - timedelta(days=3)}).where(
        Agent.id == fleet.agent_ids[0]
    )
    marked = await mark_offline(now, services.settings)
    assert fleet.agent_ids[0] in marked.agents
    assert (await _mine(me))[OFFLINE] == 3

    # Deleting a config, its agent, moving a config to another owner, deleting that owner.
    assert (await client.delete(f"/api/configs/{config}")).status_code == 204
    assert (await client.delete(f"/api/agents/{agent_id}")).status_code == 204
    assert sum((await _mine(me)).values()) == 6
    other = uuid.uuid4()
    await User.insert(User(id=other, email="other@example.com", password_hash="x", created_at=now))
    await BackupConfig.update({BackupConfig.user: other}).where(
        BackupConfig.id == fleet.config_ids[0]
    )
    assert sum((await _mine(me)).values()) == 5
    assert sum(n for (user, _), n in (await _kept()).items() if user == str(other)) == 1
    await User.delete().where(User.id == other)
    assert await _kept() == await _truth()
    # Writes that do not change the severity or owner leave the counts alone.
    await BackupConfig.update({BackupConfig.alert_due_at: now}).where(
        BackupConfig.id.is_in(fleet.config_ids)
    )
    assert sum((await _mine(me)).values()) == 5


async def test_the_dashboard_figures_equal_those_counted_from_every_config(
    client: ApiClient, services: Services
) -> None:
    """Also for configs whose verified backup turned more than a day old after their severity
    was stored (the alert round has not moved them yet): counted from ``last_ok_at``."""
    await client.signup()
    me = await signed_in_user(client, services)
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, agents=2, configs=12)
    old = now - OVERDUE_AFTER - timedelta(hours=2)
    # Aged without a new severity: four fine ones, and a failing one (whose age does not count).
    await BackupConfig.update({BackupConfig.last_ok_at: old}).where(
        BackupConfig.id.is_in(fleet.config_ids[:4])
    )
    await BackupConfig.update({BackupConfig.severity: FAILING}).where(
        BackupConfig.id.is_in(fleet.config_ids[3:6])
    )
    await BackupConfig.update({BackupConfig.last_ok_at: None}).where(
        BackupConfig.id == fleet.config_ids[6]
    )
    rows = await BackupConfig.select(BackupConfig.severity, BackupConfig.last_ok_at).where(
        BackupConfig.user == me.id
    )
    cutoff = now - OVERDUE_AFTER
    recent = [r["last_ok_at"] is not None and r["last_ok_at"] >= cutoff for r in rows]
    healthy = sum(1 for r, ok in zip(rows, recent, strict=True) if ok and r["severity"] != FAILING)
    attention = sum(
        1
        for r, ok in zip(rows, recent, strict=True)
        if r["severity"] <= STALE or not ok or r["severity"] == OFFLINE
    )
    with count_queries(own_task_only=True) as log:
        overview = await OverviewService(services.agents).overview(me, now, rows=5, agent_rows=5)
    assert (overview.config_total, overview.healthy, overview.attention) == (12, healthy, attention)
    assert (healthy, attention) == (5, 7)  # 4..11 recent, less 2 failing; 0..6
    # No statement groups or counts every config of the owner.
    assert not [q for q in log.statements if "GROUP BY" in q.upper()]


async def test_the_migration_back_fills_the_counts(client: ApiClient, services: Services) -> None:
    migration = importlib.import_module(MIGRATION)
    await client.signup()
    me = await signed_in_user(client, services)
    fleet = await seed_fleet(me.id, now=datetime.now(UTC), agents=1, configs=4)
    engine = BackupConfig._meta.db
    # An upgraded database: configs written before the triggers and the counts existed.
    await migration.drop(engine)
    await BackupConfig.raw("DELETE FROM backapp_config_severity_counts")
    await BackupConfig.update({BackupConfig.severity: FAILING}).where(
        BackupConfig.id == fleet.config_ids[0]
    )
    assert await _kept() == {}
    await migration.create(engine)
    counts = await _mine(me)
    assert counts[FAILING] == 1 and sum(counts.values()) == 4
    # And the triggers are back.
    await BackupConfig.delete().where(BackupConfig.id == fleet.config_ids[0])
    assert FAILING not in await _mine(me)
