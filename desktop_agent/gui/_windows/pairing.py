"""The first-run (and re-pairing) window: the server URL and the API key, checked with the server
before anything is saved."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._controller import AgentController
from .._pairing import PairingResult
from .._text import redact

__all__ = ["PairingWindow"]


class PairingWindow(QWidget):
    """First run (and re-pairing): the server URL, the API key (pasted, never shown), optionally the
    agent id. *Connect* checks the key with a heartbeat; on success the key goes to the keychain and the
    window shows the assigned configs."""

    paired = Signal(object)

    def __init__(self, controller: AgentController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setWindowTitle("BackApp — connect this computer")
        self.setMinimumWidth(480)
        intro = QLabel(
            "In the BackApp web console, register this computer as an agent and copy its API key "
            "(shown once). Paste the server address and the key here."
        )
        intro.setWordWrap(True)
        self.server = QLineEdit(controller.settings.server_url or "")
        self.server.setPlaceholderText("https://backapp.example.org")
        self.key = QLineEdit()
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key.setPlaceholderText("bka_…")
        self.agent_id = QLineEdit(controller.settings.agent_id or "")
        self.agent_id.setPlaceholderText("optional, shown at registration")
        form = QFormLayout()
        form.addRow("Server URL", self.server)
        form.addRow("API key", self.key)
        form.addRow("Agent id", self.agent_id)
        self.connect_button = QPushButton("Connect")
        self.connect_button.setDefault(True)
        self.connect_button.clicked.connect(self.submit)
        self.done_button = QPushButton("Done")
        self.done_button.setVisible(False)
        self.done_button.clicked.connect(self.close)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.connect_button)
        buttons.addWidget(self.done_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.message)
        layout.addLayout(buttons)

    def submit(self) -> None:
        self.connect_button.setEnabled(False)
        self.message.setStyleSheet("")
        self.message.setText("Checking the connection…")
        self.controller.check_pairing(
            self.server.text(),
            self.key.text(),
            self._succeeded,
            self._failed,
            agent_id=self.agent_id.text() or None,
        )

    def _succeeded(self, result: PairingResult) -> None:
        self.key.clear()  # the key lives in the keychain now, not in a widget
        self.connect_button.setEnabled(True)
        agent = result.agent_name or self.controller.settings.agent_id
        lines = [f"<b>Connected to {html.escape(result.server_url)}</b>"]
        if agent:
            lines.append(f"Agent: {html.escape(agent)}")
        lines.append(f"API key stored in {result.location.describe()}.")
        if result.configs:
            lines.append(f"{len(result.configs)} backup configuration(s) assigned:")
            lines += [
                f"&nbsp;• {c.name or c.id} — {', '.join(s.path for s in c.sources)}"
                for c in result.configs
            ]
        else:
            lines.append("No backup configuration is assigned yet: assign one in the web console.")
        self.message.setText("<br>".join(lines))
        self.connect_button.setVisible(False)
        self.done_button.setVisible(True)
        self.paired.emit(result)

    def _failed(self, message: str) -> None:
        self.connect_button.setEnabled(True)
        self.message.setStyleSheet("color: #b71c1c")
        self.message.setText(f"Not connected: {redact(message)}\nNothing was saved.")
