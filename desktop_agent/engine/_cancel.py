"""A cancel handle shared by the caller and the engine's threads."""

from __future__ import annotations

import threading

from ._errors import BackupCancelled

__all__ = ["CancelToken"]


class CancelToken:
    """Set it (from any thread) to stop a backup: the engine aborts the upload, marks the log failed
    with the reason and returns. ``threading.Event``-like."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    is_cancelled = is_set

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds; ``True`` at once when cancelled."""
        return self._event.wait(timeout)

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise BackupCancelled(self.reason)
