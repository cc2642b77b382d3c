"""The daemon's and the tray's side of updates: hear every heartbeat, update at an idle moment.

``AgentDaemon`` and the tray app call ``heard`` after each successful heartbeat (that is also what
confirms a fresh update), ask ``due`` only when no backup, restore, check or compaction runs, and
then ``run`` it off their main loop. ``run`` returning ``True`` means: stop cleanly and
``updater.restart()``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..protocol import Heartbeat, UpdateOffer
from .updater import Updater, offer_from

__all__ = ["UpdateDuty"]

log = logging.getLogger("desktop_agent.engine.update")


def _identity(path: Path) -> tuple[int, int, int, int]:
    info = os.stat(path)
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class UpdateDuty:
    """Keeps the newest offer and installs it when asked (see the module doc). ``enabled`` is the
    ``autoUpdate`` setting: off, an offer is only logged (``backapp-agent update`` still works)."""

    def __init__(self, updater: Updater, *, enabled: bool = True) -> None:
        self.updater = updater
        self.enabled = enabled
        self.offer: UpdateOffer | None = None
        self._said: set[str] = set()
        self._identity: tuple[int, int, int, int] | None = None
        if updater.kind == "file":
            try:
                self._identity = _identity(updater.exe)
            except OSError:
                pass

    def heard(self, beat: Heartbeat) -> None:
        """A successful heartbeat: confirms a pending update, and brings the current offer."""
        self.updater.confirm()
        self.offer = offer_from(beat.update)

    def replaced(self) -> bool:
        """The executable on disk is no longer the one this process started from (another
        process, e.g. ``backapp-agent update``, installed a new build): restart into it."""
        if self._identity is None:
            return False
        try:
            return _identity(self.updater.exe) != self._identity
        except OSError:  # mid-swap on Windows: look again next time
            return False

    def due(self) -> bool:
        """Something to do at this idle moment (an offer to install, or a restart)."""
        if self.replaced():
            return True
        offer = self.offer
        planned = self.updater.plan(offer)
        if planned.status == "unsupported":
            self.updater.apply(offer)  # says once why this install does not update itself
            return False
        if planned.status != "available" or offer is None:
            return False
        if not self.enabled:
            if offer.version not in self._said:
                self._said.add(offer.version)
                log.info(
                    "update %s is available; automatic updates are off (autoUpdate): "
                    "run backapp-agent update to install it",
                    offer.version,
                )
            return False
        return True

    def run(self) -> bool:
        """Install the offer (or notice the new executable); ``True``: restart now."""
        if self.replaced():
            log.info("the agent's executable was replaced by a new build: restarting")
            return True
        return self.updater.apply(self.offer).status == "updated"

    def overdue(self) -> bool:
        """A fresh update that has not heartbeat by its deadline was rolled back: restart."""
        return self.updater.overdue()
