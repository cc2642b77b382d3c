"""The tray app against a real ``backapp serve`` process (and a real S3 endpoint on loopback, moto in
server mode), offscreen: first-run pairing, Back Up Now with progress reaching the status window, a
failure in the icon state and the menu, cancel on quit, the no-tray fallback, single instance."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSystemTrayIcon

from desktop_agent.engine import KeyStore, UploadStarted
from desktop_agent.gui import Health
from desktop_agent.gui.app import NO_TRAY_NOTICE, forward_to_running, instance_name
from tests.support.keyring import MemoryKeyring
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServerFactory
from tests.support.tray import close_app, make_app, pair
from tests.support.trees import MIB, random_file

pytestmark = pytest.mark.e2e

WAIT = 60_000


@pytest.fixture
def with_tray(monkeypatch: pytest.MonkeyPatch) -> None:
    """A desktop with a system tray (the offscreen platform has none)."""
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: True))


def menu_texts(app: Any) -> list[str]:
    return [action.text() for action in app.menu.actions.values()]


# -- first run -----------------------------------------------------------------------------------


def test_first_run_pairs_with_a_real_server_and_keeps_the_key_in_the_keychain(
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
    agent_id, key = owner.register_agent("Ada's laptop")
    owner.create_config(agent_id, name="Documents", sources=[{"path": str(tmp_path)}])

    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        app.start()
        assert app.controller.health() is Health.UNPAIRED
        window = app.pairing
        assert window is not None and window.isVisible()
        assert window.key.echoMode() == window.key.EchoMode.Password

        window.server.setText(server.url + "/")
        window.key.setText(key)
        window.agent_id.setText(agent_id)
        qtbot.mouseClick(window.connect_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(window.done_button.isVisible, timeout=WAIT)

        text = window.message.text()
        assert f"Connected to {server.url}" in text
        assert "Documents" in text and str(tmp_path) in text
        assert "Agent: Ada&#x27;s laptop" in text or "Agent: Ada's laptop" in text
        assert window.key.text() == ""  # not left in a widget
        assert memory_keyring.items == {("backapp-agent", server.url): key}
        stored = json.loads((agent_dir / "config.json").read_text())
        assert stored["serverUrl"] == server.url and stored["agentId"] == agent_id
        assert key not in (agent_dir / "config.json").read_text()
        assert not (agent_dir / "api-key").exists()

        # The app is live: it polls, and the menu lists the assigned config, which has never
        # been backed up: that is not "up to date".
        qtbot.waitUntil(lambda: app.controller.online is True, timeout=WAIT)
        assert app.controller.health() is Health.ATTENTION
        assert app.controller.attention_reasons() == ["Documents: not backed up yet"]
        assert app.controller.agent_name == "Ada's laptop"
        assert any(t.startswith("Documents: never backed up") for t in menu_texts(app))
        app.menu.actions["console"].trigger()
        assert _rec.urls == [server.url]
        assert key not in "\n".join(app.controller.log_lines)
    finally:
        close_app(app)


def test_a_refused_key_saves_nothing_and_is_never_shown(
    qtbot: Any,
    live_server_factory: LiveServerFactory,
    agent_dir: Path,
    keystore: KeyStore,
    memory_keyring: MemoryKeyring,
) -> None:
    server = live_server_factory.start()
    wrong = "bka_" + "x" * 43
    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        app.show_pairing()
        window = app.pairing
        assert window is not None
        window.server.setText(server.url)
        window.key.setText(wrong)
        qtbot.mouseClick(window.connect_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "Not connected" in window.message.text(), timeout=WAIT)
        assert "Nothing was saved" in window.message.text()
        assert "refused this API key" in window.message.text()
        assert wrong not in window.message.text()
        assert memory_keyring.items == {}
        assert not (agent_dir / "config.json").exists()
        assert not window.done_button.isVisible()
    finally:
        close_app(app)


# -- Back Up Now ---------------------------------------------------------------------------------


def test_back_up_now_runs_a_real_backup_to_s3_with_progress_in_the_status_window(
    qtbot: Any,
    with_tray: None,
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    agent_dir: Path,
    keystore: KeyStore,
    tmp_path: Path,
    screenshots: Path,
) -> None:
    src = tmp_path / "src"
    for i in range(40):
        random_file(src / f"dir{i % 4}" / f"file{i}.bin", MIB // 2, seed=i)
    (src / "notes.txt").write_text("hello\n" * 1000)
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner = server.owner()
    agent_id, key = owner.register_agent("laptop")
    cfg = owner.create_config(agent_id, name="Photos", sources=[{"path": str(src)}])
    pair(server.url, key, keystore, agent_id)

    app, _fake, rec = make_app(agent_dir, keystore)
    try:
        app.start()
        qtbot.waitUntil(lambda: cfg["id"] in app.controller.views, timeout=WAIT)
        app.show_status()
        seen: list[tuple[str, int, str]] = []
        health: list[Health] = []

        def snapshot() -> None:
            panel = app.status.panels.get(cfg["id"])
            health.append(app.controller.health())
            if panel is not None:
                seen.append((panel.state.text(), panel.progress.value(), panel.details.text()))

        app.controller.changed.connect(snapshot)
        assert app.controller.back_up()
        assert not app.controller.back_up()  # one run at a time
        with qtbot.waitSignal(app.controller.run_finished, timeout=WAIT) as finished:
            pass
        assert finished.args[0].ok, finished.args[0]

        assert Health.BUSY in health
        assert app.controller.health() is Health.IDLE
        assert app.tray_icon is not None and "up to date" in app.tray_icon.toolTip()
        # Progress reached the window: files, bytes, rate while it ran; 100 % at the end.
        assert any(
            text.startswith("Files ") and "/s" in text and "ETA" in text for _s, _v, text in seen
        )
        panel = app.status.panels[cfg["id"]]
        assert panel.progress.value() == 1000
        assert panel.details.text().startswith("Files 41 / 41")
        assert panel.state.text().startswith("OK ")
        assert any(t.startswith("Photos: OK ") for t in menu_texts(app))
        assert "Backup 'Photos' completed" in "\n".join(app.controller.log_lines)
        assert "Backup 'Photos' completed" in app.status.log.toPlainText()
        assert rec.notifications[0][0] == "First backup completed"

        [backup] = owner.backups()
        assert backup["status"] == "completed"
        head = s3_server.client().head_object(Bucket=s3_bucket, Key=backup["s3Path"])
        assert head["ContentLength"] == backup["size"]
        state = json.loads((agent_dir / "state.json").read_text())
        assert state["configs"][cfg["id"]]["status"] == "completed"

        app.status.resize(640, 420)
        assert app.status.grab().save(str(screenshots / "status-window-live.png"))
        # A second success is not announced again.
        rec.notifications.clear()
        with qtbot.waitSignal(app.controller.run_finished, timeout=WAIT):
            app.menu.actions[f"backup:{cfg['id']}"].trigger()
        assert rec.notifications == []
    finally:
        close_app(app)


def test_a_failed_backup_shows_in_the_icon_the_menu_and_a_notification(
    qtbot: Any,
    with_tray: None,
    live_server_factory: LiveServerFactory,
    agent_dir: Path,
    keystore: KeyStore,
    tmp_path: Path,
) -> None:
    server = live_server_factory.start()
    owner = server.owner()
    agent_id, key = owner.register_agent("laptop")
    missing = tmp_path / "not-there"
    cfg = owner.create_config(agent_id, name="Gone", sources=[{"path": str(missing)}])
    pair(server.url, key, keystore)

    app, _fake, rec = make_app(agent_dir, keystore)
    try:
        app.start()
        qtbot.waitUntil(lambda: cfg["id"] in app.controller.views, timeout=WAIT)
        with qtbot.waitSignal(app.controller.run_finished, timeout=WAIT):
            app.menu.actions["backup:all"].trigger()
        assert app.controller.health() is Health.ATTENTION
        assert app.tray_icon is not None and "attention" in app.tray_icon.toolTip()
        [action] = [a for a in app.menu.actions.values() if a.text().startswith("Gone: ")]
        assert action.text().startswith("Gone: FAILED")
        assert action.toolTip().endswith(f"Source folder not found: {missing}")
        assert [n[0] for n in rec.notifications] == ["Backup failed"]
        assert rec.notifications[0][2] is True
        panel = app.status.panels[cfg["id"]]
        assert "Source folder not found" in panel.state.text()
        assert "Gone: last backup failed" in app.status.connection.text()
        [backup] = owner.backups()
        assert backup["status"] == "failed"
    finally:
        close_app(app)


def test_quitting_during_a_backup_asks_then_cancels_cleanly(
    qtbot: Any,
    with_tray: None,
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    agent_dir: Path,
    keystore: KeyStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = tmp_path / "src"
    random_file(src / "data.bin", 40 * MIB)
    monkeypatch.setenv("BACKAPP_AGENT_PART_SIZE", "5MiB")
    monkeypatch.setenv("BACKAPP_AGENT_MULTIPART_THRESHOLD", "5MiB")
    monkeypatch.setenv("BACKAPP_AGENT_UPLOAD_CONCURRENCY", "1")
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner = server.owner()
    agent_id, key = owner.register_agent("laptop")
    cfg = owner.create_config(agent_id, name="Big", sources=[{"path": str(src)}])
    pair(server.url, key, keystore)

    app, fake, rec = make_app(agent_dir, keystore)
    try:
        app.start()
        qtbot.waitUntil(lambda: cfg["id"] in app.controller.views, timeout=WAIT)
        # Hold the engine at the start of the multipart upload until the user has quit, so the
        # cancel lands mid-upload whatever the machine's speed.
        uploading, proceed = threading.Event(), threading.Event()

        def hold(event: object) -> None:
            if isinstance(event, UploadStarted):
                uploading.set()
                proceed.wait(30)

        assert app.controller.back_up([cfg["id"]])
        worker = app.controller.runs.worker
        assert worker is not None
        worker.signals.progress.connect(hold, Qt.ConnectionType.DirectConnection)
        assert uploading.wait(WAIT / 1000)

        rec.answer = False
        assert app.request_quit() is False  # "keep backing up"
        assert app.controller.running and fake.quit_calls == 0
        rec.answer = True
        with qtbot.waitSignal(app.controller.run_finished, timeout=WAIT) as finished:
            assert app.request_quit() is True
            proceed.set()
        assert rec.questions == ["Stop the backup and quit?"] * 2
        assert fake.quit_calls == 1
        [result] = finished.args[0].results
        assert result.status == "cancelled" and result.error == "cancelled by the user"
        [backup] = owner.backups()
        assert backup["status"] == "cancelled" and backup["error"] == "cancelled by the user"
        assert ("Backup failed", True) not in [(t, e) for t, _m, e in rec.notifications]
        s3 = s3_server.client()
        assert s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
        listed = s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
        # the server's own catalog copies (server/catalog/) aside, nothing was stored
        assert [o["Key"] for o in listed if not o["Key"].startswith("server/")] == []
    finally:
        proceed.set()
        close_app(app)


# -- without a tray; single instance -------------------------------------------------------------


def test_without_a_tray_the_status_window_opens_and_says_why(
    qtbot: Any, monkeypatch: pytest.MonkeyPatch, agent_dir: Path, keystore: KeyStore
) -> None:
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: False))
    pair("http://127.0.0.1:9", "bka_" + "k" * 43, keystore)  # nothing listens there
    app, fake, _rec = make_app(agent_dir, keystore)
    try:
        app.start()
        assert app.tray_icon is None
        assert app.status.isVisible()
        assert app.status.notice.isVisible() and app.status.notice.text() == NO_TRAY_NOTICE
        qtbot.waitUntil(lambda: app.controller.online is False, timeout=WAIT)
        assert app.controller.health() is Health.ATTENTION
        assert "offline" in app.status.connection.text()
        assert "bka_" not in app.status.connection.text()
        app.controller.notify.emit("Backup failed", "'Docs': disk on fire", True)
        assert (
            app.status.notice.text() == NO_TRAY_NOTICE + "\n\nBackup failed: 'Docs': disk on fire"
        )
        # Closing the window is quitting (nothing else would be left on screen).
        app.status.close()
        assert fake.quit_calls == 1
    finally:
        close_app(app)


def test_a_second_launch_brings_the_first_window_forward(
    qtbot: Any, agent_dir: Path, keystore: KeyStore
) -> None:
    name = instance_name(agent_dir) + "-test"
    assert not forward_to_running(name)  # nobody there yet
    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        assert app.listen(name)
        assert app.pairing is None
        assert forward_to_running(name)
        qtbot.waitUntil(lambda: app.pairing is not None and app.pairing.isVisible(), timeout=5000)
    finally:
        close_app(app)
