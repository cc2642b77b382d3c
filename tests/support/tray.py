"""Shared helpers of the tray app's tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QUrl

from desktop_agent.engine import AgentSettings, KeyStore, save_settings
from desktop_agent.gui import TrayApp


class FakeApplication:
    """Stands in for ``QApplication`` in ``TrayApp``: records ``quit()`` instead of ending the
    session's shared application."""

    def __init__(self) -> None:
        self.quit_calls = 0

    def quit(self) -> None:
        self.quit_calls += 1


class Recorder:
    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.questions: list[str] = []
        self.urls: list[str] = []
        self.notifications: list[tuple[str, str, bool]] = []

    def ask(self, parent: Any, title: str, text: str) -> bool:
        self.questions.append(title)
        return self.answer

    def open_url(self, url: QUrl) -> bool:
        self.urls.append(url.toString())
        return True


def make_app(
    directory: Path, keystore: KeyStore, recorder: Recorder | None = None
) -> tuple[TrayApp, FakeApplication, Recorder]:
    recorder = recorder or Recorder()
    fake = FakeApplication()
    app = TrayApp(
        fake,  # type: ignore[arg-type]
        directory=directory,
        keystore=keystore,
        ask=recorder.ask,
        open_url=recorder.open_url,
    )
    app.controller.notify.connect(
        lambda title, message, err: recorder.notifications.append((title, message, err))
    )
    return app, fake, recorder


def pair(server_url: str, key: str, keystore: KeyStore, agent_id: str | None = None) -> None:
    """What a finished first run leaves behind: settings on disk and the key in the keychain."""
    save_settings(AgentSettings(server_url=server_url, agent_id=agent_id))
    keystore.save(server_url.rstrip("/"), key)


def close_app(app: TrayApp) -> None:
    if app.tray_icon is not None:
        app.tray_icon.hide()
    if app.server is not None:
        app.server.close()
    app.dispose()
