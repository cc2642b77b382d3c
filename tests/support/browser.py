"""The web console in a real headless Chromium (Debian's ``chromium``, driven by Playwright): the
browser's settings and what a person does on the pages (sign up, register an agent, screenshots).
The ``chromium``, ``context`` and ``page`` fixtures are in ``tests/e2e/conftest.py``.

The browser comes from ``BACKAPP_TEST_CHROMIUM`` (CI sets it) or ``/usr/bin/chromium``; without
one the tests are skipped, unless ``BACKAPP_TEST_CHROMIUM`` names a browser that is missing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.paths import ROOT
from tests.support.server_process import LiveServer

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

SHOTS = ROOT / "test-output" / "screenshots"
PASSWORD = "correct horse battery"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 812}


def chromium_executable() -> str:
    wanted = os.environ.get("BACKAPP_TEST_CHROMIUM")
    path = wanted or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        if wanted:
            pytest.fail(f"BACKAPP_TEST_CHROMIUM={wanted} is not an executable browser")
        pytest.skip("no Chromium here: apt-get install chromium (or set BACKAPP_TEST_CHROMIUM)")
    return path


def shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_up(page: Any, server: LiveServer, email: str = "owner@example.com") -> None:
    page.goto(server.url)
    expect(page).to_have_url(re.compile(r"/signin$"))
    page.get_by_role("link", name="Create the first account").click()
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Nothing is backed up yet")


def register_agent(page: Any, server: LiveServer, name: str) -> tuple[str, str]:
    page.goto(f"{server.url}/agents")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("button", name="Register agent").click()
    expect(page.get_by_role("heading", name="Save this API key now")).to_be_visible()
    agent_id = page.url.rstrip("/").rsplit("/", 1)[1]
    return agent_id, page.locator("#api-key").inner_text()


class Agent:
    """An agent driven over HTTP with httpx, as tests/e2e does (the spec's JSON)."""

    def __init__(self, server: LiveServer, key: str) -> None:
        self.http = server.agent_client(key)

    def heartbeat(self) -> None:
        r = self.http.post("/api/agent/heartbeat", json={"version": "0.1.0", "platform": "darwin"})
        assert r.status_code == 200, r.text

    def log(self, level: str, message: str, **metadata: Any) -> None:
        r = self.http.post(
            "/api/agent/log",
            json={"level": level, "message": message, "metadata": metadata or None},
        )
        assert r.status_code == 201, r.text

    def start(self, config_id: str, filename: str, size: int) -> dict[str, Any]:
        configs = self.http.get("/api/agent/configs").json()["configs"]
        assert config_id in [c["id"] for c in configs]
        r = self.http.post(
            "/api/agent/backup/start",
            json={"configId": config_id, "filename": filename, "filesize": size},
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def finish(self, start: dict[str, Any], payload: bytes) -> None:
        upload = start["upload"]
        put = httpx.put(upload["url"], content=payload, headers=upload.get("headers", {}))
        assert put.status_code == 200, put.text
        r = self.http.post(
            "/api/agent/backup/complete",
            json={
                "logId": start["logId"],
                "status": "completed",
                "filesProcessed": 150,
                "bytesTransferred": len(payload),
                "duration": 45_000,
                "errors": [
                    {"path": "/Users/d/Documents/locked.db", "message": "permission denied"}
                ],
            },
        )
        assert r.status_code == 200, r.text
