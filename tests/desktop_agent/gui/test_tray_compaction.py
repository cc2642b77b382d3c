"""The tray app compacts when the server asks (the heartbeat's ``compact``), as the daemon does:
off the GUI thread, only while no backup or restore runs, once per request."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QThreadPool
from pytestqt.qtbot import QtBot

from desktop_agent.engine import AgentSettings, KeyStore
from desktop_agent.engine.protocol import CompactAsk, Heartbeat
from desktop_agent.gui._compaction import TrayCompactions
from tests.support.tray import close_app, make_app, pair


class FakeDuty:
    """``CompactDuty``'s face: asked, due until it ran, run on some thread."""

    made: list[tuple[AgentSettings, str]] = []

    def __init__(self, settings: AgentSettings, api_key: str) -> None:
        FakeDuty.made.append((settings, api_key))
        self.asked = False
        self.threads: list[threading.Thread] = []

    def ask(self) -> None:
        self.asked = True

    def due(self) -> bool:
        return self.asked

    def run(self) -> Any:
        self.threads.append(threading.current_thread())
        self.asked = False
        return None


def test_it_waits_for_an_idle_moment_and_runs_once_off_the_gui_thread(qtbot: QtBot) -> None:
    compactions = TrayCompactions(QThreadPool.globalInstance(), duty=FakeDuty)  # type: ignore[arg-type]
    assert compactions.maybe_run(idle=True) is False  # nothing asked
    compactions.ask(AgentSettings(server_url="https://backapp.test"), "bka_key")
    duty = compactions._duty
    assert isinstance(duty, FakeDuty)
    assert compactions.maybe_run(idle=False) is False  # a backup runs: later
    assert duty.threads == []
    assert compactions.maybe_run(idle=True) is True
    qtbot.waitUntil(lambda: not compactions.running, timeout=5000)
    assert len(duty.threads) == 1 and duty.threads[0] is not threading.main_thread()
    assert compactions.maybe_run(idle=True) is False  # done: not again until asked again


def test_the_heartbeat_request_reaches_the_tray_compaction(
    qtbot: QtBot, tmp_path: Path, keystore: KeyStore
) -> None:
    pair("http://127.0.0.1:9", "bka_tray-key", keystore)
    app, _, _ = make_app(tmp_path / "state", keystore)
    try:
        controller = app.controller
        FakeDuty.made.clear()
        controller.compactions = TrayCompactions(controller.pool, duty=FakeDuty)  # type: ignore[arg-type]
        controller._polled((Heartbeat(), []))
        assert FakeDuty.made == []  # not asked: nothing to do
        controller._polled((Heartbeat(compact=CompactAsk(requested_at="2026-12-02T09:00:00Z")), []))
        assert [key for _, key in FakeDuty.made] == ["bka_tray-key"]
        duty = controller.compactions._duty
        assert isinstance(duty, FakeDuty)
        qtbot.waitUntil(lambda: len(duty.threads) == 1, timeout=5000)
    finally:
        close_app(app)
