"""The config form's retention "what-if" in a real headless Chromium against a real ``backapp
serve``: typing a policy lists, before saving, the existing backups it would remove."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.server_process import LiveServerFactory
from tests.web.test_browser import Agent, chromium, context, page, register_agent, sign_up

pytestmark = pytest.mark.e2e
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

__all__ = ["chromium", "context", "page"]  # the browser fixtures, shared with test_browser


def test_typing_a_policy_lists_the_backups_it_would_remove(
    page: Any, context: Any, live_server_factory: LiveServerFactory
) -> None:
    server = live_server_factory.start()
    sign_up(page, server)
    agent_id, key = register_agent(page, server, "laptop")
    token = next(c["value"] for c in context.cookies() if c["name"] == "csrftoken")
    made = page.request.post(
        f"{server.url}/api/configs",
        data={
            "name": "Docs",
            "executionMode": "agent",
            "agentId": agent_id,
            "sources": [{"path": "/home/me/Documents"}],
            "options": {"type": "full", "retentionDays": 0},
        },
        headers={"x-csrftoken": token},
    )
    assert made.status == 201, made.text()
    config_id = made.json()["config"]["id"]
    agent = Agent(server, key)
    agent.heartbeat()
    ids = []
    for n in range(4):
        started = agent.start(config_id, f"b{n}.tar.gz", 5)
        agent.finish(started, b"hello")
        ids.append(started["logId"])

    page.goto(f"{server.url}/configs/{config_id}/edit")
    preview = page.locator("#retention-preview")
    expect(preview).to_contain_text("removes none of the 4 existing backups")
    page.locator("#keep_last").fill("1")
    expect(preview).to_contain_text("removes 3 of the 4 existing backups")
    expect(preview.locator("li")).to_have_count(3)
    removed = preview.locator("li").evaluate_all("els => els.map(e => e.dataset.backupId)")
    assert sorted(removed) == sorted(ids[:3])
    page.locator("#keep_last").fill("4")
    expect(preview).to_contain_text("removes none of the 4")
    # Nothing was saved or removed by looking.
    statuses = page.request.get(f"{server.url}/api/backups").json()["backups"]
    assert sorted(b["status"] for b in statuses) == ["completed"] * 4
