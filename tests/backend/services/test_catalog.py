"""The catalog service on SQLite and PostgreSQL (the suite's throwaway cluster, ``pg_dump`` and
``pg_restore`` on PATH) with the app's local storage: a copy made, the database lost, the copy
restored (the agent's key works again); the refusals that change nothing; retention of copies;
the metadata object beside each completed backup."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from backend.accounts.tables import User
from backend.backups.tables import BackupLog
from backend.db import all_tables
from backend.services import Services
from backend.services.catalog.metadata import catch_up, metadata_key, open_private
from backend.services.catalog.rebuild import rebuild_from_bucket
from backend.services.catalog.sealed import CatalogError
from backend.services.catalog.service import CATALOG_PREFIX, CatalogService
from backend.storage import NoSuchKey
from tests.support.api import ApiClient, complete_one_backup

pytestmark = pytest.mark.asyncio


async def lose_everything() -> None:
    """What a lost database leaves: the tables, and nothing in them."""
    for table in reversed(all_tables()):
        await table.delete(force=True)  # type: ignore[attr-defined]


async def one_backup(client: ApiClient, services: Services) -> tuple[str, str, str]:
    # The start-up round first (it finds an empty database: no copy), so that only the test makes
    # copies.
    await services.tasks.started()
    await client.signup()
    agent_id, key = await client.register_agent("laptop")
    config = await client.create_config(agent_id, name="Documents")
    return key, config["id"], await complete_one_backup(client, key, config["id"])


async def test_lose_the_database_and_restore_the_latest_copy(
    client: ApiClient, services: Services
) -> None:
    key, config_id, backup_id = await one_backup(client, services)
    assert (
        await client.agent_post(key, "/api/agent/heartbeat", {"version": "1"})
    ).status_code == 200
    catalog = CatalogService(services.settings, services.storage)
    copy = await catalog.backup()
    assert copy.key.startswith(CATALOG_PREFIX) and copy.size > 0

    await lose_everything()
    assert await catalog.is_empty()
    report = await catalog.restore(None)
    assert report.key == copy.key
    assert (report.users, report.agents, report.configs, report.backups) == (1, 1, 1, 1)
    beat = await client.agent_post(key, "/api/agent/heartbeat", {"version": "1"})
    assert beat.status_code == 200, beat.text
    login = await client.login("owner@example.com", "correct horse")
    assert login.status_code == 200, login.text
    listed = await client.get("/api/backups")
    assert [b["id"] for b in listed.json()["backups"]] == [backup_id]
    assert listed.json()["backups"][0]["status"] == "completed"


async def test_refusals_change_nothing(client: ApiClient, services: Services) -> None:
    _key, _config, backup_id = await one_backup(client, services)
    catalog = CatalogService(services.settings, services.storage)
    copy = await catalog.backup()
    before = await BackupLog.count()

    with pytest.raises(CatalogError, match="not empty .*--force"):
        await catalog.restore(copy.key)
    await lose_everything()
    # An object that is not a catalog copy (a backup's metadata object), one that is not there,
    # and a copy opened with another server secret.
    [meta] = [
        o.key
        for o in (await services.storage.list_objects("users/")).objects
        if o.key.endswith(f"/meta/{backup_id}.json")
    ]
    with pytest.raises(CatalogError, match="is not a BackApp catalog copy"):
        await catalog.restore(meta)
    with pytest.raises(CatalogError, match="there is no object at"):
        await catalog.restore(CATALOG_PREFIX + "nothing-here.catalog")
    stranger = CatalogService(
        replace(services.settings, secret_key=b"another-secret-0123456789abcdef"), services.storage
    )
    with pytest.raises(CatalogError, match="another server secret"):
        await stranger.restore(copy.key)
    assert await BackupLog.count() == 0
    # A copy cut short is found out too.
    data = await services.storage.get_bytes(copy.key)
    cut = CATALOG_PREFIX + "20200101T000000000Z-000000000000-abcd.catalog"
    await services.storage.put_bytes(cut, data[:-20])
    with pytest.raises(CatalogError, match="damaged or cut short"):
        await catalog.restore(cut)
    assert await BackupLog.count() == 0
    # With everything right, it comes back.
    await catalog.restore(copy.key)
    assert await BackupLog.count() == before


async def test_keeps_the_newest_copies_and_copies_when_due(
    client: ApiClient, services: Services
) -> None:
    await services.tasks.started()
    catalog = CatalogService(replace(services.settings, catalog_keep=3), services.storage)
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    made = [(await catalog.backup(start + timedelta(hours=h))).key for h in range(5)]
    removed = await catalog.prune()
    assert removed == made[:2]
    assert [c.key for c in await catalog.copies()] == made[2:]
    for key in made[:2]:
        with pytest.raises(NoSuchKey):
            await services.storage.get_bytes(key)

    # The periodic round: never for an empty database (a server started afresh after losing its
    # database must not push the good copies out); else not within the interval, due after it,
    # and after a migration.
    fresh = CatalogService(replace(services.settings, catalog_keep=3), services.storage)
    newest = start + timedelta(hours=4)
    assert not await fresh.due(newest + timedelta(days=30))
    await services.accounts.create_user("owner@example.com", "correct horse")
    assert not await fresh.due(newest + timedelta(hours=23))
    assert await fresh.due(newest + timedelta(hours=24, seconds=1))
    round_ = await fresh.run_round(newest + timedelta(hours=25))
    assert round_.copy is not None and len(round_.removed) == 1
    await BackupLog.raw(
        "INSERT INTO migration (name, app_name, ran_on) VALUES ('9999', 'catalog-test', "
        "CURRENT_TIMESTAMP)"
    )
    assert await fresh.due(newest + timedelta(hours=25, minutes=1))


async def test_metadata_beside_each_completed_backup(client: ApiClient, services: Services) -> None:
    _key, config_id, backup_id = await one_backup(client, services)
    row = await BackupLog.select().where(BackupLog.id == backup_id).first()
    assert row is not None and row["catalog_at"] is not None
    key = metadata_key(row)
    assert key is not None and key.startswith(str(row["s3_path"]).rpartition("/")[0] + "/meta/")
    raw = await services.storage.get_bytes(key)
    meta = json.loads(raw)
    assert meta["backup"]["id"] == backup_id and meta["backup"]["size"] == 3
    assert meta["backup"]["sha256"] == row["sha256"] and meta["backup"]["key"] == row["s3_path"]
    assert meta["config"]["id"] == config_id and meta["config"]["name"] == "Documents"
    assert meta["agent"]["name"] == "laptop"
    # What the bucket must not show is sealed with the server secret; no password hash at all.
    for private in (b"owner@example.com", b"/home/me/docs", b"argon2", b"password"):
        assert private not in raw, private
    secret = services.settings.secret_key
    opened = open_private(meta, secret)
    assert opened["user"]["email"] == "owner@example.com"
    assert opened["config"]["sources"] == [{"path": "/home/me/docs"}]
    with pytest.raises(CatalogError, match="another|secret"):
        open_private(meta, b"another-secret-0123456789abcdef")

    # Lost (or never written): the round writes it again; expired: the round removes it.
    await services.storage.delete(key)
    await BackupLog.update({BackupLog.catalog_at: None}).where(BackupLog.id == backup_id)
    report = await catch_up(services.storage, services.settings.secret_key)
    assert (report.written, report.removed, report.failed) == (1, 0, [])
    assert json.loads(await services.storage.get_bytes(key))["backup"]["id"] == backup_id
    await BackupLog.update({BackupLog.status: "expired"}).where(BackupLog.id == backup_id)
    report = await catch_up(services.storage, services.settings.secret_key)
    assert (report.written, report.removed) == (0, 1)
    with pytest.raises(NoSuchKey):
        await services.storage.get_bytes(key)


async def test_rebuild_from_the_bucket_alone(client: ApiClient, services: Services) -> None:
    key, config_id, backup_id = await one_backup(client, services)
    await lose_everything()
    secret = services.settings.secret_key

    # Another secret: the sealed parts do not open, and nothing is written.
    with pytest.raises(CatalogError, match="does not open with this server secret"):
        await rebuild_from_bucket(services.storage, b"another-secret-0123456789abcdef")
    assert await BackupLog.count() == 0 and await User.count() == 0

    report = await rebuild_from_bucket(services.storage, secret)
    assert report.users == ["owner@example.com"] and report.failed == []
    assert (report.agents, report.configs, report.backups, report.expired) == (1, 1, 1, 0)
    # The agent's key works again; the account waits for a password.
    beat = await client.agent_post(key, "/api/agent/heartbeat", {"version": "1"})
    assert beat.status_code == 200, beat.text
    assert (await client.login("owner@example.com", "correct horse")).status_code == 401
    await services.accounts.set_password("owner@example.com", "a new password")
    assert (await client.login("owner@example.com", "a new password")).status_code == 200
    [backup] = (await client.get("/api/backups")).json()["backups"]
    assert (backup["id"], backup["configId"], backup["status"]) == (
        backup_id,
        config_id,
        "completed",
    )
    assert (await client.get(f"/api/backups/{backup_id}/download")).status_code == 200

    # Run again on a database that has backups: refused unless --force, which adds nothing twice.
    with pytest.raises(CatalogError, match="has backups already"):
        await rebuild_from_bucket(services.storage, secret)
    again = await rebuild_from_bucket(services.storage, secret, force=True)
    assert (again.users, again.backups, again.failed) == ([], 0, [])
    assert await BackupLog.count() == 1
