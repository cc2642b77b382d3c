"""The tray's recovery step, offscreen against a real ``backapp serve`` (and, for continuing an old
machine, real S3 and the real command line on the old machine): after pairing, a window makes
the account's recovery code, shows it once with the plain warning, and puts it away only when
one group is typed back; a machine that replaces another continues its backups with the code,
and a wrong code says so and changes nothing; the restore window asks for the code to open an
old machine's snapshot, says "Wrong recovery code" for a wrong one and writes nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from desktop_agent.engine import LOSS_WARNING, AgentSettings, KeyStore, new_recovery_code
from desktop_agent.gui._recovery import RecoverySource
from desktop_agent.gui._restore import RestoreSource
from desktop_agent.gui._windows.recovery import RecoveryWindow
from desktop_agent.gui._windows.restore import RestoreWindow
from tests.support.agent_process import Agent
from tests.support.keyring import MemoryKeyring
from tests.support.s3 import S3Endpoint
from tests.support.server_process import LiveServerFactory
from tests.support.tray import close_app, make_app

pytestmark = pytest.mark.e2e

WAIT = 60_000


def test_after_pairing_the_code_is_made_shown_once_and_checked(
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
    r = owner.request("POST", "/api/agents/pairing-codes", json={"name": "laptop"})
    assert r.status_code == 201, r.text
    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        app.start()
        pairing = app.pairing
        assert pairing is not None
        pairing.server.setText(server.url)
        qtbot.keyClicks(pairing.code, r.json()["code"])
        qtbot.keyClick(pairing.code, Qt.Key.Key_Return)
        # The recovery step follows pairing: the account has no code yet.
        qtbot.waitUntil(lambda: app.recovery is not None and app.recovery.isVisible(), timeout=WAIT)
        window = app.recovery
        assert window is not None
        assert window.pages.currentWidget() is window.create_page
        assert app.controller.paused  # no first snapshot before the step is done
        qtbot.mouseClick(window.create_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: window.pages.currentWidget() is window.show_page, timeout=WAIT)
        code = window.code_label.text()
        groups = code.split("-")
        assert len(groups) == 9 and all(len(g) == 4 for g in groups), code
        assert window.warning.text() == LOSS_WARNING
        assert "If you lose every machine and this code" in window.warning.text()
        key = list(memory_keyring.items.values())[0]
        state = server.agent_client(key).get("/api/agent/recovery").json()
        assert state["configured"] is True and state["version"] == 1

        # One group typed back: a wrong one is refused, the asked one puts the code away.
        qtbot.mouseClick(window.saved_button, Qt.MouseButton.LeftButton)
        asked = int(window.confirm_prompt.text().split("group ")[1].split()[0])
        other = groups[asked % 8]
        qtbot.keyClicks(window.group_field, other if other != groups[asked - 1] else "ZZZZ")
        qtbot.keyClick(window.group_field, Qt.Key.Key_Return)
        assert "not the group" in window.confirm_message.text()
        assert window.pages.currentWidget() is window.confirm_page
        window.group_field.clear()
        qtbot.keyClicks(window.group_field, groups[asked - 1].lower())
        qtbot.keyClick(window.group_field, Qt.Key.Key_Return)
        assert window.pages.currentWidget() is window.done_page
        assert "Recovery is set up" in window.done_message.text()
        assert window.code_label.text() == ""  # not kept in a widget once confirmed
        qtbot.mouseClick(window.close_button, Qt.MouseButton.LeftButton)
        assert not window.isVisible() and not app.controller.paused

        # Never logged, never in the settings folder.
        assert code not in caplog.text and code not in server.log()
        for path in agent_dir.rglob("*"):
            if path.is_file():
                assert code.encode() not in path.read_bytes(), path
    finally:
        close_app(app)


def test_a_new_machine_continues_the_old_ones_backups_with_the_code(
    qtbot: Any,
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    agent_dir: Path,
    memory_keyring: MemoryKeyring,
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("on the old laptop\n")
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner = server.owner()
    a_id, a_key = owner.register_agent("old laptop")
    b_id, b_key = owner.register_agent("new laptop")
    owner.create_config(
        a_id, name="Inc", sources=[{"path": str(src)}], options={"type": "incremental"}
    )
    old = Agent(tmp_path / "a", server.url, a_key, BACKAPP_CACHE_DIR=str(tmp_path / "a-cache"))
    done = old.run("run", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    done = old.run("recovery", "init", "--json")
    assert done.returncode == 0, done.stderr
    code = json.loads(done.stdout)["recoveryCode"]
    r = owner.request("POST", f"/api/agents/{b_id}/inherit", json={"fromAgentId": a_id})
    assert r.status_code == 201, r.text

    source = RecoverySource(AgentSettings(server_url=server.url, agent_id=b_id), b_key)
    offer = source.offer()
    assert offer.configured and [a.agent_id for a in offer.continuable] == [a_id]
    window = RecoveryWindow(source, offer)
    qtbot.addWidget(window)
    window.show()
    assert window.pages.currentWidget() is window.continue_page
    assert "old laptop" in window.machines.currentText()

    qtbot.keyClicks(window.code_field, new_recovery_code())  # well-formed, not the account's
    qtbot.keyClick(window.code_field, Qt.Key.Key_Return)
    qtbot.waitUntil(window.continue_button.isEnabled, timeout=WAIT)
    assert window.continue_message.text() == "Wrong recovery code. Nothing was changed."
    assert window.code_field.text() == ""
    assert memory_keyring.items == {} and not (agent_dir / "repository-keys").exists()
    api = server.agent_client(b_key)
    assert api.get("/api/agent/inherited").json()["agents"][0]["continued"] is False

    qtbot.keyClicks(window.code_field, code)
    qtbot.mouseClick(window.continue_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.pages.currentWidget() is window.done_page, timeout=WAIT)
    assert "continues the backups of “old laptop”" in window.done_message.text()
    assert api.get("/api/agent/inherited").json()["agents"][0]["continued"] is True
    assert code not in server.log()


def test_the_restore_window_asks_for_the_code_for_an_old_machines_snapshot(
    qtbot: Any,
    live_server_factory: LiveServerFactory,
    s3_server: S3Endpoint,
    s3_bucket: str,
    agent_dir: Path,
    memory_keyring: MemoryKeyring,
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "letter.txt").write_text("written on the old laptop\n")
    (src / "docs" / "photo.bin").write_bytes(bytes(range(256)) * 900)
    server = live_server_factory.start(s3=s3_server, bucket=s3_bucket)
    owner = server.owner()
    a_id, a_key = owner.register_agent("old laptop")
    b_id, b_key = owner.register_agent("new laptop")
    owner.create_config(
        a_id, name="Docs", sources=[{"path": str(src)}], options={"type": "incremental"}
    )
    old = Agent(tmp_path / "a", server.url, a_key, BACKAPP_CACHE_DIR=str(tmp_path / "a-cache"))
    done = old.run("run", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    done = old.run("recovery", "init", "--json")
    assert done.returncode == 0, done.stderr
    code = json.loads(done.stdout)["recoveryCode"]
    r = owner.request("POST", f"/api/agents/{b_id}/inherit", json={"fromAgentId": a_id})
    assert r.status_code == 201, r.text

    source = RestoreSource(AgentSettings(server_url=server.url, agent_id=b_id), b_key)
    window = RestoreWindow(lambda: source)
    qtbot.addWidget(window)
    window.show()
    try:
        window.load_backups()
        qtbot.waitUntil(lambda: len(window.backup_items()) == 1, timeout=WAIT)
        group = window.backups.topLevelItem(0)
        assert group is not None and group.text(0) == "Docs (from old laptop)"
        window.backups.setCurrentItem(group.child(0))
        # B has no key for A's repository: the window asks for the recovery code.
        qtbot.waitUntil(lambda: window.code_dialog is not None, timeout=WAIT)
        dialog = window.code_dialog
        assert dialog is not None and "recovery code" in dialog.reason.text()

        # A well-formed code that is not the account's: said so, asked again, nothing written.
        qtbot.keyClicks(dialog.field, new_recovery_code())
        qtbot.mouseClick(dialog.open_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(
            lambda: window.code_dialog is not None and window.code_dialog is not dialog,
            timeout=WAIT,
        )
        dialog = window.code_dialog
        assert dialog is not None
        assert dialog.reason.text() == "Wrong recovery code. Nothing was written."
        assert window.files.topLevelItemCount() == 0
        assert not (agent_dir / "repository-keys").exists() and memory_keyring.items == {}

        qtbot.keyClicks(dialog.field, code)
        qtbot.mouseClick(dialog.open_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: window.files.topLevelItemCount() > 0, timeout=WAIT)
        assert window.code_dialog is None
        window.files.topLevelItem(0).setSelected(True)  # the path down to src
        out = tmp_path / "restored"
        with qtbot.waitSignal(window.restore_done, timeout=WAIT) as ended:
            assert window.start_restore(out)
        assert "Restore finished" in window.status.text(), ended.args
        restored = out / str(src).lstrip("/") / "docs"
        assert (restored / "letter.txt").read_text() == "written on the old laptop\n"
        assert (restored / "photo.bin").read_bytes() == bytes(range(256)) * 900
        # A's key was used for this window only: not stored on B.
        assert not (agent_dir / "repository-keys").exists() and memory_keyring.items == {}
    finally:
        window.close()
        source.close()
        assert source.recovery_code is None
