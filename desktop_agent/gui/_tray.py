"""The tray icon and its menu, rebuilt from the controller's state when it changes."""

from __future__ import annotations

from datetime import timedelta

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from ._controller import AgentController
from ._icons import health_icon
from ._status import Health, last_result_text

__all__ = ["PAUSE_CHOICES", "TrayMenu"]

MENU_WIDTH = 72
"""Characters of a config's line in the menu."""

PAUSE_CHOICES: tuple[tuple[str, timedelta], ...] = (
    ("for 1 hour", timedelta(hours=1)),
    ("for 4 hours", timedelta(hours=4)),
    ("until tomorrow (24 hours)", timedelta(hours=24)),
)

TOOLTIPS = {
    Health.UNPAIRED: "BackApp — not connected",
    Health.IDLE: "BackApp — all backups up to date",
    Health.BUSY: "BackApp — backing up…",
    Health.PAUSED: "BackApp — paused",
    Health.ATTENTION: "BackApp — needs attention",
}


class TrayMenu(QObject):
    """The menu (usable with or without a tray icon) and, when ``tray`` is given, the icon."""

    show_status = Signal()
    show_settings = Signal()
    show_restore = Signal()
    show_recovery = Signal()
    open_console = Signal()
    quit_requested = Signal()

    def __init__(self, controller: AgentController, tray: QSystemTrayIcon | None = None) -> None:
        super().__init__(controller)
        self.controller = controller
        self.tray = tray
        self.menu = QMenu()
        self.menu.setTitle("BackApp")
        self.menu.setToolTipsVisible(True)
        self.actions: dict[str, QAction] = {}
        self._submenus: list[QMenu] = []
        controller.changed.connect(self.refresh)
        if tray is not None:
            tray.setContextMenu(self.menu)
            tray.activated.connect(self._activated)
        self.refresh()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (
            QSystemTrayIcon.ActivationReason.Trigger,
            QSystemTrayIcon.ActivationReason.DoubleClick,
        ):
            self.show_status.emit()

    def _add(self, key: str, text: str, enabled: bool = True, menu: QMenu | None = None) -> QAction:
        action = (menu or self.menu).addAction(text)
        action.setEnabled(enabled)
        self.actions[key] = action
        return action

    def refresh(self) -> None:
        c = self.controller
        health = c.health()
        busy = c.running_views() if health is Health.BUSY else []
        tooltip = TOOLTIPS[health]
        if len(busy) > 1:  # parallel backups: say how many
            tooltip = f"BackApp — backing up {len(busy)} configurations…"
        if self.tray is not None:
            self.tray.setIcon(health_icon(health))
            self.tray.setToolTip(tooltip)
        m = self.menu
        m.clear()
        self.actions.clear()
        for old in self._submenus:  # clear() leaves submenus alive: they are children of m
            old.deleteLater()
        self._submenus.clear()
        header = tooltip.removeprefix("BackApp — ").capitalize()
        if c.online is False:
            header = "Server unreachable"
        self._add("header", header, enabled=False)
        if c.web_restores.current is not None:
            self._add("web-restore", "Restoring files asked for from the web console…", False)
        views = c.ordered_views()
        for view in views:
            full = f"{view.title}: {last_result_text(view)}"
            # Long reasons are cut here; the tooltip and the status window have all of it.
            line = full if len(full) <= MENU_WIDTH else full[: MENU_WIDTH - 1] + "…"
            self._add(f"config:{view.id}", line, False).setToolTip(full)
            when = f"    next backup: {c.next_backup_text(view.id)}"
            self._add(f"next:{view.id}", when, False)
        if not views and c.paired:
            self._add("noconfigs", "No backup configuration assigned", False)
        m.addSeparator()
        if c.running:
            jobs = c.runs.running_jobs
            label = "Cancel All Backups" if len(jobs) > 1 else "Cancel Backup"
            self._add("cancel", label).triggered.connect(lambda: c.cancel())
            if len(jobs) > 1:  # parallel backups: each can be stopped alone
                for config_id in jobs:
                    title = c.views[config_id].title if config_id in c.views else config_id
                    self._add(f"cancel:{config_id}", f"Cancel '{title}'").triggered.connect(
                        lambda _=False, i=config_id: c.cancel(config_id=i)
                    )
        backup = QMenu("Back Up Now", m)
        self._submenus.append(backup)
        all_action = self._add("backup:all", "All configurations", bool(views), backup)
        all_action.triggered.connect(lambda: c.back_up())
        backup.addSeparator()
        for view in views:
            config_id = view.id
            self._add(f"backup:{view.id}", view.title, menu=backup).triggered.connect(
                lambda _=False, i=config_id: c.back_up([i])
            )
        backup_action = m.addMenu(backup)
        backup_action.setEnabled(c.paired and not c.running)
        self.actions["backup"] = backup_action
        if c.paused:
            until = c.paused_until.astimezone().strftime("%H:%M") if c.paused_until else ""
            self._add("resume", f"Resume Backups (paused until {until})").triggered.connect(
                c.resume
            )
        else:
            pause = QMenu("Pause Backups", m)
            self._submenus.append(pause)
            for index, (label, duration) in enumerate(PAUSE_CHOICES):
                self._add(f"pause:{index}", label, menu=pause).triggered.connect(
                    lambda _=False, d=duration: c.pause(d)
                )
            pause_action = m.addMenu(pause)
            pause_action.setEnabled(c.paired)
            self.actions["pause"] = pause_action
        m.addSeparator()
        self._add("console", "Open Web Console", bool(c.settings.server_url)).triggered.connect(
            self.open_console.emit
        )
        self._add("restore", "Restore Files…", c.paired).triggered.connect(self.show_restore.emit)
        self._add("recovery", "Recovery Code…", c.paired).triggered.connect(self.show_recovery.emit)
        self._add("status", "Show Status…").triggered.connect(self.show_status.emit)
        self._add("settings", "Settings…").triggered.connect(self.show_settings.emit)
        m.addSeparator()
        self._add("quit", "Quit BackApp").triggered.connect(self.quit_requested.emit)

    def notify(self, title: str, message: str, is_error: bool) -> None:
        if self.tray is not None and self.tray.supportsMessages():
            icon = (
                QSystemTrayIcon.MessageIcon.Warning
                if is_error
                else QSystemTrayIcon.MessageIcon.Information
            )
            self.tray.showMessage(title, message, icon, 10_000)
