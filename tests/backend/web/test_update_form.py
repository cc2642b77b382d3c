"""The agents page's *Agent updates* form (SQLite and PostgreSQL, the real ASGI app): each
agent's reported version shown, the policy set and shown, bad choices refused next to their
field with nothing changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.services import Services
from backend.settings import Settings
from tests.support.agent_releases import public_b64, signed_build
from tests.support.api import ApiClient
from tests.support.settings import make_settings
from tests.support.web import Browser

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url, release_public_key=public_b64())


async def test_versions_shown_and_the_policy_form(
    client: ApiClient, services: Services, tmp_path: Path
) -> None:
    browser = Browser(client)
    await client.signup()
    agent_id, key = await client.register_agent("laptop", "linux")
    beat = await client.agent_post(key, "/api/agent/heartbeat", {"version": "1.0.7"})
    assert beat.status_code == 200 and beat.json()["update"] is None
    listing = (await browser.get("/agents")).text
    assert '<td data-label="Version">1.0.7</td>' in listing
    assert "No agent build is published on this server yet." in listing
    assert "<dt>Agent version</dt><dd>1.0.7</dd>" in (await browser.get(f"/agents/{agent_id}")).text

    for version in ("1.1.0", "1.2.0"):
        path, signature = signed_build(tmp_path, "linux", version)
        await services.releases.add(path, "linux", version, signature)
    shown = (await browser.get("/agents")).text
    assert "Agents follow the newest build" in shown
    assert "Builds on this server: Linux 1.2.0, Linux 1.1.0." in shown

    saved = await browser.submit(
        "/agents", "/agents/updates", {"update_policy": "pin", "update_version": "1.1.0"}
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/agents#updates"
    policy = (await client.get("/api/agent-updates")).json()
    assert (policy["policy"], policy["version"]) == ("pin", "1.1.0")
    assert "Pinned to 1.1.0:" in (await browser.get("/agents")).text
    again = await client.agent_post(key, "/api/agent/heartbeat", {"version": "1.0.7"})
    assert again.json()["update"]["version"] == "1.1.0"

    for fields, field, words in [
        ({"update_policy": "pin", "update_version": "4.0"}, "update_version", "no release 4.0"),
        ({"update_policy": "pin", "update_version": ""}, "update_version", "needs the version"),
        ({"update_policy": "pin", "update_version": "x.y"}, "update_version", "not a version"),
        ({"update_policy": "whenever"}, "update_policy", "one of latest, pin, hold"),
        ({}, "update_policy", "one of latest, pin, hold"),
    ]:
        r = await browser.submit("/agents", "/agents/updates", fields)
        assert r.status_code == 400, (fields, r.text[:300])
        assert f'id="{field}-error">' in r.text and words in r.text, fields
    after = (await client.get("/api/agent-updates")).json()
    assert (after["policy"], after["version"]) == ("pin", "1.1.0")  # nothing changed

    # A version left in the box is ignored for the other choices.
    held = await browser.submit(
        "/agents", "/agents/updates", {"update_policy": "hold", "update_version": "1.1.0"}
    )
    assert held.status_code == 303
    assert (await client.get("/api/agent-updates")).json()["policy"] == "hold"
    assert "Updates are on hold:" in (await browser.get("/agents")).text
