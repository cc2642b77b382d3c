"""Fixtures for the tray app's tests (pytest-qt, offscreen).

Environment before import: Qt picks its platform plugin when the ``QApplication`` is made, so
``QT_QPA_PLATFORM`` is set here, before anything imports the GUI. The keyring is forced to an
in-memory backend: no test touches a real keychain.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_LOGGING_RULES", "qt.qpa.*=false")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import keyring  # noqa: E402
import keyring.backend  # noqa: E402
import keyring.errors  # noqa: E402
import pytest  # noqa: E402

from desktop_agent.engine import KeyStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-output" / "screenshots"


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keychain in a dict (what the tests inspect to prove where the key went)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.items.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError(username)


@pytest.fixture
def memory_keyring(monkeypatch: pytest.MonkeyPatch) -> MemoryKeyring:
    backend = MemoryKeyring()
    monkeypatch.setattr(keyring, "get_keyring", lambda: backend)
    return backend


@pytest.fixture
def agent_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh agent settings folder, selected through the environment like a user would."""
    directory = tmp_path / "agent-config"
    monkeypatch.setenv("BACKAPP_AGENT_CONFIG_DIR", str(directory))
    monkeypatch.setenv("BACKAPP_AGENT_TEMP_DIR", str(tmp_path / "agent-tmp"))
    for var in ("BACKAPP_AGENT_API_KEY", "BACKAPP_AGENT_SERVER_URL"):
        monkeypatch.delenv(var, raising=False)
    return directory


@pytest.fixture
def keystore(agent_dir: Path, memory_keyring: MemoryKeyring) -> KeyStore:
    return KeyStore(agent_dir, backend=memory_keyring, env={})


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def no_dialogs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Records the questions the app would ask (answering yes) instead of opening modal boxes."""
    from PySide6.QtWidgets import QMessageBox

    asked: list[Any] = []

    def question(*args: Any, **kwargs: Any) -> QMessageBox.StandardButton:
        asked.append(args)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    yield asked
