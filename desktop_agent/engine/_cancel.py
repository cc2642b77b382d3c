"""A cancel handle shared by the caller and the engine's threads."""

from __future__ import annotations

import threading

from ._errors import BackupCancelled

__all__ = ["CancelToken"]


class CancelToken:
    """Set it (from any thread) to stop a backup: the engine aborts the upload, records the backup as
    ``cancelled`` with the reason (``failed`` when the stop was not ``deliberate``) and returns.
    ``threading.Event``-like."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "cancelled"
        self.deliberate = True
        """Someone chose to stop it (a cancel is not a failure); ``False``: something went wrong."""

    def cancel(self, reason: str = "cancelled", *, deliberate: bool = True) -> None:
        """Stop the backup for ``reason``; ``deliberate=False`` when it is stopped because of a
        problem (e.g. the run lease was lost), which makes it a failure."""
        self.reason = reason
        self.deliberate = deliberate
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    is_cancelled = is_set

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds; ``True`` at once when cancelled."""
        return self._event.wait(timeout)

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise BackupCancelled(self.reason, deliberate=self.deliberate)
