"""Pairing codes through the real ASGI app, on SQLite and PostgreSQL: issued by a signed-in owner
(with CSRF), traded once for a new agent's key, rate-limited, expiring."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from backend.accounts.tables import LoginThrottle
from backend.agents.tables import Agent, PairingCode
from backend.services import Services
from backend.services.clock import utcnow
from backend.services.pairing import ALPHABET, normalise_code
from tests.support.api import ApiClient

CODE = re.compile(rf"^[{ALPHABET}]{{3}}-[{ALPHABET}]{{3}}-[{ALPHABET}]{{3}}$")


async def _code(client: ApiClient, name: str = "Kitchen PC") -> str:
    r = await client.post("/api/agents/pairing-codes", json={"name": name})
    assert r.status_code == 201, r.text
    body = r.json()
    assert CODE.match(body["code"]), body
    assert body["name"] == name and body["expiresAt"].endswith("Z")
    return str(body["code"])


async def test_a_code_creates_an_agent_once_and_only_its_digest_is_kept(
    client: ApiClient,
) -> None:
    await client.signup()
    code = await _code(client)
    rows = await PairingCode.select()
    assert len(rows) == 1
    stored = " ".join(str(v) for v in rows[0].values())
    assert code not in stored and code.replace("-", "") not in stored
    expires = rows[0]["expires_at"]
    assert expires.replace(tzinfo=None) - rows[0]["created_at"].replace(tzinfo=None) == timedelta(
        minutes=15
    )

    # typed in lower case, with spaces instead of dashes: still the code
    typed = code.lower().replace("-", " ")
    r = await client.raw.post("/api/agent/pair", json={"code": typed, "platform": "linux"})
    assert r.status_code == 201, r.text
    agent = r.json()["agent"]
    assert agent["name"] == "Kitchen PC" and agent["apiKey"].startswith("bka_")
    beat = await client.agent_post(agent["apiKey"], "/api/agent/heartbeat", {"version": "1"})
    assert beat.status_code == 200 and beat.json()["agent"]["id"] == agent["id"]
    row = await Agent.select().where(Agent.name == "Kitchen PC").first()
    assert row is not None and row["platform"] == "linux"

    again = await client.raw.post("/api/agent/pair", json={"code": code})
    assert again.status_code == 409, again.text
    assert again.json()["reason"] == "used" and "already used" in again.json()["detail"]
    assert await Agent.count() == 1


async def test_issuing_needs_a_session_and_the_csrf_header(client: ApiClient) -> None:
    r = await client.raw.post("/api/agents/pairing-codes", json={"name": "x"})
    assert r.status_code == 401
    await client.signup()
    r = await client.raw.post("/api/agents/pairing-codes", json={"name": "x"})
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = await client.post("/api/agents/pairing-codes", json={"name": "   "})
    assert r.status_code == 400 and r.json()["field"] == "name"
    assert await PairingCode.count() == 0


async def test_an_expired_code_says_so(client: ApiClient, services: Services) -> None:
    await client.signup()
    code = await _code(client)
    later = utcnow() + timedelta(minutes=15, seconds=1)
    services.pairing.clock = lambda: later
    r = await client.raw.post("/api/agent/pair", json={"code": code})
    assert r.status_code == 409, r.text
    assert r.json()["reason"] == "expired" and "expired" in r.json()["detail"]
    assert await Agent.count() == 0


async def test_ten_wrong_codes_are_rate_limited_even_the_right_one_after(
    client: ApiClient,
) -> None:
    await client.signup()
    code = await _code(client)
    wrong = "AAA-AAA-AAA" if code != "AAA-AAA-AAA" else "BBB-BBB-BBB"
    for _ in range(9):
        r = await client.raw.post("/api/agent/pair", json={"code": wrong})
        assert r.status_code == 404, r.text
        assert "no such pairing code" in r.json()["detail"]
    r = await client.raw.post("/api/agent/pair", json={"code": "not a code"})
    assert r.status_code == 404  # the tenth failure: a typo counts too
    r = await client.raw.post("/api/agent/pair", json={"code": code})
    assert r.status_code == 429, r.text
    assert "too many wrong pairing codes" in r.json()["detail"]
    assert int(r.headers["retry-after"]) > 0
    assert await Agent.count() == 0
    # the window over, the right code works, and clears the count
    await LoginThrottle.update({LoginThrottle.window_started: utcnow() - timedelta(hours=1)}).where(
        LoginThrottle.key.like("pair:%")
    )
    r = await client.raw.post("/api/agent/pair", json={"code": code})
    assert r.status_code == 201, r.text
    assert await LoginThrottle.count().where(LoginThrottle.key.like("pair:%")) == 0


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("k7q-4mx-p2d", "K7Q4MXP2D"),
        (" K7Q 4MX P2D ", "K7Q4MXP2D"),
        ("K7Q-4MX-P2", None),
        ("K0Q-4MX-P2D", None),  # 0 is not in the alphabet
    ],
)
def test_normalise_code(typed: str, expected: str | None) -> None:
    assert normalise_code(typed) == expected
