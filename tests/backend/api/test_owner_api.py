"""The owner's JSON API through the real ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from backend.backups.tables import BackupConfig
from tests.support.api import ApiClient


async def _second_user(client: ApiClient, services: Any) -> ApiClient:
    """Another account in the same server, with its own cookie jar."""
    import httpx

    object.__setattr__(services.settings, "allow_signup", True)
    other = ApiClient(
        httpx.AsyncClient(transport=client.raw._transport, base_url="http://testserver.local")
    )
    await other.signup("mallory@example.com", "mallory-password")
    return other


async def test_config_crud(client: ApiClient) -> None:
    await client.signup()
    agent_id, _ = await client.register_agent()
    created = await client.create_config(
        agent_id,
        name="Home folder",
        sources=[{"path": "/Users/d/Documents"}, {"path": "/Users/d/Pictures"}],
        excludes=["*.tmp", "node_modules"],
        options={"compression": True, "retentionDays": 7, "compressionFormat": "zstd"},
        destination={"bucket": "ignored"},
    )
    assert created["name"] == "Home folder" and created["executionMode"] == "agent"
    assert created["agentId"] == agent_id
    assert created["options"] == {
        "type": "full",
        "compression": True,
        "encryption": False,
        "retentionDays": 7,
        "retention": None,
        "compressionFormat": "zstd",
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
    assert created["destination"]["prefix"].endswith(f"/agents/{agent_id}/configs/{created['id']}")
    assert created["destination"]["bucket"] == "local"

    listed = (await client.get("/api/configs")).json()["configs"]
    assert [c["id"] for c in listed] == [created["id"]]
    got = (await client.get(f"/api/configs/{created['id']}")).json()["config"]
    assert got == created

    r = await client.patch(
        f"/api/configs/{created['id']}", json={"name": "Renamed", "options": {"retentionDays": 90}}
    )
    assert r.status_code == 200
    patched = r.json()["config"]
    assert patched["name"] == "Renamed" and patched["options"]["retentionDays"] == 90
    assert patched["options"]["compressionFormat"] == "zstd"  # untouched fields stay

    r = await client.patch(f"/api/configs/{created['id']}", json={"executionMode": "server"})
    assert r.status_code == 200 and r.json()["config"]["agentId"] is None
    assert r.json()["config"]["destination"]["prefix"].startswith("users/")
    assert "/server/configs/" in r.json()["config"]["destination"]["prefix"]

    assert (await client.delete(f"/api/configs/{created['id']}")).status_code == 204
    assert (await client.get(f"/api/configs/{created['id']}")).status_code == 404
    assert await BackupConfig.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "executionMode": "agent", "sources": [{"path": "/a"}]}, "agentId"),
        (
            {
                "name": "x",
                "executionMode": "agent",
                "agentId": "not-a-uuid",
                "sources": [{"path": "/a"}],
            },
            "agentId",
        ),
        (
            {
                "name": "x",
                "executionMode": "agent",
                "agentId": "00000000-0000-0000-0000-000000000000",
                "sources": [{"path": "/a"}],
            },
            "agentId",
        ),
        ({"name": "   ", "executionMode": "server", "sources": [{"path": "/a"}]}, "name"),
        ({"name": "x", "executionMode": "server", "sources": [{"path": "  "}]}, "sources"),
        (
            {
                "name": "x",
                "executionMode": "server",
                "sources": [{"path": "/a"}],
                "options": {"encryption": True},
            },
            "encryption",
        ),
    ],
)
async def test_config_validation_names_the_field(
    client: ApiClient, body: dict[str, Any], field: str
) -> None:
    await client.signup()
    r = await client.post("/api/configs", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field
    assert await BackupConfig.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "sources": []},
        {"name": "x", "sources": [{"path": "/a"}], "executionMode": "cloud"},
        {"name": "x", "sources": [{"path": "/a"}], "options": {"retentionDays": -1}},
        {"name": "x", "sources": [{"path": "/a"}], "options": {"compressionFormat": "rar"}},
        {"name": "x", "sources": [{"path": "/a"}], "surprise": 1},
        {"sources": [{"path": "/a"}]},
        {"name": "x" * 201, "sources": [{"path": "/a"}]},
    ],
)
async def test_config_schema_errors_are_400(client: ApiClient, body: dict[str, Any]) -> None:
    await client.signup()
    r = await client.post("/api/configs", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["success"] is False and r.json()["detail"]


async def test_server_mode_config_refuses_an_agent(client: ApiClient) -> None:
    await client.signup()
    agent_id, _ = await client.register_agent()
    r = await client.post(
        "/api/configs",
        json={
            "name": "x",
            "executionMode": "server",
            "agentId": agent_id,
            "sources": [{"path": "/srv"}],
        },
    )
    assert r.status_code == 400 and r.json()["field"] == "agentId"


async def test_agents_list_get_rename_delete_and_logs(client: ApiClient) -> None:
    await client.signup()
    agent_id, key = await client.register_agent("old name")
    config = await client.create_config(agent_id)
    listed = (await client.get("/api/agents")).json()["agents"]
    assert [a["id"] for a in listed] == [agent_id]
    assert listed[0]["configIds"] == [config["id"]] and listed[0]["status"] == "offline"
    r = await client.patch(f"/api/agents/{agent_id}", json={"name": "new name"})
    assert r.status_code == 200 and r.json()["agent"]["name"] == "new name"
    assert (await client.patch(f"/api/agents/{agent_id}", json={"name": ""})).status_code == 400
    assert (await client.patch(f"/api/agents/{agent_id}", json={"apiKey": "x"})).status_code == 400

    for level in ["info", "error", "info"]:
        await client.agent_post(key, "/api/agent/log", {"level": level, "message": f"{level} line"})
    logs = (await client.get(f"/api/agents/{agent_id}/logs")).json()
    assert [entry["level"] for entry in logs["logs"]] == ["info", "error", "info"]
    errors = (await client.get(f"/api/agents/{agent_id}/logs", params={"level": "error"})).json()
    assert [entry["message"] for entry in errors["logs"]] == ["error line"]
    page = (await client.get(f"/api/agents/{agent_id}/logs", params={"limit": 2})).json()
    assert len(page["logs"]) == 2 and page["nextBefore"]
    rest = (
        await client.get(
            f"/api/agents/{agent_id}/logs", params={"limit": 2, "before": page["nextBefore"]}
        )
    ).json()
    assert len(rest["logs"]) == 1
    assert (
        await client.get(f"/api/agents/{agent_id}/logs", params={"limit": 0})
    ).status_code == 400

    assert (await client.delete(f"/api/agents/{agent_id}")).status_code == 204
    assert (await client.get(f"/api/agents/{agent_id}")).status_code == 404
    # The config survives, unassigned.
    assert (await client.get(f"/api/configs/{config['id']}")).json()["config"]["agentId"] is None


async def test_backup_filters(client: ApiClient) -> None:
    await client.signup()
    agent_id, key = await client.register_agent()
    a = await client.create_config(agent_id, name="A")
    b = await client.create_config(agent_id, name="B")
    for config, name in [(a, "one.tar.gz"), (b, "two.tar.gz"), (a, "three.tar.gz")]:
        r = await client.agent_post(
            key,
            "/api/agent/backup/start",
            {"configId": config["id"], "filename": name, "filesize": 1},
        )
        assert r.status_code == 200
    logs = (await client.get("/api/backups")).json()
    assert logs["total"] == 3
    by_config = (await client.get("/api/backups", params={"configId": a["id"]})).json()
    assert by_config["total"] == 2 and {x["configName"] for x in by_config["backups"]} == {"A"}
    first = by_config["backups"][-1]
    await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": first["id"], "status": "failed", "error": "boom"},
    )
    failed = (await client.get("/api/backups", params={"status": "failed"})).json()
    assert [x["id"] for x in failed["backups"]] == [first["id"]]
    paged = (await client.get("/api/backups", params={"limit": 1, "offset": 1})).json()
    assert paged["total"] == 3 and len(paged["backups"]) == 1
    assert (await client.get("/api/backups", params={"status": "weird"})).status_code == 400
    assert (await client.get("/api/backups", params={"configId": "nope"})).status_code == 400
    one = (await client.get(f"/api/backups/{first['id']}")).json()["backup"]
    assert one["error"] == "boom"


async def test_another_user_sees_nothing_and_changes_nothing(
    client: ApiClient, services: Any
) -> None:
    await client.signup()
    agent_id, key = await client.register_agent("victim")
    config = await client.create_config(agent_id)
    r = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": config["id"], "filename": "b.tar.gz", "filesize": 1},
    )
    log_id = r.json()["logId"]
    upload_url = r.json()["upload"]["url"]
    await client.agent_post(key, "/api/agent/log", {"level": "info", "message": "secret path"})

    mallory = await _second_user(client, services)
    try:
        assert (await mallory.get("/api/agents")).json()["agents"] == []
        assert (await mallory.get("/api/configs")).json()["configs"] == []
        assert (await mallory.get("/api/backups")).json()["total"] == 0
        for method, path, body in [
            ("GET", f"/api/agents/{agent_id}", None),
            ("PATCH", f"/api/agents/{agent_id}", {"name": "pwned"}),
            ("POST", f"/api/agents/{agent_id}/deactivate", None),
            ("DELETE", f"/api/agents/{agent_id}", None),
            ("GET", f"/api/agents/{agent_id}/logs", None),
            ("GET", f"/api/configs/{config['id']}", None),
            ("PATCH", f"/api/configs/{config['id']}", {"name": "pwned"}),
            ("DELETE", f"/api/configs/{config['id']}", None),
            ("GET", f"/api/backups/{log_id}", None),
            ("GET", f"/api/backups/{log_id}/download", None),
        ]:
            r = await mallory.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.status_code)
        # Nor can Mallory point her config at the victim's agent.
        r = await mallory.post(
            "/api/configs",
            json={
                "name": "x",
                "executionMode": "agent",
                "agentId": agent_id,
                "sources": [{"path": "/"}],
            },
        )
        assert r.status_code == 400
        # Mallory's own agent can't use the victim's config either.
        _, mallory_key = await mallory.register_agent("mallory's")
        r = await mallory.agent_post(
            mallory_key,
            "/api/agent/backup/start",
            {"configId": config["id"], "filename": "x.tar.gz", "filesize": 1},
        )
        assert r.status_code == 404
    finally:
        await mallory.raw.aclose()

    # Nothing changed for the victim.
    agent = (await client.get(f"/api/agents/{agent_id}")).json()["agent"]
    assert agent["name"] == "victim" and agent["active"] is True
    assert (await client.get(f"/api/configs/{config['id']}")).json()["config"]["name"] == "Daily"
    assert urlsplit(upload_url).path.startswith("/storage/o/users/")


async def test_unknown_and_malformed_ids_are_404(client: ApiClient) -> None:
    await client.signup()
    for path in [
        "/api/agents/not-a-uuid",
        "/api/configs/123",
        "/api/backups/%20",
        "/api/agents/00000000-0000-0000-0000-000000000000",
    ]:
        r = await client.get(path)
        assert r.status_code == 404, path
        assert r.json()["success"] is False


async def test_owner_api_needs_a_session(client: ApiClient) -> None:
    for path in ["/api/agents", "/api/configs", "/api/backups"]:
        assert (await client.get(path)).status_code == 401
    assert (await client.post("/api/configs", json={})).status_code == 401


async def test_openapi_documents_every_endpoint(client: ApiClient) -> None:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path in [
        "/api/auth/signup",
        "/api/auth/login",
        "/api/auth/logout",
        "/api/auth/me",
        "/api/agent/register",
        "/api/agent/heartbeat",
        "/api/agent/configs",
        "/api/agent/backup/start",
        "/api/agent/backup/complete",
        "/api/agent/log",
        "/api/agent/backup/upload/part",
        "/api/agent/backup/upload/complete",
        "/api/agent/backup/upload/abort",
        "/api/configs",
        "/api/configs/{config_id}",
        "/api/agents",
        "/api/agents/{agent_id}",
        "/api/agents/{agent_id}/logs",
        "/api/backups",
        "/api/backups/{backup_id}",
    ]:
        assert path in paths, path
    start = paths["/api/agent/backup/start"]["post"]
    schema_ref = start["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = schema_ref.rsplit("/", 1)[-1]
    props = r.json()["components"]["schemas"][name]["properties"]
    assert {"configId", "filename", "filesize"} <= set(props)
