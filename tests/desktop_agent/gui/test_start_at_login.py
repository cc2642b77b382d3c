"""Settings → *Start at login*: the checkbox shows what is in effect and really writes (or removes)
the platform's start-up entry; a failure is shown and the box goes back to the truth."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QSystemTrayIcon

from desktop_agent.autostart import DESKTOP_FILE
from desktop_agent.engine import KeyStore
from tests.support.tray import close_app, make_app, pair

SERVER = "http://127.0.0.1:9"  # nothing listens: no polling happens
KEY = "bka_" + "a" * 43


@pytest.fixture
def xdg_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's config folder, moved to tmp through the environment (as a user would)."""
    config = tmp_path / "xdg-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: True))
    return config


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the XDG variant: Linux")
def test_the_checkbox_writes_and_removes_the_autostart_entry(
    qtbot: Any, xdg_home: Path, agent_dir: Path, keystore: KeyStore
) -> None:
    entry = xdg_home / "autostart" / DESKTOP_FILE
    pair(SERVER, KEY, keystore)
    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        app.show_settings()
        dialog = app.settings_dialog
        assert dialog is not None
        box = dialog.start_at_login
        assert not box.isChecked() and not entry.exists()
        assert str(entry) in box.toolTip()

        box.click()
        assert box.isChecked() and entry.is_file()
        text = entry.read_text()
        assert "[Desktop Entry]" in text and "Exec=" in text and "backapp-tray" in text.lower()
        assert not dialog.start_at_login_error.isVisible()
        assert any("start at login on" in line for line in app.controller.log_lines)

        # A fresh dialog reads the state back from disk.
        dialog.accept()
        app.show_settings()
        assert app.settings_dialog is not None and app.settings_dialog.start_at_login.isChecked()

        app.settings_dialog.start_at_login.click()
        assert not app.settings_dialog.start_at_login.isChecked() and not entry.exists()
    finally:
        close_app(app)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the XDG variant: Linux")
@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_a_failure_is_shown_and_the_box_tells_the_truth(
    qtbot: Any, xdg_home: Path, agent_dir: Path, keystore: KeyStore
) -> None:
    _failure_is_shown(qtbot, xdg_home, agent_dir, keystore, blocker="chmod")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the XDG variant: Linux")
def test_a_failure_is_shown_even_as_root(
    qtbot: Any, xdg_home: Path, agent_dir: Path, keystore: KeyStore
) -> None:
    _failure_is_shown(qtbot, xdg_home, agent_dir, keystore, blocker="file")


def _failure_is_shown(
    qtbot: Any, xdg_home: Path, agent_dir: Path, keystore: KeyStore, blocker: str
) -> None:
    xdg_home.mkdir(parents=True)
    if blocker == "file":
        (xdg_home / "autostart").write_text("a file where the folder should be")
    else:
        (xdg_home / "autostart").mkdir()
        (xdg_home / "autostart").chmod(stat.S_IRUSR | stat.S_IXUSR)
    pair(SERVER, KEY, keystore)
    app, _fake, _rec = make_app(agent_dir, keystore)
    try:
        app.show_settings()
        dialog = app.settings_dialog
        assert dialog is not None
        dialog.start_at_login.click()
        assert not dialog.start_at_login.isChecked()
        assert not dialog.start_at_login_error.isHidden()
        assert "cannot turn on start at login" in dialog.start_at_login_error.text()
    finally:
        close_app(app)
        if blocker == "chmod":
            (xdg_home / "autostart").chmod(stat.S_IRWXU)
