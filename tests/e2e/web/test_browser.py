"""The web console in a real headless Chromium (Debian's ``chromium``, driven by Playwright)
against real ``backapp serve`` processes: what a person does, and what they must not be able to.

Screenshots of the main pages (desktop and phone width) land in ``test-output/screenshots/``.
The browser comes from ``BACKAPP_TEST_CHROMIUM`` (CI sets it) or ``/usr/bin/chromium``; without
one these tests are skipped, unless ``BACKAPP_TEST_CHROMIUM`` names a browser that is missing.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

import pytest

from tests.support.browser import (
    DESKTOP,
    PASSWORD,
    PHONE,
    Agent,
    expect,
    register_agent,
    shot,
    sign_up,
)
from tests.support.server_process import LiveServerFactory

pytestmark = pytest.mark.e2e

XSS = "<script>alert(1)</script>"
LIVE = 15_000  # ms to wait for a live region (it refreshes every 5 s)


def test_owner_journey(
    page: Any, context: Any, live_server_factory: LiveServerFactory, s3_server: Any, s3_bucket: str
) -> None:
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    sign_up(page, server)
    expect(page.get_by_role("status").first).to_contain_text("you are the administrator")
    shot(page, "dashboard-empty")

    # Register an agent: its key is shown once, with a copy button and the command to paste.
    agent_id, key = register_agent(page, server, "David's MacBook")
    assert key.startswith("bka_") and len(key) > 40
    command = page.locator("#configure-command").inner_text()
    assert command == f"backapp-agent configure --server {server.url} --agent-id {agent_id}"
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page.get_by_role("button", name="Copy key").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == key
    shot(page, "agent-new-key")
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("David's MacBook")
    expect(page.locator("#api-key")).to_have_count(0)
    assert key not in page.content()
    expect(page.locator("#agent-status [data-status]")).to_have_text("offline")

    # A configuration for it: the spec's execution-mode radios, agent picker and note.
    page.get_by_role("link", name="New configuration").first.click()
    expect(page.get_by_label("Agent-based")).to_be_checked()
    expect(page.get_by_label("Select Agent")).to_have_value(agent_id)
    note = page.get_by_text("Source paths are relative to the agent's machine")
    expect(note).to_be_visible()
    page.get_by_label("Server-side").check()
    expect(note).to_be_hidden()
    expect(page.get_by_label("Select Agent")).to_be_hidden()
    page.get_by_label("Agent-based").check()
    expect(note).to_be_visible()
    page.get_by_label("Name", exact=True).fill("Documents")
    page.get_by_label("Excludes").fill("*.tmp\nnode_modules")
    page.get_by_label("Compression format").select_option("zstd")
    page.get_by_label("Retention (days)").fill("14")
    page.get_by_role("button", name="Create configuration").click()
    # Rejected (no sources): the error sits next to the field, nothing typed is lost.
    expect(page.locator("#sources-error")).to_have_text(re.compile("Add at least one folder"))
    expect(page.get_by_label("Name", exact=True)).to_have_value("Documents")
    expect(page.get_by_label("Excludes")).to_have_value("*.tmp\nnode_modules")
    expect(page.get_by_label("Compression format")).to_have_value("zstd")
    expect(page.get_by_label("Sources")).to_have_attribute("aria-invalid", "true")
    shot(page, "config-form-error")
    page.get_by_label("Sources").fill("/Users/d/Documents")
    page.get_by_role("button", name="Create configuration").click()
    expect(page.get_by_role("status").first).to_have_text("Created “Documents”.")
    config_id = page.url.rstrip("/").rsplit("/", 1)[1]
    page.goto(f"{server.url}/configs/{config_id}/edit")
    shot(page, "config-form")

    # The dashboard turns the agent online and shows the backup without a reload.
    page.goto(server.url)
    expect(page.get_by_role("heading", level=1)).to_have_text("Some backups need attention")
    status = page.locator("#main table").last.locator("[data-status]")
    expect(status).to_have_text("offline")
    agent = Agent(server, key)
    agent.heartbeat()
    expect(status).to_have_text("online", timeout=LIVE)
    payload = os.urandom(300_000)
    start = agent.start(config_id, "backup-2025-01-07-143022.tar.gz", len(payload))
    expect(page.get_by_role("heading", name="Running now")).to_be_visible(timeout=LIVE)
    agent.finish(start, payload)
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "All backups are up to date", timeout=LIVE
    )
    expect(page.get_by_role("heading", name="Running now")).to_have_count(0)
    expect(page.locator(".stat-value").first).to_have_text("293.0 KiB")
    expect(page.locator('[data-state="ok"]')).to_have_text("Up to date")
    shot(page, "dashboard")

    # The agent's logs: newest first, filtered by level.
    agent.log("info", "Scanning /Users/d/Documents", filesFound=150)
    agent.log("warning", "Skipped a locked file", path="/Users/d/Documents/locked.db")
    agent.log("error", "Source missing: /Volumes/Photos")
    agent.log("info", "Backup finished")
    page.goto(f"{server.url}/agents/{agent_id}")
    rows = page.locator("#agent-logs tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.first).to_contain_text("Backup finished")
    expect(rows.last).to_contain_text("Scanning /Users/d/Documents")
    expect(page.locator("[data-agent-id], #agent-status [data-status]").first).to_have_text(
        "online"
    )
    shot(page, "agent-detail")
    page.get_by_label("Level").select_option("error")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Source missing")
    assert "level=error" in page.url

    # Backups: the history with status, size, files, duration, errors; where the archive is stored
    # and a download on the backup's page.
    page.get_by_role("link", name="Backups", exact=True).click()
    row = page.locator(f'[data-backup-id="{start["logId"]}"]')
    expect(row).to_contain_text("293.0 KiB")
    expect(row).to_contain_text("45 s")
    expect(row).to_contain_text("150")
    expect(row.locator("[data-status]")).to_have_text("completed")
    shot(page, "backups")
    row.get_by_role("link").first.click()
    expect(page.get_by_text("permission denied")).to_be_visible()
    expect(page.get_by_text(start["upload"]["s3Path"])).to_be_visible()
    shot(page, "backup-detail")
    href = page.get_by_role("link", name="Download archive").get_attribute("href")
    got = page.request.get(server.url + href)
    assert (
        got.status == 200
        and hashlib.sha256(got.body()).digest() == hashlib.sha256(payload).digest()
    )

    page.goto(f"{server.url}/agents")
    shot(page, "agents")
    # The fleet's update policy, held from the agents page (no build is published here).
    expect(page.get_by_test_id("update-policy")).to_contain_text("Agents follow the newest build")
    page.get_by_label("Hold updates").check()
    page.get_by_role("button", name="Save update policy").click()
    expect(page.get_by_test_id("update-policy")).to_contain_text("Updates are on hold")
    page.goto(f"{server.url}/configs")
    shot(page, "configs")

    # The same pages at phone width: nothing runs off the side.
    page.set_viewport_size(PHONE)
    for name, path in [
        ("dashboard", "/"),
        ("agents", "/agents"),
        ("agent-detail", f"/agents/{agent_id}"),
        ("config-form", f"/configs/{config_id}/edit"),
        ("backups", "/backups"),
        ("backup-detail", f"/backups/{start['logId']}"),
    ]:
        page.goto(server.url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} is {width}px wide on a phone"
        shot(page, f"phone-{name}")
    page.set_viewport_size(DESKTOP)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(f"{server.url}/agents")
    expect(page).to_have_url(re.compile(r"/signin\?next=/agents$"))


def test_an_agent_named_like_a_script_stays_text(
    page: Any, live_server_factory: LiveServerFactory
) -> None:
    server = live_server_factory.start()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    sign_up(page, server)
    agent_id, key = register_agent(page, server, XSS)
    expect(page.get_by_role("heading", level=1)).to_have_text(XSS)
    Agent(server, key).log("error", XSS, detail=XSS)
    page.goto(f"{server.url}/configs/new")
    page.get_by_label("Name", exact=True).fill(XSS)
    page.get_by_label("Sources").fill(XSS)
    page.get_by_role("button", name="Create configuration").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(XSS)
    for path in ["/", "/agents", f"/agents/{agent_id}", "/configs"]:
        page.goto(server.url + path)
        expect(page.get_by_text(XSS).first).to_be_visible()
        assert page.locator("script:not([src])").count() == 0
    assert dialogs == []


def test_forms_without_the_right_token_are_refused(
    page: Any, live_server_factory: LiveServerFactory
) -> None:
    server = live_server_factory.start()
    sign_up(page, server)
    register_agent(page, server, "laptop")
    # The browser's own cookies go along; only the token is missing or wrong.
    missing = page.request.post(f"{server.url}/agents", form={"name": "evil"}, max_redirects=0)
    assert missing.status == 403 and "could not be accepted" in missing.text()
    wrong = page.request.post(
        f"{server.url}/agents", form={"name": "evil", "_csrf": "not-the-token"}, max_redirects=0
    )
    assert wrong.status == 403
    # A page on another site posting a form at the server changes nothing either.
    page.goto(
        "data:text/html,<form method=post action='" + server.url + "/agents'>"
        "<input name=name value=evil><button>go</button></form>"
    )
    page.get_by_role("button", name="go").click()
    page.wait_for_load_state()
    assert "evil" not in page.content() or "Sign in" in page.content()
    page.goto(f"{server.url}/agents")
    expect(page.locator("#agents-table tbody tr")).to_have_count(1)
    assert page.get_by_text("evil").count() == 0


def test_keyboard_only(page: Any, live_server_factory: LiveServerFactory) -> None:
    server = live_server_factory.start()
    sign_up(page, server)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_label("E-mail")).to_be_focused()  # autofocus
    page.keyboard.type("owner@example.com")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Nothing is backed up yet")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()

    # Register, rename, deactivate and delete an agent without touching the mouse.
    page.goto(f"{server.url}/agents")
    page.get_by_label("Name", exact=True).focus()
    page.keyboard.type("office pc")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Save this API key now")).to_be_visible()
    page.get_by_label("Name", exact=True).focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("Office PC")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Office PC")
    page.get_by_role("button", name="Deactivate").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status").first).to_contain_text("is deactivated")
    expect(page.locator("#agent-status")).to_contain_text("deactivated")
    page.get_by_role("link", name="Delete…").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Delete “Office PC”?")
    page.get_by_role("button", name="Delete agent").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status").first).to_contain_text("Deleted “Office PC”.")
    expect(page.get_by_text("No agents yet")).to_be_visible()


def test_read_only_pages_without_javascript(
    chromium: Any, live_server_factory: LiveServerFactory
) -> None:
    server = live_server_factory.start()
    owner = server.owner(password=PASSWORD)
    agent_id, key = owner.register_agent("laptop")
    config = owner.create_config(agent_id, name="Documents")
    agent = Agent(server, key)
    agent.heartbeat()
    start = agent.start(config["id"], "b.tar.gz", 11)
    agent.finish(start, b"hello world")

    ctx = chromium.new_context(viewport=DESKTOP, java_script_enabled=False)
    try:
        page = ctx.new_page()
        page.goto(f"{server.url}/signin")
        page.get_by_label("E-mail").fill("owner@example.com")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("All backups are up to date")
        expect(page.get_by_role("link", name="Documents").first).to_be_visible()
        page.goto(f"{server.url}/agents/{agent_id}")
        expect(page.locator("#agent-status [data-status]")).to_have_text("online")
        page.goto(f"{server.url}/backups")
        expect(page.locator("[data-status]").first).to_have_text("completed")
        page.goto(f"{server.url}/configs/new")
        # Without a script both execution modes' hints show; the form still works.
        expect(page.get_by_text("Source paths are relative to the agent's machine")).to_be_visible()
    finally:
        ctx.close()
