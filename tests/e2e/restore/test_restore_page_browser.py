"""Restore to a machine from a backup's page, in a real headless Chromium against ``backapp serve``
and a running ``backapp-agent daemon``: a machine that cannot restore the backup is refused in
words; the backup's own machine gets the restore, the files land, and the page reads completed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_process import Agent, Daemon, setup, source_tree
from tests.support.paths import ROOT
from tests.support.server_process import LiveServerFactory

pytestmark = pytest.mark.e2e

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def test_restore_to_a_machine_from_the_backup_page(
    live_server_factory: LiveServerFactory, page: Any, tmp_path: Path
) -> None:
    from tests.support.browser import PASSWORD, shot

    src = source_tree(tmp_path / "src")
    server = live_server_factory.start()
    owner, _agent_id, key, [cfg] = setup(
        server, {"name": "Docs", "sources": [{"path": str(src)}], "options": {"type": "full"}}
    )
    owner.register_agent("Other desk")
    agent = Agent(tmp_path, server.url, key)
    assert agent.run("run").returncode == 0
    [backup] = owner.backups(configId=cfg["id"])

    page.goto(f"{server.url}/signin")
    page.get_by_label("E-mail").fill("owner@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{server.url}/backups/{backup['id']}")
    expect(page.get_by_label("Machine", exact=True)).to_have_value("e2e laptop")
    expect(page.locator("#restores")).to_contain_text("None yet")
    # the form as a person first sees it (no path of the test machine in the picture)
    page.locator("#restore").screenshot(
        path=str(ROOT / "docs" / "images" / "restore-to-machine.png")
    )

    target = tmp_path / "restored"
    page.get_by_label("Machine", exact=True).fill("Other desk")
    page.get_by_label("Into this folder on that machine").fill(str(target))
    page.get_by_role("button", name="Restore", exact=True).click()
    expect(page.locator("#machine-error")).to_contain_text("only the machine that made it can")

    daemon = Daemon(agent)
    try:
        daemon.wait_for_line("agent socket connected")
        page.get_by_label("Machine", exact=True).fill("e2e laptop")
        page.get_by_role("button", name="Restore", exact=True).click()
        expect(page.locator(".flash, [role=status]").first).to_contain_text("Restore asked of")
        deadline = time.monotonic() + 60
        while not page.locator('#restores-table [data-status="completed"]').count():
            assert time.monotonic() < deadline, daemon.output()
            time.sleep(1)
            page.reload()
        expect(page.locator("#restores-table")).to_contain_text(str(target))
        shot(page, "backup-restore-to-machine")
    finally:
        daemon.stop()
    [a_txt] = list(target.rglob("a.txt"))
    assert a_txt.read_text() == (src / "docs" / "a.txt").read_text()
