"""The agent page's "This machine replaces…" in a real headless Chromium against a real ``backapp
serve``: search for the old machine by name (no list of every agent), mark it, see the mark on
both agents' pages, refuse the cycle with a message, undo the mark; and the agent API follows."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.browser import register_agent, shot, sign_up
from tests.support.server_process import LiveServerFactory

pytestmark = pytest.mark.e2e
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def test_mark_search_cycle_and_undo_in_the_agent_page(
    page: Any, live_server_factory: LiveServerFactory
) -> None:
    server = live_server_factory.start()
    sign_up(page, server)
    old_id, _ = register_agent(page, server, "Old ThinkPad")
    register_agent(page, server, "Office printer box")
    new_id, new_key = register_agent(page, server, "New MacBook")
    agent_api = server.agent_client(new_key)
    assert agent_api.get(f"/api/agent/backups?agentId={old_id}").status_code == 404

    page.goto(f"{server.url}/agents/{new_id}")
    section = page.locator("#replaces")
    expect(section).to_contain_text("This machine does not replace another one.")
    # A search field, not a dropdown of every agent.
    expect(section.locator("select")).to_have_count(0)
    search = section.get_by_label("Find the old machine by name or id")
    search.fill("nothing like it")
    section.get_by_role("button", name="Search").click()
    expect(section).to_contain_text("No other machine of yours matches “nothing like it”.")
    search = page.locator("#replaces").get_by_label("Find the old machine by name or id")
    search.fill("thinkpad")
    search.press("Enter")
    candidates = page.locator("#replace-candidates li")
    expect(candidates).to_have_count(1)  # neither the printer box nor this machine itself
    expect(candidates).to_contain_text("Old ThinkPad")
    shot(page, "agent-replaces-search")
    candidates.get_by_role("button", name="This machine replaces “Old ThinkPad”").click()
    expect(page.locator(".flash, [role=status]").first).to_contain_text(
        "“New MacBook” now replaces “Old ThinkPad”"
    )
    expect(page.locator("#inherits")).to_contain_text("Replaces Old ThinkPad")
    shot(page, "agent-replaces-marked")
    assert agent_api.get(f"/api/agent/backups?agentId={old_id}").status_code == 200

    # Deleting the old machine would end the mark: its confirmation page says so.
    page.goto(f"{server.url}/agents/{old_id}/delete")
    expect(page.locator("#delete-ends-inheritance")).to_contain_text(
        "New MacBook replaces this machine and reads its backups: deleting it ends that."
    )

    # The old machine's page says who replaces it, and refuses the cycle in words.
    page.goto(f"{server.url}/agents/{old_id}")
    expect(page.locator("#inherited-by")).to_contain_text("Replaced by New MacBook")
    search = page.locator("#replaces").get_by_label("Find the old machine by name or id")
    search.fill(new_id)  # a pasted id finds the agent too
    search.press("Enter")
    page.locator("#replace-candidates").get_by_role(
        "button", name="This machine replaces “New MacBook”"
    ).click()
    expect(page.locator("#from_agent_id-error")).to_contain_text(
        "a machine cannot replace one that replaces it"
    )
    expect(page.locator("#inherits")).to_contain_text("does not replace another one")

    # Undo on the new machine's page.
    page.goto(f"{server.url}/agents/{new_id}")
    page.locator("#inherits").get_by_role("button", name="Undo").click()
    expect(page.locator("#inherits")).to_contain_text("does not replace another one")
    assert agent_api.get(f"/api/agent/backups?agentId={old_id}").status_code == 404
