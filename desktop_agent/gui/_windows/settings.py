"""The settings dialog: the connection (server, agent, where the key is kept), start at login,
*Re-pair* and *Sign out*."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._controller import AgentController

__all__ = ["SettingsDialog"]


class SettingsDialog(QDialog):
    """The connection (server, agent, where the key is kept) with *Re-pair* and *Sign out*."""

    repair_requested = Signal()

    def __init__(self, controller: AgentController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setWindowTitle("BackApp — settings")
        form = QFormLayout()
        s = controller.settings
        location = controller.key_location()
        form.addRow("Server", QLabel(s.server_url or "(not connected)"))
        form.addRow("Agent id", QLabel(s.agent_id or "—"))
        form.addRow("API key", QLabel(f"in {location.describe()}" if location else "not stored"))
        form.addRow("Poll interval", QLabel(f"{s.poll_interval_ms // 1000} s"))
        form.addRow("Settings folder", QLabel(str(controller.directory)))
        self.start_at_login = QCheckBox("Start BackApp when I log in")
        self.start_at_login.setChecked(controller.autostart.is_enabled())
        self.start_at_login.setToolTip(f"Uses {controller.autostart.describe()}")
        self.start_at_login.toggled.connect(self._start_at_login_toggled)
        self.start_at_login_error = QLabel("")
        self.start_at_login_error.setWordWrap(True)
        self.start_at_login_error.setStyleSheet("color: #b71c1c")
        self.start_at_login_error.setVisible(False)
        form.addRow("Start at login", self.start_at_login)
        form.addRow("", self.start_at_login_error)
        repair = QPushButton("Re-pair…")
        repair.clicked.connect(self._repair)
        self.sign_out_button = QPushButton("Sign out")
        self.sign_out_button.setEnabled(bool(s.server_url))
        self.sign_out_button.clicked.connect(self._sign_out)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        buttons = QHBoxLayout()
        buttons.addWidget(repair)
        buttons.addWidget(self.sign_out_button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)

    def _start_at_login_toggled(self, enabled: bool) -> None:
        error = self.controller.set_start_at_login(enabled)
        self.start_at_login_error.setText(error or "")
        self.start_at_login_error.setVisible(bool(error))
        if error:  # show what is really in effect
            self.start_at_login.blockSignals(True)
            self.start_at_login.setChecked(self.controller.autostart.is_enabled())
            self.start_at_login.blockSignals(False)

    def _repair(self) -> None:
        self.accept()
        self.repair_requested.emit()

    def _sign_out(self) -> None:
        answer = QMessageBox.question(
            self,
            "Sign out?",
            "Forget this computer's API key and server? Backups stop until you pair again; "
            "nothing is deleted on the server.",
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.controller.sign_out()
            self.accept()
            self.repair_requested.emit()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        super().closeEvent(event)
