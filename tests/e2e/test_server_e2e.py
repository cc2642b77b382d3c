"""End to end: real ``backapp serve`` processes on loopback, a real S3 endpoint (moto server mode; the
agent flows on SeaweedFS too), driven over HTTP exactly as an agent would, with the spec's JSON."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import httpx
import pytest

from tests.support.s3 import ON_BOTH
from tests.support.server_process import LiveServer, LiveServerFactory

pytestmark = pytest.mark.e2e

FILENAME = "backup-2025-01-07-143022.tar.gz"
MiB = 1024 * 1024


def _agent_run(
    server: LiveServer, key: str, config_id: str, payload: bytes, filename: str = FILENAME
) -> dict[str, Any]:
    """What an agent does for one config, with the spec's JSON: start, PUT, complete."""
    agent = server.agent_client(key)
    hb = agent.post("/api/agent/heartbeat", json={"version": "0.1.0", "platform": "darwin"})
    assert hb.status_code == 200
    assert hb.json()["status"] == "online" and hb.json()["success"] is True
    assert hb.json()["pollInterval"] == 30 and hb.json()["agent"]["id"]
    configs = agent.get("/api/agent/configs").json()["configs"]
    assert config_id in [c["id"] for c in configs]
    start = agent.post(
        "/api/agent/backup/start",
        json={"configId": config_id, "filename": filename, "filesize": len(payload)},
    )
    assert start.status_code == 200, start.text
    upload = start.json()["upload"]
    put = httpx.put(upload["url"], content=payload, headers=upload.get("headers", {}))
    assert put.status_code == 200, put.text
    done = agent.post(
        "/api/agent/backup/complete",
        json={
            "logId": start.json()["logId"],
            "status": "completed",
            "filesProcessed": 150,
            "bytesTransferred": len(payload),
            "duration": 45000,
            "errors": [],
        },
    )
    assert done.status_code == 200, done.text
    assert done.json()["success"] is True
    return dict(start.json())


@pytest.mark.parametrize("s3_server", ON_BOTH, indirect=True)
def test_agent_flow_against_s3(
    live_server_factory: LiveServerFactory, s3_server: Any, s3_bucket: str
) -> None:
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner = server.owner()
    agent_id, key = owner.register_agent("David's MacBook")
    config = owner.create_config(agent_id, sources=[{"path": "/Users/d/backup"}])
    assert config["destination"]["bucket"] == s3_bucket

    payload = b"tar.gz bytes " * 1000
    start = _agent_run(server, key, config["id"], payload)
    s3_path = start["upload"]["s3Path"]
    assert s3_path.startswith("users/") and f"/agents/{agent_id}/configs/{config['id']}/" in s3_path
    assert (
        "X-Amz-Signature=" in start["upload"]["url"]
        and "X-Amz-Expires=3600" in start["upload"]["url"]
    )

    stored = s3_server.client().get_object(Bucket=s3_bucket, Key=s3_path)["Body"].read()
    assert stored == payload
    [backup] = owner.backups()
    assert backup["status"] == "completed" and backup["size"] == len(payload)
    assert backup["s3Path"] == s3_path

    # The URL it was given cannot overwrite the finished backup, and no new URL is handed out.
    again = httpx.put(start["upload"]["url"], content=b"evil", headers=start["upload"]["headers"])
    assert again.status_code == 412
    assert s3_server.client().get_object(Bucket=s3_bucket, Key=s3_path)["Body"].read() == payload
    retry = server.agent_client(key).post(
        "/api/agent/backup/start",
        json={"configId": config["id"], "filename": FILENAME, "filesize": 1},
    )
    assert retry.status_code == 409

    # Logs reach the owner; the key and URL signatures never reach the server's log.
    agent = server.agent_client(key)
    assert (
        agent.post(
            "/api/agent/log",
            json={"level": "error", "message": "Source missing", "metadata": {"path": "/x"}},
        ).status_code
        == 201
    )
    logs = owner.request("GET", f"/api/agents/{agent_id}/logs").json()["logs"]
    assert logs[0]["message"] == "Source missing"
    status = owner.request("GET", f"/api/agents/{agent_id}").json()["agent"]
    assert status["status"] == "online" and status["version"] == "0.1.0"
    server_log = server.log()
    assert "/api/agent/backup/start" in server_log  # the access log is on
    assert key not in server_log
    signature = start["upload"]["url"].split("X-Amz-Signature=")[1].split("&")[0]
    assert signature not in server_log


@pytest.mark.parametrize("s3_server", ON_BOTH, indirect=True)
def test_multipart_against_s3(
    live_server_factory: LiveServerFactory, s3_server: Any, s3_bucket: str
) -> None:
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner = server.owner()
    agent_id, key = owner.register_agent()
    config = owner.create_config(agent_id)
    agent = server.agent_client(key)
    start = agent.post(
        "/api/agent/backup/start",
        json={
            "configId": config["id"],
            "filename": "big.tar.gz",
            "filesize": 11 * MiB,
            "multipart": True,
        },
    )
    assert start.status_code == 200, start.text
    log_id = start.json()["logId"]
    assert start.json()["upload"]["method"] == "MULTIPART"
    chunks = [bytes([i]) * (5 * MiB) for i in range(2)] + [b"the end"]
    parts = []
    for number, chunk in enumerate(chunks, start=1):
        sha = hashlib.sha256(chunk).hexdigest()
        part = agent.post(
            "/api/agent/backup/upload/part",
            json={"logId": log_id, "partNumber": number, "size": len(chunk), "sha256": sha},
        ).json()["part"]
        put = httpx.put(part["url"], content=chunk, headers=part["headers"], timeout=60)
        assert put.status_code == 200, put.text
        parts.append({"partNumber": number, "etag": put.headers["etag"], "sha256": sha})
    size = sum(len(c) for c in chunks)
    assembled = agent.post(
        "/api/agent/backup/upload/complete", json={"logId": log_id, "parts": parts}
    )
    assert assembled.status_code == 200 and assembled.json()["size"] == size
    done = agent.post(
        "/api/agent/backup/complete",
        json={
            "logId": log_id,
            "status": "completed",
            "bytesTransferred": size,
            "size": size,
            "sha256": hashlib.sha256(b"".join(chunks)).hexdigest(),
            "filesProcessed": 1,
            "duration": 5,
        },
    )
    assert done.status_code == 200, done.text
    body = (
        s3_server.client()
        .get_object(Bucket=s3_bucket, Key=start.json()["upload"]["s3Path"])["Body"]
        .read()
    )
    assert body == b"".join(chunks)


def test_agent_flow_on_local_storage(live_server_factory: LiveServerFactory) -> None:
    server = live_server_factory.start()
    owner = server.owner()
    agent_id, key = owner.register_agent()
    config = owner.create_config(agent_id)
    payload = bytes(range(256)) * 4096
    start = _agent_run(server, key, config["id"], payload)
    assert start["upload"]["url"].startswith(server.url + "/storage/o/users/")
    stored = server.data_dir / "storage" / "objects" / start["upload"]["s3Path"]
    assert stored.read_bytes() == payload
    [backup] = owner.backups()
    assert backup["sha256"] == hashlib.sha256(payload).hexdigest()
    tampered = start["upload"]["url"].replace("X-Backapp-Expires=", "X-Backapp-Expires=9")
    assert httpx.put(tampered, content=b"x").status_code == 403
    assert httpx.get(start["upload"]["url"]).status_code == 403  # a PUT URL can't read
    signature = start["upload"]["url"].split("Signature=")[1].split("&")[0]
    assert signature not in server.log() and key not in server.log()


def test_two_processes_share_sessions_agents_and_revocation(
    live_server_factory: LiveServerFactory, pg_cluster: Any, s3_server: Any, s3_bucket: str
) -> None:
    """Several server processes behind a load balancer: one PostgreSQL, one bucket."""
    url = pg_cluster.create_database("e2e_two_processes")
    a = live_server_factory.start(database_url=url, s3=s3_server, bucket=s3_bucket)
    b = live_server_factory.start(database_url=url, s3=s3_server, bucket=s3_bucket)
    owner_a = a.owner()
    agent_id, key = owner_a.register_agent()
    config = owner_a.create_config(agent_id)

    # The session made on A works on B (server-side store in the shared database).
    owner_b = b.owner(signup=False)  # signs in on B...
    owner_b.http.cookies = owner_a.http.cookies  # ...but we prove A's own cookie works there
    me = owner_b.request("GET", "/api/auth/me")
    assert me.status_code == 200 and me.json()["user"]["email"] == "owner@example.com"

    # Heartbeat on A; B reports the agent online once A flushed (0.2 s here).
    assert a.agent_client(key).post("/api/agent/heartbeat", json={}).status_code == 200
    deadline = time.monotonic() + 5
    while owner_b.request("GET", f"/api/agents/{agent_id}").json()["agent"]["status"] != "online":
        assert time.monotonic() < deadline, "B never saw the heartbeat"
        time.sleep(0.1)

    # Start on A, complete on B.
    agent_a, agent_b = a.agent_client(key), b.agent_client(key)
    start = agent_a.post(
        "/api/agent/backup/start",
        json={"configId": config["id"], "filename": FILENAME, "filesize": 5},
    )
    upload = start.json()["upload"]
    assert httpx.put(upload["url"], content=b"hello", headers=upload["headers"]).status_code == 200
    done = agent_b.post(
        "/api/agent/backup/complete",
        json={"logId": start.json()["logId"], "status": "completed", "bytesTransferred": 5},
    )
    assert done.status_code == 200, done.text

    # B has the key cached; revoking it on A takes effect on B at once (LISTEN/NOTIFY).
    assert agent_b.get("/api/agent/configs").status_code == 200
    assert owner_a.request("POST", f"/api/agents/{agent_id}/deactivate").status_code == 200
    time.sleep(0.2)  # NOTIFY delivery over loopback
    assert agent_b.get("/api/agent/configs").status_code == 401
    assert agent_a.get("/api/agent/configs").status_code == 401
