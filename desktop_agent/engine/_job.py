"""One config's backup while it runs (``BackupJob``), and its problems as the server takes them.

The job is the state that the engine's failure path reads: how far the backup got (the uploader and
the archiver of an archive backup), and the per-file errors so far, kept up to the server's limits
(``error_list``, ``printable``; ``docs/agent-api.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ._events import BackupFailed, Emitter
from .protocol import BackupResult, ConfigInfo, FileError

if TYPE_CHECKING:  # only annotations here: ``printable`` (restores use it) needs no backup code
    from ._tar import Archiver
    from ._upload import Uploader

__all__ = [
    "MAX_MESSAGE",
    "MAX_PATH",
    "MAX_REPORTED_ERRORS",
    "BackupFailure",
    "BackupJob",
    "error_list",
    "iso_z",
    "printable",
    "report_failure",
    "size_text",
]

#: Per-file errors sent to the server with ``backup/complete`` (the rest are counted).
MAX_REPORTED_ERRORS = 1000
#: The server's limits on an error message and a path (docs/agent-api.md, backend schemas).
MAX_MESSAGE = 4000
MAX_PATH = 8192


class BackupFailure(Exception):
    """A backup failed for ``reason`` (its per-file problems so far are on the ``BackupJob``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class BackupJob:
    """The state of one config's backup, kept for the failure path."""

    config: ConfigInfo
    t0: float
    started: datetime
    sources: tuple[str, ...] = ()
    estimated: int = 0
    uploader: Uploader | None = None
    archiver: Archiver | None = None
    completing: bool = False
    """``backup/complete`` with ``completed`` was sent (the server decides from there)."""
    errors: list[FileError] = field(default_factory=list)
    error_count: int = 0

    def add_errors(self, problems: Sequence[FileError]) -> None:
        self.error_count += len(problems)
        room = MAX_REPORTED_ERRORS - len(self.errors)
        if room > 0:
            self.errors.extend(problems[:room])

    def duration_ms(self, now: float) -> int:
        return int((now - self.t0) * 1000)


def size_text(size: int) -> str:
    """``300000`` → ``293.0 KiB``: a size in a log line that a person reads (binary units, as the
    web console and the tray show them)."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def printable(text: str) -> str:
    """``text`` as valid UTF-8: a file name that is not UTF-8 (possible on Linux; Python carries its
    bytes as lone surrogates) shows its odd bytes as ``\\xNN``. For JSON sent to the server."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def error_list(
    errors: Sequence[FileError],
    total: int,
    *,
    limit: int = MAX_REPORTED_ERRORS,
    width: int = MAX_MESSAGE,
    path_width: int = MAX_PATH,
) -> list[dict[str, str]]:
    """The ``errors`` of ``backup/complete``: at most ``limit`` ``{path, message}`` objects (cut to
    the server's limits), and a last one that counts the rest."""
    out = [
        {"path": printable(e.path)[:path_width], "message": printable(e.message)[:width]}
        for e in errors[:limit]
    ]
    if total > len(out):
        out.append({"message": f"... and {total - len(out)} more file errors"})
    return out


def iso_z(when: datetime) -> str:
    """A backup's start or end as the server takes it: ISO 8601 to the second, UTC as ``Z``."""
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def report_failure(
    send_log: Callable[[str, str, dict[str, object]], None],
    emit: Emitter,
    config: ConfigInfo,
    *,
    log_id: str | None,
    reason: str,
    cancelled: bool,
    errors: list[dict[str, str]],
    duration_ms: Callable[[], int],
    problems: Sequence[FileError],
    started: datetime,
    now: Callable[[], datetime],
) -> BackupResult:
    """Tell the server's agent log and the event sink that a backup of ``config`` (an archive or
    a snapshot) failed, or was cancelled by the user; ``errors`` are its per-file errors (as the
    server takes them; ``problems`` as they were found). Returns the failed (or cancelled) result,
    its duration taken after the log is sent (the log call may wait on the network) and its end
    (``now``) after that; the caller adds what else it knows."""
    send_log(
        "info" if cancelled else "error",
        f"Backup '{config.name or config.id}' {'cancelled' if cancelled else 'failed'}: {reason}",
        {"configId": config.id, "logId": log_id, "errors": errors},
    )
    duration = duration_ms()
    emit(
        BackupFailed(
            config_id=config.id,
            config_name=config.name,
            log_id=log_id,
            reason=reason,
            duration_ms=duration,
            cancelled=cancelled,
        )
    )
    return BackupResult(
        config_id=config.id,
        config_name=config.name,
        status="cancelled" if cancelled else "failed",
        error=reason,
        log_id=log_id,
        duration_ms=duration,
        started_at=iso_z(started),
        finished_at=iso_z(now()),
        errors=tuple(problems),
    )
