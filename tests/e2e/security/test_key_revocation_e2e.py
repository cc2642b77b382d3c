"""End to end: an agent key revoked through one ``backapp serve`` process stops working on another
that holds it in its cache (issue 17: the key cache is invalidated, never re-read on a timer).

Two real server processes on one database, with and without Redis: SQLite without Redis (the
revocation count), SQLite and PostgreSQL with Redis (pub/sub), PostgreSQL without (NOTIFY)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.redis import redis_url  # noqa: F401 - the fixture
from tests.support.server_process import LiveServerFactory

pytestmark = pytest.mark.e2e

PUSH_WITHIN = 1.0
"""Seconds a pushed revocation may take to reach the other process (it takes milliseconds)."""


def _refused_after(client: httpx.Client, strict: bool) -> int:
    """Heartbeats until one is refused; returns how many were accepted first."""
    accepted = 0
    deadline = time.monotonic() + (0 if strict else PUSH_WITHIN)
    while True:
        status = client.post("/api/agent/heartbeat", json={}).status_code
        if status == 401:
            return accepted
        assert status == 200, status
        accepted += 1
        assert time.monotonic() < deadline, f"the revoked key still works after {accepted}"


@pytest.mark.parametrize(
    ("database", "redis"),
    [("sqlite", False), ("sqlite", True), ("postgres", False), ("postgres", True)],
)
def test_a_key_revoked_on_one_process_stops_working_on_the_other(
    request: pytest.FixtureRequest,
    live_server_factory: LiveServerFactory,
    tmp_path: Path,
    database: str,
    redis: bool,
) -> None:
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    else:
        cluster: Any = request.getfixturevalue("pg_cluster")
        url = cluster.create_database(f"e2e_revoke_{uuid.uuid4().hex[:8]}")
    env = {"BACKAPP_REDIS_URL": request.getfixturevalue("redis_url")} if redis else {}
    a = live_server_factory.start(database_url=url, env=env)
    b = live_server_factory.start(database_url=url, env=env)
    owner = a.owner()
    agent_id, key = owner.register_agent("laptop")
    on_b = b.agent_client(key)
    # Without Redis or NOTIFY, every authentication compares the revocation count: strict.
    strict = database == "sqlite" and not redis

    for _ in range(3):  # B now holds the key in its cache
        assert on_b.post("/api/agent/heartbeat", json={}).status_code == 200

    r = owner.request("POST", f"/api/agents/{agent_id}/deactivate")
    assert r.status_code == 200, r.text
    _refused_after(on_b, strict)

    r = owner.request("POST", f"/api/agents/{agent_id}/activate")
    assert r.status_code == 200, r.text
    assert on_b.post("/api/agent/heartbeat", json={}).status_code == 200

    assert owner.request("DELETE", f"/api/agents/{agent_id}").status_code == 204
    _refused_after(on_b, strict)
