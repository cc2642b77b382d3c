"""A thin client for tests: signs up, carries the CSRF header, and talks as an agent."""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from desktop_agent.engine.repo_protocol import encode_bitmap

if TYPE_CHECKING:
    from backend.services import Services
    from backend.services.accounts import CurrentUser


def local_path(url: str) -> str:
    """Path and query of a local-storage URL, for the in-process test client."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


class ApiClient:
    """Wraps an async httpx-compatible client (Litestar's AsyncTestClient or httpx.AsyncClient)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def _csrf(self) -> dict[str, str]:
        token = self.raw.cookies.get("csrftoken")
        return {"x-csrftoken": token} if token else {}

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self._csrf(), **kw.pop("headers", {})}
        response: httpx.Response = await self.raw.request(method, path, headers=headers, **kw)
        return response

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("POST", path, **kw)

    async def patch(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("PATCH", path, **kw)

    async def delete(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kw)

    async def signup(
        self, email: str = "owner@example.com", password: str = "correct horse"
    ) -> dict[str, Any]:
        r = await self.raw.post("/api/auth/signup", json={"email": email, "password": password})
        assert r.status_code == 201, r.text
        return dict(r.json()["user"])

    async def login(self, email: str, password: str) -> httpx.Response:
        response: httpx.Response = await self.raw.post(
            "/api/auth/login", json={"email": email, "password": password}
        )
        return response

    async def register_agent(
        self, name: str = "laptop", platform: str = "linux"
    ) -> tuple[str, str]:
        r = await self.post("/api/agent/register", json={"name": name, "platform": platform})
        assert r.status_code == 201, r.text
        agent = r.json()["agent"]
        return agent["id"], agent["apiKey"]

    async def create_config(self, agent_id: str | None, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": "Daily",
            "executionMode": "agent" if agent_id else "server",
            "agentId": agent_id,
            "sources": [{"path": "/home/me/docs"}],
        }
        body.update(fields)
        r = await self.post("/api/configs", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json()["config"])

    async def agent_post(self, key: str, path: str, body: Any) -> httpx.Response:
        response: httpx.Response = await self.raw.post(
            path, json=body, headers={"X-Agent-API-Key": key}
        )
        return response

    async def agent_get(self, key: str, path: str) -> httpx.Response:
        response: httpx.Response = await self.raw.get(path, headers={"X-Agent-API-Key": key})
        return response


async def complete_one_backup(client: ApiClient, key: str, config_id: str) -> str:
    """A 3-byte backup of the config, started, uploaded and completed; its log id."""
    start = await client.agent_post(
        key,
        "/api/agent/backup/start",
        {"configId": config_id, "filename": f"b-{uuid.uuid4().hex[:8]}.tar.gz", "filesize": 3},
    )
    assert start.status_code == 200, start.text
    put = await client.raw.put(
        start.json()["upload"]["url"].replace("http://testserver.local", ""), content=b"abc"
    )
    assert put.status_code == 200
    done = await client.agent_post(
        key,
        "/api/agent/backup/complete",
        {"logId": start.json()["logId"], "status": "completed", "size": 3},
    )
    assert done.status_code == 200, done.text
    return str(start.json()["logId"])


async def commit_opaque_snapshot(client: ApiClient, key: str, config_id: str) -> str:
    """A committed snapshot (opaque objects, as the server sees them) of an incremental config."""
    r = await client.agent_post(key, "/api/agent/snapshot/start", {"configId": config_id})
    assert r.status_code == 200, r.text
    backup_id, lease = r.json()["backupId"], r.json()["lease"]["token"]
    pack = b"sealed pack bytes"
    objects = [
        ("config", "config", b"sealed repository config"),
        ("data", hashlib.sha256(pack).hexdigest(), pack),
        ("snapshot", backup_id, b"sealed snapshot root"),
    ]
    body = [
        {"kind": k, "name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
        for k, n, d in objects
    ]
    r = await client.agent_post(
        key, "/api/agent/snapshot/objects", {"backupId": backup_id, "objects": body}
    )
    assert r.status_code == 200, r.text
    for slot, (_, _, data) in zip(r.json()["objects"], objects, strict=True):
        up = slot["upload"]
        put = await client.raw.put(local_path(up["url"]), content=data, headers=up["headers"])
        assert put.status_code in (200, 201), put.text
    r = await client.agent_post(
        key,
        "/api/agent/snapshot/complete",
        {"backupId": backup_id, "status": "completed", "size": 1, "packs": encode_bitmap([0])},
    )
    assert r.status_code == 200, r.text
    await client.agent_post(
        key, "/api/agent/lease/release", {"configId": config_id, "token": lease}
    )
    return str(backup_id)


async def signed_in_user(client: ApiClient, services: Services) -> CurrentUser:
    """The user ``client`` is signed in as, as the services see them."""
    me = await services.accounts.user_for_session(client.raw.cookies["backapp_session"])
    assert me is not None
    return me
