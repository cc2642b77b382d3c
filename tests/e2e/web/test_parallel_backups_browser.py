"""The agent page's *parallel backups* setting in a real headless Chromium against a real
``backapp serve``: a bad value (0, 5, words) is refused next to its field and changes nothing; a
good one is saved, shown on the page, in the API, and in the agent's heartbeat; blank clears it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.browser import expect, register_agent, sign_up
from tests.support.server_process import LiveServerFactory

pytestmark = pytest.mark.e2e


def test_the_agent_page_sets_parallel_backups_and_refuses_bad_values(
    page: Any, live_server_factory: LiveServerFactory
) -> None:
    server = live_server_factory.start()
    sign_up(page, server)
    agent_id, key = register_agent(page, server, "workstation")
    agent = server.agent_client(key)

    def stored() -> Any:
        r = page.request.get(f"{server.url}/api/agents/{agent_id}")
        assert r.status == 200, r.text()
        return r.json()["agent"]["parallelBackups"]

    def beat() -> Any:
        r = agent.post("/api/agent/heartbeat", json={"version": "0.1.0", "platform": "linux"})
        assert r.status_code == 200, r.text
        return r.json()["parallelBackups"]

    page.goto(f"{server.url}/agents/{agent_id}")
    now = page.get_by_test_id("parallel-now")
    expect(now).to_contain_text("the machine's own setting")
    field = page.get_by_label("Configurations backed up at once")
    expect(field).to_have_value("")
    assert stored() is None and beat() is None

    for bad in ("0", "5", "two", "2.5"):
        field.fill(bad)
        page.get_by_role("button", name="Save settings").click()
        error = page.locator("#parallel_backups-error")
        expect(error).to_have_text(f"Must be a whole number from 1 to 4, not '{bad}'")
        expect(field).to_have_attribute("aria-invalid", "true")
        expect(field).to_have_value(bad)  # what was typed stays, to be corrected
        assert stored() is None, bad  # nothing changed

    field.fill("3")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status").first).to_contain_text("parallel backups saved")
    expect(page.get_by_test_id("parallel-now")).to_have_text(
        "Parallel backups: up to 3 configurations at the same time."
    )
    expect(page.get_by_label("Configurations backed up at once")).to_have_value("3")
    expect(page.locator("#parallel_backups-error")).to_have_count(0)
    assert stored() == 3 and beat() == 3
    # The limits saved by the same form are untouched by it.
    assert page.request.get(f"{server.url}/api/agents/{agent_id}").json()["agent"]["limits"] is None

    page.get_by_label("Configurations backed up at once").fill("")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_test_id("parallel-now")).to_contain_text("the machine's own setting")
    assert stored() is None and beat() is None
