"""Live progress, live log lines, schedules and Back Up Now in a real headless Chromium against a
real ``backapp serve``: the agent reports over HTTP and the open page changes without a reload."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.server_process import LiveServerFactory
from tests.web.test_browser import (  # noqa: F401 - fixtures
    Agent,
    chromium,
    context,
    page,
    register_agent,
    shot,
    sign_up,
)

pytestmark = pytest.mark.e2e

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

LIVE = 10_000  # ms: a pushed event shows in milliseconds; this only bounds a failure


def _progress(log_id: str, files: int, done: int) -> dict[str, Any]:
    return {
        "logId": log_id,
        "phase": "uploading",
        "filesDone": files,
        "filesTotal": 300,
        "bytesDone": done,
        "bytesTotal": 12_000_000,
        "rate": 1_250_000,
        "eta": 6,
    }


def test_progress_and_log_lines_arrive_without_a_reload(
    page: Any,  # noqa: F811
    live_server_factory: LiveServerFactory,
) -> None:
    server = live_server_factory.start()
    sign_up(page, server)
    agent_id, key = register_agent(page, server, "Studio Mac")
    agent = Agent(server, key)
    agent.heartbeat()

    # A configuration with a schedule, through the form (the script shows the matching fields).
    page.goto(f"{server.url}/configs/new")
    page.get_by_label("Name").fill("Documents")
    page.get_by_label("Sources").fill("/Users/d/Documents")
    page.get_by_label("Run").select_option("weekly")
    expect(page.get_by_label("Cron expression")).to_be_hidden()
    expect(page.get_by_label("Minutes past the hour")).to_be_hidden()
    page.get_by_label("Day of the week").select_option("wed")
    page.get_by_label("At (HH:MM)").fill("02:30")
    page.get_by_role("button", name="Create configuration").click()
    expect(page.locator(".flash")).to_contain_text("Created “Documents”.")
    expect(page.get_by_text("Weekly on Wed at 02:30")).to_be_visible()
    config_id = page.url.rstrip("/").rsplit("/", 1)[1]

    # Back Up Now from the page reaches the agent (here through its heartbeat).
    page.get_by_role("button", name="Back Up Now").click()
    expect(page.locator(".flash")).to_contain_text(
        "Back Up Now: “Documents” was sent to its agent."
    )
    hb = agent.http.post("/api/agent/heartbeat", json={}).json()
    [request] = hb["runRequests"]
    assert request["configId"] == config_id

    r = agent.http.post(
        "/api/agent/backup/start",
        json={
            "configId": config_id,
            "filename": "backup-2025-01-07-143022.tar.gz",
            "filesize": 12_000_000,
            "runRequestId": request["id"],
        },
    )
    assert r.status_code == 200, r.text
    log_id = r.json()["logId"]

    page.goto(f"{server.url}/configs/{config_id}")
    expect(page.locator("html")).to_have_attribute("data-live-events", "open", timeout=LIVE)
    page.evaluate("window.__noReload = true")
    box = page.locator(f'[data-progress-for="{log_id}"]')
    expect(box).to_be_hidden()  # running, no progress reported yet

    sent = agent.http.post("/api/agent/backup/progress", json=_progress(log_id, 120, 5_000_000))
    assert sent.status_code == 200, sent.text
    expect(box).to_be_visible(timeout=LIVE)
    expect(box.locator(".progress-text")).to_have_text(
        "Uploading · 120 / 300 files · 4.8 MiB / 11.4 MiB · 1.2 MiB/s · about 6.0 s left"
    )
    expect(box.locator("progress")).to_have_attribute("value", "41")

    agent.log("warning", "skipped /Users/d/Documents/locked.db: permission denied")
    feed = page.locator("[data-live-feed] .live-log")
    expect(feed).to_contain_text("skipped /Users/d/Documents/locked.db", timeout=LIVE)
    expect(feed).to_contain_text("Studio Mac")

    agent.http.post("/api/agent/backup/progress", json=_progress(log_id, 299, 11_900_000))
    expect(box.locator(".progress-text")).to_contain_text("299 / 300 files", timeout=LIVE)
    # Storage stops answering: the agent says what it waits for; no rate, no time left.
    waiting = "waiting for storage: the storage took no data for 60 s (trying again in 8 s)"
    sent = agent.http.post(
        "/api/agent/backup/progress",
        json={**_progress(log_id, 299, 11_900_000), "waiting": waiting},
    )
    assert sent.status_code == 200, sent.text
    expect(box.locator(".progress-text")).to_have_text(
        f"Uploading · {waiting} · 299 / 300 files · 11.3 MiB / 11.4 MiB", timeout=LIVE
    )
    assert page.evaluate("window.__noReload") is True  # the same page all along
    shot(page, "live-progress-config")

    # The backups page shows the same numbers, rendered by the server on load.
    page.goto(f"{server.url}/backups")
    row_box = page.locator(f'[data-progress-for="{log_id}"]')
    expect(row_box.locator(".progress-text")).to_have_text(
        f"Uploading · {waiting} · 299 / 300 files · 11.3 MiB / 11.4 MiB"
    )
    expect(page.get_by_role("cell", name=re.compile("Documents"))).to_be_visible()
