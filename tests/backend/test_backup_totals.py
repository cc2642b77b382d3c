"""Each owner's backup totals per status (count and bytes) are kept by the database in the
transaction of every write to the history (issue 17: the dashboard reads a few rows, not every
backup): a backup started, completed, failed, cancelled, interrupted, expired, resized, moved to
another owner, deleted, and a deleted user; a deleted config or agent leaves them as they are.
The migration's back-fill counts an existing history.

Real app, real SQLite and PostgreSQL (``client``'s ``db_url`` runs each test on both)."""

from __future__ import annotations

import importlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from backend.accounts.tables import User
from backend.backups.tables import BackupLog
from backend.services import Services
from backend.services.accounts import CurrentUser
from tests.support.api import ApiClient, complete_one_backup, signed_in_user
from tests.support.fleet import seed_fleet
from tests.support.queries import count_queries

MIGRATION = "backend.backups.piccolo_migrations.backups_2026_12_02t14_05_00_000000"


async def _kept() -> dict[tuple[str, str], tuple[int, int]]:
    """The stored totals, leaving out rows that went back to nothing."""
    rows = await BackupLog.raw('SELECT "user", status, n, bytes FROM backapp_backup_totals')
    return {
        (str(r["user"]), r["status"]): (int(r["n"]), int(r["bytes"]))
        for r in rows
        if r["n"] or r["bytes"]
    }


async def _truth() -> dict[tuple[str, str], tuple[int, int]]:
    """The totals counted from the history itself."""
    rows = await BackupLog.raw(
        'SELECT "user", status, COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes'
        ' FROM backapp_backup_log GROUP BY "user", status'
    )
    return {(str(r["user"]), r["status"]): (int(r["n"]), int(r["bytes"])) for r in rows}


async def _mine(me: CurrentUser) -> dict[str, tuple[int, int]]:
    kept = await _kept()
    assert kept == await _truth()
    return {status: v for (user, status), v in kept.items() if user == str(me.id)}


async def _start(client: ApiClient, key: str, config_id: str) -> str:
    r = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": config_id, "filename": f"b-{uuid.uuid4().hex[:8]}.tar.gz", "filesize": 3},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["logId"])


async def _end(client: ApiClient, key: str, log_id: str, status: str) -> None:
    body: dict[str, Any] = {"logId": log_id, "status": status, "error": f"{status} here"}
    r = await client.agent_post(key, "/api/agent/backup/complete", body)
    assert r.status_code == 200, r.text


async def test_the_totals_follow_every_status_change(client: ApiClient, services: Services) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    agent_id, key = await client.register_agent()
    config = (await client.create_config(agent_id))["id"]
    assert await _mine(me) == {}

    # Through the agent API: started, completed (3 verified bytes), failed, cancelled.
    running = await _start(client, key, config)
    assert await _mine(me) == {"running": (1, 0)}
    await complete_one_backup(client, key, config)
    assert await _mine(me) == {"running": (1, 0), "completed": (1, 3)}
    await _end(client, key, running, "failed")
    assert await _mine(me) == {"completed": (1, 3), "failed": (1, 0)}
    await _end(client, key, await _start(client, key, config), "cancelled")
    assert (await _mine(me))["cancelled"] == (1, 0)

    # Its runner died: the housekeeping sweep marks it interrupted.
    await _start(client, key, config)
    assert await services.tasks.sweeper.interrupt_dead(datetime.now(UTC) + timedelta(days=2))
    assert (await _mine(me))["interrupted"] == (1, 0) and "running" not in await _mine(me)

    # Many at once (retention's batch), a size written later, one removed.
    fleet = await seed_fleet(me.id, now=datetime.now(UTC), agents=1, configs=3)
    assert (await _mine(me))["completed"] == (10, 9003)
    await BackupLog.update({BackupLog.status: "expired"}).where(
        BackupLog.id.is_in(fleet.backup_ids[:4])
    )
    assert (await _mine(me))["completed"] == (6, 5003)
    assert (await _mine(me))["expired"] == (4, 4000)
    await BackupLog.update({BackupLog.size: 1500}).where(BackupLog.id == fleet.backup_ids[4])
    assert (await _mine(me))["completed"] == (6, 5503)
    await BackupLog.delete().where(BackupLog.id == fleet.backup_ids[5])
    assert (await _mine(me))["completed"] == (5, 4503)
    # Progress writes change nothing.
    await BackupLog.update({BackupLog.progress: {"files": 1}}).where(
        BackupLog.id == fleet.backup_ids[6]
    )
    assert (await _mine(me))["completed"] == (5, 4503)

    # Deleting the config and the agent keeps the history, and the totals.
    before = await _mine(me)
    assert (await client.delete(f"/api/configs/{config}")).status_code == 204
    assert (await client.delete(f"/api/agents/{agent_id}")).status_code == 204
    assert await _mine(me) == before

    # The dashboard shows them.
    page = (await client.get("/")).text
    assert "stored in 5 verified backups" in page

    # Another owner: a backup moved to them, then that user deleted with their history.
    other = uuid.uuid4()
    await User.insert(
        User(id=other, email="other@example.com", password_hash="x", created_at=datetime.now(UTC))
    )
    await BackupLog.update({BackupLog.user: other}).where(BackupLog.id == fleet.backup_ids[7])
    assert (await _mine(me))["completed"] == (4, 3503)
    assert (await _kept())[(str(other), "completed")] == (1, 1000)
    await User.delete().where(User.id == other)
    assert await _kept() == await _truth()
    assert not [k for k in await _kept() if k[0] == str(other)]


async def test_the_migration_back_fills_the_totals(
    client: ApiClient, services: Services, monkeypatch: Any
) -> None:
    migration = importlib.import_module(MIGRATION)
    await client.signup()
    me = await signed_in_user(client, services)
    fleet = await seed_fleet(me.id, now=datetime.now(UTC), agents=1, configs=4)
    await BackupLog.update({BackupLog.status: "failed"}).where(
        BackupLog.id.is_in(fleet.backup_ids[:3])
    )
    engine = BackupLog._meta.db
    # An upgraded database: a history written before the triggers and the totals existed.
    await migration.drop(engine)
    await BackupLog.raw("DELETE FROM backapp_backup_totals")
    await BackupLog.update({BackupLog.status: "completed"}).where(
        BackupLog.id == fleet.backup_ids[0]
    )
    assert await _kept() == {}
    await migration.create(engine)
    assert await _mine(me) == {"completed": (10, 10000), "failed": (2, 2000)}
    # And the triggers are back.
    await BackupLog.delete().where(BackupLog.id == fleet.backup_ids[1])
    assert await _mine(me) == {"completed": (10, 10000), "failed": (1, 1000)}


async def test_the_history_lists_total_comes_from_the_kept_totals(
    client: ApiClient, services: Services
) -> None:
    """``GET /api/backups`` answers ``total`` from the kept totals (a few rows) when it is not
    filtered, or filtered by status only, and still counts exactly; other filters count rows."""
    await client.signup()
    me = await signed_in_user(client, services)
    agent_id, key = await client.register_agent()
    config = (await client.create_config(agent_id))["id"]
    await complete_one_backup(client, key, config)
    await _end(client, key, await _start(client, key, config), "failed")
    await _start(client, key, config)
    await seed_fleet(me.id, now=datetime.now(UTC), agents=1, configs=2)
    truth = {status: n for status, (n, _) in (await _mine(me)).items()}

    with count_queries(own_task_only=True) as log:
        r = await client.get("/api/backups", params={"limit": 2})
    assert r.status_code == 200, r.text
    assert r.json()["total"] == sum(truth.values())
    assert not [q for q in log.statements if "COUNT(" in q.upper() and "backup_log" in q]
    for status, n in truth.items():
        r = await client.get("/api/backups", params={"status": status, "limit": 1})
        assert r.json()["total"] == n, status
    r = await client.get("/api/backups", params={"configId": config, "status": "failed"})
    assert r.json()["total"] == 1
