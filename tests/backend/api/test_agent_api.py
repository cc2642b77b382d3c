"""The agent contract through the real ASGI app (local storage), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest

from backend.agents.tables import Agent, AgentLog
from backend.backups.tables import BackupLog
from backend.services import Services
from tests.support.api import ApiClient, local_path

FILENAME = "backup-2025-01-07-143022.tar.gz"
MiB = 1024 * 1024


async def _setup(client: ApiClient) -> tuple[str, str, str]:
    await client.signup()
    agent_id, key = await client.register_agent("David's MacBook", "darwin")
    config = await client.create_config(agent_id)
    return agent_id, key, config["id"]


async def _start(client: ApiClient, key: str, config_id: str, **extra: Any) -> dict[str, Any]:
    body = {"configId": config_id, "filename": FILENAME, "filesize": 11, **extra}
    r = await client.agent_post(key, "/api/agent/backup/start", body)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_register_shows_the_key_once_and_stores_only_a_digest(client: ApiClient) -> None:
    await client.signup()
    r = await client.post(
        "/api/agent/register", json={"name": "David's MacBook", "platform": "darwin"}
    )
    assert r.status_code == 201
    body = r.json()
    assert body["success"] is True
    assert set(body["agent"]) == {"id", "name", "apiKey", "status"}
    assert body["agent"]["status"] == "offline" and body["agent"]["name"] == "David's MacBook"
    key = body["agent"]["apiKey"]
    row = await Agent.select().first()
    assert key not in str(row.values())
    assert row["api_key_digest"] != key and len(row["api_key_digest"]) == 64
    again = await client.get(f"/api/agents/{body['agent']['id']}")
    assert key not in again.text and again.json()["agent"]["apiKeyPrefix"] == key[:10]


async def test_register_needs_a_session(client: ApiClient) -> None:
    r = await client.raw.post("/api/agent/register", json={"name": "x"})
    assert r.status_code == 401


async def test_full_backup_flow_with_the_spec_json(client: ApiClient, services: Services) -> None:
    agent_id, key, config_id = await _setup(client)

    hb = await client.agent_post(
        key, "/api/agent/heartbeat", {"version": "0.1.0", "platform": "darwin"}
    )
    assert hb.status_code == 200
    assert hb.json()["success"] is True and hb.json()["status"] == "online"
    assert (await client.get(f"/api/agents/{agent_id}")).json()["agent"]["status"] == "online"

    configs = await client.agent_get(key, "/api/agent/configs")
    assert configs.status_code == 200
    [config] = configs.json()["configs"]
    assert config["id"] == config_id
    assert config["sources"] == [{"path": "/home/me/docs"}]
    assert config["options"] == {
        "type": "full",
        "compression": True,
        "encryption": False,
        "retentionDays": 30,
        "retention": None,
        "compressionFormat": "gzip",
        "excludeNodeModules": False,
        "schedule": None,
        "retry": {"attempts": 3, "delaySeconds": 60},
        "alertGraceMinutes": 60,
        "drill": None,
        "limits": None,
        "preCommand": None,
        "postCommand": None,
        "commandTimeoutSeconds": 600,
        "snapshot": None,
    }
    assert set(config["destination"]) == {"bucket", "region", "prefix"}

    start = await _start(client, key, config_id)
    upload = start["upload"]
    assert upload["method"] == "PUT"
    user_id = (await client.get("/api/auth/me")).json()["user"]["id"]
    assert upload["s3Path"] == f"users/{user_id}/agents/{agent_id}/configs/{config_id}/{FILENAME}"
    assert upload["expiresAt"].endswith("Z")
    assert (await client.get("/api/backups")).json()["backups"][0]["status"] == "running"

    put = await client.raw.put(local_path(upload["url"]), content=b"hello world")
    assert put.status_code == 200, put.text

    done = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {
            "logId": start["logId"],
            "status": "completed",
            "filesProcessed": 150,
            "bytesTransferred": 11,
            "duration": 45000,
            "errors": [],
        },
    )
    assert done.status_code == 200 and done.json()["success"] is True
    [backup] = (await client.get("/api/backups")).json()["backups"]
    assert backup["status"] == "completed"
    assert backup["size"] == 11 and backup["sha256"] == hashlib.sha256(b"hello world").hexdigest()
    assert backup["filesProcessed"] == 150 and backup["duration"] == 45000
    assert backup["s3Path"] == upload["s3Path"] and backup["agentId"] == agent_id

    log = await client.agent_post(
        key,
        "/api/agent/log",
        {
            "level": "info",
            "message": "Scanning directory /Users/d",
            "metadata": {"filesFound": 150},
        },
    )
    assert log.status_code == 201 and log.json() == {"success": True}
    logs = (await client.get(f"/api/agents/{agent_id}/logs")).json()["logs"]
    assert logs[0]["message"] == "Scanning directory /Users/d" and logs[0]["metadata"] == {
        "filesFound": 150
    }


async def test_complete_verifies_size_and_is_idempotent(client: ApiClient) -> None:
    agent_id, key, config_id = await _setup(client)
    start = await _start(client, key, config_id)
    await client.raw.put(local_path(start["upload"]["url"]), content=b"hello world")
    body = {
        "logId": start["logId"],
        "status": "completed",
        "filesProcessed": 1,
        "bytesTransferred": 12,
        "duration": 1,
        "errors": [],
    }
    bad = await client.agent_post(key, "/api/agent/backup/complete", body)
    assert bad.status_code == 409 and "size mismatch" in bad.json()["detail"]
    [backup] = (await client.get("/api/backups")).json()["backups"]
    assert backup["status"] == "failed" and "storage holds 11 bytes" in backup["error"]
    assert (await client.get(f"/api/agents/{agent_id}")).json()["agent"]["status"] == "offline"
    # Retrying the same report gives the same answer and changes nothing.
    again = await client.agent_post(key, "/api/agent/backup/complete", body)
    assert again.status_code == 409
    assert (await client.get("/api/backups")).json()["backups"][0]["status"] == "failed"


async def test_retried_complete_does_not_double_count(client: ApiClient) -> None:
    _, key, config_id = await _setup(client)
    start = await _start(client, key, config_id)
    await client.raw.put(local_path(start["upload"]["url"]), content=b"hello world")
    body = {
        "logId": start["logId"],
        "status": "completed",
        "filesProcessed": 3,
        "bytesTransferred": 11,
        "duration": 5,
        "errors": [],
    }
    first = await client.agent_post(key, "/api/agent/backup/complete", body)
    second = await client.agent_post(
        key, "/api/agent/backup/complete", {**body, "filesProcessed": 99}
    )
    assert first.status_code == second.status_code == 200
    [backup] = (await client.get("/api/backups")).json()["backups"]
    assert backup["filesProcessed"] == 3
    conflicting = await client.agent_post(
        key, "/api/agent/backup/complete", {**body, "status": "failed"}
    )
    assert conflicting.status_code == 409 and "already completed" in conflicting.json()["detail"]


async def test_missing_object_fails_with_reason(client: ApiClient) -> None:
    agent_id, key, config_id = await _setup(client)
    start = await _start(client, key, config_id)
    r = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": start["logId"], "status": "completed", "bytesTransferred": 11},
    )
    assert r.status_code == 409 and "not in storage" in r.json()["detail"]
    await client.agent_post(key, "/api/agent/heartbeat", {})
    failed = (await client.get(f"/api/backups/{start['logId']}")).json()["backup"]
    assert failed["status"] == "failed" and "not in storage" in failed["error"]
    # The failure is the config's, not the agent's: the agent that reported it is online.
    assert (await client.get(f"/api/agents/{agent_id}")).json()["agent"]["status"] == "online"


async def test_sha256_signed_at_start_is_enforced(client: ApiClient) -> None:
    _, key, config_id = await _setup(client)
    digest = hashlib.sha256(b"hello world").hexdigest()
    start = await _start(client, key, config_id, size=11, sha256=digest)
    tampered = await client.raw.put(
        local_path(start["upload"]["url"]),
        content=b"HELLO WORLD",
        headers=start["upload"]["headers"],
    )
    assert tampered.status_code == 400
    put = await client.raw.put(
        local_path(start["upload"]["url"]),
        content=b"hello world",
        headers=start["upload"]["headers"],
    )
    assert put.status_code == 200
    wrong = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {
            "logId": start["logId"],
            "status": "completed",
            "bytesTransferred": 11,
            "size": 11,
            "sha256": "0" * 64,
        },
    )
    assert wrong.status_code == 409 and "sha256 mismatch" in wrong.json()["detail"]


async def test_failed_report_records_reason_and_errors(client: ApiClient) -> None:
    agent_id, key, config_id = await _setup(client)
    start = await _start(client, key, config_id)
    r = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {
            "logId": start["logId"],
            "status": "failed",
            "filesProcessed": 0,
            "bytesTransferred": 0,
            "duration": 10,
            "errors": ["disk full", {"path": "a/b.txt", "message": "vanished"}],
            "error": "source path does not exist",
        },
    )
    assert r.status_code == 200 and r.json()["status"] == "failed"
    [backup] = (await client.get("/api/backups")).json()["backups"]
    assert backup["error"] == "source path does not exist"
    assert backup["errors"] == [
        {"message": "disk full"},
        {"path": "a/b.txt", "message": "vanished"},
    ]


async def test_no_url_for_a_key_that_holds_a_backup(client: ApiClient) -> None:
    _, key, config_id = await _setup(client)
    start = await _start(client, key, config_id)
    await client.raw.put(local_path(start["upload"]["url"]), content=b"hello world")
    again = await client.agent_post(
        key, "/api/agent/backup/start", {"configId": config_id, "filename": FILENAME, "filesize": 1}
    )
    assert again.status_code == 409 and "already" in again.json()["detail"]
    # The old URL can't overwrite the stored object either.
    overwrite = await client.raw.put(local_path(start["upload"]["url"]), content=b"evil bytes!")
    assert overwrite.status_code == 409


@pytest.mark.parametrize("filename", ["../x", "a/b", "x\ny", "x" * 201, "/etc/passwd", ".."])
async def test_bad_filename_is_a_clear_400(client: ApiClient, filename: str) -> None:
    _, key, config_id = await _setup(client)
    r = await client.agent_post(
        key, "/api/agent/backup/start", {"configId": config_id, "filename": filename, "filesize": 1}
    )
    assert r.status_code == 400
    assert r.json()["detail"].startswith("filename:") and r.json()["field"] == "filename"
    assert await BackupLog.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"configId": 5, "filename": FILENAME},
        {"configId": "x", "filename": FILENAME, "filesize": -1},
        {"configId": "x", "filename": FILENAME, "sha256": "zz"},
        [],
        "text",
    ],
)
async def test_malformed_start_is_a_400(client: ApiClient, body: Any) -> None:
    _, key, _ = await _setup(client)
    r = await client.agent_post(key, "/api/agent/backup/start", body)
    assert r.status_code == 400, r.text
    assert r.json()["success"] is False


async def test_malformed_json_everywhere_is_400_not_500(client: ApiClient) -> None:
    _, key, _ = await _setup(client)
    for path in [
        "/api/agent/heartbeat",
        "/api/agent/backup/start",
        "/api/agent/backup/complete",
        "/api/agent/log",
        "/api/agent/backup/upload/part",
    ]:
        r = await client.raw.post(
            path,
            content=b"{oops",
            headers={"X-Agent-API-Key": key, "content-type": "application/json"},
        )
        assert r.status_code == 400, (path, r.status_code, r.text)


async def test_keys_are_checked(client: ApiClient) -> None:
    await _setup(client)
    for headers in [{}, {"X-Agent-API-Key": "bka_wrong"}, {"X-Agent-API-Key": "x" * 5000}]:
        r = await client.raw.post("/api/agent/heartbeat", json={}, headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"] == "unauthorized"


async def test_revocation_is_immediate(client: ApiClient) -> None:
    agent_id, key, _ = await _setup(client)
    assert (await client.agent_post(key, "/api/agent/heartbeat", {})).status_code == 200
    r = await client.post(f"/api/agents/{agent_id}/deactivate")
    assert r.status_code == 200 and r.json()["agent"]["active"] is False
    assert (await client.agent_post(key, "/api/agent/heartbeat", {})).status_code == 401
    assert (await client.agent_get(key, "/api/agent/configs")).status_code == 401
    await client.post(f"/api/agents/{agent_id}/activate")
    assert (await client.agent_post(key, "/api/agent/heartbeat", {})).status_code == 200
    assert (await client.delete(f"/api/agents/{agent_id}")).status_code == 204
    assert (await client.agent_post(key, "/api/agent/heartbeat", {})).status_code == 401


async def test_a_key_revoked_by_another_process_is_refused_here(
    client: ApiClient, services: Services, settings: Any
) -> None:
    """Another server process (its own registry, on the same database) deactivates the agent:
    this process, which holds the key in its cache, refuses it from then on. SQLite: the
    revocation count moved; PostgreSQL: NOTIFY. The cache has no lifetime, so nothing but the
    invalidation can make this pass."""
    from backend.services.agent_registry import AgentRegistry

    agent_id, key, _ = await _setup(client)
    assert (await client.agent_post(key, "/api/agent/heartbeat", {})).status_code == 200
    assert services.registry._cache  # cached here
    other = AgentRegistry(settings)
    if settings.database_url.startswith("postgres"):
        await other.listen_postgres(settings.database_url.replace("postgres://", "postgresql://"))
    try:
        await Agent.update({Agent.active: False}).where(Agent.id == uuid.UUID(agent_id))
        await other.revoked(uuid.UUID(agent_id))
    finally:
        await other.stop()
    loop = asyncio.get_running_loop()
    # SQLite: the very next request reads the count. PostgreSQL: NOTIFY arrives by push; allow
    # its delivery (milliseconds), far less than any lifetime the cache ever had.
    deadline = loop.time() + (1.0 if settings.database_url.startswith("postgres") else 0.0)
    status = (await client.agent_post(key, "/api/agent/heartbeat", {})).status_code
    while status == 200 and loop.time() < deadline:
        status = (await client.agent_post(key, "/api/agent/heartbeat", {})).status_code
    assert status == 401


async def test_an_idle_key_cache_reads_nothing(client: ApiClient, services: Services) -> None:
    """Cached keys are not re-read while nothing happens: an idle fleet costs no query, however
    many agents are cached (the heartbeat writer has nothing to write either)."""
    from tests.support.queries import count_queries

    _, key, _ = await _setup(client)
    assert (await client.agent_post(key, "/api/agent/heartbeat", {})).status_code == 200
    await asyncio.sleep(0.5)  # the buffered lastSeen is written (every 0.2 s here)
    with count_queries() as log:
        await asyncio.sleep(2.5)  # the old cache re-read every cached agent each second
    assert log.statements == []
    assert services.registry._cache


async def test_agent_cannot_touch_other_agents_configs_or_logs(client: ApiClient) -> None:
    _, key_a, config_a = await _setup(client)
    agent_b, key_b = await client.register_agent("other")
    # B can't start a backup of A's config, nor see it, nor finish A's log.
    r = await client.agent_post(
        key_b,
        "/api/agent/backup/start",
        {"configId": config_a, "filename": FILENAME, "filesize": 1},
    )
    assert r.status_code == 404
    assert (await client.agent_get(key_b, "/api/agent/configs")).json()["configs"] == []
    start = await _start(client, key_a, config_a)
    r = await client.agent_post(
        key_b, "/api/agent/backup/complete", {"logId": start["logId"], "status": "failed"}
    )
    assert r.status_code == 404
    r = await client.agent_post(key_b, "/api/agent/backup/upload/abort", {"logId": start["logId"]})
    assert r.status_code == 404


async def test_rate_limit_on_agent_endpoints(client: ApiClient, services: Services) -> None:
    _, key, _ = await _setup(client)
    object.__setattr__(services.settings, "agent_rate_limit", 5)
    codes = [
        (await client.agent_post(key, "/api/agent/heartbeat", {})).status_code for _ in range(8)
    ]
    assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3
    r = await client.agent_post(key, "/api/agent/heartbeat", {})
    assert int(r.headers["retry-after"]) >= 1


async def test_heartbeats_are_coalesced_but_status_is_right(
    client: ApiClient, services: Services
) -> None:
    agent_id, key, _ = await _setup(client)
    for _ in range(20):
        await client.agent_post(key, "/api/agent/heartbeat", {})
    # This process knows at once; the database catches up at the next flush.
    assert (await client.get(f"/api/agents/{agent_id}")).json()["agent"]["status"] == "online"
    await services.registry.flush()
    row = await Agent.select(Agent.last_seen).first()
    assert row["last_seen"] is not None


async def test_offline_after_missed_heartbeats(client: ApiClient, services: Services) -> None:
    agent_id, key, _ = await _setup(client)
    object.__setattr__(services.settings, "poll_interval", 1)
    object.__setattr__(services.settings, "offline_after_polls", 1.0)
    await client.agent_post(key, "/api/agent/heartbeat", {})
    assert (await client.get(f"/api/agents/{agent_id}")).json()["agent"]["status"] == "online"
    await asyncio.sleep(1.3)
    assert (await client.get(f"/api/agents/{agent_id}")).json()["agent"]["status"] == "offline"


async def test_multipart_flow(client: ApiClient) -> None:
    _, key, config_id = await _setup(client)
    start = await _start(client, key, config_id, multipart=True)
    upload = start["upload"]
    assert upload["method"] == "MULTIPART" and upload["uploadId"] and upload["partSize"] >= 5 * MiB
    chunks = [b"a" * (5 * MiB), b"b" * (5 * MiB), b"tail"]
    parts = []
    for number, chunk in enumerate(chunks, start=1):
        sha = hashlib.sha256(chunk).hexdigest()
        r = await client.agent_post(
            key,
            "/api/agent/backup/upload/part",
            {"logId": start["logId"], "partNumber": number, "size": len(chunk), "sha256": sha},
        )
        assert r.status_code == 200, r.text
        part = r.json()["part"]
        put = await client.raw.put(local_path(part["url"]), content=chunk, headers=part["headers"])
        assert put.status_code == 200, put.text
        parts.append({"partNumber": number, "etag": put.headers["etag"], "sha256": sha})
    early = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": start["logId"], "status": "completed", "bytesTransferred": 1},
    )
    assert early.status_code == 409 and "upload/complete" in early.json()["detail"]
    assembled = await client.agent_post(
        key, "/api/agent/backup/upload/complete", {"logId": start["logId"], "parts": parts}
    )
    assert assembled.status_code == 200 and assembled.json()["size"] == 10 * MiB + 4
    again = await client.agent_post(
        key, "/api/agent/backup/upload/complete", {"logId": start["logId"], "parts": parts}
    )
    assert again.status_code == 200 and again.json()["size"] == 10 * MiB + 4
    whole = hashlib.sha256(b"".join(chunks)).hexdigest()
    done = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {
            "logId": start["logId"],
            "status": "completed",
            "bytesTransferred": 10 * MiB + 4,
            "size": 10 * MiB + 4,
            "sha256": whole,
            "filesProcessed": 3,
            "duration": 9,
        },
    )
    assert done.status_code == 200, done.text
    [backup] = (await client.get("/api/backups")).json()["backups"]
    assert backup["status"] == "completed" and backup["sha256"] == whole


async def test_multipart_abort(client: ApiClient) -> None:
    _, key, config_id = await _setup(client)
    start = await _start(client, key, config_id, multipart=True)
    r = await client.agent_post(
        key, "/api/agent/backup/upload/abort", {"logId": start["logId"], "reason": "cancelled"}
    )
    assert r.status_code == 200
    [backup] = (await client.get("/api/backups")).json()["backups"]
    assert backup["status"] == "failed" and backup["error"] == "cancelled"
    again = await client.agent_post(
        key, "/api/agent/backup/upload/abort", {"logId": start["logId"]}
    )
    assert again.status_code == 200
    part = await client.agent_post(
        key,
        "/api/agent/backup/upload/part",
        {"logId": start["logId"], "partNumber": 1, "size": 1, "sha256": "0" * 64},
    )
    assert part.status_code == 409


async def test_part_url_needs_a_multipart_start(client: ApiClient) -> None:
    _, key, config_id = await _setup(client)
    start = await _start(client, key, config_id)
    r = await client.agent_post(
        key,
        "/api/agent/backup/upload/part",
        {"logId": start["logId"], "partNumber": 1, "size": 1, "sha256": "0" * 64},
    )
    assert r.status_code == 409 and "multipart" in r.json()["detail"]


async def test_agent_log_validation(client: ApiClient) -> None:
    _, key, _ = await _setup(client)
    for body in [
        {"level": "loud", "message": "x"},
        {"level": "info", "message": ""},
        {"level": "info", "message": "x" * 10001},
        {"level": "info", "message": "x", "metadata": {"big": "y" * 70000}},
    ]:
        r = await client.agent_post(key, "/api/agent/log", body)
        assert r.status_code == 400, body
    assert await AgentLog.count() == 0


async def test_keys_and_urls_never_reach_the_logs(
    client: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, key, config_id = await _setup(client)
    start = await _start(client, key, config_id)
    await client.raw.put(local_path(start["upload"]["url"]), content=b"hello world")
    await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": start["logId"], "status": "completed", "bytesTransferred": 11},
    )
    signature = urlsplit(start["upload"]["url"]).query
    # The test's own HTTP client (httpx) logs the URLs it calls; everything else is the server.
    server_lines = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    assert key not in server_lines
    assert signature not in server_lines
