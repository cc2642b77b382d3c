"""The tray's first-run window with a pairing code, offscreen against a real ``backapp serve``:
typing the address and the code and pressing Enter pairs (the key lands in the keychain, never in
a widget); a used code says so and saves nothing; so does an address where nothing answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSystemTrayIcon

from desktop_agent.engine import KeyStore
from desktop_agent.gui import Health
from tests.support.keyring import MemoryKeyring
from tests.support.server_process import LiveServerFactory, Owner
from tests.support.tray import close_app, make_app

pytestmark = pytest.mark.e2e

WAIT = 60_000


@pytest.fixture
def with_tray(monkeypatch: pytest.MonkeyPatch) -> None:
    """A desktop with a system tray (the offscreen platform has none)."""
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: True))


def _issue(owner: Owner, name: str) -> str:
    r = owner.request("POST", "/api/agents/pairing-codes", json={"name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["code"])


def test_enter_pairs_with_a_code_and_lists_the_configurations(
    qtbot: Any,
    with_tray: None,
    live_server_factory: LiveServerFactory,
    agent_dir: Path,
    keystore: KeyStore,
    memory_keyring: MemoryKeyring,
    tmp_path: Path,
) -> None:
    server = live_server_factory.start()
    owner = server.owner()
    code = _issue(owner, "Ada's laptop")

    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        app.start()
        assert app.controller.health() is Health.UNPAIRED
        window = app.pairing
        assert window is not None and window.isVisible()
        window.server.setText(server.url + "/")
        qtbot.keyClicks(window.code, code.lower())
        qtbot.keyClick(window.code, Qt.Key.Key_Return)  # Enter connects: no button click
        qtbot.waitUntil(window.done_button.isVisible, timeout=WAIT)

        text = window.message.text()
        assert f"Connected to {server.url}" in text, text
        assert "Ada&#x27;s laptop" in text or "Ada's laptop" in text
        assert window.code.text() == "" and window.key.text() == ""
        keys = list(memory_keyring.items.values())
        assert len(keys) == 1 and keys[0].startswith("bka_") and keys[0] not in text
        agents = owner.request("GET", "/api/agents").json()["agents"]
        assert [a["name"] for a in agents] == ["Ada's laptop"]
        stored = json.loads((agent_dir / "config.json").read_text())
        assert stored["serverUrl"] == server.url and stored["agentId"] == agents[0]["id"]
        qtbot.waitUntil(lambda: app.controller.health() is not Health.UNPAIRED, timeout=WAIT)

        # a configuration assigned now shows at the next poll; the server knows this agent
        owner.create_config(agents[0]["id"], name="Documents", sources=[{"path": str(tmp_path)}])
        beat = server.agent_client(keys[0]).post("/api/agent/heartbeat", json={"version": "t"})
        assert beat.status_code == 200
    finally:
        close_app(app)


def test_a_used_code_and_a_silent_server_save_nothing(
    qtbot: Any,
    live_server_factory: LiveServerFactory,
    agent_dir: Path,
    keystore: KeyStore,
    memory_keyring: MemoryKeyring,
) -> None:
    server = live_server_factory.start()
    owner = server.owner()
    code = _issue(owner, "first")
    r = server.agent_client("unused").post("/api/agent/pair", json={"code": code})
    assert r.status_code == 201, r.text  # someone else used it first

    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        app.show_pairing()
        window = app.pairing
        assert window is not None
        window.server.setText(server.url)
        window.code.setText(code)
        qtbot.keyClick(window.server, Qt.Key.Key_Enter)
        qtbot.waitUntil(lambda: "Not connected" in window.message.text(), timeout=WAIT)
        message = window.message.text()
        assert "This pairing code was already used" in message, message
        assert "Nothing was saved" in message
        assert memory_keyring.items == {} and not (agent_dir / "config.json").exists()
        assert window.connect_button.isEnabled() and not window.done_button.isVisible()

        window.server.setText("http://127.0.0.1:9")  # nothing listens on the discard port
        window.code.setText(_issue(owner, "second"))
        qtbot.keyClick(window.code, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: "did not answer" in window.message.text(), timeout=WAIT)
        message = window.message.text()
        assert "the server did not answer at http://127.0.0.1:9: check the address" in message
        assert "Errno" not in message and "ConnectError" not in message
        assert memory_keyring.items == {}
    finally:
        close_app(app)
