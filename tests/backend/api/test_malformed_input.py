"""Every documented endpoint, fed junk: a precise 4xx, never a 500, and nothing changes."""

from __future__ import annotations

from typing import Any

import pytest

from backend.agents.tables import Agent, AgentLog
from backend.backups.tables import BackupConfig, BackupLog
from tests.support.api import ApiClient

JUNK_BODIES: list[Any] = [
    None,
    [],
    "string",
    12,
    {"": None},
    {"configId": None, "filename": None, "logId": None},
    {"configId": ["x"], "filename": {"a": 1}, "status": 7, "level": [], "message": {}},
    {"logId": "00000000-0000-0000-0000-000000000000", "status": "completed", "parts": [{}]},
    {"name": "x" * 100_000, "sources": "nope", "options": []},
    {"partNumber": 0, "size": -1, "sha256": "x", "logId": "x"},
    {"partNumber": 10**30, "size": 10**30},
    {"filesize": 1.5, "duration": "NaN"},
    {"email": None, "password": ["x"]},
]
RAW_BODIES: list[bytes] = [
    b'{"filesize": 1e309}',
    b"",
    b"{",
    b"\xff\xfe",
    b"[1,2",
    b'{"a": 1}' * 1000,
    b"null",
]


async def _counts() -> tuple[int, ...]:
    return (
        await Agent.count(),
        await AgentLog.count(),
        await BackupConfig.count(),
        await BackupLog.count(),
    )


@pytest.fixture
async def world(client: ApiClient) -> dict[str, str]:
    await client.signup()
    agent_id, key = await client.register_agent()
    config = await client.create_config(agent_id)
    return {"agent_id": agent_id, "key": key, "config_id": config["id"]}


async def test_no_endpoint_answers_junk_with_a_500(
    client: ApiClient, world: dict[str, str]
) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    before = await _counts()
    seen = 0
    for path, operations in schema["paths"].items():
        if path.startswith("/storage/"):
            continue  # signed-URL endpoints: covered in tests/backend/storage
        concrete = (
            path.replace("{config_id}", world["config_id"])
            .replace("{agent_id}", world["agent_id"])
            .replace("{backup_id}", "00000000-0000-0000-0000-000000000000")
        )
        for method in operations:
            if method.upper() not in {"POST", "PATCH", "PUT", "DELETE", "GET"}:
                continue
            if method.upper() == "DELETE" or path in {"/api/auth/logout"}:
                continue  # valid without a body: would legitimately change state
            headers = {"X-Agent-API-Key": world["key"]}
            if method.upper() == "GET":
                for params in [
                    {"limit": "-5"},
                    {"status": "x"},
                    {"before": "yesterday"},
                    {"since": "2025-13-45"},
                    {"offset": "a"},
                    {"level": "loud"},
                ]:
                    r = await client.request("GET", concrete, params=params, headers=headers)
                    assert r.status_code < 500, (path, params, r.status_code, r.text)
                    seen += 1
                continue
            for body in JUNK_BODIES:
                r = await client.request(method.upper(), concrete, json=body, headers=headers)
                assert r.status_code < 500, (method, path, body, r.status_code, r.text)
                if r.status_code >= 400:
                    assert r.json()["success"] is False and r.json()["detail"], (path, body)
                seen += 1
            for raw in RAW_BODIES:
                r = await client.request(
                    method.upper(),
                    concrete,
                    content=raw,
                    headers={**headers, "content-type": "application/json"},
                )
                assert r.status_code < 500, (method, path, raw[:20], r.status_code, r.text)
                seen += 1
    assert seen > 200
    # Junk registered nothing, logged nothing, started nothing.
    assert await _counts() == before


async def test_unknown_routes_and_methods_are_json_4xx(client: ApiClient) -> None:
    r = await client.get("/api/nope")
    assert r.status_code == 404 and r.json()["success"] is False
    r = await client.raw.put("/api/agent/heartbeat", json={})
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
