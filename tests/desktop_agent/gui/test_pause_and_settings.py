"""Pause, Settings (sign out, re-pair), icons and text helpers, without a server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QLabel, QSystemTrayIcon

from desktop_agent.engine import KeyStore
from desktop_agent.gui import ConfigView, Health
from desktop_agent.gui._icons import health_pixmap
from desktop_agent.gui._text import eta_text, human_bytes, redact
from tests.support.keyring import MemoryKeyring
from tests.support.tray import close_app, make_app, pair

SERVER = "http://127.0.0.1:9"  # nothing listens: these tests never start polling
KEY = "bka_" + "s" * 43


@pytest.fixture
def with_tray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: True))


def test_pause_from_the_menu_then_resume(
    qtbot: Any, with_tray: None, agent_dir: Path, keystore: KeyStore
) -> None:
    pair(SERVER, KEY, keystore)
    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        assert app.controller.health() is Health.IDLE
        app.menu.actions["pause:0"].trigger()  # for 1 hour
        c = app.controller
        assert c.paused and c.paused_until is not None
        assert timedelta(minutes=59) < c.paused_until - datetime.now(UTC) <= timedelta(hours=1)
        assert c.health() is Health.PAUSED
        assert app.tray_icon is not None and app.tray_icon.toolTip() == "BackApp — paused"
        assert "pause:0" not in app.menu.actions
        assert app.menu.actions["resume"].text().startswith("Resume Backups (paused until ")
        assert "paused until" in app.status.connection.text()
        app.menu.actions["resume"].trigger()
        assert not c.paused and c.health() is Health.IDLE
    finally:
        close_app(app)


def test_settings_show_where_the_key_is_never_the_key_and_sign_out_forgets_it(
    qtbot: Any,
    with_tray: None,
    agent_dir: Path,
    keystore: KeyStore,
    memory_keyring: MemoryKeyring,
    no_dialogs: list[Any],
) -> None:
    pair(SERVER, KEY, keystore, agent_id="agent-1")
    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        app.menu.actions["settings"].trigger()
        dialog = app.settings_dialog
        assert dialog is not None and dialog.isVisible()
        labels = [w.text() for w in dialog.findChildren(QLabel)]
        assert SERVER in labels and "agent-1" in labels
        assert any("OS keychain" in text for text in labels)
        assert not any(KEY in text for text in labels)

        dialog.sign_out_button.click()
        assert len(no_dialogs) == 1  # "Sign out?" was asked
        assert memory_keyring.items == {}
        assert json.loads((agent_dir / "config.json").read_text())["serverUrl"] is None
        assert app.controller.health() is Health.UNPAIRED
        assert not app.controller.paired
        assert app.pairing is not None and app.pairing.isVisible()  # ready to pair again
    finally:
        close_app(app)


def test_attention_when_a_config_is_overdue(agent_dir: Path, keystore: KeyStore) -> None:
    pair(SERVER, KEY, keystore)
    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        c = app.controller
        old = (datetime.now(UTC) - timedelta(hours=25)).isoformat()
        c.views["c1"] = ConfigView(
            id="c1", name="Docs", last={"status": "completed", "finishedAt": old, "size": 1}
        )
        assert c.health() is Health.ATTENTION
        assert c.attention_reasons() == ["Docs: no backup for more than 24 hours"]
        c.views["c1"].last = {"status": "completed", "finishedAt": datetime.now(UTC).isoformat()}
        assert c.health() is Health.IDLE
    finally:
        close_app(app)


def test_icons_differ_per_state(qapp: Any) -> None:
    images = {h: health_pixmap(h, 32).toImage() for h in Health}
    assert len({img.pixelColor(16, 4).name() for img in images.values()}) >= 4


def test_text_helpers() -> None:
    assert redact("refused key bka_AbC-123_x for you") == "refused key bka_…(hidden) for you"
    assert human_bytes(512) == "512 B" and human_bytes(5 * 1024**3) == "5.0 GiB"
    assert eta_text(None) == "—" and eta_text(59) == "59s" and eta_text(3725) == "1h 02m"


def test_the_keychain_is_read_once_not_on_every_refresh(
    with_tray: None, agent_dir: Path, keystore: KeyStore, memory_keyring: MemoryKeyring
) -> None:
    pair(SERVER, KEY, keystore)
    reads: list[str] = []
    original = memory_keyring.get_password

    def counting(service: str, username: str) -> str | None:
        reads.append(username)
        return original(service, username)

    memory_keyring.get_password = counting  # type: ignore[method-assign]
    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        for _ in range(50):  # what progress events do, several times a second
            app.controller.changed.emit()
        assert app.controller.paired
        assert reads == [SERVER]
    finally:
        close_app(app)


def test_a_resume_that_arrives_after_the_app_is_gone_does_nothing(
    qtbot: Any, with_tray: None, agent_dir: Path, keystore: KeyStore
) -> None:
    """A late answer (the recovery check's, after quitting) may still resume backups: the pause
    timer is deleted by then, and touching it raised from inside Qt's event loop."""
    pair(SERVER, KEY, keystore)
    app, _fake, _rec = make_app(agent_dir, keystore)
    controller = app.controller
    controller.pause(timedelta(hours=1))
    close_app(app)
    controller.resume()  # raised RuntimeError: the C++ QTimer was already deleted
    assert controller.paused  # nothing changed after the app went away
