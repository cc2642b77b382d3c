"""End to end: Back Up Now and live progress between real ``backapp serve`` processes, a real
WebSocket client (the ``websockets`` package, as the agent uses) and a real SSE stream."""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support.redis import redis_url  # noqa: F401 - the fixture
from tests.support.server_process import LiveServer, LiveServerFactory, Owner

pytestmark = pytest.mark.e2e

FILENAME = "backup-2025-01-07-143022.tar.gz"
WITHIN = 5.0
"""Seconds a live message may take; in practice it takes milliseconds."""


@contextmanager
def agent_socket(server: LiveServer, key: str) -> Iterator[ClientConnection]:
    url = server.url.replace("http://", "ws://") + "/api/agent/ws"
    with connect(url, additional_headers={"X-Agent-API-Key": key}, open_timeout=10) as ws:
        yield ws


def receive(ws: ClientConnection) -> dict[str, Any]:
    return dict(json.loads(ws.recv(timeout=WITHIN)))


def run_now(owner: Owner, config_id: str) -> dict[str, Any]:
    r = owner.request("POST", f"/api/configs/{config_id}/run")
    assert r.status_code == 202, r.text
    return dict(r.json()["runRequest"])


def test_back_up_now_reaches_the_socket_then_the_heartbeat(
    live_server_factory: LiveServerFactory,
) -> None:
    server = live_server_factory.start()
    owner = server.owner()
    agent_id, key = owner.register_agent("laptop")
    config = owner.create_config(agent_id)
    agent = server.agent_client(key)

    with agent_socket(server, key) as ws:
        assert receive(ws) == {"type": "hello", "agent": {"id": agent_id, "name": "laptop"}}
        run = run_now(owner, config["id"])
        assert receive(ws) == {
            "type": "run",
            "runRequestId": run["id"],
            "configId": config["id"],
        }
        ws.send(json.dumps({"type": "ping"}))
        assert receive(ws) == {"type": "pong"}
        start = agent.post(
            "/api/agent/backup/start",
            json={
                "configId": config["id"],
                "filename": FILENAME,
                "filesize": 5,
                "runRequestId": run["id"],
            },
        )
        assert start.status_code == 200, start.text

    # The socket is closed: the next request reaches the agent through its heartbeat.
    second = run_now(owner, config["id"])
    hb = agent.post("/api/agent/heartbeat", json={"timezone": "Europe/Paris"})
    assert hb.status_code == 200
    assert hb.json()["runRequests"] == [
        {"id": second["id"], "configId": config["id"], "requestedAt": second["requestedAt"]}
    ]
    # ...and a socket opened later gets it on connect.
    with agent_socket(server, key) as ws:
        assert receive(ws)["type"] == "hello"
        assert receive(ws)["runRequestId"] == second["id"]

    backup = owner.backups()[0]
    assert backup["trigger"] == "request" and backup["id"] == start.json()["logId"]


def test_the_socket_refuses_a_bad_key(live_server_factory: LiveServerFactory) -> None:
    server = live_server_factory.start()
    with agent_socket(server, "bka_" + "x" * 40) as ws:
        error = receive(ws)
        assert error["type"] == "error" and error["status"] == 401
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=WITHIN)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def sse_events(owner: Owner, server: LiveServer) -> Generator[dict[str, Any], None, None]:
    """The owner's /events stream on ``server``, one decoded event at a time."""
    with httpx.Client(base_url=server.url, cookies=owner.http.cookies, timeout=30) as http:
        with http.stream("GET", "/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield dict(json.loads(line[len("data: ") :]))
                elif line.startswith(": "):  # "connected" once subscribed, then keep-alives
                    yield {"type": "_comment", "text": line[2:]}


def test_two_processes_one_postgres_one_redis(
    live_server_factory: LiveServerFactory,
    pg_cluster: Any,
    redis_url: str,  # noqa: F811
) -> None:
    """The agent's socket is on B, the owner clicks on A; progress posted to A shows on B."""
    url = pg_cluster.create_database("e2e_live_two_processes")
    env = {"BACKAPP_REDIS_URL": redis_url}
    a = live_server_factory.start(database_url=url, env=env)
    b = live_server_factory.start(database_url=url, env=env)
    owner = a.owner()
    agent_id, key = owner.register_agent("laptop")
    config = owner.create_config(agent_id)

    with agent_socket(b, key) as ws:
        assert receive(ws)["type"] == "hello"
        run = run_now(owner, config["id"])  # on A
        assert receive(ws) == {"type": "run", "runRequestId": run["id"], "configId": config["id"]}

        start = a.agent_client(key).post(
            "/api/agent/backup/start",
            json={"configId": config["id"], "filename": FILENAME, "runRequestId": run["id"]},
        )
        assert start.status_code == 200, start.text
        log_id = start.json()["logId"]

        # The owner's page listens on B; the agent reports progress to A.
        events = sse_events(owner, b)
        assert next(events) == {"type": "_comment", "text": "connected"}
        progress = {
            "logId": log_id,
            "phase": "uploading",
            "filesDone": 7,
            "filesTotal": 9,
            "bytesDone": 700,
            "bytesTotal": 900,
            "rate": 350.0,
            "eta": 1.0,
        }
        sent = a.agent_client(key).post("/api/agent/backup/progress", json=progress)
        assert sent.status_code == 200, sent.text
        a.agent_client(key).post(
            "/api/agent/log", json={"level": "info", "message": "uploading part 1 of 1"}
        )
        seen: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + WITHIN * 2
        for event in events:
            seen.setdefault(event["type"], event)
            if {"progress", "log"} <= set(seen) or time.monotonic() > deadline:
                break
        events.close()
        assert seen["progress"]["backupId"] == log_id
        assert seen["progress"]["filesDone"] == 7 and seen["progress"]["bytesTotal"] == 900
        assert seen["log"]["message"] == "uploading part 1 of 1"
        assert seen["log"]["agentName"] == "laptop"

        # Without the socket, the heartbeat on B still carries a request made on A.
        second_config = owner.create_config(agent_id, name="Photos")
        second = run_now(owner, second_config["id"])
        assert receive(ws)["runRequestId"] == second["id"]
    # B re-reads which agents have pending requests at most once a second (the heartbeat is the
    # hot path), so a request made on A reaches a heartbeat on B within about a second.
    deadline = time.monotonic() + 5
    while True:
        hb = b.agent_client(key).post("/api/agent/heartbeat", json={})
        found = [r["id"] for r in hb.json()["runRequests"]]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert found == [second["id"]]
