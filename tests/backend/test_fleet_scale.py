"""Owner pages, lists and periodic rounds cost the same number of statements for 10 configs as for
500 (issue 17), and the keyset pagination that makes that possible is stable and tamper-proof.

Real app, real SQLite and PostgreSQL (``client``'s ``db_url`` runs each test on both)."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backend.agents.tables import Agent
from backend.api import owner
from backend.backups.tables import Alert, BackupConfig, BackupLog
from backend.services import Services
from backend.services.clock import aware
from backend.services.last_backup import refresh_last_backups
from tests.support.api import ApiClient, signed_in_user
from tests.support.fleet import DAILY, Fleet, seed_fleet
from tests.support.queries import count_queries

OWNER_PAGES = [
    "/",
    "/configs",
    "/agents",
    "/backups",
    "/backups?status=completed",
    "/api/configs",
    "/api/agents",
    "/api/backups",
]


async def _statements(client: ApiClient, path: str) -> int:
    with count_queries() as log:
        r = await client.get(path)
    assert r.status_code == 200, (path, r.text[:500])
    return len(log)


async def test_owner_pages_run_as_many_statements_for_500_configs_as_for_10(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    await services.tasks.started()
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, agents=2, configs=10, backups_per_config=2)
    small = {path: await _statements(client, path) for path in OWNER_PAGES}
    await seed_fleet(
        me.id, now=now, agents=98, configs=490, backups_per_config=2, first=10, fleet=fleet
    )
    big = {path: await _statements(client, path) for path in OWNER_PAGES}
    assert big == small
    # And the pages are bounded, not the whole fleet: the configs page shows its first 50.
    page = (await client.get("/configs")).text
    assert "config-00049" in page and "config-00050" not in page
    assert 'rel="next"' in page


async def test_the_dashboard_shows_problems_first_and_counts_every_config(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, agents=5, configs=120, backups_per_config=1)
    # The 100th config's newest backup failed: it must be on the dashboard despite 119 others.
    await BackupLog.update({BackupLog.status: "failed", BackupLog.error: "disk full"}).where(
        BackupLog.config == fleet.config_ids[99]
    )
    await refresh_last_backups([fleet.config_ids[99]])  # behind the services' back
    page = (await client.get("/")).text
    assert "config-00099" in page
    assert page.index("config-00099") < page.index("config-00000")
    assert "119/120" in page  # up to date, counted over every config
    assert "disk full" in page


async def _walk(client: ApiClient, path: str, key: str, limit: int) -> list[str]:
    seen: list[str] = []
    after: str | None = None
    for _ in range(100):
        sep = "&" if "?" in path else "?"
        url = f"{path}{sep}limit={limit}" + (f"&after={after}" if after else "")
        body = (await client.get(url)).json()
        seen += [item["id"] for item in body[key]]
        after = body["nextAfter"]
        if after is None:
            return seen
    raise AssertionError("the pages never ended")


async def test_backup_pages_follow_a_stable_order_through_ties(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    now = datetime.now(UTC).replace(microsecond=0)
    fleet = await seed_fleet(me.id, now=now, configs=4, backups_per_config=3)
    # Ties: every backup of a day started at the same instant.
    full = (await client.get("/api/backups?limit=500")).json()
    order = [b["id"] for b in full["backups"]]
    assert full["total"] == 12 and len(order) == 12
    for limit in (1, 2, 5):
        assert await _walk(client, "/api/backups", "backups", limit) == order
    started = [datetime.fromisoformat(b["startedAt"]) for b in full["backups"]]
    assert started == sorted(started, reverse=True)
    assert len(set(started)) == 3  # ties indeed
    # Offset paging (the spec's contract) still answers, and hands over to keyset paging.
    page = (await client.get("/api/backups?limit=5&offset=5")).json()
    assert [b["id"] for b in page["backups"]] == order[5:10] and page["total"] == 12
    rest = (await client.get(f"/api/backups?limit=5&after={page['nextAfter']}")).json()
    assert [b["id"] for b in rest["backups"]] == order[10:] and rest["total"] is None
    assert len(fleet.backup_ids) == 12


async def test_offset_pages_read_from_the_nearer_end_and_match_the_order(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    now = datetime.now(UTC).replace(microsecond=0)
    fleet = await seed_fleet(me.id, now=now, configs=4, backups_per_config=5)
    queries = ["", "&status=completed", f"&configId={fleet.config_ids[2]}", "&status=failed"]
    for query in queries:
        order = [
            b["id"] for b in (await client.get(f"/api/backups?limit=500{query}")).json()["backups"]
        ]
        for limit in (1, 3, 7):
            for offset in range(len(order) + 2):
                url = f"/api/backups?limit={limit}&offset={offset}{query}"
                page = (await client.get(url)).json()
                assert page["total"] == len(order), url
                assert [b["id"] for b in page["backups"]] == order[offset : offset + limit], url
    # The last page of the history skips from the oldest end: its OFFSET is 0, not 18.
    with count_queries() as log:
        assert len((await client.get("/api/backups?limit=2&offset=18")).json()["backups"]) == 2
    skipped = [int(n) for s in log.statements for n in re.findall(r"OFFSET (\d+)", s)]
    assert skipped == [0], log.statements


async def test_an_offset_deeper_than_the_window_from_both_ends_is_refused(
    client: ApiClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    await seed_fleet(me.id, now=datetime.now(UTC), configs=4, backups_per_config=5)
    order = [b["id"] for b in (await client.get("/api/backups?limit=500")).json()["backups"]]
    monkeypatch.setattr(owner, "OFFSET_WINDOW", 4)
    # 20 backups, pages of 3: offsets 0-4 are near the newest, 13 and deeper near the oldest.
    for offset in (0, 4, 13, 17, 19, 20, 25):
        page = (await client.get(f"/api/backups?limit=3&offset={offset}")).json()
        assert [b["id"] for b in page["backups"]] == order[offset : offset + 3], offset
    for offset in (5, 9, 12):
        r = await client.get(f"/api/backups?limit=3&offset={offset}")
        assert r.status_code == 400, (offset, r.text)
        assert "after=" in r.json()["detail"] and r.json()["field"] == "offset", r.text
    # The same rows are one cursor away: the nextAfter of the page before.
    before = (await client.get("/api/backups?limit=3&offset=2")).json()
    deep = (await client.get(f"/api/backups?limit=3&after={before['nextAfter']}")).json()
    assert [b["id"] for b in deep["backups"]] == order[5:8]


async def test_a_row_deleted_between_pages_skips_nothing(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    await seed_fleet(me.id, now=datetime.now(UTC), configs=3, backups_per_config=3)
    order = [b["id"] for b in (await client.get("/api/backups?limit=500")).json()["backups"]]
    first = (await client.get("/api/backups?limit=4")).json()
    assert [b["id"] for b in first["backups"]] == order[:4]
    # The last row shown and the first row not yet shown both disappear.
    await BackupLog.delete().where(BackupLog.id.is_in([uuid.UUID(order[3]), uuid.UUID(order[4])]))
    second = (await client.get(f"/api/backups?limit=4&after={first['nextAfter']}")).json()
    assert [b["id"] for b in second["backups"]] == order[5:9]


def _tamper(cursor: str) -> list[str]:
    body, mac = cursor.split(".")
    payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    moved = payload.replace(b'"20', b'"19', 1)
    forged = base64.urlsafe_b64encode(moved).rstrip(b"=").decode()
    return [
        f"{forged}.{mac}",  # another position, the old signature
        cursor[:-2],  # truncated
        cursor + "x",
        "not-a-cursor",
        f"{body}.",
        "%%%.%%%",
    ]


@pytest.mark.parametrize("path,key", [("/api/backups", "backups"), ("/api/configs", "configs")])
async def test_tampered_or_foreign_cursors_are_refused(
    client: ApiClient, services: Services, path: str, key: str
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    await seed_fleet(me.id, now=datetime.now(UTC), agents=1, configs=4, backups_per_config=2)
    cursor = (await client.get(f"{path}?limit=1")).json()["nextAfter"]
    assert cursor
    assert (await client.get(f"{path}?limit=1&after={cursor}")).status_code == 200
    for bad in _tamper(cursor):
        r = await client.get(path, params={"after": bad, "limit": "1"})
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["field"] == "after"
    # A cursor of the other list, or of another user, is not one for this list.
    other = "/api/configs" if path == "/api/backups" else "/api/backups"
    foreign = (await client.get(f"{other}?limit=1")).json()["nextAfter"]
    assert (await client.get(path, params={"after": foreign})).status_code == 400
    stranger = await services.accounts.create_user("x@example.com", "correct horse")
    theirs = services.cursors.encode(key, stranger.id, services.cursors.decode(key, me.id, cursor))
    assert (await client.get(path, params={"after": theirs})).status_code == 400
    # A page is asked for by offset or by cursor, not both.
    if path == "/api/backups":
        r = await client.get(path, params={"after": cursor, "offset": "3"})
        assert r.status_code == 400


async def test_config_and_agent_lists_page_and_search(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    await seed_fleet(me.id, now=datetime.now(UTC), agents=7, configs=11, backups_per_config=0)
    configs = await _walk(client, "/api/configs", "configs", 3)
    listed = (await client.get("/api/configs")).json()
    assert configs == [c["id"] for c in listed["configs"]] and listed["nextAfter"] is None
    assert len(configs) == 11
    agents = await _walk(client, "/api/agents", "agents", 2)
    assert agents == [a["id"] for a in (await client.get("/api/agents")).json()["agents"]]
    assert len(agents) == 7
    # Search: part of the name, any case; % and _ are plain characters.
    found = (await client.get("/api/configs", params={"q": "CONFIG-0001"})).json()["configs"]
    assert sorted(c["name"] for c in found) == ["config-00010"]
    assert (await client.get("/api/configs", params={"q": "%"})).json()["configs"] == []
    assert (await client.get("/api/agents", params={"q": "machine_0"})).json()["agents"] == []
    found = (await client.get("/api/agents", params={"q": "ne-0000"})).json()["agents"]
    assert len(found) == 7
    # The pages too.
    page = (await client.get("/configs", params={"q": "config-0000"})).text
    assert "config-00009" in page and "config-00010" not in page
    page = (await client.get("/agents", params={"q": "machine-00003"})).text
    assert "machine-00003" in page and "machine-00004" not in page
    assert (await client.get("/configs", params={"after": "nope"})).status_code == 400


async def test_the_backups_page_pages_by_cursor(client: ApiClient, services: Services) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    await seed_fleet(me.id, now=datetime.now(UTC), configs=30, backups_per_config=1)
    first = (await client.get("/backups")).text
    assert "30 backups" in first
    older = first.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
    second = (await client.get(older.replace("&amp;", "&"))).text
    assert second.count("/backups/") - second.count('/backups/"') >= 5
    assert "← Newest" in second and 'rel="next"' not in second


def _counting_round(log: Any) -> int:
    return len(log)


async def _round_statements(services: Services, now: datetime) -> dict[str, int]:
    counts = {}
    for name, run in (
        ("retention", services.tasks.run_retention),
        ("alerts", services.tasks.run_alerts),
        ("housekeeping", services.tasks.run_housekeeping),
    ):
        with count_queries() as log:
            await run(now)
        counts[name] = _counting_round(log)
    return counts


async def test_periodic_rounds_run_as_many_statements_for_500_configs_as_for_10(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    await services.tasks.started()
    now = datetime.now(UTC)
    fleet = Fleet()
    await seed_fleet(
        me.id,
        now=now,
        configs=10,
        backups_per_config=3,
        retention_days=30,
        schedule=DAILY,
        fleet=fleet,
    )
    await _round_statements(services, now)  # settle: alerts opened, nothing due
    # Three backups become due for retention, one config misses its schedule.
    old = now - timedelta(days=60)
    await BackupLog.update({BackupLog.started_at: old, BackupLog.completed_at: old}).where(
        BackupLog.id.is_in(fleet.backup_ids[1:3])
    )
    await refresh_last_backups(fleet.config_ids[:1])  # history edited behind the services' back
    small = await _round_statements(services, now)
    assert small["retention"] > 0
    await seed_fleet(
        me.id,
        now=now,
        agents=49,
        configs=490,
        backups_per_config=3,
        retention_days=30,
        schedule=DAILY,
        first=10,
        fleet=fleet,
    )
    await _round_statements(services, now)  # settle the new configs
    await BackupLog.update({BackupLog.started_at: old, BackupLog.completed_at: old}).where(
        BackupLog.id.is_in(fleet.backup_ids[-2:])
    )
    await refresh_last_backups(fleet.config_ids[-1:])
    big = await _round_statements(services, now)
    assert big == small
    expired = await BackupLog.count().where(BackupLog.status == "expired")
    assert expired == 4  # the newest completed backup of a config is kept however old


async def test_a_long_round_keeps_its_lock(
    client: ApiClient, services: Services, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: the lease is renewed while the round runs. PostgreSQL: the advisory lock is held
    while it runs (no lease row). On both, another process cannot take the task meanwhile, and
    the lock is free once the round ends."""
    from backend.services.tasks import PeriodicTasks

    tasks = services.tasks
    await tasks.started()  # the start-up round (its own thread) must not hold SQLite's write lock
    other = PeriodicTasks(settings, services.storage, holder="server elsewhere pid 2")
    postgres = settings.database_url.startswith("postgres")
    # Renewed every 0.7 s; the machine may be busy, so the margins are generous.
    monkeypatch.setattr(type(tasks), "lease_ttl", property(lambda self: 2.0))
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(7.0)  # more than three lease lifetimes
        return "done"

    run = asyncio.get_running_loop().create_task(tasks._guarded("slow", slow))
    await started.wait()
    checks = 0
    for _ in range(4):
        await asyncio.sleep(1.5)
        if run.done():  # a loaded machine: the round ended before this check
            break
        assert await other._guarded("slow", lambda: asyncio.sleep(0, "taken")) is None
        if not postgres:
            assert await services.leases.acquire("server:slow", "another process", 60) is None
        checks += 1
    assert checks >= 2  # past the lease's lifetime at least once
    assert await run == "done"
    assert await services.leases.current("server:slow") is None  # released at the end
    assert await other._guarded("slow", lambda: asyncio.sleep(0, "mine")) == "mine"


async def test_the_dashboard_lists_the_newest_open_alerts_only(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    await services.tasks.started()  # its alert round would resolve these made-up alerts
    now = datetime.now(UTC)
    await Alert.insert(
        *[
            Alert(
                id=uuid.uuid4(),
                user=me.id,
                kind="agent_offline",
                subject=f"agent:{uuid.uuid4()}",
                message=f"alert number {i:03d}",
                created_at=now - timedelta(minutes=i),
            )
            for i in range(30)
        ]
    )
    page = (await client.get("/")).text
    assert 'data-alerts="20"' in page
    assert "alert number 000" in page and "alert number 019" in page
    assert "alert number 020" not in page
    assert len((await client.get("/api/alerts")).json()["alerts"]) == 30


async def _cost(client: ApiClient, path: str) -> tuple[int, int]:
    with count_queries() as log:
        r = await client.get(path)
    assert r.status_code == 200, (path, r.text[:500])
    return len(log), log.rows


async def test_the_dashboard_reads_as_many_rows_for_500_configs_as_for_10(
    client: ApiClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only as many statements: as many rows. Each config's newest backup is on its row, so
    the dashboard counts in the database and reads the configs it shows (a page smaller than the
    small fleet here, so that both show a full page) and the agents that are silent."""
    from backend.web import _dashboard

    monkeypatch.setattr(_dashboard, "DASHBOARD_ROWS", 4)
    monkeypatch.setattr(_dashboard, "DASHBOARD_AGENTS", 1)
    await client.signup()
    me = await signed_in_user(client, services)
    await services.tasks.started()
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, agents=2, configs=10, backups_per_config=2)
    # Two problems in each fleet: a failing config, and one whose agent went silent.
    await BackupLog.update({BackupLog.status: "failed", BackupLog.error: "disk full"}).where(
        BackupLog.config == fleet.config_ids[3]
    )
    await refresh_last_backups([fleet.config_ids[3]])
    silent = now - timedelta(days=2)
    await Agent.update({Agent.last_seen: silent}).where(Agent.id == fleet.agent_ids[1])
    small = {path: await _cost(client, path) for path in ("/",)}
    page = (await client.get("/")).text
    assert "9/10" in page
    await seed_fleet(
        me.id, now=now, agents=98, configs=490, backups_per_config=2, first=10, fleet=fleet
    )
    big = {path: await _cost(client, path) for path in ("/",)}
    assert big == small
    page = (await client.get("/")).text
    # The failing config comes first; the counts are over all 500.
    assert page.index("config-00003") < page.index("config-00001")
    assert "499/500" in page


async def test_an_alert_round_reads_only_the_configs_that_changed(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    await services.tasks.started()
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, configs=10, backups_per_config=2, schedule=DAILY)

    async def round_cost() -> tuple[int, int]:
        with count_queries() as log:
            await services.tasks.run_alerts(now)
        return len(log), log.rows

    await round_cost()  # every config is new: evaluated once, then not before it may be late
    steady_small = await round_cost()
    await seed_fleet(
        me.id,
        now=now,
        agents=49,
        configs=490,
        backups_per_config=2,
        schedule=DAILY,
        first=10,
        fleet=fleet,
    )
    await round_cost()
    assert await round_cost() == steady_small
    # A config whose newest backup is older than its schedule allows is read once (its alert
    # opens) and only it.
    old = now - timedelta(days=3)
    await BackupLog.update({BackupLog.started_at: old, BackupLog.completed_at: old}).where(
        BackupLog.config == fleet.config_ids[250]
    )
    await refresh_last_backups([fleet.config_ids[250]])
    statements, rows = await round_cost()
    assert rows > steady_small[1]
    open_alerts = await Alert.select(Alert.subject).where(Alert.resolved_at.is_null())
    assert {a["subject"] for a in open_alerts} == {f"config:{fleet.config_ids[250]}"}
    # Next rounds: as cheap as a round with nothing late. The late config is not read again
    # before its alert could clear (a daily schedule's gaps never cover it: 64 gaps on), and
    # its alert stays open.
    assert await round_cost() == steady_small
    assert await round_cost() == steady_small
    open_alerts = await Alert.select(Alert.subject).where(Alert.resolved_at.is_null())
    assert {a["subject"] for a in open_alerts} == {f"config:{fleet.config_ids[250]}"}
    due = await BackupConfig.select(BackupConfig.alert_due_at).where(
        BackupConfig.id == fleet.config_ids[250]
    )
    assert due[0]["alert_due_at"] is not None
    assert aware(due[0]["alert_due_at"]) > now + timedelta(days=60)
    # A completed backup brings it back at once: the next round reads it and resolves it.
    await BackupLog.update({BackupLog.started_at: now, BackupLog.completed_at: now}).where(
        BackupLog.id == fleet.backup_ids[500]
    )
    await refresh_last_backups([fleet.config_ids[250]])
    await round_cost()
    assert not await Alert.select(Alert.subject).where(Alert.resolved_at.is_null())


async def test_a_retention_round_reads_only_the_configs_that_changed(
    client: ApiClient, services: Services
) -> None:
    await client.signup()
    me = await signed_in_user(client, services)
    await services.tasks.started()
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, configs=10, backups_per_config=3, retention_days=30)

    async def round_cost(at: datetime = now) -> tuple[int, int, int]:
        with count_queries() as log:
            report = await services.tasks.run_retention(at)
        assert report is not None
        return len(log), log.rows, len(report.expired)

    await round_cost()  # every config is new: read once, then not before a backup may age out
    steady_small = await round_cost()
    await seed_fleet(
        me.id,
        now=now,
        agents=49,
        configs=490,
        backups_per_config=3,
        retention_days=30,
        first=10,
        fleet=fleet,
    )
    await round_cost()
    assert await round_cost() == steady_small
    # No backup, no edit: time alone ages the two older backups of every config out (the newest
    # is always kept), and the round finds them all without having read any config since.
    later = await round_cost(now + timedelta(days=30, hours=2))
    assert later[2] == 1000
    assert await BackupLog.count().where(BackupLog.status == "expired") == 1000


async def test_an_interrupted_retention_round_is_finished_by_the_next(
    client: ApiClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.services.retention import RetentionService

    await client.signup()
    me = await signed_in_user(client, services)
    await services.tasks.started()
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, configs=3, backups_per_config=3, retention_days=30)
    old = now - timedelta(days=60)
    due = [fleet.backup_ids[i] for i in (1, 2, 4)]
    await BackupLog.update({BackupLog.started_at: old, BackupLog.completed_at: old}).where(
        BackupLog.id.is_in(due)
    )
    await refresh_last_backups(fleet.config_ids)
    real = RetentionService._mark_expired

    async def crash(rows: list[dict[str, Any]], at: datetime) -> set[Any]:
        raise RuntimeError("the process died here")

    # The objects are deleted, then the process dies before their rows are marked.
    monkeypatch.setattr(RetentionService, "_mark_expired", staticmethod(crash))
    with pytest.raises(RuntimeError):
        await services.tasks.retention.run(now)
    assert await BackupLog.count().where(BackupLog.status == "expired") == 0
    monkeypatch.setattr(RetentionService, "_mark_expired", staticmethod(real))
    report = await services.tasks.retention.run(now)
    assert sorted(report.expired) == sorted(str(b) for b in due) and report.failed == []
    assert await BackupLog.count().where(BackupLog.status == "expired") == 3
    assert (await services.tasks.retention.run(now)).expired == []


async def test_a_backup_that_ends_during_a_round_is_looked_at_next_round(
    client: ApiClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round decided on what it read; a config that changed meanwhile keeps "look again"."""
    from backend.services import retention

    await client.signup()
    me = await signed_in_user(client, services)
    await services.tasks.started()
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, configs=3, backups_per_config=2, retention_days=30)
    real = retention.store_config_times

    async def meanwhile(column: Any, times: Any) -> None:
        await refresh_last_backups(fleet.config_ids[:1])  # a backup of it ended just now
        await real(column, times)

    monkeypatch.setattr(retention, "store_config_times", meanwhile)
    await services.tasks.retention.run(now)
    rows = await BackupConfig.select(BackupConfig.id, BackupConfig.retention_due_at).where(
        BackupConfig.id.is_in(fleet.config_ids)
    )
    due = {r["id"]: r["retention_due_at"] for r in rows}
    assert due[fleet.config_ids[0]] is None
    assert due[fleet.config_ids[1]] is not None and due[fleet.config_ids[2]] is not None


async def test_a_round_longer_than_its_lease_never_overlaps_another_runner(
    client: ApiClient, services: Services, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two task runners (two server processes) on one database, each trying the same task in a
    loop; every round takes longer than the lease's lifetime. Never two at once. The second runs
    on a thread's own event loop, as the rounds do (and as another process would: on PostgreSQL
    its advisory lock is on a connection of its own)."""
    from backend.services.tasks import PeriodicTasks

    monkeypatch.setattr(PeriodicTasks, "lease_ttl", property(lambda self: 1.5))
    first = services.tasks
    second = PeriodicTasks(settings, services.storage, holder="server elsewhere pid 2")
    inside: list[str] = []
    most = 0
    ran: list[str] = []

    async def runner(tasks: PeriodicTasks, who: str) -> None:
        nonlocal most

        async def slow() -> None:
            nonlocal most
            inside.append(who)
            most = max(most, len(inside))
            ran.append(who)
            await asyncio.sleep(4.0)  # more than two lease lifetimes
            inside.remove(who)

        loop = asyncio.get_running_loop()
        end = loop.time() + 9.0
        while loop.time() < end:
            await tasks._guarded("overlap", slow)
            await asyncio.sleep(0.2)  # the next round, as the interval would start it

    await asyncio.gather(
        runner(first, "one"), asyncio.to_thread(asyncio.run, runner(second, "two"))
    )
    assert most == 1, ran
    assert len(ran) >= 2


async def test_the_agent_log_pages_by_cursor_through_ties(
    client: ApiClient, services: Services
) -> None:
    from backend.agents.tables import AgentLog

    await client.signup()
    me = await signed_in_user(client, services)
    fleet = await seed_fleet(me.id, now=datetime.now(UTC), agents=1, configs=1)
    agent_id = fleet.agent_ids[0]
    at = datetime.now(UTC).replace(microsecond=0)
    # 60 lines, in 6 instants of 10 lines each: every page boundary falls inside a tie.
    await AgentLog.insert(
        *[
            AgentLog(
                id=uuid.uuid4(),
                agent=agent_id,
                level="info",
                message=f"line {i:03d}",
                metadata=None,
                timestamp=at - timedelta(seconds=i // 10),
            )
            for i in range(60)
        ]
    )
    seen: list[str] = []
    path = f"/agents/{agent_id}"
    for _ in range(10):
        page = (await client.get(path)).text
        seen += [m for m in page.split(">") if m.startswith("line ")]
        if 'rel="next"' not in page:
            break
        href = page.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
        assert "after=" in href
        path = href.replace("&amp;", "&")
    lines = [s.split("<")[0] for s in seen]
    assert sorted(lines) == sorted(f"line {i:03d}" for i in range(60))
    assert len(lines) == 60  # none twice
    # A forged cursor is refused.
    r = await client.get(f"/agents/{agent_id}", params={"after": "not-a-cursor"})
    assert r.status_code == 400


async def test_the_overview_ranks_configs_as_the_health_rules_do(
    client: ApiClient, services: Services
) -> None:
    """The SQL severity (services/overview.py) and the Python rules (web/_health.py) agree on
    every kind of config: failing, running, never backed up, overdue, fine; on an online, a
    silent, a deactivated agent, none, and server-side."""
    from backend.services.offline import mark_offline
    from backend.services.overview import OverviewService
    from backend.web._health import config_health

    await client.signup()
    me = await signed_in_user(client, services)
    now = datetime.now(UTC)
    fleet = await seed_fleet(me.id, now=now, agents=3, configs=18, backups_per_config=2)
    online, silent, off = fleet.agent_ids
    await Agent.update({Agent.last_seen: now - timedelta(days=2)}).where(Agent.id == silent)
    await Agent.update({Agent.active: False}).where(Agent.id == off)
    states = ["failed", "running", "never", "overdue", "completed", "cancelled"]
    for i, config_id in enumerate(fleet.config_ids):
        state = states[i // 3]  # each state on each of the three agents
        where = BackupLog.config == config_id
        if state == "never":
            await BackupLog.delete().where(where)
        elif state == "overdue":
            old = now - timedelta(days=3)
            await BackupLog.update({BackupLog.started_at: old, BackupLog.completed_at: old}).where(
                where
            )
        elif state != "completed":
            newest = (
                await BackupLog.select(BackupLog.id)
                .where(where)
                .order_by(BackupLog.started_at, ascending=False)
                .first()
            )
            assert newest is not None
            await BackupLog.update({BackupLog.status: state}).where(BackupLog.id == newest["id"])
            recent = now - timedelta(hours=3)  # the one before it: a fresh verified backup
            await BackupLog.update(
                {BackupLog.started_at: recent, BackupLog.completed_at: recent}
            ).where(where & (BackupLog.id != newest["id"]))
    await BackupConfig.update({BackupConfig.agent: None}).where(
        BackupConfig.id == fleet.config_ids[4]
    )
    await BackupConfig.update({BackupConfig.execution_mode: "server"}).where(
        BackupConfig.id.is_in([fleet.config_ids[5], fleet.config_ids[14]])
    )
    await refresh_last_backups(fleet.config_ids)
    await mark_offline(now, services.settings)  # the presence round: the silent agent is offline

    overview = await OverviewService(services.agents).overview(me, now, rows=50, agent_rows=5)
    configs = await services.configs.by_ids(me, [str(c) for c in fleet.config_ids])
    last = await services.history.last_backups(me, [c.id for c in configs])
    agents = {a.id: a for a in await services.agents.by_ids(me, [str(a) for a in fleet.agent_ids])}
    order = {c.id: i for i, c in enumerate(configs)}
    expected = []
    for config in configs:
        found = last.get(config.id)
        agent = agents.get(config.agent_id) if config.agent_id else None
        health = config_health(
            config.id,
            config.execution_mode,
            agent,
            found.last if found else None,
            found.last_completed if found else None,
            now,
        )
        expected.append((health.severity, order[config.id], config.id, health))
    expected.sort(key=lambda item: item[:2])
    assert overview.shown == [(config_id, sev) for sev, _, config_id, _ in expected]
    assert overview.config_total == 18
    assert overview.healthy == sum(1 for *_, h in expected if h.safe)
    assert overview.attention == sum(1 for *_, h in expected if h.needs_attention)
    assert len({sev for sev, *_ in expected}) == 6  # every severity was exercised
    assert (overview.agent_total, overview.agents_online) == (3, 1)
    assert [a.id for a in overview.agents][:2] == [str(silent), str(off)]
