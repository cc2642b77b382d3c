"""Agents say how they run (heartbeat ``mode``). The README's cron workflow (``backapp-agent run``,
a one-shot agent) is silent between runs by design: 90 s after a good run its agent is ``idle``,
expected back at the next scheduled run plus grace, not ``offline``; its configs are not flagged;
and the offline alert follows the schedule too (SQLite and PostgreSQL, real ASGI app)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backend.agents.tables import Agent
from backend.backups.tables import Alert
from backend.services import Services
from backend.services.clock import utcnow
from tests.support.api import ApiClient, complete_one_backup


async def _agent(client: ApiClient, client_mode: str | None) -> dict[str, Any]:
    await client.signup()
    agent_id, key = await client.register_agent("server")
    config = await client.create_config(
        agent_id, name="Nightly", options={"schedule": {"preset": "daily", "at": "02:30"}}
    )
    body: dict[str, Any] = {"version": "0.1.0", "timezone": "UTC"}
    if client_mode is not None:
        body["mode"] = client_mode
    beat = await client.agent_post(key, "/api/agent/heartbeat", body)
    assert beat.status_code == 200, beat.text
    await complete_one_backup(client, key, config["id"])
    return {"id": agent_id, "key": key, "config": config}


def _later(monkeypatch: pytest.MonkeyPatch, delta: timedelta) -> datetime:
    """The pages and the API read the clock through ``utcnow``: move it ``delta`` ahead."""
    now = utcnow() + delta
    monkeypatch.setattr("backend.services.agents.utcnow", lambda: now)
    monkeypatch.setattr("backend.web._dashboard.utcnow", lambda: now)
    return now


async def test_a_oneshot_agent_between_runs_is_idle_not_offline(
    client: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = await _agent(client, "oneshot")
    row = await Agent.select(Agent.mode).where(Agent.id == uuid.UUID(agent["id"])).first()
    assert row == {"mode": "oneshot"}

    _later(monkeypatch, timedelta(seconds=120))  # the README's "90 s after a good run"
    out = (await client.get(f"/api/agents/{agent['id']}")).json()["agent"]
    assert out["status"] == "idle" and out["mode"] == "oneshot"
    # Expected back at the next 02:30 UTC after it was last heard from, plus the 60 min grace.
    seen = datetime.fromisoformat(out["lastSeen"].replace("Z", "+00:00"))
    next_run = seen.replace(hour=2, minute=30, second=0, microsecond=0)
    if next_run <= seen:
        next_run += timedelta(days=1)
    assert datetime.fromisoformat(out["expectedBy"].replace("Z", "+00:00")) == next_run + timedelta(
        hours=1
    )
    page = (await client.get("/")).text
    assert "is offline" not in page
    assert "All backups are up to date" in page
    assert 'data-status="idle"' in page

    _later(monkeypatch, timedelta(days=2))  # it missed its next run and the grace
    out = (await client.get(f"/api/agents/{agent['id']}")).json()["agent"]
    assert out["status"] == "offline"
    assert "is offline" in (await client.get("/")).text


@pytest.mark.parametrize("client_mode", ["daemon", "tray", None])
async def test_an_always_on_agent_is_offline_after_three_missed_polls(
    client: ApiClient, monkeypatch: pytest.MonkeyPatch, client_mode: str | None
) -> None:
    agent = await _agent(client, client_mode)
    _later(monkeypatch, timedelta(seconds=120))
    out = (await client.get(f"/api/agents/{agent['id']}")).json()["agent"]
    assert out["status"] == "offline" and out["expectedBy"] is None


async def test_a_heartbeat_without_mode_keeps_the_mode(client: ApiClient) -> None:
    agent = await _agent(client, "oneshot")
    await client.agent_post(agent["key"], "/api/agent/heartbeat", {"version": "0.1.0"})
    out = (await client.get(f"/api/agents/{agent['id']}")).json()["agent"]
    assert out["mode"] == "oneshot"
    bad = await client.agent_post(agent["key"], "/api/agent/heartbeat", {"mode": "sometimes"})
    assert bad.status_code == 400


async def test_the_offline_alert_of_a_oneshot_agent_follows_its_schedule(
    client: ApiClient, services: Services
) -> None:
    agent = await _agent(client, "oneshot")
    weekly = {"schedule": {"preset": "weekly", "day": "mon", "at": "02:30"}}
    await client.patch(f"/api/configs/{agent['config']['id']}", json={"options": weekly})
    monday = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)  # just after Monday's run
    await Agent.update({Agent.last_seen: monday}).where(Agent.id == uuid.UUID(agent["id"]))

    await services.alerts.evaluate(monday + timedelta(days=3))  # a day of silence is normal here
    assert await Alert.select().where(Alert.kind == "agent_offline") == []
    await services.alerts.evaluate(monday + timedelta(days=7, hours=1))  # missed the next Monday
    [alert] = await Alert.select().where(Alert.kind == "agent_offline")
    assert alert["subject"] == f"agent:{agent['id']}"
