"""Agent updates in the tray app (the heartbeat's ``update``), at an idle moment as the daemon
does them: never while a backup, a restore or a compaction runs, off the GUI thread.

The tray app's own builds are a folder (Linux, Windows) or an app bundle (macOS), which their
installer updates: ``Updater`` says so once, and this tells the user once per offered version.
A single-file build (the headless agent's kind) installs the offer and asks to be restarted.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, QThreadPool, Signal

from desktop_agent.engine import Heartbeat, UpdateDuty, Updater

from ._workers import run_task

log = logging.getLogger("desktop_agent.gui")


class TrayUpdates(QObject):
    """Hears each heartbeat and installs the offer when ``maybe_run`` finds the app idle.
    ``restart`` fires once a new build is in place (the app then quits into it); ``notify``
    carries a desktop notification (title, message)."""

    restart = Signal()
    notify = Signal(str, str)

    def __init__(
        self,
        directory: Path,
        pool: QThreadPool,
        parent: QObject | None = None,
        *,
        updater: Updater | None = None,
        enabled: bool = True,
    ) -> None:
        super().__init__(parent)
        self.pool = pool
        self.updater = updater or Updater(directory)
        self.duty = UpdateDuty(self.updater, enabled=enabled)
        self.running = False
        self._told: set[str] = set()

    def heard(self, beat: Heartbeat) -> None:
        """A successful heartbeat (it confirms a fresh update, and brings the offer)."""
        self.duty.heard(beat)
        planned = self.updater.plan(self.duty.offer)
        if planned.status == "unsupported" and planned.version not in self._told:
            self._told.add(planned.version or "")
            reason = self.updater.unsupported() or ""
            self.notify.emit(
                f"BackApp {planned.version} is available", reason[:1].upper() + reason[1:] + "."
            )

    def maybe_run(self, *, idle: bool) -> bool:
        """Start the update if the app is idle and one is due; ``True`` if it started."""
        if self.running or not idle:
            return False
        if self.duty.overdue():  # this build is a fresh update that never heartbeat: go back
            self.restart.emit()
            return True
        if not self.duty.due():
            return False
        self.running = True
        run_task(self.duty.run, self._done, self._failed, self.pool)
        return True

    def _done(self, result: object) -> None:
        self.running = False
        if result:
            self.restart.emit()

    def _failed(self, message: str) -> None:
        self.running = False  # Updater turns refusals and failures into results: this is a bug's
        log.warning("the agent update failed: %s", message)
