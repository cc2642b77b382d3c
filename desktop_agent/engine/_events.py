"""Progress events: a small typed stream the engine emits while it works.

Every event is a frozen dataclass with a ``kind`` (its name in JSON). Give the engine either one
function that takes any ``Event`` (and ``match``-es on it), or a ``ProgressCallbacks`` with a function
per kind you care about; the others default to no-ops. ``event_to_json`` gives the JSON form used by
``backapp-agent run --json`` (documented in ``docs/agent.md``).

Events are delivered on the engine's threads, one at a time (never concurrently). Keep handlers quick;
a GUI hands them to its own thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

__all__ = [
    "ArchiveProgress",
    "BackupFailed",
    "BackupFinished",
    "ConfigStarted",
    "Event",
    "EventSink",
    "FileFailed",
    "FileStarted",
    "ProgressCallbacks",
    "RunFinished",
    "RestoreFailed",
    "RestoreFinished",
    "RestoreProgress",
    "RestoreSkipped",
    "RestoreStarted",
    "RunStarted",
    "ScanFinished",
    "ScanProgress",
    "ScanStarted",
    "UploadProgress",
    "UploadResumed",
    "UploadStarted",
    "UploadWaiting",
    "event_to_json",
    "rate_eta",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    kind: ClassVar[str] = "run_started"
    configs: int
    """Configs about to be backed up."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigStarted:
    kind: ClassVar[str] = "config_started"
    config_id: str
    config_name: str
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanStarted:
    kind: ClassVar[str] = "scan_started"
    config_id: str
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanProgress:
    kind: ClassVar[str] = "scan_progress"
    config_id: str
    files: int
    dirs: int
    bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanFinished:
    kind: ClassVar[str] = "scan_finished"
    config_id: str
    files: int
    dirs: int
    bytes: int
    errors: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileStarted:
    kind: ClassVar[str] = "file_started"
    config_id: str
    path: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileFailed:
    """A per-file error: the backup goes on."""

    kind: ClassVar[str] = "file_error"
    config_id: str
    path: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveProgress:
    """Bytes archived so far. ``rate`` is bytes of file content per second, ``eta`` seconds left
    (``None`` until there is a rate)."""

    kind: ClassVar[str] = "archive_progress"
    config_id: str
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    archive_bytes: int
    """Compressed bytes produced so far."""
    rate: float
    eta: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadStarted:
    kind: ClassVar[str] = "upload_started"
    config_id: str
    log_id: str
    filename: str
    multipart: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadProgress:
    kind: ClassVar[str] = "upload_progress"
    config_id: str
    bytes_uploaded: int
    parts_done: int
    rate: float
    """Archive bytes uploaded per second."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadWaiting:
    """The upload is stuck: storage (or the server that hands out upload URLs) fails or stalls,
    and the uploader keeps trying, with backoff, within its time budget. Sent at each failed
    try; ``UploadResumed`` follows when the bytes move again (else the backup fails)."""

    kind: ClassVar[str] = "upload_waiting"
    config_id: str
    waiting_for: str
    """``storage`` or ``server``."""
    reason: str
    """The last error, in words."""
    waited: float
    """Seconds since this trouble began."""
    retry_in: float
    """Seconds until the next try."""
    gives_up_in: float | None
    """Seconds left before the backup fails (``None``: a count of tries, not a time budget)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadResumed:
    """Storage answers again after an ``UploadWaiting``."""

    kind: ClassVar[str] = "upload_resumed"
    config_id: str
    waited: float
    """Seconds the upload waited."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupFinished:
    kind: ClassVar[str] = "backup_finished"
    config_id: str
    config_name: str
    log_id: str
    filename: str
    files: int
    bytes: int
    """Bytes of file content read."""
    archive_size: int
    """Bytes uploaded: the archive, or a snapshot's new data."""
    sha256: str
    duration_ms: int
    rate: float
    errors: int
    backup_type: str = "full"
    """``full`` (one archive) or ``incremental`` (a snapshot)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupFailed:
    kind: ClassVar[str] = "backup_failed"
    config_id: str
    config_name: str
    log_id: str | None
    reason: str
    duration_ms: int
    cancelled: bool = False
    """Stopped on purpose (the user, a signal): recorded as ``cancelled``, not as a failure."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished:
    kind: ClassVar[str] = "run_finished"
    completed: int
    failed: int
    error: str | None = None
    cancelled: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreStarted:
    kind: ClassVar[str] = "restore_started"
    backup_id: str
    filename: str
    size: int
    """Bytes of the archive to download."""
    target: str
    """Where the files go (``/`` for an in-place restore); empty when only listing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreProgress:
    """Every ~0.25 s, and once at the end. ``rate`` is archive bytes downloaded per second."""

    kind: ClassVar[str] = "restore_progress"
    backup_id: str
    bytes_downloaded: int
    size: int
    files: int
    bytes_written: int
    rate: float
    eta: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreSkipped:
    """A member that was not restored: refused as unsafe, or something in its place kept."""

    kind: ClassVar[str] = "restore_skipped"
    backup_id: str
    path: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreFinished:
    kind: ClassVar[str] = "restore_finished"
    backup_id: str
    filename: str
    target: str
    files: int
    """Regular files, links and folders restored (or listed)."""
    bytes: int
    """Bytes of file content written (or listed)."""
    skipped: int
    archive_size: int
    sha256: str
    duration_ms: int
    resumed: int
    """Times the download was resumed after a network error."""
    unchanged: int = 0
    """Files already there with the backup's content, left as they were."""
    renamed: tuple[tuple[str, str], ...] = ()
    """(path, the name of the restored copy) for each existing file that differed and was kept."""
    replaced: tuple[str, ...] = ()
    """Existing files that differed and were replaced (``overwrite``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreFailed:
    kind: ClassVar[str] = "restore_failed"
    backup_id: str
    reason: str
    duration_ms: int


Event = (
    RunStarted
    | ConfigStarted
    | ScanStarted
    | ScanProgress
    | ScanFinished
    | FileStarted
    | FileFailed
    | ArchiveProgress
    | UploadStarted
    | UploadProgress
    | UploadWaiting
    | UploadResumed
    | BackupFinished
    | BackupFailed
    | RunFinished
    | RestoreStarted
    | RestoreProgress
    | RestoreSkipped
    | RestoreFinished
    | RestoreFailed
)
EventSink = Callable[[Event], None]


def rate_eta(done: int, left: int, elapsed: float) -> tuple[float, float | None]:
    """A progress event's ``rate`` (bytes a second: ``done`` in ``elapsed`` seconds, taken as at
    least a microsecond) and ``eta`` (seconds for the ``left`` bytes; ``None`` before any)."""
    rate = done / max(elapsed, 1e-6)
    return rate, left / rate if rate > 0 else None


def _noop(_: Any) -> None:
    pass


@dataclass(slots=True)
class ProgressCallbacks:
    """One optional function per event kind (restic-style); unset ones do nothing. Callable as an
    ``EventSink``."""

    run_started: Callable[[RunStarted], None] = _noop
    config_started: Callable[[ConfigStarted], None] = _noop
    scan_started: Callable[[ScanStarted], None] = _noop
    scan_progress: Callable[[ScanProgress], None] = _noop
    scan_finished: Callable[[ScanFinished], None] = _noop
    file_started: Callable[[FileStarted], None] = _noop
    file_error: Callable[[FileFailed], None] = _noop
    archive_progress: Callable[[ArchiveProgress], None] = _noop
    upload_started: Callable[[UploadStarted], None] = _noop
    upload_progress: Callable[[UploadProgress], None] = _noop
    upload_waiting: Callable[[UploadWaiting], None] = _noop
    upload_resumed: Callable[[UploadResumed], None] = _noop
    backup_finished: Callable[[BackupFinished], None] = _noop
    backup_failed: Callable[[BackupFailed], None] = _noop
    run_finished: Callable[[RunFinished], None] = _noop
    restore_started: Callable[[RestoreStarted], None] = _noop
    restore_progress: Callable[[RestoreProgress], None] = _noop
    restore_skipped: Callable[[RestoreSkipped], None] = _noop
    restore_finished: Callable[[RestoreFinished], None] = _noop
    restore_failed: Callable[[RestoreFailed], None] = _noop

    def __call__(self, event: Event) -> None:
        getattr(self, event.kind)(event)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def event_to_json(event: Event, *, now: datetime | None = None) -> dict[str, Any]:
    """The JSON object of an event: ``{"event": kind, "time": ISO 8601 UTC, <fields in camelCase>}``."""
    when = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    out: dict[str, Any] = {"event": event.kind, "time": when}
    for f in fields(event):
        value = getattr(event, f.name)
        if isinstance(value, float):
            value = round(value, 3)
        elif isinstance(value, tuple):
            value = list(value)
        out[_camel(f.name)] = value
    return out


class Emitter:
    """Serialises events to the sink; swallows (and logs) a sink's exceptions so a broken progress
    display cannot break a backup. ``throttled`` drops frequent progress events."""

    def __init__(self, sink: EventSink | None, *, interval: float = 0.25) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self._interval = interval
        self._next: dict[str, float] = {}

    @property
    def active(self) -> bool:
        return self._sink is not None

    def __call__(self, event: Event) -> None:
        if self._sink is None:
            return
        with self._lock:
            try:
                self._sink(event)
            except Exception:  # a progress display must never break a backup
                import logging

                logging.getLogger("desktop_agent.engine").exception("progress handler failed")

    def throttled(self, key: str, make: Callable[[], Event], *, force: bool = False) -> None:
        if self._sink is None:
            return
        now = time.monotonic()
        if not force and now < self._next.get(key, 0.0):
            return
        self._next[key] = now + self._interval
        self(make())
