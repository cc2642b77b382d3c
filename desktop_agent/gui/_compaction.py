"""Compactions the server asks the tray app for (the heartbeat's ``compact``), as the daemon does
them: off the GUI thread, only while no backup or restore runs, a failed one tried again an hour
later (``CompactDuty``)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, QThreadPool

from desktop_agent.engine import AgentSettings, CompactDuty

from ._workers import run_task

log = logging.getLogger("desktop_agent.gui")

DutyFactory = Callable[[AgentSettings, str], CompactDuty]


class TrayCompactions(QObject):
    """Remembers the server's request and runs it at an idle moment (``maybe_run``)."""

    def __init__(
        self,
        pool: QThreadPool,
        parent: QObject | None = None,
        *,
        duty: DutyFactory = CompactDuty,
    ) -> None:
        super().__init__(parent)
        self.pool = pool
        self._make = duty
        self._duty: CompactDuty | None = None
        self._key: str | None = None
        self.running = False

    def ask(self, settings: AgentSettings, api_key: str) -> None:
        """The server asked (again): keep the request, for this agent's settings and key."""
        if self._duty is None or self._key != api_key:
            self._duty, self._key = self._make(settings, api_key), api_key
        self._duty.ask()

    def maybe_run(self, *, idle: bool) -> bool:
        """Start the asked-for compaction if nothing else runs; ``True`` if it started."""
        duty = self._duty
        if duty is None or self.running or not idle or not duty.due():
            return False
        self.running = True
        run_task(duty.run, self._done, self._failed, self.pool)
        return True

    def _done(self, result: object) -> None:
        self.running = False

    def _failed(self, message: str) -> None:
        # CompactDuty turns the engine's errors into a retry an hour later; this is a bug's.
        self.running = False
        log.warning("the compaction failed: %s", message)
