"""The status window: per config, the current run's progress or the last result, with errors; the
agent's recent log lines; and a notice (e.g. why there is no tray icon)."""

from __future__ import annotations

from datetime import UTC, datetime

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from .._controller import AgentController
from .._icons import COLOURS, health_pixmap
from .._status import ConfigView, Health, last_result_text
from .._text import eta_text, human_bytes, rate_text, redact

__all__ = ["LIMIT_REFRESH_MS", "StatusWindow"]

#: How often the window looks at the bandwidth limit while a backup runs: a pause brings no
#: progress events, and a limit changed from the web console none either.
LIMIT_REFRESH_MS = 2000


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
        self.limit = QLabel()
        self.limit.setWordWrap(True)
        self.limit.setVisible(False)
        self.next = QLabel()
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
        grid.addWidget(self.limit, 4, 0, 1, 2)
        grid.addWidget(self.next, 5, 0, 1, 2)
        grid.addWidget(self.errors, 6, 0, 1, 2)

    def show_view(
        self, view: ConfigView, busy: bool, next_backup: str = "", limit: str | None = None
    ) -> None:
        """The config's run or last result; ``limit``: what holds a running backup back."""
        shown = limit if view.running else None
        self.limit.setText(shown or "")
        self.limit.setVisible(shown is not None)
        self.title.setText(view.title)
        self.next.setText(f"Next backup: {next_backup}" if next_backup else "")
        self.next.setVisible(bool(next_backup))
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

        self.web_restore = QLabel()
        self.web_restore.setWordWrap(True)
        self.web_restore.setVisible(False)

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
        layout.addWidget(self.web_restore)
        layout.addWidget(scroll, 1)
        layout.addWidget(QLabel("Recent activity"))
        layout.addWidget(self.log)

        for line in controller.log_lines:
            self.log.appendPlainText(line)
        controller.log_line.connect(self.log.appendPlainText)
        controller.changed.connect(self.refresh)
        self._limit_timer = QTimer(self)
        self._limit_timer.setInterval(LIMIT_REFRESH_MS)
        self._limit_timer.timeout.connect(self.refresh)
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
        busy = c.running_views() if health is Health.BUSY else []
        if len(busy) > 1:  # parallel backups: name each (its panel below has its progress)
            headline = "Backing up " + ", ".join(v.title for v in busy) + "…"
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
        restoring = c.web_restores.current
        self.web_restore.setText(restoring.text() if restoring is not None else "")
        self.web_restore.setVisible(restoring is not None)

        views = c.ordered_views()
        limit = c.limit_text()
        running = any(v.running for v in views)
        if running and not self._limit_timer.isActive():
            self._limit_timer.start()
        elif not running:
            self._limit_timer.stop()
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
            panel.show_view(view, c.running or not c.paired, c.next_backup_text(view.id), limit)
        self.empty.setVisible(not views)
