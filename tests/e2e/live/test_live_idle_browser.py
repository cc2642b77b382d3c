"""An open page costs nothing while nothing happens (issue 17): in a real headless Chromium against
a real ``backapp serve``, the dashboard makes no request at all while idle, and when something it
shows changes (an agent comes online, a backup starts), it reloads only its live region, once."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from tests.support.browser import Agent, register_agent, sign_up
from tests.support.server_process import LiveServerFactory

pytestmark = pytest.mark.e2e

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

LIVE = 10_000  # ms: a pushed event shows in milliseconds; this only bounds a failure
IDLE = 12.0
"""Seconds watched while idle: more than two of the 5 s polls the pages used to make."""


def test_an_idle_dashboard_makes_no_request_and_reloads_only_what_changed(
    page: Any, live_server_factory: LiveServerFactory
) -> None:
    server = live_server_factory.start()
    sign_up(page, server)
    _agent_id, key = register_agent(page, server, "Studio Mac")
    page.goto(f"{server.url}/configs/new")
    page.get_by_label("Name", exact=True).fill("Documents")
    page.get_by_label("Sources").fill("/Users/d/Documents")
    page.get_by_role("button", name="Create configuration").click()
    expect(page.locator(".flash")).to_contain_text("Created “Documents”.")
    config_id = page.url.rstrip("/").rsplit("/", 1)[1]

    page.goto(server.url)
    expect(page.locator("html")).to_have_attribute("data-live-events", "open", timeout=LIVE)
    requests: list[tuple[str, str | None]] = []
    page.on(
        "request",
        lambda r: requests.append((r.url, r.headers.get("x-backapp-live"))),
    )

    time.sleep(IDLE)
    assert requests == [], requests  # nothing happened: not one request

    status = page.locator("#main table").last.locator("[data-status]")
    expect(status).to_have_text("offline")
    agent = Agent(server, key)
    agent.heartbeat()  # the agent comes online: an event, and one reload of the region
    expect(status).to_have_text("online", timeout=LIVE)
    assert requests and all(live == "overview" for _, live in requests), requests

    requests.clear()
    start = agent.start(config_id, "backup-2025-01-07-143022.tar.gz", 1000)
    expect(page.get_by_role("heading", name="Running now")).to_be_visible(timeout=LIVE)
    assert requests and all(live == "overview" for _, live in requests), requests
    agent.finish(start, os.urandom(1000))
    expect(page.get_by_role("heading", name="Running now")).to_have_count(0, timeout=LIVE)

    # Idle again: the heartbeats of an agent already online change nothing on the page.
    time.sleep(1.0)  # the last reload (throttled by half a second) has been made
    requests.clear()
    for _ in range(3):
        agent.heartbeat()
    time.sleep(IDLE / 2)
    assert requests == [], requests
