"""Restore endpoints (agent and owner) through the real ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.support.api import ApiClient, local_path


async def _backup(
    client: ApiClient,
    key: str,
    config_id: str,
    name: str,
    payload: bytes,
    finish: str | None = "completed",
) -> str:
    start = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": config_id, "filename": name, "filesize": len(payload)},
    )
    assert start.status_code == 200, start.text
    body = start.json()
    put = await client.raw.put(local_path(body["upload"]["url"]), content=payload)
    assert put.status_code == 200
    if finish:
        done = await client.agent_post(
            key,
            "/api/agent/backup/complete",
            {"logId": body["logId"], "status": finish, "bytesTransferred": len(payload)},
        )
        assert done.status_code == 200, done.text
    return str(body["logId"])


async def _world(client: ApiClient) -> dict[str, Any]:
    await client.signup()
    old_id, old_key = await client.register_agent("old laptop")
    new_id, new_key = await client.register_agent("new laptop")
    config = await client.create_config(old_id)
    other = await client.create_config(new_id, name="other")
    done = await _backup(client, old_key, config["id"], "a.tar.gz", b"first backup")
    failed = await _backup(client, old_key, config["id"], "b.tar.gz", b"x", finish="failed")
    running = await _backup(client, old_key, config["id"], "c.tar.gz", b"y", finish=None)
    return {
        "old": (old_id, old_key),
        "new": (new_id, new_key),
        "config": config,
        "other": other,
        "done": done,
        "failed": failed,
        "running": running,
    }


async def test_agent_lists_only_completed_backups_of_its_configs(client: ApiClient) -> None:
    w = await _world(client)
    _, old_key = w["old"]
    _, new_key = w["new"]
    listed = (await client.agent_get(old_key, "/api/agent/backups")).json()["backups"]
    assert [b["id"] for b in listed] == [w["done"]]
    assert listed[0]["sha256"] == hashlib.sha256(b"first backup").hexdigest()
    assert listed[0]["size"] == len(b"first backup") and listed[0]["status"] == "completed"
    assert (await client.agent_get(new_key, "/api/agent/backups")).json()["backups"] == []
    filtered = await client.agent_get(old_key, f"/api/agent/backups?configId={w['other']['id']}")
    assert filtered.json()["backups"] == []


async def test_restore_url_downloads_the_object(client: ApiClient) -> None:
    w = await _world(client)
    _, key = w["old"]
    r = await client.agent_post(key, "/api/agent/restore", {"backupId": w["done"]})
    assert r.status_code == 200, r.text
    restore = r.json()["restore"]
    assert restore["method"] == "GET" and restore["size"] == 12
    assert restore["sha256"] == hashlib.sha256(b"first backup").hexdigest()
    got = await client.raw.get(local_path(restore["url"]))
    assert got.status_code == 200 and got.content == b"first backup"
    part = await client.raw.get(local_path(restore["url"]), headers={"Range": "bytes=6-"})
    assert part.status_code == 206 and part.content == b"backup"
    # A GET URL cannot write.
    assert (await client.raw.put(local_path(restore["url"]), content=b"evil")).status_code == 403


async def test_restore_refuses_unfinished_and_foreign_backups(client: ApiClient) -> None:
    w = await _world(client)
    _, old_key = w["old"]
    _, new_key = w["new"]
    for log_id in (w["failed"], w["running"]):
        r = await client.agent_post(old_key, "/api/agent/restore", {"backupId": log_id})
        assert r.status_code == 409
    r = await client.agent_post(new_key, "/api/agent/restore", {"backupId": w["done"]})
    assert r.status_code == 404
    for bad in ["nope", "00000000-0000-0000-0000-000000000000"]:
        r = await client.agent_post(old_key, "/api/agent/restore", {"backupId": bad})
        assert r.status_code == 404
    assert (await client.agent_post(old_key, "/api/agent/restore", {})).status_code == 400


async def test_replacement_agent_restores_the_old_backups(client: ApiClient) -> None:
    w = await _world(client)
    _, old_key = w["old"]
    new_id, new_key = w["new"]
    r = await client.patch(f"/api/configs/{w['config']['id']}", json={"agentId": new_id})
    assert r.status_code == 200
    listed = (await client.agent_get(new_key, "/api/agent/backups")).json()["backups"]
    assert [b["id"] for b in listed] == [w["done"]]
    r = await client.agent_post(new_key, "/api/agent/restore", {"backupId": w["done"]})
    assert r.status_code == 200
    assert (await client.raw.get(local_path(r.json()["restore"]["url"]))).content == b"first backup"
    # The old laptop lost the config, and with it the right to restore it.
    assert (
        await client.agent_post(old_key, "/api/agent/restore", {"backupId": w["done"]})
    ).status_code == 404


async def test_owner_download(client: ApiClient) -> None:
    w = await _world(client)
    r = await client.get(f"/api/backups/{w['done']}/download")
    assert r.status_code == 200
    download = r.json()["download"]
    assert download["filename"] == "a.tar.gz"
    assert (await client.raw.get(local_path(download["url"]))).content == b"first backup"
    redirect = await client.get(f"/api/backups/{w['done']}/download", params={"redirect": "true"})
    assert redirect.status_code == 303 and "/storage/o/users/" in redirect.headers["location"]
    assert (await client.get(f"/api/backups/{w['running']}/download")).status_code == 409
    client.raw.cookies.clear()
    assert (await client.get(f"/api/backups/{w['done']}/download")).status_code == 401
