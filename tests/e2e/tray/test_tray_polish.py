"""The tray app's polish (issue 15), offscreen against a real ``backapp serve``: failures in words
everywhere (the API-key path of the first-run window, the status window and the menu of an app
whose server is gone, the notification of a backup that could not start); the pairing success
panel lists every configuration with its next backup; the menu and the status window show each
configuration's next backup; a click on a notification opens the window it is about."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSystemTrayIcon

from desktop_agent.engine import KeyStore
from tests.support.keyring import MemoryKeyring
from tests.support.server_process import LiveServerFactory
from tests.support.tray import close_app, make_app, pair

pytestmark = pytest.mark.e2e

WAIT = 60_000
SILENT = "http://127.0.0.1:9"  # nothing listens on the discard port
NOISE = ("Errno", "ConnectError", "Exception", "Traceback")


@pytest.fixture
def with_tray(monkeypatch: pytest.MonkeyPatch) -> None:
    """A desktop with a system tray (the offscreen platform has none)."""
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: True))


def _clean(text: str) -> None:
    for word in NOISE:
        assert word not in text, text


def test_an_api_key_and_a_silent_server_are_said_in_words(
    qtbot: Any, agent_dir: Path, keystore: KeyStore, memory_keyring: MemoryKeyring
) -> None:
    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        app.show_pairing()
        window = app.pairing
        assert window is not None
        window.server.setText(SILENT)
        window.key.setText("bka_" + "k" * 43)
        qtbot.keyClick(window.key, Qt.Key.Key_Return)  # Enter connects on the key path too
        qtbot.waitUntil(lambda: "Not connected" in window.message.text(), timeout=WAIT)
        message = window.message.text()
        assert f"the server did not answer at {SILENT}" in message, message
        assert "Nothing was saved" in message and "bka_k" not in message
        _clean(message)
        assert memory_keyring.items == {}
    finally:
        close_app(app)


def test_a_server_that_is_gone_is_said_in_words_and_a_notification_opens_its_window(
    qtbot: Any, with_tray: None, agent_dir: Path, keystore: KeyStore
) -> None:
    pair(SILENT, "bka_" + "k" * 43, keystore)
    app, _fake, recorder = make_app(agent_dir, keystore)
    try:
        app.start()
        qtbot.waitUntil(lambda: app.controller.online is False, timeout=WAIT)
        app.show_status()
        connection = app.status.connection.text()
        assert f"server unreachable: the server did not answer at {SILENT}" in connection
        _clean(connection)
        assert app.menu.actions["header"].text() == "Server unreachable"
        for action in app.menu.actions.values():
            _clean(action.text() + action.toolTip())

        # Back Up Now cannot start: the notification says why in words...
        assert app.controller.back_up()
        qtbot.waitUntil(lambda: bool(recorder.notifications), timeout=WAIT)
        title, message, error = recorder.notifications[-1]
        assert (title, error) == ("Backup could not start", True)
        assert f"the server did not answer at {SILENT}" in message, message
        _clean(message)
        # ...and a click on it opens the status window.
        app.status.hide()
        assert app.tray_icon is not None
        app.tray_icon.messageClicked.emit()
        assert app.status.isVisible()
        _clean(app.status.connection.text())

        # A restore made in the restore window that ends while it is closed: the click brings
        # the restore window back, not the status window.
        app.show_restore()
        restore = app.restore
        assert restore is not None
        qtbot.waitUntil(lambda: "Could not list the backups" in restore.status.text(), timeout=WAIT)
        assert f"The server did not answer at {SILENT}" in restore.status.text()
        _clean(restore.status.text())
        restore.close()
        app.status.hide()
        app._restore_done("Restored 2 files into /somewhere.")
        assert recorder.notifications[-1][0] == "Restore finished"
        app.tray_icon.messageClicked.emit()
        assert app.restore.isVisible() and not app.status.isVisible()
    finally:
        close_app(app)


def _expected_next(hour: int) -> str:
    """``today HH:00`` or ``tomorrow HH:00`` for a daily schedule at ``hour`` local time."""
    now = datetime.now().astimezone()
    return f"{'today' if now.hour < hour else 'tomorrow'} {hour:02d}:00"


def _hours_ahead(count: int) -> list[int]:
    """``count`` local hours for daily schedules, the first three hours from now: pairing holds
    automatic backups for up to an hour (the recovery step), and a run inside that hold is shown
    as "paused until …, then the missed one at once", not as its time."""
    now = datetime.now().astimezone()
    return [(now.hour + 3 + n) % 24 for n in range(count)]


def test_the_success_panel_menu_and_status_window_show_every_configuration_and_its_next_backup(
    qtbot: Any,
    with_tray: None,
    live_server_factory: LiveServerFactory,
    agent_dir: Path,
    keystore: KeyStore,
    tmp_path: Path,
) -> None:
    server = live_server_factory.start()
    owner = server.owner()
    agent_id, key = owner.register_agent("Ada's laptop")
    if datetime.now().astimezone().minute == 59:
        qtbot.wait(61_000)  # the expected texts must not straddle an hour
    names = ["Documents", "Photos", "Music", "Mail"]
    hours = _hours_ahead(len(names))
    made = {}
    for n, name in enumerate(names):
        source = tmp_path / name
        source.mkdir()
        options = {"schedule": {"cron": f"0 {hours[n]} * * *"}} if name != "Mail" else {}
        made[name] = owner.create_config(
            agent_id, name=name, sources=[{"path": str(source)}], options=options
        )

    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        app.start()
        window = app.pairing
        assert window is not None
        window.server.setText(server.url)
        window.key.setText(key)
        qtbot.keyClick(window.key, Qt.Key.Key_Enter)
        qtbot.waitUntil(window.done_button.isVisible, timeout=WAIT)
        text = window.message.text()
        assert "4 backup configurations assigned" in text, text
        lines = text.split("<br>")
        for n, name in enumerate(names):
            at = next(i for i, line in enumerate(lines) if f"<b>{name}</b>" in line)
            assert str(tmp_path / name) in lines[at]
            expected = (
                "no schedule (Back Up Now only)" if name == "Mail" else _expected_next(hours[n])
            )
            assert lines[at + 1].endswith(f"next backup: {expected}"), lines[at : at + 2]

        qtbot.waitUntil(lambda: app.controller.online is True, timeout=WAIT)
        app.show_status()
        for n, name in enumerate(names):
            config_id = made[name]["id"]
            expected = (
                "no schedule (Back Up Now only)" if name == "Mail" else _expected_next(hours[n])
            )
            assert app.menu.actions[f"next:{config_id}"].text() == f"    next backup: {expected}"
            panel = app.status.panels[config_id]
            assert panel.next.text() == f"Next backup: {expected}"
            assert panel.next.isVisibleTo(app.status)
        menu = [a.text() for a in app.menu.menu.actions()]
        at = menu.index(next(t for t in menu if t.startswith("Documents: never backed up")))
        assert menu[at + 1] == f"    next backup: {_expected_next(hours[0])}"

    finally:
        close_app(app)
