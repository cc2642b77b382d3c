"""Agent updates in the tray app, as the daemon does them: at an idle moment only (no backup, no
restore, no compaction), off the GUI thread; a tray install that its installer updates (a folder
or an app bundle) tells the user once per offered version instead."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgspec
from PySide6.QtCore import QThreadPool
from pytestqt.qtbot import QtBot

from desktop_agent.engine import Heartbeat, KeyStore, UpdateOffer, Updater
from desktop_agent.gui._updates import TrayUpdates
from tests.support.tray import close_app, make_app, pair

OFFER = UpdateOffer(
    version="99.0.0", url="https://s3.test/b", sha256="a" * 64, size=10, signature="c2ln"
)
BEAT = Heartbeat(update=msgspec.to_builtins(OFFER))


class FakeDuty:
    """``UpdateDuty``'s face: hears beats, due once heard, run on some thread."""

    def __init__(self, restart: bool = False) -> None:
        self.beats = 0
        self.threads: list[threading.Thread] = []
        self.restart = restart
        self.offer: Any = None

    def heard(self, beat: Heartbeat) -> None:
        self.beats += 1

    def due(self) -> bool:
        return self.beats > 0 and not self.threads

    def run(self) -> bool:
        self.threads.append(threading.current_thread())
        return self.restart

    def overdue(self) -> bool:
        return False


def test_a_folder_install_tells_the_user_once_per_version(qtbot: QtBot, tmp_path: Path) -> None:
    updater = Updater(tmp_path, executable=tmp_path / "backapp-tray", kind="folder")
    updates = TrayUpdates(tmp_path, QThreadPool.globalInstance(), updater=updater)
    told: list[tuple[str, str]] = []
    updates.notify.connect(lambda title, text: told.append((title, text)))
    updates.heard(BEAT)
    updates.heard(BEAT)
    assert updates.maybe_run(idle=True) is False
    assert told == [
        (
            "BackApp 99.0.0 is available",
            "This install is a folder or an app bundle (the tray app's build): its installer "
            "updates it.",
        )
    ]


def test_it_waits_for_an_idle_moment_runs_off_the_gui_thread_and_asks_to_restart(
    qtbot: QtBot, tmp_path: Path
) -> None:
    updater = Updater(tmp_path, executable=tmp_path / "backapp-agent", kind="file")
    updates = TrayUpdates(tmp_path, QThreadPool.globalInstance(), updater=updater)
    updates.duty = FakeDuty(restart=True)  # type: ignore[assignment]
    restarts: list[bool] = []
    updates.restart.connect(lambda: restarts.append(True))
    assert updates.maybe_run(idle=True) is False  # nothing offered yet
    updates.heard(BEAT)
    assert updates.maybe_run(idle=False) is False  # a backup runs: later
    assert updates.maybe_run(idle=True) is True
    qtbot.waitUntil(lambda: restarts == [True], timeout=5000)
    duty = updates.duty
    assert isinstance(duty, FakeDuty)
    assert len(duty.threads) == 1 and duty.threads[0] is not threading.main_thread()


def test_the_controller_updates_only_when_nothing_runs(
    qtbot: QtBot, tmp_path: Path, keystore: KeyStore
) -> None:
    pair("http://127.0.0.1:9", "bka_tray-key", keystore)
    app, _, _ = make_app(tmp_path / "state", keystore)
    try:
        controller = app.controller
        duty = FakeDuty()
        controller.updates.duty = duty  # type: ignore[assignment]
        busy = [True]
        controller.busy = lambda: busy[0]  # e.g. the restore window restores files
        controller._polled((BEAT, []))
        assert duty.beats == 1 and duty.threads == []
        busy[0] = False
        controller._polled((BEAT, []))
        qtbot.waitUntil(lambda: len(duty.threads) == 1, timeout=5000)
    finally:
        close_app(app)
