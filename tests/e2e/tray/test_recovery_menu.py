"""The tray menu's *Recovery Code…*, offscreen against a real ``backapp serve``: a machine whose
user skipped the recovery step (or paired on the command line) reopens it from the menu, makes the
code there, and afterwards the same entry says that recovery is set up, never showing the code
again; while the code is on screen, the entry brings that window forward instead of replacing it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from desktop_agent.engine import KeyStore
from tests.support.keyring import MemoryKeyring
from tests.support.server_process import LiveServerFactory
from tests.support.tray import close_app, make_app, pair

pytestmark = pytest.mark.e2e

WAIT = 60_000


def test_the_menu_reopens_the_recovery_step_and_then_shows_its_state(
    qtbot: Any,
    live_server_factory: LiveServerFactory,
    agent_dir: Path,
    keystore: KeyStore,
    memory_keyring: MemoryKeyring,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = live_server_factory.start()
    owner = server.owner()
    agent_id, key = owner.register_agent("laptop")
    pair(server.url, key, keystore, agent_id)
    app, _fake, recorder = make_app(agent_dir, keystore)
    try:
        app.start()
        assert app.recovery is None  # already paired: the step after pairing is not offered
        action = app.menu.actions["recovery"]
        assert action.text() == "Recovery Code…" and action.isEnabled()

        action.trigger()
        qtbot.waitUntil(lambda: app.recovery is not None and app.recovery.isVisible(), timeout=WAIT)
        window = app.recovery
        assert window is not None and window.pages.currentWidget() is window.create_page
        qtbot.mouseClick(window.create_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: window.pages.currentWidget() is window.show_page, timeout=WAIT)
        code = window.code_label.text()
        assert len(code.split("-")) == 9, code

        # The entry again while the code is on screen: the same window, the code still there.
        app.menu.actions["recovery"].trigger()
        qtbot.wait(200)
        assert app.recovery is window and window.code_label.text() == code

        qtbot.mouseClick(window.saved_button, Qt.MouseButton.LeftButton)
        asked = int(window.confirm_prompt.text().split("group ")[1].split()[0])
        qtbot.keyClicks(window.group_field, code.split("-")[asked - 1])
        qtbot.keyClick(window.group_field, Qt.Key.Key_Return)
        assert window.pages.currentWidget() is window.done_page
        qtbot.mouseClick(window.close_button, Qt.MouseButton.LeftButton)
        assert not window.isVisible()
        state = server.agent_client(key).get("/api/agent/recovery").json()
        assert state["configured"] is True

        # Set up now: the entry shows the state, and never the code.
        app.menu.actions["recovery"].trigger()
        qtbot.waitUntil(
            lambda: (
                app.recovery is not None and app.recovery is not window and app.recovery.isVisible()
            ),
            timeout=WAIT,
        )
        again = app.recovery
        assert again is not None and again.pages.currentWidget() is again.state_page
        text = again.state_message.text()
        assert "Recovery is set up for this account" in text
        assert "recovery rotate" in text and code not in text
        assert again.code_label.text() == ""
        qtbot.mouseClick(again.state_close_button, Qt.MouseButton.LeftButton)
        assert not again.isVisible()
        assert [n for n in recorder.notifications if n[0] == "Recovery code"] == []
        assert code not in caplog.text and code not in server.log()
        for path in agent_dir.rglob("*"):
            if path.is_file():
                assert code.encode() not in path.read_bytes(), path
    finally:
        close_app(app)


def test_the_menu_entry_waits_for_pairing_and_says_when_the_server_cannot_be_asked(
    qtbot: Any,
    live_server_factory: LiveServerFactory,
    agent_dir: Path,
    keystore: KeyStore,
    memory_keyring: MemoryKeyring,
) -> None:
    server = live_server_factory.start()
    app, _fake, recorder = make_app(agent_dir, keystore)
    try:
        app.start()  # not paired: the pairing window, and no recovery entry to use yet
        assert not app.menu.actions["recovery"].isEnabled()
        if app.pairing is not None:
            app.pairing.close()
    finally:
        close_app(app)

    owner = server.owner()
    agent_id, key = owner.register_agent("laptop")
    pair(server.url, key, keystore, agent_id)
    server.stop()
    app, _fake, recorder = make_app(agent_dir, keystore)
    try:
        app.start()
        app.menu.actions["recovery"].trigger()
        said = lambda: [n for n in recorder.notifications if n[0] == "Recovery code"]  # noqa: E731
        qtbot.waitUntil(lambda: bool(said()), timeout=WAIT)
        [(_title, message, is_error)] = said()
        assert is_error and message.startswith("Could not ask the server"), message
        assert app.recovery is None
    finally:
        close_app(app)
