"""Progress before a backup's log exists, in a real headless Chromium against a real ``backapp
serve``: the agent reports its scan by ``configId``, the open pages show it without a reload, and
the backup's own events take over."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.browser import (
    Agent,
    register_agent,
    shot,
    sign_up,
)
from tests.support.server_process import LiveServerFactory

pytestmark = pytest.mark.e2e

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

LIVE = 10_000  # ms: a pushed event shows in milliseconds; this only bounds a failure
GIB = 1 << 30


def _scan(config_id: str, files: int, size: int) -> dict[str, Any]:
    return {
        "configId": config_id,
        "phase": "scanning",
        "filesDone": 0,
        "filesTotal": files,
        "bytesDone": 0,
        "bytesTotal": size,
        "rate": 0,
        "eta": None,
    }


def test_scan_progress_shows_before_the_log_and_the_backup_replaces_it(
    page: Any,  # noqa: F811
    live_server_factory: LiveServerFactory,
) -> None:
    server = live_server_factory.start()
    sign_up(page, server)
    _, key = register_agent(page, server, "Studio Mac")
    agent = Agent(server, key)
    beat = agent.http.post("/api/agent/heartbeat", json={"version": "0.1.0"})
    assert "progress-by-config" in beat.json()["features"]

    page.goto(f"{server.url}/configs/new")
    page.get_by_label("Name").fill("Photos")
    page.get_by_label("Sources").fill("/Users/d/Pictures")
    page.get_by_role("button", name="Create configuration").click()
    expect(page.locator(".flash")).to_contain_text("Created “Photos”.")
    config_id = page.url.rstrip("/").rsplit("/", 1)[1]

    def post(body: dict[str, Any]) -> None:
        r = agent.http.post("/api/agent/backup/progress", json=body)
        assert r.status_code == 200, r.text

    # The configurations list: the row shows the scan, and keeps it when the region is refreshed.
    page.goto(f"{server.url}/configs")
    expect(page.locator("html")).to_have_attribute("data-live-events", "open", timeout=LIVE)
    row_box = page.locator(f'[data-config-progress-for="{config_id}"]')
    expect(row_box).to_be_hidden()
    post(_scan(config_id, 12_345, int(3.1 * GIB)))
    expect(row_box).to_be_visible(timeout=LIVE)
    expect(row_box.locator(".progress-text")).to_have_text("Scanning · 12,345 files · 3.1 GiB")
    page.evaluate(
        """() => {
          const region = document.querySelector('[data-live="configs"]');
          region.dataset.lastHtml = "stale";  /* so that the next refresh swaps the HTML in */
          document.dispatchEvent(new CustomEvent("backapp:refresh"));
        }"""
    )
    page.wait_for_function(
        "() => document.querySelector('[data-live=\"configs\"]').dataset.lastHtml !== 'stale'",
        timeout=LIVE,
    )
    expect(row_box).to_be_visible()  # a fresh element, filled again from what the page kept
    expect(row_box.locator(".progress-text")).to_have_text("Scanning · 12,345 files · 3.1 GiB")

    # The dashboard's row too.
    page.goto(server.url)
    expect(page.locator("html")).to_have_attribute("data-live-events", "open", timeout=LIVE)
    post(_scan(config_id, 20_000, 5 * GIB))
    dash_box = page.locator(f'[data-config-progress-for="{config_id}"]')
    expect(dash_box.locator(".progress-text")).to_have_text(
        "Scanning · 20,000 files · 5.0 GiB", timeout=LIVE
    )

    # The config page, live, through scanning and archiving, without a reload.
    page.goto(f"{server.url}/configs/{config_id}")
    expect(page.locator("html")).to_have_attribute("data-live-events", "open", timeout=LIVE)
    page.evaluate("window.__noReload = true")
    box = page.locator(f'[data-config-progress-for="{config_id}"]')
    expect(box).to_be_hidden()  # the server keeps none: the next event shows it
    post(_scan(config_id, 12_345, int(3.1 * GIB)))
    expect(box).to_be_visible(timeout=LIVE)
    expect(box.locator(".progress-text")).to_have_text("Scanning · 12,345 files · 3.1 GiB")
    assert box.locator("progress").get_attribute("value") is None  # no total yet: indeterminate
    post(
        {
            "configId": config_id,
            "phase": "archiving",
            "filesDone": 3_000,
            "filesTotal": 12_345,
            "bytesDone": GIB,
            "bytesTotal": 4 * GIB,
            "rate": 50 << 20,
            "eta": 60,
        }
    )
    expect(box.locator(".progress-text")).to_have_text(
        "Archiving · 3,000 / 12,345 files · 1.0 GiB / 4.0 GiB · 50.0 MiB/s · about 1 min left",
        timeout=LIVE,
    )
    expect(box.locator("progress")).to_have_attribute("value", "25")
    shot(page, "live-progress-before-log")

    # backup/start: the backup's "running" event clears the config's box; its own takes over.
    started = agent.start(config_id, "backup-2025-01-07-143022.tar.gz", 11)
    log_id = started["logId"]
    expect(box).to_be_hidden(timeout=LIVE)
    post({"configId": config_id, "phase": "archiving", "filesDone": 12_345})  # late: ignored
    post(
        {
            "logId": log_id,
            "phase": "uploading",
            "filesDone": 12_345,
            "filesTotal": 12_345,
            "bytesDone": 2 * GIB,
            "bytesTotal": 4 * GIB,
        }
    )
    backup_box = page.locator(f'[data-progress-for="{log_id}"]')
    expect(backup_box).to_be_visible(timeout=LIVE)
    expect(backup_box.locator(".progress-text")).to_contain_text(
        "Uploading · 12,345 / 12,345 files · 2.0 GiB / 4.0 GiB", timeout=LIVE
    )
    expect(box).to_be_hidden()

    # Finished: the next run's scan shows again.
    agent.finish(started, b"hello world")
    expect(backup_box).to_be_hidden(timeout=LIVE)
    post(_scan(config_id, 7, 700))
    expect(box).to_be_visible(timeout=LIVE)
    expect(box.locator(".progress-text")).to_have_text("Scanning · 7 files · 700 B")
    assert page.evaluate("window.__noReload") is True  # the same page all along
