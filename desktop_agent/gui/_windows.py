"""The app's windows: first-run pairing, status, settings. They read the controller's state when it
says ``changed`` and call its intents; nothing here blocks."""

from __future__ import annotations

import html
from datetime import UTC, datetime

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ._controller import AgentController
from ._icons import COLOURS, health_pixmap
from ._pairing import PairingResult
from ._status import ConfigView, Health, last_result_text
from ._text import eta_text, human_bytes, rate_text, redact

__all__ = ["PairingWindow", "SettingsDialog", "StatusWindow"]


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


class _ConfigPanel(QFrame):
    """One config in the status window."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = QLabel()
        font = QFont(self.title.font())
        font.setBold(True)
        self.title.setFont(font)
        self.state = QLabel()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(True)
        self.details = QLabel()
        self.errors = QLabel()
        self.errors.setWordWrap(True)
        self.errors.setStyleSheet("color: #b71c1c")
        self.errors.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.backup = QPushButton("Back Up Now")
        grid = QGridLayout(self)
        grid.addWidget(self.title, 0, 0)
        grid.addWidget(self.backup, 0, 1, Qt.AlignmentFlag.AlignRight)
        grid.addWidget(self.state, 1, 0, 1, 2)
        grid.addWidget(self.progress, 2, 0, 1, 2)
        grid.addWidget(self.details, 3, 0, 1, 2)
        grid.addWidget(self.errors, 4, 0, 1, 2)

    def show_view(self, view: ConfigView, busy: bool) -> None:
        self.title.setText(view.title)
        self.state.setText(last_result_text(view))
        self.backup.setEnabled(not busy)
        if view.running or view.phase in ("completed", "failed"):
            total = max(1, view.bytes_total)
            done = view.bytes_done if view.phase != "completed" else total
            self.progress.setValue(int(1000 * min(done, total) / total))
            self.progress.setFormat(
                f"{100 * min(done, total) // total}%" if view.phase != "scanning" else "scanning…"
            )
            self.progress.setVisible(True)
            self.details.setText(
                f"Files {view.files_done:,} / {view.files_total:,} · "
                f"{human_bytes(view.bytes_done)} / {human_bytes(view.bytes_total)} · "
                f"{rate_text(view.rate)} · ETA {eta_text(view.eta) if view.running else '—'}"
                + (f" · uploaded {human_bytes(view.uploaded)}" if view.uploaded else "")
            )
        else:
            self.progress.setVisible(False)
            sources = ", ".join(view.sources)
            self.details.setText(f"Sources: {sources}" if sources else "")
        failed = view.last_failed and not view.running
        self.state.setStyleSheet("color: #b71c1c" if failed else "")
        errors = list(view.errors)  # per-file problems (the failure itself is on the state line)
        self.errors.setText("\n".join(errors[:10]) + ("\n…" if len(errors) > 10 else ""))
        self.errors.setVisible(bool(errors))


class StatusWindow(QWidget):
    """Per config: the current run's progress or the last result, with errors; the agent's recent
    log lines; and a notice (e.g. why there is no tray icon)."""

    def __init__(self, controller: AgentController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setWindowTitle("BackApp — status")
        self.resize(640, 560)
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet(
            "background: #fff8e1; border: 1px solid #ffcc80; padding: 6px; color: #5d4037"
        )
        self.notice.setVisible(False)
        self.badge = QLabel()
        self.headline = QLabel()
        font = QFont(self.headline.font())
        font.setPointSizeF(font.pointSizeF() * 1.2)
        font.setBold(True)
        self.headline.setFont(font)
        self.connection = QLabel()
        self.connection.setWordWrap(True)
        self.backup_all = QPushButton("Back Up Now")
        self.backup_all.clicked.connect(lambda: self.controller.back_up())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(lambda: self.controller.cancel())
        head_text = QVBoxLayout()
        head_text.addWidget(self.headline)
        head_text.addWidget(self.connection)
        head = QHBoxLayout()
        head.addWidget(self.badge)
        head.addLayout(head_text, 1)
        head.addWidget(self.backup_all)
        head.addWidget(self.cancel_button)

        self.configs_box = QWidget()
        self.configs_layout = QVBoxLayout(self.configs_box)
        self.configs_layout.setContentsMargins(0, 0, 0, 0)
        self.empty = QLabel("No backup configuration is assigned to this computer yet.")
        self.configs_layout.addWidget(self.empty)
        self.configs_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.configs_box)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.panels: dict[str, _ConfigPanel] = {}

        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        self.log.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.log.setMaximumHeight(150)
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.log.setFont(mono)

        layout = QVBoxLayout(self)
        layout.addWidget(self.notice)
        layout.addLayout(head)
        layout.addWidget(scroll, 1)
        layout.addWidget(QLabel("Recent activity"))
        layout.addWidget(self.log)

        for line in controller.log_lines:
            self.log.appendPlainText(line)
        controller.log_line.connect(self.log.appendPlainText)
        controller.changed.connect(self.refresh)
        self.refresh()

    def set_notice(self, text: str) -> None:
        self.notice.setText(text)
        self.notice.setVisible(bool(text))

    def refresh(self) -> None:
        c = self.controller
        health = c.health()
        self.badge.setPixmap(health_pixmap(health, 40))
        headline = {
            Health.UNPAIRED: "Not connected to a server",
            Health.IDLE: "All backups are up to date",
            Health.BUSY: "Backing up…",
            Health.PAUSED: "Backups are paused",
            Health.ATTENTION: "Needs attention",
        }[health]
        self.headline.setText(headline)
        self.headline.setStyleSheet(f"color: {COLOURS[health]}")
        parts = []
        if c.settings.server_url:
            state = {True: "online", False: "offline", None: "connecting…"}[c.online]
            parts.append(f"{c.settings.server_url} — {state}")
            if c.agent_name or c.settings.agent_id:
                parts.append(f"agent {c.agent_name or c.settings.agent_id}")
        if c.paused_until:
            parts.append(f"paused until {c.paused_until.astimezone():%H:%M}")
        reasons = c.attention_reasons(datetime.now(UTC))
        text = " · ".join(parts)
        if reasons:
            text += "\n" + "\n".join(redact(r) for r in reasons[:5])
        self.connection.setText(text)
        self.backup_all.setEnabled(c.paired and not c.running and bool(c.views))
        self.cancel_button.setVisible(c.running)

        views = c.ordered_views()
        wanted = [v.id for v in views]
        for config_id in list(self.panels):
            if config_id not in wanted:
                self.panels.pop(config_id).deleteLater()
        for index, view in enumerate(views):
            panel = self.panels.get(view.id)
            if panel is None:
                panel = _ConfigPanel()
                config_id = view.id
                panel.backup.clicked.connect(lambda _=False, i=config_id: c.back_up([i]))
                self.panels[view.id] = panel
                self.configs_layout.insertWidget(index, panel)
            panel.show_view(view, c.running or not c.paired)
        self.empty.setVisible(not views)


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
