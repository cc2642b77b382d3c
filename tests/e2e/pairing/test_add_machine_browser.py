"""*Add a machine* on the Agents page, in a real headless Chromium against ``backapp serve``: the
page shows a one-time code, the machine pairs with it (``backapp-agent pair``), the agent appears,
and the link opens the steps with the code filled in."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from desktop_agent import cli
from tests.support.keyring import MemoryKeyring
from tests.support.paths import ROOT
from tests.support.server_process import LiveServerFactory

pytestmark = pytest.mark.e2e

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CODE = re.compile(r"^[A-Z2-9]{3}-[A-Z2-9]{3}-[A-Z2-9]{3}$")


def test_add_a_machine_shows_a_code_that_pairs_once(
    live_server_factory: LiveServerFactory,
    page: Any,
    agent_dir: Path,
    memory_keyring: MemoryKeyring,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.support.browser import shot, sign_up

    server = live_server_factory.start()
    sign_up(page, server)
    page.goto(f"{server.url}/agents")
    page.get_by_role("button", name="Get a pairing code").click()
    expect(page.locator("#machine-error")).to_contain_text("Give the machine a name")

    page.get_by_label("Machine name").fill("Kitchen PC")
    page.get_by_role("button", name="Get a pairing code").click()
    code = page.locator("#pairing-code").inner_text().strip()
    assert CODE.match(code), code
    expect(page.locator("#pair-command")).to_have_text(
        f"backapp-agent pair {code} --server {server.url}"
    )
    page.set_viewport_size({"width": 1280, "height": 860})
    page.locator("#add-machine").screenshot(path=str(ROOT / "docs" / "images" / "add-machine.png"))
    shot(page, "agents-add-machine")

    assert cli.main(["pair", code, "--server", server.url]) == 0
    assert "Paired with" in capsys.readouterr().out
    page.goto(f"{server.url}/agents")
    expect(page.get_by_role("link", name="Kitchen PC")).to_be_visible()
    expect(page.locator("#pairing-code")).to_have_count(0)  # shown once, on the POST's answer

    page.goto(f"{server.url}/pair?code={code.lower()}")
    expect(page.locator("#pairing-code")).to_have_text(code)
    expect(page.locator("#pair-command")).to_have_text(
        f"backapp-agent pair {code} --server {server.url}"
    )
