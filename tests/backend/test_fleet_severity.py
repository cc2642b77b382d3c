"""Each config's dashboard severity is stored on its row (issue 17) and stays right: a failed
backup, an overdue config, a deactivated or deleted agent, a config that recovers, a verified
backup that ages past a day between two alert rounds; a silent agent's configs rank as offline
without being stored so. The dashboard reads a page of them whatever the number of problems, and
the alert round does not re-read configs whose alert is already open.

Real app, real SQLite and PostgreSQL (``client``'s ``db_url`` runs each test on both)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backend.agents.tables import Agent
from backend.backups.tables import Alert, BackupConfig, BackupLog
from backend.services import Services
from backend.services.agent_registry import AgentIdentity
from backend.services.last_backup import (
    BLOCKED,
    FAILING,
    FINE,
    OFFLINE,
    RUNNING,
    STALE,
    refresh_last_backups,
)
from backend.services.offline import mark_offline
from backend.services.overview import OverviewService
from tests.support.api import ApiClient, signed_in_user
from tests.support.fleet import DAILY, Fleet, seed_fleet
from tests.support.queries import count_queries


async def _stored(config_ids: list[object]) -> list[int]:
    rows = await BackupConfig.select(BackupConfig.id, BackupConfig.severity).where(
        BackupConfig.id.is_in(config_ids)
    )
    by_id = {r["id"]: r["severity"] for r in rows}
    return [by_id[c] for c in config_ids]


async def _newest(config_id: object) -> object:
    row = (
        await BackupLog.select(BackupLog.id)
        .where(BackupLog.config == config_id)
        .order_by(BackupLog.started_at, ascending=False)
        .first()
    )
    assert row is not None
    return row["id"]


async def test_the_stored_severity_follows_failures_recoveries_and_agents(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, agents=2, configs=6, backups_per_config=2)
    ids = fleet.config_ids
    assert await _stored(ids) == [FINE] * 6

    # A failed backup, a running one, an overdue config.
    await BackupLog.update({BackupLog.status: "failed"}).where(
        BackupLog.id == await _newest(ids[0])
    )
    running = await _newest(ids[1])
    await BackupLog.update({BackupLog.status: "running"}).where(BackupLog.id == running)
    recent = now - timedelta(hours=3)  # the one before it: a fresh verified backup
    await BackupLog.update({BackupLog.started_at: recent, BackupLog.completed_at: recent}).where(
        (BackupLog.config == ids[1]) & (BackupLog.id != running)
    )
    old = now - timedelta(days=3)
    await BackupLog.update({BackupLog.started_at: old, BackupLog.completed_at: old}).where(
        BackupLog.config == ids[2]
    )
    await refresh_last_backups(ids[:3])
    assert await _stored(ids) == [FAILING, RUNNING, STALE, FINE, FINE, FINE]

    # They recover: a completed backup after each.
    recent = now - timedelta(minutes=5)
    for config_id in ids[:3]:
        await BackupLog.update(
            {
                BackupLog.status: "completed",
                BackupLog.started_at: recent,
                BackupLog.completed_at: recent,
            }
        ).where(BackupLog.id == await _newest(config_id))
    await refresh_last_backups(ids[:3])
    assert await _stored(ids) == [FINE] * 6

    # Deactivating an agent blocks its configs (0, 2, 4), through the owner API; reactivating
    # it unblocks them.
    agent = str(fleet.agent_ids[0])
    assert (await client.patch(f"/api/agents/{agent}", json={"active": False})).status_code == 200
    assert await _stored(ids) == [BLOCKED, FINE] * 3
    assert (await client.patch(f"/api/agents/{agent}", json={"active": True})).status_code == 200
    assert await _stored(ids) == [FINE] * 6

    # Deleting the other agent leaves its configs (1, 3, 5) without one: blocked.
    assert (await client.delete(f"/api/agents/{fleet.agent_ids[1]}")).status_code == 204
    assert await _stored(ids) == [FINE, BLOCKED] * 3


async def test_a_silent_agent_is_marked_offline_by_the_round_and_cleared_by_its_heartbeat(
    client: ApiClient, services: Services
) -> None:
    """The presence round stores "offline" on a silent agent and ranks its configs offline; the
    heartbeat flush clears it when the agent beats again, and a flush of agents that beat
    steadily runs no statement for it."""
    await client.signup()
    me = await signed_in_user(client, services)
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, agents=2, configs=4, backups_per_config=1)
    silent = fleet.agent_ids[1]
    await services.tasks.started()  # the start-up round is over: the next one is ours
    await Agent.update({Agent.last_seen: now - timedelta(days=2)}).where(Agent.id == silent)
    service = OverviewService(services.agents)
    ids = [str(c) for c in fleet.config_ids]
    # Not marked before the round: the agents are counted from last_seen, the configs not yet.
    overview = await service.overview(me, now, rows=10, agent_rows=5)
    assert [sev for _, sev in overview.shown] == [FINE] * 4
    assert (overview.agent_total, overview.agents_online) == (2, 1)

    await services.tasks.run_presence(now)
    assert await _stored(fleet.config_ids) == [FINE, OFFLINE] * 2
    marked = await Agent.select(Agent.id).where(Agent.offline_since.is_not_null())
    assert [r["id"] for r in marked] == [silent]
    overview = await service.overview(me, now, rows=10, agent_rows=5)
    assert overview.shown == [
        (ids[1], OFFLINE),
        (ids[3], OFFLINE),
        (ids[0], FINE),
        (ids[2], FINE),
    ]
    assert overview.attention == 2 and overview.healthy == 4
    assert (overview.agent_total, overview.agents_online) == (2, 1)
    assert [a.id for a in overview.agents] == [str(silent), str(fleet.agent_ids[0])]
    # A second round marks nothing more.
    assert (await mark_offline(now, services.settings)).agents == []

    # It beats again: the flush writes last_seen and unmarks it, its configs are fine again.
    registry = services.agents.registry
    beat = AgentIdentity(
        id=silent, user_id=me.id, name="machine-00001", platform=None, version=None
    )
    await registry.heartbeat(beat, None, None)
    with count_queries(own_task_only=True) as log:
        await registry.flush()
    assert len(log) == 3, log.statements  # last_seen; unmark the agent; rank its configs
    assert await Agent.count().where(Agent.offline_since.is_not_null()) == 0
    assert await _stored(fleet.config_ids) == [FINE] * 4
    overview = await service.overview(me, now, rows=10, agent_rows=5)
    assert [sev for _, sev in overview.shown] == [FINE] * 4
    assert overview.attention == 0
    # While it beats steadily, a flush is the one last_seen write.
    await registry.heartbeat(beat, None, None)
    with count_queries(own_task_only=True) as log:
        await registry.flush()
    assert len(log) == 1, log.statements


async def test_a_backup_that_ages_past_a_day_counts_before_the_alert_round_moves_it(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, agents=1, configs=3, backups_per_config=1)
    ids = [str(c) for c in fleet.config_ids]
    # Config 1's only backup is 23 hours old: fine now, overdue two hours later.
    aging = now - timedelta(hours=23)
    await BackupLog.update({BackupLog.started_at: aging, BackupLog.completed_at: aging}).where(
        BackupLog.config == fleet.config_ids[1]
    )
    await refresh_last_backups(fleet.config_ids[1:2])
    assert await _stored(fleet.config_ids) == [FINE] * 3
    later = now + timedelta(hours=2)
    await Agent.update({Agent.last_seen: later}).where(Agent.id == fleet.agent_ids[0])
    service = OverviewService(services.agents)
    # Before any round: counted and shown as overdue from its last_ok_at.
    overview = await service.overview(me, later, rows=10, agent_rows=5)
    assert overview.shown[0] == (ids[1], STALE)
    assert (overview.attention, overview.healthy) == (1, 2)
    # The alert round stores it; the dashboard says the same.
    await services.alerts.evaluate(later)
    assert await _stored(fleet.config_ids) == [FINE, STALE, FINE]
    assert await service.overview(me, later, rows=10, agent_rows=5) == overview


@pytest.mark.parametrize("fills", ["failing", "offline"])
async def test_the_dashboard_reads_a_page_however_many_problems(
    client: ApiClient, services: Services, monkeypatch: pytest.MonkeyPatch, fills: str
) -> None:
    """Statements and rows of the dashboard are the same with a few failing configs and one
    silent agent out of 10 as with 200 more failing configs and 40 more silent agents out of
    500: it reads a page and counts, not every problem. ``fills``: what fills its page of 4
    (failing configs, or configs of offline agents when none fails)."""
    from backend.web import _dashboard

    monkeypatch.setattr(_dashboard, "DASHBOARD_ROWS", 4)
    monkeypatch.setattr(_dashboard, "DASHBOARD_AGENTS", 1)
    await client.signup()
    me = await signed_in_user(client, services)
    await services.tasks.started()
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, agents=2, configs=10, backups_per_config=1)
    failing = 5 if fills == "failing" else 0

    async def fail(config_ids: list[object]) -> None:
        await BackupLog.update({BackupLog.status: "failed", BackupLog.error: "disk full"}).where(
            BackupLog.config.is_in(config_ids)
        )
        await refresh_last_backups(config_ids)

    async def cost() -> tuple[int, int]:
        with count_queries() as log:
            r = await client.get("/")
        assert r.status_code == 200
        return len(log), log.rows

    silent = now - timedelta(days=2)
    if failing:
        await fail(fleet.config_ids[:failing])
    await Agent.update({Agent.last_seen: silent}).where(Agent.id == fleet.agent_ids[1])
    await mark_offline(now, services.settings)
    small = await cost()
    assert f"{10 - failing}/10" in (await client.get("/")).text
    big_fleet = Fleet()
    await seed_fleet(
        me.id, now=now, agents=98, configs=490, backups_per_config=1, first=10, fleet=big_fleet
    )
    if failing:
        await fail(big_fleet.config_ids[:200])
    await Agent.update({Agent.last_seen: silent}).where(Agent.id.is_in(big_fleet.agent_ids[:40]))
    await mark_offline(now, services.settings)
    assert await cost() == small
    overview = await OverviewService(services.agents).overview(me, now, rows=4, agent_rows=1)
    assert overview.config_total == 500
    # The silent agents' configs that do not fail are offline: agent 1 of the first fleet has
    # configs 1, 3, 5, 7, 9; each of the 40 silent agents of the second has 5.
    offline_small = sum(1 for i in (1, 3, 5, 7, 9) if i >= failing)
    offline_big = sum(1 for i in range(490) if i % 98 < 40 and i >= (200 if failing else 0))
    assert overview.attention == (failing and failing + 200) + offline_small + offline_big
    assert [sev for _, sev in overview.shown] == [FAILING if failing else OFFLINE] * 4
    assert overview.agents_online == 100 - 41


async def test_late_configs_are_not_read_again_by_the_next_alert_rounds(
    client: ApiClient, services: Services
) -> None:
    """The steady alert round costs the same with 2 late configs out of 10 as with 202 out of
    500: an open missed-backup alert is not looked at again before it could clear."""
    await client.signup()
    me = await signed_in_user(client, services)
    await services.tasks.started()
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, configs=10, backups_per_config=1, schedule=DAILY)
    old = now - timedelta(days=3)

    async def late(config_ids: list[object]) -> None:
        await BackupLog.update({BackupLog.started_at: old, BackupLog.completed_at: old}).where(
            BackupLog.config.is_in(config_ids)
        )
        await refresh_last_backups(config_ids)

    async def round_cost() -> tuple[int, int]:
        with count_queries() as log:
            await services.alerts.evaluate(now)
        return len(log), log.rows

    await late(fleet.config_ids[:2])
    await round_cost()
    small = await round_cost()
    more = await seed_fleet(
        me.id, now=now, agents=49, configs=490, backups_per_config=1, schedule=DAILY, first=10
    )
    await late(more.config_ids[:200])
    await round_cost()
    assert await round_cost() == small
    opened = await Alert.count().where(
        Alert.resolved_at.is_null() & (Alert.kind == "missed_backup")
    )
    assert opened == 202
    # A late config deleted: its alert is resolved by the next round.
    await BackupConfig.delete().where(BackupConfig.id == more.config_ids[0])
    await round_cost()
    still = await Alert.select(Alert.subject).where(
        Alert.resolved_at.is_null() & (Alert.kind == "missed_backup")
    )
    assert len(still) == 201
    assert f"config:{more.config_ids[0]}" not in {a["subject"] for a in still}


async def test_one_shot_agents_between_runs_are_idle_not_offline(
    client: ApiClient, services: Services
) -> None:
    """A silent one-shot agent is marked offline only once it missed its next run: the configs
    of an idle one stay fine."""
    await client.signup()
    me = await signed_in_user(client, services)
    now = datetime.now(UTC)
    fleet = await seed_fleet(
        me.id, now=now, agents=3, configs=9, backups_per_config=1, schedule=DAILY
    )
    _, idle, gone = fleet.agent_ids
    await Agent.update({Agent.mode: "oneshot", Agent.last_seen: now - timedelta(minutes=10)}).where(
        Agent.id == idle
    )
    await Agent.update({Agent.mode: "oneshot", Agent.last_seen: now - timedelta(days=3)}).where(
        Agent.id == gone
    )
    # Later than the offline threshold, earlier than the idle agent's next daily run.
    later = now + timedelta(seconds=services.settings.offline_after_seconds)
    assert (await mark_offline(later, services.settings)).agents == [gone]
    ids = [str(c) for c in fleet.config_ids]  # config i runs on agent i % 3
    assert await _stored(fleet.config_ids) == [FINE, FINE, OFFLINE] * 3
    service = OverviewService(services.agents)
    overview = await service.overview(me, now, rows=2, agent_rows=5)
    assert overview.shown == [(ids[2], OFFLINE), (ids[5], OFFLINE)]
    assert overview.attention == 3
    assert [a.id for a in overview.agents] == [str(gone), str(idle), str(fleet.agent_ids[0])]
    assert [a.status for a in overview.agents] == ["offline", "idle", "online"]
    assert overview.agents_online == 1
    overview = await service.overview(me, now, rows=9, agent_rows=5)
    offline = [(ids[i], OFFLINE) for i in (2, 5, 8)]
    assert overview.shown == offline + [(ids[i], FINE) for i in (0, 1, 3, 4, 6, 7)]
    # Once its next run (and grace) has passed with no word from it, the idle one is offline
    # (and so is the daemon agent, silent for two days by then).
    marked = (await mark_offline(now + timedelta(days=2), services.settings)).agents
    assert set(marked) == {idle, fleet.agent_ids[0]}


async def test_the_migration_back_fills_the_severity_as_the_services_compute_it(
    client: ApiClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The back-fill of an upgraded database: every state, on both databases, gives the value
    :func:`refresh_last_backups` stores."""
    import importlib

    migration = importlib.import_module(
        "backend.backups.piccolo_migrations.backups_2026_12_02t10_42_01_000000"
    )
    monkeypatch.setattr(migration, "engine_finder", lambda: BackupConfig._meta.db)
    await client.signup()
    me = await signed_in_user(client, services)
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, agents=2, configs=8, backups_per_config=2)
    ids = fleet.config_ids
    recent = now - timedelta(hours=3)  # the older backup of each: fresh too
    await BackupLog.update({BackupLog.started_at: recent, BackupLog.completed_at: recent}).where(
        BackupLog.started_at < now - timedelta(hours=2)
    )
    await BackupLog.update({BackupLog.status: "failed"}).where(
        BackupLog.id == await _newest(ids[0])
    )
    await BackupLog.update({BackupLog.status: "running"}).where(
        BackupLog.id == await _newest(ids[6])
    )
    old = now - timedelta(days=3)
    await BackupLog.update({BackupLog.started_at: old, BackupLog.completed_at: old}).where(
        BackupLog.config == ids[2]
    )
    await BackupLog.delete().where(BackupLog.config == ids[4])
    await Agent.update({Agent.active: False}).where(Agent.id == fleet.agent_ids[1])  # 1, 3, 5, 7
    await refresh_last_backups(ids)
    expected = await _stored(ids)
    assert expected == [FAILING, BLOCKED, STALE, BLOCKED, STALE, BLOCKED, RUNNING, BLOCKED]
    # An older database: the column at its default everywhere.
    await BackupConfig.update({BackupConfig.severity: STALE}, force=True)
    manager = await migration.forwards()
    await manager.run()
    assert await _stored(ids) == expected
    await manager.run()  # again: the indexes exist already
    assert await _stored(ids) == expected
