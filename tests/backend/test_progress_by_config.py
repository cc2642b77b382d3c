"""Progress before a backup's log exists (``configId`` instead of ``logId``), through the real ASGI
app on SQLite and PostgreSQL: validated, published to the owner's pages, never stored."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from litestar import Litestar

from backend.backups.tables import BackupLog
from backend.services import Services
from backend.services.pubsub import user_channel
from tests.backend.test_runs_live import AsgiSocket, app_client  # noqa: F401 - a fixture
from tests.support.api import ApiClient

PATH = "/api/agent/backup/progress"
SCAN = {"phase": "scanning", "filesDone": 0, "filesTotal": 12_345, "bytesTotal": 3_300_000_000}


async def _setup(client: ApiClient) -> tuple[str, str, str, str]:
    user = await client.signup()
    agent_id, key = await client.register_agent("laptop", "linux")
    config = await client.create_config(agent_id)
    return user["id"], agent_id, key, config["id"]


async def test_heartbeat_advertises_the_feature(client: ApiClient) -> None:
    _, _, key, _ = await _setup(client)
    r = await client.agent_post(key, "/api/agent/heartbeat", {})
    assert r.status_code == 200, r.text
    assert "progress-by-config" in r.json()["features"]


async def test_config_progress_is_published_and_not_stored(
    client: ApiClient, services: Services
) -> None:
    user_id, agent_id, key, config_id = await _setup(client)
    async with services.live.subscription(user_channel(user_id)) as subscriber:
        r = await client.agent_post(key, PATH, {"configId": config_id, **SCAN})
        assert r.status_code == 200, r.text
        assert r.json() == {"success": True}
        event = json.loads(await asyncio.wait_for(subscriber.iter_events().__anext__(), 5))
    at = event.pop("at")
    assert isinstance(at, str) and at
    assert event == {
        "type": "progress",
        "backupId": None,
        "configId": config_id,
        "agentId": agent_id,
        "phase": "scanning",
        "filesDone": 0,
        "filesTotal": 12_345,
        "bytesDone": None,
        "bytesTotal": 3_300_000_000,
        "rate": None,
        "eta": None,
    }
    archiving = {"configId": config_id, "phase": "archiving", "filesDone": 10, "bytesDone": 5}
    assert (await client.agent_post(key, PATH, archiving)).status_code == 200
    assert await BackupLog.count() == 0  # nothing was written
    backups = (await client.get("/api/backups")).json()["backups"]
    assert backups == []


async def _status(client: ApiClient, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    r = await client.agent_post(key, PATH, body)
    return r.status_code, dict(r.json())


async def test_exactly_one_id_and_a_pre_log_phase(client: ApiClient) -> None:
    _, _, key, config_id = await _setup(client)
    started = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": config_id, "filename": "backup-2025-01-07-143022.tar.gz", "filesize": 11},
    )
    log_id = started.json()["logId"]

    status, body = await _status(client, key, {"logId": log_id, "configId": config_id, **SCAN})
    assert status == 400 and "exactly one of logId" in body["detail"], body
    status, body = await _status(client, key, SCAN)
    assert status == 400 and "exactly one of logId" in body["detail"], body
    for phase in ("uploading", "finishing"):
        status, body = await _status(client, key, {**SCAN, "configId": config_id, "phase": phase})
        assert status == 400, body
        assert "only scanning or archiving" in body["detail"] and body.get("field") == "phase"
    status, body = await _status(client, key, {**SCAN, "configId": config_id, "phase": "dreaming"})
    assert status == 400, body
    status, body = await _status(client, key, {**SCAN, "configId": config_id, "filesDone": -1})
    assert status == 400, body
    status, body = await _status(client, key, {**SCAN, "configId": 42})
    assert status == 400, body
    # the log-id form is unchanged
    status, body = await _status(client, key, {**SCAN, "logId": log_id, "phase": "uploading"})
    assert status == 200, body


async def test_a_config_not_assigned_to_the_agent_is_404(
    client: ApiClient, services: Services
) -> None:
    _, _, key, config_id = await _setup(client)
    # another agent of the same user
    _, key2 = await client.register_agent("desktop", "linux")
    status, body = await _status(client, key2, {"configId": config_id, **SCAN})
    assert status == 404 and "no such config assigned" in body["detail"], body
    # unknown ids, well-formed or not
    for unknown in (str(uuid.uuid4()), "not-a-uuid"):
        status, body = await _status(client, key, {"configId": unknown, **SCAN})
        assert status == 404, (unknown, body)
    # another user's config, through that user's own agent
    await client.post("/api/auth/logout")
    client.raw.cookies.clear()
    await services.accounts.create_user("other@example.com", "correct horse")
    assert (await client.login("other@example.com", "correct horse")).status_code == 200
    other_agent, other_key = await client.register_agent("theirs", "linux")
    theirs = (await client.create_config(other_agent))["id"]
    status, body = await _status(client, key, {"configId": theirs, **SCAN})
    assert status == 404, body
    status, body = await _status(client, other_key, {"configId": config_id, **SCAN})
    assert status == 404, body
    # and their own config is fine
    status, body = await _status(client, other_key, {"configId": theirs, **SCAN})
    assert status == 200, body
    # without a key at all
    r = await client.raw.post(PATH, json={"configId": theirs, **SCAN})
    assert r.status_code == 401


async def test_the_websocket_message_takes_config_id_too(
    app_client: tuple[Litestar, ApiClient],  # noqa: F811
    services: Services,
) -> None:
    app, client = app_client
    user_id, _, key, config_id = await _setup(client)
    async with (
        services.live.subscription(user_channel(user_id)) as subscriber,
        AsgiSocket(app, {"X-Agent-API-Key": key}) as ws,
    ):
        assert (await ws.receive())["type"] == "hello"
        await ws.send({"type": "progress", "configId": config_id, **SCAN})
        event = json.loads(await asyncio.wait_for(subscriber.iter_events().__anext__(), 5))
        assert event["backupId"] is None and event["configId"] == config_id
        assert event["filesTotal"] == 12_345
        await ws.send({"type": "progress", "configId": str(uuid.uuid4()), **SCAN})
        error = await ws.receive()
        assert error["type"] == "error" and error["status"] == 404
        await ws.send({"type": "progress", "configId": config_id, **SCAN, "phase": "uploading"})
        error = await ws.receive()
        assert error["status"] == 400 and "scanning or archiving" in error["detail"]
        await ws.send({"type": "progress", "phase": "scanning"})
        error = await ws.receive()
        assert error["status"] == 400 and "exactly one of logId" in error["detail"]


def test_pages_read_a_scan_as_what_was_found_so_far() -> None:
    """The server's text (pages rendered on load) matches live.js's: no percentage while scanning."""
    from backend.web._status_text import progress_percent, progress_text

    scan = {"phase": "scanning", "filesDone": 0, "filesTotal": 12_345, "bytesTotal": 3_328_599_654}
    assert progress_text(scan) == "Scanning · 12,345 files · 3.1 GiB"
    assert progress_percent(scan) is None
    archiving = {"phase": "archiving", "filesDone": 3_000, "filesTotal": 12_345, "bytesDone": 0}
    assert progress_text(archiving) == "Archiving · 3,000 / 12,345 files · 0 B"
    assert progress_percent(archiving) == 24


def test_pages_say_what_a_stuck_upload_waits_for_instead_of_a_rate() -> None:
    from backend.web._status_text import progress_text

    base = {"phase": "uploading", "filesDone": 3, "filesTotal": 3, "bytesDone": 1024}
    moving = {**base, "bytesTotal": 2048, "rate": 512, "eta": 2}
    assert (
        progress_text(moving)
        == "Uploading · 3 / 3 files · 1.0 KiB / 2.0 KiB · 512 B/s · about 2.0 s left"
    )
    stuck = {**moving, "waiting": "waiting for storage: it took no data for 60 s"}
    assert progress_text(stuck) == (
        "Uploading · waiting for storage: it took no data for 60 s · 3 / 3 files · 1.0 KiB / 2.0 KiB"
    )


async def test_the_waiting_note_is_kept_while_it_lasts(client: ApiClient) -> None:
    _, _, key, config_id = await _setup(client)
    r = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": config_id, "filename": "backup-1.tar", "filesize": 1, "multipart": True},
    )
    assert r.status_code == 200, r.text
    log_id = r.json()["logId"]

    async def progress(**extra: Any) -> dict[str, Any]:
        body = {"logId": log_id, "phase": "uploading", "bytesDone": 5, **extra}
        sent = await client.agent_post(key, "/api/agent/backup/progress", body)
        assert sent.status_code == 200, sent.text
        backup = (await client.get(f"/api/backups/{log_id}")).json()["backup"]
        return dict(backup["progress"])

    assert (await progress(waiting="waiting for storage: down"))["waiting"] == (
        "waiting for storage: down"
    )
    assert "waiting" not in await progress()  # bytes move again
    too_long = await client.agent_post(
        key,
        "/api/agent/backup/progress",
        {"logId": log_id, "phase": "uploading", "waiting": "x" * 501},
    )
    assert too_long.status_code == 400
