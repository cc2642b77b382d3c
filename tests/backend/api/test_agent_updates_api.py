"""Auto-update through the API: the heartbeat's ``update`` (latest, pin with a downgrade, hold,
unknown platform, no version) on SQLite and PostgreSQL, and the owner's ``/api/agent-updates``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from backend.services import Services
from backend.settings import Settings
from desktop_agent.engine.releases import parse_public_key, verify_release
from tests.support.agent_releases import public_b64, signed_build
from tests.support.api import ApiClient, local_path
from tests.support.settings import make_settings

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url, release_public_key=public_b64())


async def publish(services: Services, folder: Path, platform: str, version: str) -> bytes:
    path, signature = signed_build(folder, platform, version)
    await services.releases.add(path, platform, version, signature)
    return path.read_bytes()


async def beat(client: ApiClient, key: str, **body: Any) -> Any:
    r = await client.agent_post(key, "/api/agent/heartbeat", body)
    assert r.status_code == 200, r.text
    return r.json()["update"]


async def test_the_heartbeat_offers_the_newest_signed_build(
    client: ApiClient, services: Services, tmp_path: Path
) -> None:
    await client.signup()
    _agent_id, key = await client.register_agent("laptop", "linux")
    assert await beat(client, key, version="1.0.0", platform="linux") is None  # nothing published
    await publish(services, tmp_path, "linux", "1.2.3")
    build = await publish(services, tmp_path, "linux", "1.2.4")

    update = await beat(client, key, version="1.0.0", platform="linux")
    assert set(update) == {"version", "url", "sha256", "size", "signature"}
    assert update["version"] == "1.2.4" and update["size"] == len(build)
    assert update["sha256"] == hashlib.sha256(build).hexdigest()
    # What the agent checks: the release key's signature over exactly these fields.
    verify_release(
        parse_public_key(public_b64()),
        "linux",
        update["version"],
        update["sha256"],
        update["size"],
        update["signature"],
    )
    got = await client.raw.get(local_path(update["url"]))
    assert got.status_code == 200 and got.content == build
    assert await beat(client, key, version="1.2.4", platform="linux") is None
    # The platform comes from the agent's record when a heartbeat leaves it out.
    assert (await beat(client, key, version="1.0.0"))["version"] == "1.2.4"
    assert await beat(client, key, platform="linux") is None  # no version: no update
    assert await beat(client, key, version="nightly build", platform="linux") is None
    assert await beat(client, key, version="1.0.0", platform="sunos5") is None


async def test_pin_downgrades_and_hold_stops_updates(
    client: ApiClient, services: Services, tmp_path: Path
) -> None:
    await client.signup()
    _agent_id, key = await client.register_agent("laptop", "darwin")
    for version in ("2.0.0", "2.1.0"):
        await publish(services, tmp_path, "darwin", version)

    r = await client.request("PUT", "/api/agent-updates", json={"policy": "pin", "version": "2.0"})
    assert r.status_code == 200, r.text
    assert r.json()["policy"] == "pin" and r.json()["version"] == "2.0.0"
    assert (await beat(client, key, version="2.1.0", platform="darwin"))["version"] == "2.0.0"
    assert await beat(client, key, version="2.0.0", platform="darwin") is None

    r = await client.request("PUT", "/api/agent-updates", json={"policy": "hold", "version": None})
    assert r.status_code == 200, r.text
    assert await beat(client, key, version="1.0.0", platform="darwin") is None

    r = await client.request("PUT", "/api/agent-updates", json={"policy": "latest"})
    assert r.status_code == 200, r.text
    assert (await beat(client, key, version="2.0.0", platform="darwin"))["version"] == "2.1.0"


async def test_the_owner_policy_api(client: ApiClient, services: Services, tmp_path: Path) -> None:
    assert (await client.get("/api/agent-updates")).status_code == 401
    await client.signup()
    r = await client.get("/api/agent-updates")
    assert r.status_code == 200, r.text
    assert r.json()["policy"] == "latest" and r.json()["version"] is None
    assert r.json()["releases"] == []
    await publish(services, tmp_path, "linux", "1.5.0")
    await publish(services, tmp_path, "win32", "1.6.0")
    assert [
        (x["platform"], x["version"])
        for x in (await client.get("/api/agent-updates")).json()["releases"]
    ] == [("linux", "1.5.0"), ("win32", "1.6.0")]

    ok = await client.request(
        "PUT", "/api/agent-updates", json={"policy": "pin", "version": "1.6.0"}
    )
    assert ok.status_code == 200, ok.text
    for body, field in [
        ({"policy": "pin", "version": "7.0.0"}, "version"),  # no such release
        ({"policy": "pin", "version": None}, "version"),
        ({"policy": "pin"}, "version"),
        ({"policy": "pin", "version": "one point six"}, "version"),
        ({"policy": "hold", "version": "1.5.0"}, "version"),
        ({"policy": "sometimes", "version": None}, "policy"),
    ]:
        r = await client.request("PUT", "/api/agent-updates", json=body)
        assert r.status_code == 400, (body, r.text)
        assert field in r.text, (body, r.text)
    bad = await client.request("PUT", "/api/agent-updates", json={"policy": "hold", "extra": 1})
    assert bad.status_code == 400
    # Without the CSRF header a signed-in browser's PUT is refused.
    forged = await client.raw.put("/api/agent-updates", json={"policy": "hold"})
    assert forged.status_code == 403
    after = (await client.get("/api/agent-updates")).json()
    assert (after["policy"], after["version"]) == ("pin", "1.6.0")
