"""The first-run (and re-pairing) window: the server URL and a pairing code (or an API key), checked
with the server before anything is saved. Enter in any field connects."""

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
    """First run (and re-pairing): the server URL and the pairing code from the web console (Agents →
    Add a machine), which the server trades for this machine's API key; or, instead of a code, the
    API key itself (pasted, never shown) and optionally the agent id. *Connect* (or Enter) checks
    with the server; on success the key goes to the keychain and the window shows the assigned
    configs."""

    paired = Signal(object)

    def __init__(self, controller: AgentController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setWindowTitle("BackApp — connect this computer")
        self.setMinimumWidth(480)
        intro = QLabel(
            "In the BackApp web console, open Agents → Add a machine to get a pairing code. Type "
            "the server address and the code here and press Enter. (Or paste an agent's API key "
            "instead of a code.)"
        )
        intro.setWordWrap(True)
        self.server = QLineEdit(controller.settings.server_url or "")
        self.server.setPlaceholderText("https://backapp.example.org")
        self.code = QLineEdit()
        self.code.setPlaceholderText("K7Q-4MX-P2D")
        self.key = QLineEdit()
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key.setPlaceholderText("bka_… (only without a pairing code)")
        self.agent_id = QLineEdit(controller.settings.agent_id or "")
        self.agent_id.setPlaceholderText("optional, shown at registration")
        form = QFormLayout()
        form.addRow("Server URL", self.server)
        form.addRow("Pairing code", self.code)
        form.addRow("or API key", self.key)
        form.addRow("Agent id", self.agent_id)
        # A QWidget has no default button: Enter in a field would do nothing without these.
        for field in (self.server, self.code, self.key, self.agent_id):
            field.returnPressed.connect(self.submit)
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
        if not self.connect_button.isEnabled() or not self.connect_button.isVisible():
            return  # already checking, or already connected
        self.connect_button.setEnabled(False)
        self.message.setStyleSheet("")
        self.message.setText("Checking the connection…")
        if self.code.text().strip() or not self.key.text().strip():
            self.controller.pair_with_code(
                self.server.text(), self.code.text(), self._succeeded, self._failed
            )
            return
        self.controller.check_pairing(
            self.server.text(),
            self.key.text(),
            self._succeeded,
            self._failed,
            agent_id=self.agent_id.text() or None,
        )

    def _succeeded(self, result: PairingResult) -> None:
        self.key.clear()  # the key lives in the keychain now, not in a widget
        self.code.clear()  # used: it would only be refused again
        self.connect_button.setEnabled(True)
        agent = result.agent_name or self.controller.settings.agent_id
        lines = [f"<b>Connected to {html.escape(result.server_url)}</b>"]
        if agent:
            lines.append(f"Agent: {html.escape(agent)}")
        lines.append(f"API key stored in {result.location.describe()}.")
        if result.configs:
            n = len(result.configs)
            lines.append(f"{n} backup configuration{'s' if n != 1 else ''} assigned:")
            for c in sorted(result.configs, key=lambda c: ((c.name or c.id).lower(), c.id)):
                sources = ", ".join(s.path for s in c.sources)
                when = self.controller.next_backup_text(c.id)
                lines.append(
                    f"&nbsp;• <b>{html.escape(c.name or c.id)}</b> — {html.escape(sources)}"
                    f"<br>&nbsp;&nbsp;&nbsp;next backup: {html.escape(when)}"
                )
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
