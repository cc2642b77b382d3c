"""Security findings that only a real ``backapp serve`` shows: whose ``X-Forwarded-For`` counts for
the sign-in limit, and what the server's own log lines (access lines included) may never hold."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from websockets.sync.client import connect

from desktop_agent.engine import AgentSocket, ApiClient, install_log_redaction
from tests.support.logs import every_log_line
from tests.support.server_process import LiveServer, LiveServerFactory

pytestmark = pytest.mark.e2e

ATTEMPTS = 35  # the review's count; the per-address limit is 3 x BACKAPP_LOGIN_RATE_LIMIT = 30


def _failed_logins(server: LiveServer, forwarded_for: list[str]) -> list[int]:
    """One wrong password per ``X-Forwarded-For`` value, each for another account (so that only a
    per-address limit can stop them)."""
    statuses = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i, header in enumerate(forwarded_for):
            r = http.post(
                "/api/auth/login",
                json={"email": f"victim{i}@example.com", "password": "guess"},
                headers={"X-Forwarded-For": header},
            )
            statuses.append(r.status_code)
    return statuses


def test_a_rotating_forwarded_for_from_an_untrusted_peer_is_throttled(
    live_server_factory: LiveServerFactory,
) -> None:
    """By default no peer's forwarded headers are trusted: a client inventing a new address for
    each attempt is still one address."""
    server = live_server_factory.start()
    statuses = _failed_logins(server, [f"198.51.100.{i}" for i in range(ATTEMPTS)])
    assert statuses[:30] == [401] * 30
    assert set(statuses[30:]) == {429}, statuses


def test_the_old_forwarded_allow_ips_star_is_not_trusted(
    live_server_factory: LiveServerFactory,
) -> None:
    """``FORWARDED_ALLOW_IPS='*'`` (what docs/deploy.md said) made the client's own left-most
    entry the address; it no longer widens the trust."""
    server = live_server_factory.start(env={"FORWARDED_ALLOW_IPS": "*"})
    statuses = _failed_logins(server, [f"198.51.100.{i}, 127.0.0.1" for i in range(ATTEMPTS)])
    assert 429 in statuses, statuses


def test_behind_a_trusted_proxy_the_address_it_saw_counts(
    live_server_factory: LiveServerFactory,
) -> None:
    """The proxy (here: loopback, named in BACKAPP_TRUSTED_PROXIES) appends the address it saw to
    whatever the client sent; that last hop is the client, whatever the client wrote before it."""
    server = live_server_factory.start(env={"BACKAPP_TRUSTED_PROXIES": "127.0.0.1"})
    statuses = _failed_logins(server, [f"198.51.100.{i}, 203.0.113.7" for i in range(ATTEMPTS)])
    assert set(statuses[30:]) == {429}, statuses
    # Another client of the same proxy is another address: not throttled.
    assert _failed_logins(server, ["198.51.100.1, 203.0.113.8"]) == [401]


def test_a_star_is_refused_as_trusted_proxies(live_server_factory: LiveServerFactory) -> None:
    with pytest.raises(RuntimeError, match="BACKAPP_TRUSTED_PROXIES"):
        live_server_factory.start(env={"BACKAPP_TRUSTED_PROXIES": "*"})


def test_agent_keys_never_reach_the_server_log(live_server_factory: LiveServerFactory) -> None:
    """At debug level, with the access log on: a key in the WebSocket's query string, in its
    header, in agent requests and in failed attempts never shows in any log line."""
    server = live_server_factory.start(env={"BACKAPP_LOG_LEVEL": "debug"})
    owner = server.owner()
    _, key = owner.register_agent("laptop")
    agent = server.agent_client(key)
    assert agent.post("/api/agent/heartbeat", json={}).status_code == 200
    assert agent.get(f"/api/agent/configs?key={key}").status_code == 200
    wrong = key[:-4] + "AAAA"
    r = httpx.post(f"{server.url}/api/agent/heartbeat", json={}, headers={"X-Agent-API-Key": wrong})
    assert r.status_code == 401
    ws_url = server.url.replace("http://", "ws://") + "/api/agent/ws"
    with connect(f"{ws_url}?key={key}", additional_headers={"X-Agent-API-Key": key}) as ws:
        assert '"hello"' in str(ws.recv(timeout=10))
        ws.send('{"type": "ping"}')
        assert "pong" in str(ws.recv(timeout=10))
    with connect(ws_url, additional_headers={"X-Agent-API-Key": wrong}) as ws:
        assert '"error"' in str(ws.recv(timeout=10))
    time.sleep(0.5)  # the log is written by the server process
    log = server.log()
    assert "/api/agent/ws" in log and "/api/agent/configs" in log, log[-2000:]
    assert "debug" in log.lower() or "DEBUG" in log
    for secret in (key, key[4:], wrong):
        leaked = [line for line in log.splitlines() if secret in line]
        assert leaked == [], leaked


def test_agent_keys_never_reach_the_agents_log(live_server_factory: LiveServerFactory) -> None:
    """The agent's side, every logger of this process at DEBUG, redaction installed as the CLI and
    the tray do: requests, the WebSocket's handshake (its library prints request headers)."""
    server = live_server_factory.start()
    _, key = server.owner().register_agent("laptop")
    install_log_redaction()
    with every_log_line() as lines:
        with ApiClient(server.url, key) as api:
            api.heartbeat(version="1.0", platform="linux")
            api.list_configs()
        connected = threading.Event()
        socket = AgentSocket(
            server.url, key, on_run=lambda _: None, on_state=lambda up: up and connected.set()
        )
        socket.start()
        try:
            assert connected.wait(20)
        finally:
            socket.stop()
    assert any("/api/agent/ws" in line or "101" in line for line in lines), lines[-20:]
    for secret in (key, key[4:]):
        assert [line for line in lines if secret in line] == []
